// TensorBoard event files written without TensorFlow: protobuf `Event` records (our own copy of
// the upstream message definitions, runtime/proto/tensorboard_event.proto) in TFRecord framing:
//   uint64 length (little-endian) | uint32 masked_crc32c(length bytes) | data | uint32 masked_crc32c(data)
// with masked_crc32c(x) = ((crc >> 15) | (crc << 17)) + 0xa282ead8. A file is
// `events.out.tfevents.<unix seconds>.<host>` in the given directory; its first record carries
// file_version "brain.Event:2", every later one a Summary of scalar values at a step.
// Only rank 0 writes one (the caller decides); records are appended and a reader sees whole
// records after flush().
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tandem::runtime {

// Frames one TFRecord (header, data, CRCs) around `data`.
std::string frame_tfrecord(std::string_view data);

// Reads every record of a TFRecord file, checking both CRCs of each. Throws kInput naming the
// file, the record number and what is wrong (truncated, length CRC, data CRC); kIo when the
// file cannot be read.
std::vector<std::string> read_tfrecords(const std::string& path);

// Not thread-safe; one per process (rank 0).
class TensorBoardWriter {
 public:
  // Creates `dir` (with parents) and a new event file in it; writes the file_version record.
  // `host` defaults to the machine's host name. If a file of the same name exists (two writers
  // in the same second), a numeric suffix is added. Throws kIo.
  explicit TensorBoardWriter(const std::string& dir, std::string host = "");
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  // One Event at `step` holding all `values` (tag, value) as simple_value scalars, stamped with
  // the current wall time. Buffered until flush(). Throws kIo.
  void add_scalars(int64_t step, const std::vector<std::pair<std::string, double>>& values);
  void add_scalar(int64_t step, std::string_view tag, double value);
  // A SessionLog START event at `step`: TensorBoard then hides what earlier event files hold
  // for steps >= `step`, the steps a resumed run redoes (torch's SummaryWriter(purge_step) does
  // the same). Buffered until flush(). Throws kIo.
  void add_session_start(int64_t step);

  // Pushes buffered records to the OS (no fsync: event files are advisory). Throws kIo.
  void flush();

  const std::string& path() const { return path_; }

 private:
  void write_event(const std::string& serialized_event);

  std::string path_;
  std::FILE* file_ = nullptr;
};

}  // namespace tandem::runtime
