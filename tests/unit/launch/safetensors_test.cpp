// Safetensors: what the writer produces is read back bit for bit, its layout is the one the
// format prescribes (8-byte little-endian length, space-padded JSON, offsets tiling the data),
// and the strict reader rejects every malformed file with a message naming the fault.
#include <gtest/gtest.h>

#include <cstring>

#include "launch/export/safetensors.h"
#include "runtime/error.h"
#include "runtime_test_util.h"

namespace tandem::launch {
namespace {

using runtime::testing::slurp;
using runtime::testing::spit;
using runtime::testing::TempDir;

std::string le64(uint64_t value) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<char>((value >> (8 * i)) & 0xff);
  return out;
}

// A file from a header and data, as another writer might produce it.
std::string raw_file(const std::string& header, const std::string& data) { return le64(header.size()) + header + data; }

void expect_rejected(const TempDir& dir, const std::string& bytes, const std::string& fragment) {
  const std::string path = dir / "bad.safetensors";
  spit(path, bytes);
  try {
    SafetensorsFile::open(path);
    ADD_FAILURE() << "accepted a file that should fail with '" << fragment << "'";
  } catch (const Error& error) {
    EXPECT_EQ(error.kind(), ErrorKind::kInput);
    EXPECT_NE(std::string(error.what()).find(fragment), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find(path), std::string::npos) << error.what();
  }
}

TEST(Safetensors, WriterOutputReadsBackExactly) {
  TempDir dir;
  const std::vector<float> weights = {1.5f, -2.25f, 3.0f, 0.0f, 1e-30f, -7.0f};
  const std::vector<uint16_t> halves = {0x3f80, 0xbf80, 0x7f80};  // bf16 1, -1, inf
  const int64_t count = 123456789012345;
  const std::string path = dir / "x.safetensors";
  SafetensorsWriter writer(
      path, {{"model.w", "F32", {2, 3}}, {"model.h", "BF16", {3}}, {"step", "I64", {}}, {"empty", "F32", {0, 4}}},
      {{"format", "pt"}, {"note", "quote \" and \\ backslash"}});
  writer.write("model.w", weights.data(), 24);
  writer.write("model.h", halves.data(), 6);
  writer.write("step", &count, 8);
  writer.write("empty", nullptr, 0);
  writer.finish();

  const std::string bytes = slurp(path);
  EXPECT_EQ(static_cast<int64_t>(bytes.size()), writer.file_size_bytes());
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | static_cast<uint8_t>(bytes[static_cast<size_t>(i)]);
  EXPECT_EQ(header_size % 8, 0u) << "data must start 8-byte aligned";
  EXPECT_EQ(bytes[8], '{');
  EXPECT_EQ(bytes.size(), 8 + header_size + 24 + 6 + 8);

  const SafetensorsFile file = SafetensorsFile::open(path);
  ASSERT_EQ(file.tensors().size(), 4u);
  EXPECT_EQ(file.metadata().at("format"), "pt");
  EXPECT_EQ(file.metadata().at("note"), "quote \" and \\ backslash");
  const SafetensorsTensor* w = file.find("model.w");
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->dtype, "F32");
  EXPECT_EQ(w->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(w->begin, 0);
  EXPECT_EQ(w->end, 24);
  EXPECT_EQ(std::memcmp(file.data(*w), weights.data(), 24), 0);
  EXPECT_EQ(std::memcmp(file.data(*file.find("model.h")), halves.data(), 6), 0);
  int64_t read_count = 0;
  std::memcpy(&read_count, file.data(*file.find("step")), 8);
  EXPECT_EQ(read_count, count);
  EXPECT_TRUE(file.find("step")->shape.empty());
  EXPECT_EQ(file.find("empty")->size_bytes(), 0);
  EXPECT_EQ(file.find("missing"), nullptr);
}

TEST(Safetensors, WriterRejectsOutOfOrderOrWrongSizes) {
  TempDir dir;
  SafetensorsWriter writer(dir / "x.safetensors", {{"a", "F32", {2}}, {"b", "F32", {1}}}, {});
  const float values[2] = {1, 2};
  EXPECT_THROW(writer.write("b", values, 4), Error);
  EXPECT_THROW(writer.write("a", values, 4), Error);
  writer.write("a", values, 8);
  EXPECT_THROW(writer.finish(), Error);  // b missing
  EXPECT_THROW(SafetensorsWriter(dir / "y.safetensors", {{"a", "F32", {1}}, {"a", "F32", {1}}}, {}), Error);
  EXPECT_THROW(SafetensorsWriter(dir / "z.safetensors", {{"a", "Q4", {1}}}, {}), Error);
}

TEST(Safetensors, StrictReaderRejectsMalformedFiles) {
  TempDir dir;
  const std::string four(4, '\x01'), eight(8, '\x02');
  // Accepted as a baseline: one F32 scalar, unpadded header (other writers may not pad).
  spit(dir / "good.safetensors", raw_file(R"({"a":{"dtype":"F32","shape":[],"data_offsets":[0,4]}})", four));
  EXPECT_NO_THROW(SafetensorsFile::open(dir / "good.safetensors"));

  expect_rejected(dir, "abc", "too short");
  expect_rejected(dir, le64(1000) + "{}", "does not fit the file");
  expect_rejected(dir, raw_file(R"({"a":{"dtype":"F32","shape":[],"data_offsets":[0,4]}})", four + "x"),
                  "cover 4 of the 5 data bytes");
  expect_rejected(dir, raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", four),
                  "4 bytes for shape [2] of F32 (expected 8)");
  expect_rejected(dir,
                  raw_file(R"({"a":{"dtype":"F32","shape":[],"data_offsets":[4,8]},)"
                           R"("b":{"dtype":"F32","shape":[],"data_offsets":[4,8]}})",
                           eight),
                  "starts at data offset 4 but the previous tensor ends at 0 (a gap)");
  expect_rejected(dir,
                  raw_file(R"({"a":{"dtype":"F32","shape":[],"data_offsets":[0,4]},)"
                           R"("b":{"dtype":"I16","shape":[2],"data_offsets":[2,6]}})",
                           eight),
                  "(an overlap)");
  expect_rejected(dir, raw_file(R"({"a":{"dtype":"F12","shape":[],"data_offsets":[0,4]}})", four), "unknown dtype");
  expect_rejected(dir, raw_file(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", four),
                  "non-negative integer");
  expect_rejected(dir, raw_file(R"({"a":{"dtype":"F32","shape":[],"data_offsets":[0,4],"extra":1}})", four),
                  "unknown field 'extra'");
  expect_rejected(dir, raw_file(R"({"a":{"dtype":"F32","shape":[]}})", four), "needs dtype, shape and data_offsets");
  expect_rejected(dir,
                  raw_file(R"({"a":{"dtype":"F32","shape":[],"data_offsets":[0,4]},)"
                           R"("a":{"dtype":"F32","shape":[],"data_offsets":[0,4]}})",
                           four),
                  "appears twice");
  expect_rejected(dir, raw_file(R"({"a":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}x   )", four),
                  "other than space padding");
  expect_rejected(dir, raw_file(R"({"a":{"dtype":"F32","shape":[],"data_offsets":[0,4]})", four), "not valid JSON");
  expect_rejected(dir, raw_file(R"({"__metadata__":{"k":1}})", ""), "is not a string");
}

TEST(Safetensors, IndexJsonListsEveryTensor) {
  const std::string index = safetensors_index_json(
      96, {{"b", "model-00002-of-00002.safetensors"}, {"a", "model-00001-of-00002.safetensors"}});
  EXPECT_NE(index.find("\"total_size\": 96"), std::string::npos) << index;
  EXPECT_LT(index.find("\"a\": \"model-00001-of-00002.safetensors\""),
            index.find("\"b\": \"model-00002-of-00002.safetensors\""));
}

}  // namespace
}  // namespace tandem::launch
