// CRC-32C against published test vectors (RFC 3720 appendix B.4, the "123456789" check value),
// chaining, agreement of the hardware and portable paths, and TFRecord's CRC mask.
#include <gtest/gtest.h>

#include <numeric>
#include <string>
#include <vector>

#include "runtime/crc32c.h"

namespace tandem::runtime {
namespace {

TEST(Crc32c, CheckValueAndRfc3720Vectors) {
  EXPECT_EQ(crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(crc32c(""), 0u);
  std::vector<uint8_t> bytes(32, 0x00);
  EXPECT_EQ(crc32c(bytes.data(), bytes.size()), 0x8A9136AAu);
  std::fill(bytes.begin(), bytes.end(), 0xFF);
  EXPECT_EQ(crc32c(bytes.data(), bytes.size()), 0x62A8AB43u);
  std::iota(bytes.begin(), bytes.end(), 0);
  EXPECT_EQ(crc32c(bytes.data(), bytes.size()), 0x46DD794Eu);
  for (size_t i = 0; i < 32; ++i) bytes[i] = static_cast<uint8_t>(31 - i);
  EXPECT_EQ(crc32c(bytes.data(), bytes.size()), 0x113FDB5Cu);
  EXPECT_EQ(crc32c_extend_portable(0, "123456789", 9), 0xE3069283u);
}

TEST(Crc32c, ExtendEqualsCrcOfConcatenation) {
  std::string text;
  for (int i = 0; i < 1000; ++i) text.push_back(static_cast<char>((i * 7919) % 251));
  for (size_t split : {size_t{0}, size_t{1}, size_t{7}, size_t{8}, size_t{500}, size_t{999}, size_t{1000}}) {
    const uint32_t first = crc32c(text.data(), split);
    EXPECT_EQ(crc32c_extend(first, text.data() + split, text.size() - split), crc32c(text)) << "split " << split;
  }
}

TEST(Crc32c, HardwareAndPortablePathsAgreeOnEveryLengthAndAlignment) {
  std::string text(300, '\0');
  for (size_t i = 0; i < text.size(); ++i) text[i] = static_cast<char>((i * 131 + 17) & 0xff);
  for (size_t start = 0; start < 9; ++start) {
    for (size_t length = 0; start + length <= text.size(); length += 13) {
      EXPECT_EQ(crc32c_extend(0x12345678u, text.data() + start, length),
                crc32c_extend_portable(0x12345678u, text.data() + start, length))
          << "start " << start << " length " << length;
    }
  }
  SUCCEED() << (crc32c_is_hardware_accelerated() ? "SSE4.2 path compared" : "no SSE4.2: portable path only");
}

TEST(Crc32c, TfRecordMask) {
  EXPECT_EQ(mask_crc32c(0), 0xa282ead8u);
  EXPECT_EQ(mask_crc32c(0xE3069283u), 0xc78ab0e5u);  // ((c >> 15) | (c << 17)) + 0xa282ead8, by hand
  for (uint32_t value : {0u, 1u, 0xE3069283u, 0xffffffffu, 0x80000000u}) {
    EXPECT_EQ(unmask_crc32c(mask_crc32c(value)), value);
  }
}

}  // namespace
}  // namespace tandem::runtime
