// Megatron MMIDIDX reader and writer (layout in indexed_dataset.h). Multi-byte fields in the
// mapped index are read with memcpy because the arrays start at offset 34, which is not aligned
// for int32/int64 loads. The host is little-endian, as the format is.
#include "runtime/data/indexed_dataset.h"

#include <fcntl.h>
#include <unistd.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

#include "runtime/error.h"

namespace tandem::runtime {

static_assert(std::endian::native == std::endian::little, "tandem's file formats assume a little-endian host");

namespace {

constexpr char kMagic[9] = {'M', 'M', 'I', 'D', 'I', 'D', 'X', '\0', '\0'};
constexpr size_t kHeaderBytes = 34;
constexpr uint64_t kVersion = 1;
constexpr size_t kWriteBufferBytes = size_t{1} << 20;

template <class T>
T load(const uint8_t* bytes) {
  T value;
  std::memcpy(&value, bytes, sizeof(T));
  return value;
}

template <class T>
void store(std::string& out, T value) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));
  out.append(bytes, sizeof(T));
}

// Converts n tokens of `dtype` at `src` to int64.
void convert_tokens(TokenDtype dtype, const uint8_t* src, int64_t n, int64_t* out) {
  auto run = [&](auto tag) {
    using T = decltype(tag);
    for (int64_t i = 0; i < n; ++i) out[i] = static_cast<int64_t>(load<T>(src + i * sizeof(T)));
  };
  switch (dtype) {
    case TokenDtype::kUInt8: return run(uint8_t{});
    case TokenDtype::kInt8: return run(int8_t{});
    case TokenDtype::kInt16: return run(int16_t{});
    case TokenDtype::kInt32: return run(int32_t{});
    case TokenDtype::kInt64: return run(int64_t{});
    case TokenDtype::kFloat64: return run(double{});
    case TokenDtype::kFloat32: return run(float{});
    case TokenDtype::kUInt16: return run(uint16_t{});
  }
}

void encode_token(TokenDtype dtype, int64_t value, uint8_t* dst) {
  auto put = [&](auto converted) { std::memcpy(dst, &converted, sizeof(converted)); };
  switch (dtype) {
    case TokenDtype::kUInt8: return put(static_cast<uint8_t>(value));
    case TokenDtype::kInt8: return put(static_cast<int8_t>(value));
    case TokenDtype::kInt16: return put(static_cast<int16_t>(value));
    case TokenDtype::kInt32: return put(static_cast<int32_t>(value));
    case TokenDtype::kInt64: return put(value);
    case TokenDtype::kFloat64: return put(static_cast<double>(value));
    case TokenDtype::kFloat32: return put(static_cast<float>(value));
    case TokenDtype::kUInt16: return put(static_cast<uint16_t>(value));
  }
}

}  // namespace

int64_t token_dtype_size_bytes(TokenDtype dtype) {
  switch (dtype) {
    case TokenDtype::kUInt8:
    case TokenDtype::kInt8: return 1;
    case TokenDtype::kInt16:
    case TokenDtype::kUInt16: return 2;
    case TokenDtype::kInt32:
    case TokenDtype::kFloat32: return 4;
    case TokenDtype::kInt64:
    case TokenDtype::kFloat64: return 8;
  }
  return 0;
}

std::string_view token_dtype_name(TokenDtype dtype) {
  switch (dtype) {
    case TokenDtype::kUInt8: return "uint8";
    case TokenDtype::kInt8: return "int8";
    case TokenDtype::kInt16: return "int16";
    case TokenDtype::kInt32: return "int32";
    case TokenDtype::kInt64: return "int64";
    case TokenDtype::kFloat64: return "float64";
    case TokenDtype::kFloat32: return "float32";
    case TokenDtype::kUInt16: return "uint16";
  }
  return "?";
}

std::optional<TokenDtype> token_dtype_from_code(int code) {
  if (code < 1 || code > 8) return std::nullopt;
  return static_cast<TokenDtype>(code);
}

std::optional<TokenDtype> token_dtype_from_name(std::string_view name) {
  for (int code = 1; code <= 8; ++code) {
    if (token_dtype_name(static_cast<TokenDtype>(code)) == name) return static_cast<TokenDtype>(code);
  }
  return std::nullopt;
}

bool token_dtype_is_float(TokenDtype dtype) { return dtype == TokenDtype::kFloat32 || dtype == TokenDtype::kFloat64; }

int64_t token_dtype_min_id(TokenDtype dtype) {
  switch (dtype) {
    case TokenDtype::kUInt8:
    case TokenDtype::kUInt16: return 0;
    case TokenDtype::kInt8: return std::numeric_limits<int8_t>::min();
    case TokenDtype::kInt16: return std::numeric_limits<int16_t>::min();
    case TokenDtype::kInt32: return std::numeric_limits<int32_t>::min();
    case TokenDtype::kInt64: return std::numeric_limits<int64_t>::min();
    case TokenDtype::kFloat32: return -(int64_t{1} << 24);
    case TokenDtype::kFloat64: return -(int64_t{1} << 53);
  }
  return 0;
}

int64_t token_dtype_max_id(TokenDtype dtype) {
  switch (dtype) {
    case TokenDtype::kUInt8: return std::numeric_limits<uint8_t>::max();
    case TokenDtype::kUInt16: return std::numeric_limits<uint16_t>::max();
    case TokenDtype::kInt8: return std::numeric_limits<int8_t>::max();
    case TokenDtype::kInt16: return std::numeric_limits<int16_t>::max();
    case TokenDtype::kInt32: return std::numeric_limits<int32_t>::max();
    case TokenDtype::kInt64: return std::numeric_limits<int64_t>::max();
    case TokenDtype::kFloat32: return int64_t{1} << 24;
    case TokenDtype::kFloat64: return int64_t{1} << 53;
  }
  return 0;
}

TokenDtype smallest_token_dtype(int64_t vocab_size) {
  if (vocab_size <= 256) return TokenDtype::kUInt8;
  if (vocab_size <= 65536) return TokenDtype::kUInt16;
  if (vocab_size <= (int64_t{1} << 31)) return TokenDtype::kInt32;
  return TokenDtype::kInt64;
}

// ---------------------------------------------------------------------------------------------
// Writer

IndexedDatasetWriter::IndexedDatasetWriter(std::string prefix, TokenDtype dtype)
    : prefix_(std::move(prefix)), dtype_(dtype) {
  const std::string path = prefix_ + ".bin";
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) TANDEM_THROW(kIo, "{}: cannot create: {}", path, std::strerror(errno));
  buffer_.reserve(kWriteBufferBytes);
  // A stale index from an earlier run would describe the wrong data until finish() replaces it.
  ::unlink((prefix_ + ".idx").c_str());
}

IndexedDatasetWriter::~IndexedDatasetWriter() {
  if (fd_ >= 0) ::close(fd_);
}

template <class Id>
void IndexedDatasetWriter::append(std::span<const Id> tokens) {
  TANDEM_CHECK(!finished_, "{}: add after finish()", prefix_);
  TANDEM_CHECK_INPUT(tokens.size() <= static_cast<size_t>(std::numeric_limits<int32_t>::max()),
                     "{}.bin: a sequence of {} tokens does not fit the format's int32 size field", prefix_,
                     tokens.size());
  const int64_t item = token_dtype_size_bytes(dtype_);
  const int64_t low = token_dtype_min_id(dtype_), high = token_dtype_max_id(dtype_);
  for (size_t i = 0; i < tokens.size(); ++i) {
    const int64_t value = static_cast<int64_t>(tokens[i]);
    TANDEM_CHECK_INPUT(value >= low && value <= high,
                       "{}.bin: token {} (position {} of sequence {}) does not fit dtype {} (range [{}, {}]); "
                       "choose a wider --dtype",
                       prefix_, value, i, sizes_.size(), token_dtype_name(dtype_), low, high);
    if (buffer_.size() + static_cast<size_t>(item) > kWriteBufferBytes) flush_buffer();
    const size_t at = buffer_.size();
    buffer_.resize(at + static_cast<size_t>(item));
    encode_token(dtype_, value, buffer_.data() + at);
  }
  sizes_.push_back(static_cast<int32_t>(tokens.size()));
  num_tokens_ += static_cast<int64_t>(tokens.size());
}

void IndexedDatasetWriter::add_sequence(std::span<const int64_t> tokens) { append(tokens); }
void IndexedDatasetWriter::add_sequence(std::span<const int32_t> tokens) { append(tokens); }

void IndexedDatasetWriter::end_document() { document_indices_.push_back(static_cast<int64_t>(sizes_.size())); }

void IndexedDatasetWriter::add_document(std::span<const int64_t> tokens) {
  append(tokens);
  end_document();
}

void IndexedDatasetWriter::add_document(std::span<const int32_t> tokens) {
  append(tokens);
  end_document();
}

void IndexedDatasetWriter::flush_buffer() {
  write_all(fd_, buffer_.data(), buffer_.size(), prefix_ + ".bin");
  buffer_.clear();
}

void IndexedDatasetWriter::finish() {
  TANDEM_CHECK(!finished_, "{}: finish() called twice", prefix_);
  TANDEM_CHECK(document_indices_.back() == static_cast<int64_t>(sizes_.size()),
               "{}: {} sequences were added after the last end_document()", prefix_,
               static_cast<int64_t>(sizes_.size()) - document_indices_.back());
  flush_buffer();
  fsync_fd(fd_, prefix_ + ".bin");
  ::close(std::exchange(fd_, -1));
  finished_ = true;

  std::string index;
  index.reserve(kHeaderBytes + sizes_.size() * 12 + document_indices_.size() * 8);
  index.append(kMagic, sizeof(kMagic));
  store<uint64_t>(index, kVersion);
  store<uint8_t>(index, static_cast<uint8_t>(dtype_));
  store<uint64_t>(index, sizes_.size());
  store<uint64_t>(index, document_indices_.size());
  for (const int32_t size : sizes_) store<int32_t>(index, size);
  int64_t pointer = 0;
  for (const int32_t size : sizes_) {
    store<int64_t>(index, pointer);
    pointer += int64_t{size} * token_dtype_size_bytes(dtype_);
  }
  for (const int64_t entry : document_indices_) store<int64_t>(index, entry);
  write_file_atomic(prefix_ + ".idx", index);
}

// ---------------------------------------------------------------------------------------------
// Reader

bool IndexedDataset::exists(const std::string& prefix) {
  return is_regular_file(prefix + ".bin") && is_regular_file(prefix + ".idx");
}

IndexedDataset IndexedDataset::open(const std::string& prefix, std::string_view config_key) {
  const std::string where = config_key.empty() ? std::string() : std::string(config_key) + ": ";
  for (const char* suffix : {".bin", ".idx"}) {
    const std::string path = prefix + suffix;
    TANDEM_CHECK_INPUT(is_regular_file(path),
                       "{}{} not found; run `tandem preprocess --input FILE... --output {}` first (or "
                       "scripts/prepare_data.sh for the default corpus)",
                       where, path, prefix);
  }
  IndexedDataset dataset;
  dataset.prefix_ = prefix;
  dataset.idx_ = MappedFile::open(prefix + ".idx");
  dataset.bin_ = MappedFile::open(prefix + ".bin");
  dataset.read_header();
  dataset.check_sequences();
  dataset.check_document_index();
  return dataset;
}

void IndexedDataset::read_header() {
  const std::string& idx_path = idx_.path();
  const uint8_t* idx = idx_.data();
  const size_t idx_size = idx_.size();
  TANDEM_CHECK_INPUT(idx_size >= sizeof(kMagic) && std::memcmp(idx, kMagic, sizeof(kMagic)) == 0,
                     "{}: wrong magic: not a Megatron indexed dataset (expected the bytes \"MMIDIDX\\x00\\x00\")",
                     idx_path);
  TANDEM_CHECK_INPUT(idx_size >= kHeaderBytes, "{}: truncated: {} bytes, shorter than the {}-byte header", idx_path,
                     idx_size, kHeaderBytes);
  const uint64_t version = load<uint64_t>(idx + 9);
  TANDEM_CHECK_INPUT(version == kVersion, "{}: unsupported index version {} (only version 1 exists)", idx_path,
                     version);
  const int code = idx[17];
  const std::optional<TokenDtype> dtype = token_dtype_from_code(code);
  TANDEM_CHECK_INPUT(dtype.has_value(), "{}: unsupported dtype code {} (known: 1-8)", idx_path, code);
  dtype_ = *dtype;
  const uint64_t num_sequences = load<uint64_t>(idx + 18);
  const uint64_t num_entries = load<uint64_t>(idx + 26);

  // Bound the counts by the file size before multiplying, so a corrupt header cannot overflow.
  const uint64_t body = idx_size - kHeaderBytes;
  const bool fits = num_sequences <= body / 12 && num_entries <= body / 8 &&
                    num_sequences * 12 + num_entries * 8 <= body;
  const uint64_t expected = kHeaderBytes + (fits ? num_sequences * 12 + num_entries * 8 : 0);
  TANDEM_CHECK_INPUT(fits,
                     "{}: truncated: header says {} sequences and {} document-index entries, but the file holds "
                     "only {} bytes ({} needed)",
                     idx_path, num_sequences, num_entries, idx_size,
                     num_sequences <= (uint64_t{1} << 58) && num_entries <= (uint64_t{1} << 58)
                         ? fmt::format("{}", kHeaderBytes + num_sequences * 12 + num_entries * 8)
                         : std::string("more than the file system allows"));
  TANDEM_CHECK_INPUT(idx_size == expected || idx_size == expected + num_sequences,
                     "{}: {} unexpected trailing bytes after the document index ({} sequences, {} document-index "
                     "entries); the file is corrupt or not in the MMIDIDX layout",
                     idx_path, idx_size - expected, num_sequences, num_entries);
  TANDEM_CHECK_INPUT(num_entries >= 1, "{}: the document index is empty (it must start with 0)", idx_path);
  num_sequences_ = static_cast<int64_t>(num_sequences);
  num_document_entries_ = static_cast<int64_t>(num_entries);
}

void IndexedDataset::check_sequences() {
  const int64_t item = token_dtype_size_bytes(dtype_);
  const uint64_t bin_size = bin_.size();
  int64_t tokens = 0;
  for (int64_t s = 0; s < num_sequences_; ++s) {
    const int64_t length = sequence_length(s);
    const int64_t pointer = sequence_pointer(s);
    TANDEM_CHECK_INPUT(length >= 0, "{}: sequence {} has negative size {}", idx_.path(), s, length);
    TANDEM_CHECK_INPUT(pointer >= 0 && static_cast<uint64_t>(pointer) <= bin_size &&
                           static_cast<uint64_t>(length * item) <= bin_size - static_cast<uint64_t>(pointer),
                       "{}: truncated or mismatched: sequence {} ({} tokens of {} at byte {}) ends past the end of "
                       "{} ({} bytes)",
                       idx_.path(), s, length, token_dtype_name(dtype_), pointer, bin_.path(), bin_size);
    tokens += length;
  }
  num_tokens_ = tokens;
}

void IndexedDataset::check_document_index() const {
  int64_t previous = 0;
  for (int64_t entry = 0; entry < num_document_entries_; ++entry) {
    const int64_t value = document_index(entry);
    TANDEM_CHECK_INPUT(entry > 0 || value == 0, "{}: the document index starts with {}, not 0", idx_.path(), value);
    TANDEM_CHECK_INPUT(value >= previous && value <= num_sequences_,
                       "{}: document index entry {} is {} (after {}); entries must rise from 0 to the sequence "
                       "count {}",
                       idx_.path(), entry, value, previous, num_sequences_);
    previous = value;
  }
  TANDEM_CHECK_INPUT(previous == num_sequences_,
                     "{}: the document index ends at sequence {} but the file has {} sequences", idx_.path(), previous,
                     num_sequences_);
}

int64_t IndexedDataset::load_i64(size_t byte_offset) const { return load<int64_t>(idx_.data() + byte_offset); }

int64_t IndexedDataset::sequence_length(int64_t sequence) const {
  TANDEM_CHECK(sequence >= 0 && sequence < num_sequences_, "sequence {} out of range [0, {})", sequence,
               num_sequences_);
  return load<int32_t>(idx_.data() + kHeaderBytes + static_cast<size_t>(sequence) * 4);
}

int64_t IndexedDataset::sequence_pointer(int64_t sequence) const {
  TANDEM_CHECK(sequence >= 0 && sequence < num_sequences_, "sequence {} out of range [0, {})", sequence,
               num_sequences_);
  return load_i64(kHeaderBytes + static_cast<size_t>(num_sequences_) * 4 + static_cast<size_t>(sequence) * 8);
}

int64_t IndexedDataset::document_index(int64_t entry) const {
  TANDEM_CHECK(entry >= 0 && entry < num_document_entries_, "document index entry {} out of range [0, {})", entry,
               num_document_entries_);
  return load_i64(kHeaderBytes + static_cast<size_t>(num_sequences_) * 12 + static_cast<size_t>(entry) * 8);
}

void IndexedDataset::read_tokens(int64_t sequence, int64_t offset, int64_t count, int64_t* out) const {
  const int64_t length = sequence_length(sequence);
  TANDEM_CHECK(offset >= 0 && count >= 0 && offset + count <= length,
               "tokens [{}, {}) outside sequence {} of length {}", offset, offset + count, sequence, length);
  const int64_t item = token_dtype_size_bytes(dtype_);
  convert_tokens(dtype_, bin_.data() + sequence_pointer(sequence) + offset * item, count, out);
}

std::vector<int64_t> IndexedDataset::sequence_tokens(int64_t sequence) const {
  std::vector<int64_t> tokens(static_cast<size_t>(sequence_length(sequence)));
  read_tokens(sequence, 0, static_cast<int64_t>(tokens.size()), tokens.data());
  return tokens;
}

CorpusStats compute_corpus_stats(const IndexedDataset& dataset, int64_t max_id_exclusive) {
  CorpusStats stats;
  stats.num_documents = dataset.num_documents();
  stats.num_tokens = dataset.num_tokens();
  std::vector<int64_t> counts;
  std::vector<int64_t> chunk;
  int64_t shortest = std::numeric_limits<int64_t>::max();
  for (int64_t d = 0; d < dataset.num_documents(); ++d) {
    int64_t document_tokens = 0;
    for (int64_t s = dataset.document_index(d); s < dataset.document_index(d + 1); ++s) {
      chunk.resize(static_cast<size_t>(dataset.sequence_length(s)));
      dataset.read_tokens(s, 0, static_cast<int64_t>(chunk.size()), chunk.data());
      for (const int64_t token : chunk) {
        TANDEM_CHECK_INPUT(token >= 0 && token < max_id_exclusive, "{}: token {} in sequence {} is outside [0, {})",
                           dataset.bin_path(), token, s, max_id_exclusive);
        if (static_cast<size_t>(token) >= counts.size()) counts.resize(static_cast<size_t>(token) + 1, 0);
        ++counts[static_cast<size_t>(token)];
      }
      document_tokens += static_cast<int64_t>(chunk.size());
    }
    stats.longest_document = std::max(stats.longest_document, document_tokens);
    shortest = std::min(shortest, document_tokens);
  }
  stats.shortest_document = stats.num_documents > 0 ? shortest : 0;
  auto entropy = [](const std::vector<int64_t>& histogram, int64_t extra) {
    double total = static_cast<double>(extra);
    for (const int64_t count : histogram) total += static_cast<double>(count);
    double bits = 0;
    auto add = [&](int64_t count) {
      if (count <= 0) return;
      const double p = static_cast<double>(count) / total;
      bits -= p * std::log2(p);
    };
    for (const int64_t count : histogram) add(count);
    add(extra);
    return total > 0 ? bits : 0.0;
  };
  stats.entropy_bits_per_token = entropy(counts, 0);
  // EOD is a token id of its own that never occurs in the stored data.
  stats.stream_entropy_bits_per_token = entropy(counts, stats.num_documents);
  return stats;
}

}  // namespace tandem::runtime
