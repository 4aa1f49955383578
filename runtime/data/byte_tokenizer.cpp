// Byte tokenizer: bytes map to themselves; the three special ids have fixed text forms.
#include "runtime/data/byte_tokenizer.h"

#include "runtime/error.h"

namespace tandem::runtime {
namespace {

const char* special_text(int64_t id) {
  switch (id) {
    case ByteTokenizer::kBos: return "<|bos|>";
    case ByteTokenizer::kEod: return "<|eod|>";
    case ByteTokenizer::kPad: return "<|pad|>";
    default: return "";
  }
}

template <class Id>
std::string decode_ids(std::span<const Id> ids, bool skip_special) {
  std::string text;
  text.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    const int64_t id = static_cast<int64_t>(ids[i]);
    TANDEM_CHECK_INPUT(id >= 0 && id < ByteTokenizer::kVocabSize,
                       "byte tokenizer: token id {} at position {} is outside the vocabulary [0, {})", id, i,
                       ByteTokenizer::kVocabSize);
    if (id < 256) {
      text.push_back(static_cast<char>(static_cast<uint8_t>(id)));
    } else if (!skip_special) {
      text += special_text(id);
    }
  }
  return text;
}

}  // namespace

std::vector<int32_t> ByteTokenizer::encode(std::string_view text, bool add_bos, bool add_eod) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() + 2);
  if (add_bos) ids.push_back(static_cast<int32_t>(kBos));
  for (const char c : text) ids.push_back(static_cast<int32_t>(static_cast<uint8_t>(c)));
  if (add_eod) ids.push_back(static_cast<int32_t>(kEod));
  return ids;
}

std::string ByteTokenizer::decode(std::span<const int64_t> ids, bool skip_special) const {
  return decode_ids(ids, skip_special);
}

std::string ByteTokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  return decode_ids(ids, skip_special);
}

std::string ByteTokenizer::token_name(int64_t id) {
  if (is_special(id)) return special_text(id);
  if (id >= 0x20 && id < 0x7f) return fmt::format("'{}'", static_cast<char>(id));
  if (id >= 0 && id < 256) return fmt::format("0x{:02x}", id);
  return fmt::format("<invalid {}>", id);
}

}  // namespace tandem::runtime
