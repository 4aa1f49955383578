// Small POSIX file helpers shared by the dataset reader, checkpoints and metrics writers: a
// read-only memory map, durable writes (data and directory entry fsynced), atomic replacement
// (write a temporary in the same directory, fsync, rename over the target, fsync the directory)
// and directory operations.
// Why not std::filesystem: libtorch.so (2.11 wheels) exports its own copies of the
// std::filesystem free functions (remove_all, status, file_size, ...), and in a binary linked
// against it the dynamic linker binds calls to those copies: std::filesystem::remove_all then
// crashes (a call through a null pointer). Plain POSIX calls are immune to that.
// Invariant: every failure throws tandem::Error of kind kIo naming the path and the OS reason;
// nothing here logs or keeps global state.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tandem::runtime {

// A whole file mapped read-only. Move-only; unmaps on destruction. An empty file maps to
// data() == nullptr, size() == 0. Reading the mapping is thread-safe; the file must not be
// truncated while mapped (reads past the new end would fault).
class MappedFile {
 public:
  // Throws kIo when the file cannot be opened or mapped.
  static MappedFile open(const std::string& path);

  MappedFile() = default;
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  void release() noexcept;

  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Reads a whole file. Throws kIo.
std::string read_file(const std::string& path);

// Creates/truncates `path`, writes `bytes`, fsyncs the file. Throws kIo.
void write_file_durable(const std::string& path, std::string_view bytes);

// Replaces `path` atomically: readers see the old or the new content, never a mix, even if the
// process dies midway (a stray `<path>.tmp-<pid>` may then remain). Throws kIo.
void write_file_atomic(const std::string& path, std::string_view bytes);

// fsyncs a directory so that entries created or renamed in it survive a crash. Throws kIo.
void fsync_directory(const std::string& dir);

// fsyncs an open file descriptor; `path` only names it in the error. Throws kIo.
void fsync_fd(int fd, const std::string& path);

// Writes all of `bytes` to `fd` (retrying short writes and EINTR). Throws kIo naming `path`.
void write_all(int fd, const void* bytes, size_t size, const std::string& path);

// --- paths and directories (no exceptions unless stated) ---------------------------------------
bool path_exists(const std::string& path);  // anything, following symlinks
bool is_directory(const std::string& path);
bool is_regular_file(const std::string& path);
std::optional<int64_t> file_size(const std::string& path);  // nullopt when it cannot be stat'ed
std::string parent_directory(const std::string& path);      // "a/b/c" -> "a/b"; "c" -> "."
std::string base_name(const std::string& path);             // "a/b/c" -> "c"

// mkdir -p. Throws kIo.
void make_directories(const std::string& path);
// Names in a directory (not "." or ".."), unsorted; empty when it does not exist. Throws kIo
// for a directory that exists but cannot be read.
std::vector<std::string> list_directory(const std::string& path);
// rename(2): atomic within a file system; replaces a file or an empty directory. Throws kIo.
void rename_path(const std::string& from, const std::string& to);
// rm -rf without following symlinks. Returns the first error as text ("" on success or when
// the path does not exist); never throws.
std::string remove_tree(const std::string& path);

}  // namespace tandem::runtime
