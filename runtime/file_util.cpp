// POSIX implementations of the file helpers: open/mmap/fsync/rename with errno turned into
// kIo errors that name the path.
#include "runtime/file_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "runtime/error.h"

namespace tandem::runtime {
namespace {

[[noreturn]] void throw_errno(const char* what, const std::string& path) {
  const int saved = errno;
  TANDEM_THROW(kIo, "{}: {} failed: {}", path, what, std::strerror(saved));
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  // Closes now, reporting a failed close (it can carry a deferred write error).
  void close_checked(const std::string& path) {
    const int fd = std::exchange(fd_, -1);
    if (::close(fd) != 0) throw_errno("close", path);
  }

 private:
  int fd_;
};

}  // namespace

MappedFile MappedFile::open(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) throw_errno("open", path);
  struct stat info {};
  if (::fstat(fd.get(), &info) != 0) throw_errno("stat", path);
  MappedFile mapped;
  mapped.path_ = path;
  mapped.size_ = static_cast<size_t>(info.st_size);
  if (mapped.size_ > 0) {
    void* address = ::mmap(nullptr, mapped.size_, PROT_READ, MAP_SHARED, fd.get(), 0);
    if (address == MAP_FAILED) throw_errno("mmap", path);
    mapped.data_ = static_cast<const uint8_t*>(address);
  }
  return mapped;
}

MappedFile::MappedFile(MappedFile&& other) noexcept
    : path_(std::move(other.path_)), data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    release();
    path_ = std::move(other.path_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

MappedFile::~MappedFile() { release(); }

void MappedFile::release() noexcept {
  if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
  data_ = nullptr;
  size_ = 0;
}

std::string read_file(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) throw_errno("open", path);
  std::string bytes;
  char buffer[1 << 16];
  for (;;) {
    const ssize_t got = ::read(fd.get(), buffer, sizeof(buffer));
    if (got < 0) {
      if (errno == EINTR) continue;
      throw_errno("read", path);
    }
    if (got == 0) break;
    bytes.append(buffer, static_cast<size_t>(got));
  }
  return bytes;
}

void write_all(int fd, const void* bytes, size_t size, const std::string& path) {
  const char* cursor = static_cast<const char*>(bytes);
  while (size > 0) {
    const ssize_t wrote = ::write(fd, cursor, size);
    if (wrote < 0) {
      if (errno == EINTR) continue;
      throw_errno("write", path);
    }
    cursor += wrote;
    size -= static_cast<size_t>(wrote);
  }
}

void fsync_fd(int fd, const std::string& path) {
  if (::fsync(fd) != 0) throw_errno("fsync", path);
}

void write_file_durable(const std::string& path, std::string_view bytes) {
  Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (fd.get() < 0) throw_errno("open for writing", path);
  write_all(fd.get(), bytes.data(), bytes.size(), path);
  fsync_fd(fd.get(), path);
  fd.close_checked(path);
}

void fsync_directory(const std::string& dir) {
  Fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) throw_errno("open directory", dir);
  // Some file systems (e.g. certain network mounts) refuse fsync on directories; that refusal
  // means they give no stronger guarantee, not that the data is lost.
  if (::fsync(fd.get()) != 0 && errno != EINVAL && errno != ENOTSUP) throw_errno("fsync", dir);
}

void write_file_atomic(const std::string& path, std::string_view bytes) {
  const std::string temporary = path + ".tmp-" + std::to_string(::getpid());
  write_file_durable(temporary, bytes);
  if (::rename(temporary.c_str(), path.c_str()) != 0) {
    const int saved = errno;
    ::unlink(temporary.c_str());
    errno = saved;
    throw_errno("rename into place", path);
  }
  const size_t slash = path.find_last_of('/');
  fsync_directory(slash == std::string::npos ? std::string(".") : (slash == 0 ? "/" : path.substr(0, slash)));
}

bool path_exists(const std::string& path) {
  struct stat info {};
  return ::stat(path.c_str(), &info) == 0;
}

bool is_directory(const std::string& path) {
  struct stat info {};
  return ::stat(path.c_str(), &info) == 0 && S_ISDIR(info.st_mode);
}

bool is_regular_file(const std::string& path) {
  struct stat info {};
  return ::stat(path.c_str(), &info) == 0 && S_ISREG(info.st_mode);
}

std::optional<int64_t> file_size(const std::string& path) {
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0) return std::nullopt;
  return static_cast<int64_t>(info.st_size);
}

std::string parent_directory(const std::string& path) {
  std::string trimmed = path;
  while (trimmed.size() > 1 && trimmed.back() == '/') trimmed.pop_back();
  const size_t slash = trimmed.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return trimmed.substr(0, slash);
}

std::string base_name(const std::string& path) {
  std::string trimmed = path;
  while (trimmed.size() > 1 && trimmed.back() == '/') trimmed.pop_back();
  const size_t slash = trimmed.find_last_of('/');
  return slash == std::string::npos ? trimmed : trimmed.substr(slash + 1);
}

void make_directories(const std::string& path) {
  if (path.empty() || is_directory(path)) return;
  const std::string parent = parent_directory(path);
  if (parent != path) make_directories(parent);
  if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) throw_errno("mkdir", path);
  if (!is_directory(path)) TANDEM_THROW(kIo, "{}: exists and is not a directory", path);
}

std::vector<std::string> list_directory(const std::string& path) {
  std::vector<std::string> names;
  DIR* dir = ::opendir(path.c_str());
  if (dir == nullptr) {
    if (errno == ENOENT || errno == ENOTDIR) return names;
    throw_errno("opendir", path);
  }
  while (const dirent* entry = ::readdir(dir)) {
    const std::string_view name = entry->d_name;
    if (name != "." && name != "..") names.emplace_back(name);
  }
  ::closedir(dir);
  return names;
}

void rename_path(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) throw_errno(("rename to " + to).c_str(), from);
}

std::string remove_tree(const std::string& path) {
  struct stat info {};
  if (::lstat(path.c_str(), &info) != 0) return errno == ENOENT ? "" : path + ": " + std::strerror(errno);
  if (!S_ISDIR(info.st_mode)) return ::unlink(path.c_str()) == 0 ? "" : path + ": " + std::strerror(errno);
  // nftw's callback cannot capture: failures are detected afterwards by checking the path is gone.
  ::nftw(
      path.c_str(),
      [](const char* entry, const struct stat*, int type, struct FTW*) {
        if (type == FTW_DP) ::rmdir(entry);
        else ::unlink(entry);
        return 0;
      },
      64, FTW_DEPTH | FTW_PHYS);
  return ::lstat(path.c_str(), &info) == 0 ? path + ": could not be removed completely" : "";
}

}  // namespace tandem::runtime
