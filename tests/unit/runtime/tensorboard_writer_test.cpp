// TensorBoard event files: every record's framing and both masked CRCs are checked by reading
// the file back, and the Event protobufs are decoded by a small wire-format parser written here
// against TensorFlow's field numbers (independent of the generated code the writer uses).
#include <gtest/gtest.h>

#include <cstring>
#include <map>

#include "runtime/crc32c.h"
#include "runtime/error.h"
#include "runtime/file_util.h"
#include "runtime/tensorboard_writer.h"
#include "runtime_test_util.h"

namespace tandem::runtime {
namespace {

using testing::TempDir;

// Minimal protobuf wire-format reader: (field number, wire type, payload) triples.
struct Field {
  int number = 0;
  int wire_type = 0;
  uint64_t varint = 0;
  std::string bytes;  // length-delimited payload, or the raw 4/8 bytes of fixed32/fixed64
};

uint64_t read_varint(const std::string& data, size_t& at) {
  uint64_t value = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    const uint8_t byte = static_cast<uint8_t>(data.at(at++));
    value |= static_cast<uint64_t>(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) return value;
  }
  ADD_FAILURE() << "varint too long";
  return value;
}

std::vector<Field> parse_fields(const std::string& data) {
  std::vector<Field> fields;
  size_t at = 0;
  while (at < data.size()) {
    const uint64_t key = read_varint(data, at);
    Field field{static_cast<int>(key >> 3), static_cast<int>(key & 7)};
    switch (field.wire_type) {
      case 0: field.varint = read_varint(data, at); break;
      case 1:
        field.bytes = data.substr(at, 8);
        at += 8;
        break;
      case 2: {
        const uint64_t length = read_varint(data, at);
        field.bytes = data.substr(at, length);
        at += length;
        break;
      }
      case 5:
        field.bytes = data.substr(at, 4);
        at += 4;
        break;
      default: ADD_FAILURE() << "unexpected wire type " << field.wire_type; return fields;
    }
    fields.push_back(field);
  }
  EXPECT_EQ(at, data.size());
  return fields;
}

struct DecodedEvent {
  double wall_time = 0;
  int64_t step = 0;
  std::string file_version;
  int64_t session_status = 0;  // SessionLog.status; 1 = START
  std::vector<std::pair<std::string, float>> scalars;
};

// Event{double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5;
// SessionLog session_log = 6}; SessionLog{SessionStatus status = 1}.
// Summary{repeated Value value = 1}; Value{string tag = 1; float simple_value = 2}.
DecodedEvent decode_event(const std::string& data) {
  DecodedEvent event;
  for (const Field& field : parse_fields(data)) {
    if (field.number == 1 && field.wire_type == 1) std::memcpy(&event.wall_time, field.bytes.data(), 8);
    else if (field.number == 2 && field.wire_type == 0) event.step = static_cast<int64_t>(field.varint);
    else if (field.number == 3 && field.wire_type == 2) event.file_version = field.bytes;
    else if (field.number == 6 && field.wire_type == 2) {
      for (const Field& part : parse_fields(field.bytes)) {
        if (part.number == 1 && part.wire_type == 0) event.session_status = static_cast<int64_t>(part.varint);
      }
    } else if (field.number == 5 && field.wire_type == 2) {
      for (const Field& value : parse_fields(field.bytes)) {
        EXPECT_EQ(value.number, 1);
        std::string tag;
        float simple = -1;
        bool has_simple = false;
        for (const Field& part : parse_fields(value.bytes)) {
          if (part.number == 1 && part.wire_type == 2) tag = part.bytes;
          if (part.number == 2 && part.wire_type == 5) {
            std::memcpy(&simple, part.bytes.data(), 4);
            has_simple = true;
          }
        }
        EXPECT_TRUE(has_simple) << "simple_value of " << tag << " must be present, even when 0";
        event.scalars.emplace_back(tag, simple);
      }
    } else {
      ADD_FAILURE() << "unexpected field " << field.number << " wire type " << field.wire_type;
    }
  }
  return event;
}

TEST(TensorBoardWriter, WritesCheckedRecordsThatDecodeAsEvents) {
  TempDir dir;
  std::string path;
  {
    TensorBoardWriter writer(dir / "tb", "testhost");
    writer.add_scalars(1, {{"train/loss", 5.5}, {"train/lr", 0.0}});
    writer.add_scalar(2, "train/loss", 4.25);
    writer.flush();
    path = writer.path();
  }
  const std::string name = base_name(path);
  EXPECT_EQ(name.rfind("events.out.tfevents.", 0), 0u) << name;
  EXPECT_EQ(name.substr(name.size() - 9), ".testhost") << name;

  const std::vector<std::string> records = read_tfrecords(path);  // checks every CRC
  ASSERT_EQ(records.size(), 3u);
  const DecodedEvent header = decode_event(records[0]);
  EXPECT_EQ(header.file_version, "brain.Event:2");
  EXPECT_GT(header.wall_time, 1.6e9);
  const DecodedEvent first = decode_event(records[1]);
  EXPECT_EQ(first.step, 1);
  ASSERT_EQ(first.scalars.size(), 2u);
  EXPECT_EQ(first.scalars[0], (std::pair<std::string, float>("train/loss", 5.5f)));
  EXPECT_EQ(first.scalars[1], (std::pair<std::string, float>("train/lr", 0.0f)));
  const DecodedEvent second = decode_event(records[2]);
  EXPECT_EQ(second.step, 2);
  ASSERT_EQ(second.scalars.size(), 1u);
  EXPECT_EQ(second.scalars[0].second, 4.25f);

  // The framing by hand: length, masked CRC of the length bytes, data, masked CRC of the data.
  const std::string bytes = testing::slurp(path);
  uint64_t length = 0;
  std::memcpy(&length, bytes.data(), 8);
  EXPECT_EQ(length, records[0].size());
  uint32_t length_crc = 0, data_crc = 0;
  std::memcpy(&length_crc, bytes.data() + 8, 4);
  std::memcpy(&data_crc, bytes.data() + 12 + length, 4);
  EXPECT_EQ(length_crc, mask_crc32c(crc32c(bytes.data(), 8)));
  EXPECT_EQ(data_crc, mask_crc32c(crc32c(records[0])));
}

TEST(TensorBoardWriter, SessionStartMarksARestartAtItsStep) {
  TempDir dir;
  std::string path;
  {
    TensorBoardWriter writer(dir.path(), "h");
    writer.add_session_start(11);
    writer.add_scalar(11, "train/loss", 3.0);
    writer.flush();
    path = writer.path();
  }
  const std::vector<std::string> records = read_tfrecords(path);
  ASSERT_EQ(records.size(), 3u);
  const DecodedEvent start = decode_event(records[1]);
  EXPECT_EQ(start.step, 11);
  EXPECT_EQ(start.session_status, 1) << "SessionLog.START, which TensorBoard purges later steps on";
  EXPECT_TRUE(start.scalars.empty());
}

TEST(TensorBoardWriter, TwoWritersInOneSecondGetTwoFiles) {
  TempDir dir;
  TensorBoardWriter first(dir.path(), "h");
  TensorBoardWriter second(dir.path(), "h");
  EXPECT_NE(first.path(), second.path());
}

TEST(TensorBoardWriter, ReaderDetectsCorruptionAndTruncation) {
  TempDir dir;
  std::string path;
  {
    TensorBoardWriter writer(dir / "tb", "h");
    writer.add_scalar(7, "x", 1.0);
    path = writer.path();
  }
  const std::string good = testing::slurp(path);
  testing::flip_byte(path, -6);  // inside the last record's data
  try {
    read_tfrecords(path);
    FAIL() << "corruption not detected";
  } catch (const Error& error) {
    EXPECT_EQ(error.kind(), ErrorKind::kInput);
    EXPECT_NE(error.message().find("record 1"), std::string::npos) << error.message();
    EXPECT_NE(error.message().find("data's CRC does not match"), std::string::npos) << error.message();
  }
  testing::spit(path, good.substr(0, good.size() - 3));
  EXPECT_THROW(read_tfrecords(path), Error);
}

TEST(TensorBoardWriter, FramesAnEmptyRecord) {
  const std::string record = frame_tfrecord("");
  ASSERT_EQ(record.size(), 16u);
  uint32_t data_crc = 0;
  std::memcpy(&data_crc, record.data() + 12, 4);
  EXPECT_EQ(data_crc, mask_crc32c(0));
}

}  // namespace
}  // namespace tandem::runtime
