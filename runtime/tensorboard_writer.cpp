// TFRecord framing and the TensorBoard event-file writer.
#include "runtime/tensorboard_writer.h"

#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "runtime/crc32c.h"
#include "runtime/error.h"
#include "runtime/file_util.h"
#include "runtime/proto/tensorboard_event.pb.h"

namespace tandem::runtime {
namespace {

constexpr const char* kFileVersion = "brain.Event:2";

void put_le(std::string& out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xffu));
}

uint64_t get_le(const char* bytes, int count) {
  uint64_t value = 0;
  for (int i = 0; i < count; ++i) value |= static_cast<uint64_t>(static_cast<uint8_t>(bytes[i])) << (8 * i);
  return value;
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string host_name() {
  char name[256] = {};
  if (::gethostname(name, sizeof(name) - 1) != 0) return "localhost";
  return name;
}

}  // namespace

std::string frame_tfrecord(std::string_view data) {
  std::string record;
  record.reserve(data.size() + 16);
  put_le(record, data.size(), 8);
  put_le(record, mask_crc32c(crc32c(record.data(), 8)), 4);
  record.append(data);
  put_le(record, mask_crc32c(crc32c(data)), 4);
  return record;
}

std::vector<std::string> read_tfrecords(const std::string& path) {
  const std::string bytes = read_file(path);
  std::vector<std::string> records;
  size_t at = 0;
  while (at < bytes.size()) {
    const size_t index = records.size();
    TANDEM_CHECK_INPUT(bytes.size() - at >= 12, "{}: record {}: truncated header ({} bytes left)", path, index,
                       bytes.size() - at);
    const uint64_t length = get_le(bytes.data() + at, 8);
    const uint32_t length_crc = static_cast<uint32_t>(get_le(bytes.data() + at + 8, 4));
    TANDEM_CHECK_INPUT(length_crc == mask_crc32c(crc32c(bytes.data() + at, 8)),
                       "{}: record {} at byte {}: the length's CRC does not match", path, index, at);
    TANDEM_CHECK_INPUT(length <= bytes.size() - at - 12 && bytes.size() - at - 12 - length >= 4,
                       "{}: record {} at byte {}: truncated data ({} bytes announced)", path, index, at, length);
    const char* data = bytes.data() + at + 12;
    const uint32_t data_crc = static_cast<uint32_t>(get_le(data + length, 4));
    TANDEM_CHECK_INPUT(data_crc == mask_crc32c(crc32c(data, length)),
                       "{}: record {} at byte {}: the data's CRC does not match", path, index, at);
    records.emplace_back(data, length);
    at += 16 + length;
  }
  return records;
}

TensorBoardWriter::TensorBoardWriter(const std::string& dir, std::string host) {
  make_directories(dir);
  if (host.empty()) host = host_name();
  const auto seconds = static_cast<int64_t>(now_seconds());
  const std::string base = fmt::format("{}/events.out.tfevents.{}.{}", dir, seconds, host);
  path_ = base;
  for (int suffix = 1; path_exists(path_); ++suffix) path_ = fmt::format("{}.{}", base, suffix);
  file_ = std::fopen(path_.c_str(), "wb");
  TANDEM_CHECK_KIND(kIo, file_ != nullptr, "{}: cannot create: {}", path_, std::strerror(errno));

  tandem::tensorboard::Event event;
  event.set_wall_time(now_seconds());
  event.set_file_version(kFileVersion);
  write_event(event.SerializeAsString());
  flush();
}

TensorBoardWriter::~TensorBoardWriter() {
  if (file_ != nullptr) std::fclose(file_);
}

void TensorBoardWriter::write_event(const std::string& serialized_event) {
  const std::string record = frame_tfrecord(serialized_event);
  TANDEM_CHECK_KIND(kIo, std::fwrite(record.data(), 1, record.size(), file_) == record.size(), "{}: write failed: {}",
                    path_, std::strerror(errno));
}

void TensorBoardWriter::add_scalars(int64_t step, const std::vector<std::pair<std::string, double>>& values) {
  tandem::tensorboard::Event event;
  event.set_wall_time(now_seconds());
  event.set_step(step);
  tandem::tensorboard::Summary* summary = event.mutable_summary();
  for (const auto& [tag, value] : values) {
    tandem::tensorboard::Summary::Value* entry = summary->add_value();
    entry->set_tag(tag);
    entry->set_simple_value(static_cast<float>(value));
  }
  write_event(event.SerializeAsString());
}

void TensorBoardWriter::add_session_start(int64_t step) {
  tandem::tensorboard::Event event;
  event.set_wall_time(now_seconds());
  event.set_step(step);
  event.mutable_session_log()->set_status(tandem::tensorboard::SessionLog::START);
  write_event(event.SerializeAsString());
}

void TensorBoardWriter::add_scalar(int64_t step, std::string_view tag, double value) {
  add_scalars(step, {{std::string(tag), value}});
}

void TensorBoardWriter::flush() {
  TANDEM_CHECK_KIND(kIo, std::fflush(file_) == 0, "{}: flush failed: {}", path_, std::strerror(errno));
}

}  // namespace tandem::runtime
