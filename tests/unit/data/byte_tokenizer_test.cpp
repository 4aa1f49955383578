// Byte tokenizer: ids, special tokens, lossless round trip of arbitrary bytes, bad ids.
#include <gtest/gtest.h>

#include "runtime/data/byte_tokenizer.h"
#include "runtime/error.h"

namespace tandem::runtime {
namespace {

TEST(ByteTokenizer, EncodesBytesAsIdsAndFramesWithSpecials) {
  const ByteTokenizer tokenizer;
  EXPECT_EQ(tokenizer.encode("Hi\n"), (std::vector<int32_t>{72, 105, 10}));
  EXPECT_EQ(tokenizer.encode("a", true, true), (std::vector<int32_t>{256, 97, 257}));
  EXPECT_EQ(ByteTokenizer::kVocabSize, 259);
  EXPECT_EQ(ByteTokenizer::kPad, 258);
  // UTF-8 text becomes its bytes: "é" is 0xC3 0xA9.
  EXPECT_EQ(tokenizer.encode("\xC3\xA9"), (std::vector<int32_t>{0xC3, 0xA9}));
}

TEST(ByteTokenizer, RoundTripsEveryByte) {
  const ByteTokenizer tokenizer;
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  const std::vector<int32_t> ids = tokenizer.encode(all);
  ASSERT_EQ(ids.size(), 256u);
  EXPECT_EQ(tokenizer.decode(ids), all);
}

TEST(ByteTokenizer, DecodesSpecialsAsTextOrSkipsThem) {
  const ByteTokenizer tokenizer;
  const std::vector<int64_t> ids = {256, 111, 107, 257, 258};
  EXPECT_EQ(tokenizer.decode(ids), "<|bos|>ok<|eod|><|pad|>");
  EXPECT_EQ(tokenizer.decode(ids, /*skip_special=*/true), "ok");
  EXPECT_EQ(ByteTokenizer::token_name(257), "<|eod|>");
  EXPECT_EQ(ByteTokenizer::token_name('a'), "'a'");
  EXPECT_EQ(ByteTokenizer::token_name(10), "0x0a");
}

TEST(ByteTokenizer, RejectsIdsOutsideTheVocabulary) {
  const ByteTokenizer tokenizer;
  const std::vector<int64_t> ids = {65, 259};
  try {
    tokenizer.decode(ids);
    FAIL() << "decode accepted id 259";
  } catch (const Error& error) {
    EXPECT_EQ(error.kind(), ErrorKind::kInput);
    EXPECT_NE(error.message().find("259"), std::string::npos) << error.message();
  }
}

}  // namespace
}  // namespace tandem::runtime
