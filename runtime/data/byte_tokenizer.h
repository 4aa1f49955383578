// The byte-level tokenizer of the default job: token ids 0-255 are the bytes of the UTF-8 text,
// then three special tokens (BOS 256, EOD 257, PAD 258), 259 ids in all; models round the
// embedding up (e.g. to 320) for efficient matmuls. Encoding is lossless for any byte string,
// so decode(encode(text)) == text. Stateless: all members are const and thread-safe.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tandem::runtime {

class ByteTokenizer {
 public:
  static constexpr int64_t kBos = 256;  // beginning of sequence (not written by preprocess)
  static constexpr int64_t kEod = 257;  // end of document: the sampler puts one after each document
  static constexpr int64_t kPad = 258;  // padding (never a training target)
  static constexpr int64_t kVocabSize = 259;

  // Token ids of `text`, optionally framed by BOS/EOD. Never throws.
  std::vector<int32_t> encode(std::string_view text, bool add_bos = false, bool add_eod = false) const;

  // Text of `ids`. Byte ids become the bytes; special ids are dropped when `skip_special`, else
  // rendered as "<|bos|>", "<|eod|>", "<|pad|>". Throws kInput for an id outside [0, kVocabSize).
  std::string decode(std::span<const int64_t> ids, bool skip_special = false) const;
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;

  // "<|eod|>" for kEod, "'a'" / "0x0a" for bytes (for logs and error messages).
  static std::string token_name(int64_t id);

  static constexpr bool is_special(int64_t id) { return id >= kBos && id < kVocabSize; }
  static constexpr int64_t vocab_size() { return kVocabSize; }
};

}  // namespace tandem::runtime
