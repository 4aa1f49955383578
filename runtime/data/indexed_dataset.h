// Megatron-Core compatible indexed datasets: a `.bin` file of raw little-endian tokens and an
// `.idx` file describing it (the "MMIDIDX" format read by megatron/core/datasets/
// indexed_dataset.py). Layout of PREFIX.idx, verified against Megatron-Core's _IndexWriter /
// _IndexReader / IndexedDatasetBuilder, all integers little-endian, no padding:
//   offset 0   9 bytes  magic "MMIDIDX\x00\x00"
//   offset 9   <Q       version, always 1
//   offset 17  <B       dtype code: 1 uint8, 2 int8, 3 int16, 4 int32, 5 int64, 6 float64,
//                       7 float32, 8 uint16
//   offset 18  <Q       sequence count S
//   offset 26  <Q       document-index length D+1 (Megatron calls it document_count: it is the
//                       length of the document_indices array, which holds a leading 0)
//   offset 34  int32    sizes[S]             tokens per sequence
//              int64    pointers[S]          byte offset of each sequence in PREFIX.bin
//              int64    document_indices[D+1] 0, then after each document the number of
//                                            sequences written so far (last entry == S)
//   (Megatron's multimodal variant appends int8 modes[S]; the reader accepts and ignores them.)
// PREFIX.bin holds the sequences back to back, tokens of the dtype above. Document d is the run of
// sequences [document_indices[d], document_indices[d+1]). `tandem preprocess` writes one sequence
// per document and no EOD tokens (the sampler inserts EOD between documents).
// The reader maps both files read-only and validates every bound at open, so a bad or truncated
// file is a clear kInput error naming the file, never a crash later.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/file_util.h"

namespace tandem::runtime {

enum class TokenDtype : uint8_t {
  kUInt8 = 1,
  kInt8 = 2,
  kInt16 = 3,
  kInt32 = 4,
  kInt64 = 5,
  kFloat64 = 6,
  kFloat32 = 7,
  kUInt16 = 8,
};

int64_t token_dtype_size_bytes(TokenDtype dtype);
std::string_view token_dtype_name(TokenDtype dtype);  // numpy's names: "uint16", "float32", ...
std::optional<TokenDtype> token_dtype_from_name(std::string_view name);
std::optional<TokenDtype> token_dtype_from_code(int code);
bool token_dtype_is_float(TokenDtype dtype);
// Inclusive range of integer ids the dtype stores exactly (uint16: [0, 65535]; float32: +-2^24).
int64_t token_dtype_min_id(TokenDtype dtype);
int64_t token_dtype_max_id(TokenDtype dtype);
// The smallest unsigned/integer dtype that holds ids [0, vocab_size): uint8, uint16, int32, int64.
TokenDtype smallest_token_dtype(int64_t vocab_size);

// Writes PREFIX.bin while documents are added and PREFIX.idx in finish(). Not thread-safe.
// Until finish() returns no PREFIX.idx exists (it is written atomically), so an interrupted
// preprocess leaves a dataset that fails to open instead of a silently short one.
class IndexedDatasetWriter {
 public:
  // Creates (truncates) PREFIX.bin; the parent directory must exist. Throws kIo.
  IndexedDatasetWriter(std::string prefix, TokenDtype dtype);
  ~IndexedDatasetWriter();
  IndexedDatasetWriter(const IndexedDatasetWriter&) = delete;
  IndexedDatasetWriter& operator=(const IndexedDatasetWriter&) = delete;

  // Appends one sequence to the current document. Throws kInput naming the token and its
  // position when a value is outside the dtype's exact range; kIo on write failure.
  void add_sequence(std::span<const int64_t> tokens);
  void add_sequence(std::span<const int32_t> tokens);
  // Closes the current document (it may hold zero sequences, as in Megatron).
  void end_document();
  // add_sequence + end_document.
  void add_document(std::span<const int64_t> tokens);
  void add_document(std::span<const int32_t> tokens);

  // Flushes and fsyncs PREFIX.bin, writes PREFIX.idx. Sequences added after the last
  // end_document() are a caller bug (kInternal). Throws kIo. Calling it twice is a bug.
  void finish();

  int64_t num_sequences() const { return static_cast<int64_t>(sizes_.size()); }
  int64_t num_documents() const { return static_cast<int64_t>(document_indices_.size()) - 1; }
  int64_t num_tokens() const { return num_tokens_; }
  const std::string& prefix() const { return prefix_; }

 private:
  template <class Id>
  void append(std::span<const Id> tokens);
  void flush_buffer();

  std::string prefix_;
  TokenDtype dtype_;
  int fd_ = -1;
  bool finished_ = false;
  std::vector<uint8_t> buffer_;
  std::vector<int32_t> sizes_;
  std::vector<int64_t> document_indices_{0};
  int64_t num_tokens_ = 0;
};

// Read-only view of a dataset. Move-only; cheap to query; thread-safe for concurrent reads.
class IndexedDataset {
 public:
  // Maps PREFIX.bin and PREFIX.idx and validates them. `config_key` (e.g. "data.path") prefixes
  // the error for missing files. Throws kInput for a missing, truncated or malformed dataset
  // (the message names the file and what is wrong), kIo when a file cannot be read.
  static IndexedDataset open(const std::string& prefix, std::string_view config_key = {});

  // True when both PREFIX.bin and PREFIX.idx exist.
  static bool exists(const std::string& prefix);

  const std::string& prefix() const { return prefix_; }
  std::string bin_path() const { return prefix_ + ".bin"; }
  std::string idx_path() const { return prefix_ + ".idx"; }
  TokenDtype dtype() const { return dtype_; }
  int64_t num_sequences() const { return num_sequences_; }
  int64_t num_documents() const { return num_document_entries_ - 1; }
  int64_t num_tokens() const { return num_tokens_; }

  // Accessors of the index arrays; arguments must be in range (checked: kInternal).
  int64_t sequence_length(int64_t sequence) const;
  int64_t sequence_pointer(int64_t sequence) const;  // bytes into PREFIX.bin
  int64_t document_index(int64_t entry) const;       // entry in [0, num_documents()]

  // Copies tokens [offset, offset + count) of `sequence`, converted to int64, into `out`.
  // The range must lie inside the sequence (kInternal otherwise).
  void read_tokens(int64_t sequence, int64_t offset, int64_t count, int64_t* out) const;
  std::vector<int64_t> sequence_tokens(int64_t sequence) const;

 private:
  IndexedDataset() = default;
  // The validation steps of open(): the .idx header (dtype and counts), every sequence inside the
  // .bin (and the token count), the document index rising from 0 to the sequence count.
  void read_header();
  void check_sequences();
  void check_document_index() const;
  int64_t load_i64(size_t byte_offset) const;

  std::string prefix_;
  MappedFile idx_;
  MappedFile bin_;
  TokenDtype dtype_ = TokenDtype::kUInt16;
  int64_t num_sequences_ = 0;
  int64_t num_document_entries_ = 0;
  int64_t num_tokens_ = 0;
};

// Token statistics of a whole dataset (one pass over PREFIX.bin).
struct CorpusStats {
  int64_t num_documents = 0;
  int64_t num_tokens = 0;        // tokens stored (no EOD)
  int64_t longest_document = 0;  // tokens
  int64_t shortest_document = 0;
  double entropy_bits_per_token = 0;  // unigram entropy of the stored tokens
  // Unigram entropy of the training stream, i.e. with one EOD after each document; its value in
  // nats is the loss of a model that predicts only token frequencies.
  double stream_entropy_bits_per_token = 0;
};
// Throws kInput when a token is negative or >= max_id_exclusive (e.g. 2^20).
CorpusStats compute_corpus_stats(const IndexedDataset& dataset, int64_t max_id_exclusive = int64_t{1} << 20);

}  // namespace tandem::runtime
