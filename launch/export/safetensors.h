// Safetensors files, the tensor container of the Hugging Face ecosystem, written and read by
// tandem itself (the JSON header through nlohmann-json, runtime/json.h). A file is: an 8-byte
// little-endian header length N, N bytes of JSON
// ({"__metadata__": {str: str}, name: {"dtype", "shape", "data_offsets": [begin, end]}}), padded
// with spaces so the data starts 8-byte aligned, then the raw little-endian tensor bytes;
// offsets are relative to the data start. Our files hold tensors back to back in the order given,
// so the offsets tile the data exactly. The reader is strict: it rejects everything the format
// does not allow (see SafetensorsFile::open), so tests can use it as an independent check.
// Torch-free: tensors are bytes here; launch/export/hf_export.cpp converts.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/file_util.h"

namespace tandem::launch {

// Element size of a safetensors dtype name ("F32", "BF16", "F16", "F64", "I64", "I32", "I16",
// "I8", "U8", "BOOL"); 0 for a name the format (as tandem writes it) does not know.
int64_t safetensors_dtype_size_bytes(std::string_view dtype);

struct SafetensorsTensor {
  std::string name;
  std::string dtype;           // "BF16", ...
  std::vector<int64_t> shape;  // [] for a scalar
  int64_t begin = 0;           // data_offsets, relative to the start of the data section
  int64_t end = 0;

  int64_t numel() const;
  int64_t size_bytes() const { return end - begin; }
};

// Writes one file: the header at construction (offsets laid out from `tensors` in order), then
// each tensor's bytes through write() in the same order. Not thread-safe; blocking I/O.
class SafetensorsWriter {
 public:
  // Creates/truncates `path`. `tensors` need name, dtype and shape (offsets are computed).
  // Duplicate names, unknown dtypes or negative dims are caller bugs (kInternal). Throws kIo.
  SafetensorsWriter(std::string path, std::vector<SafetensorsTensor> tensors,
                    const std::map<std::string, std::string>& metadata);
  ~SafetensorsWriter();
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  // The next tensor's bytes (it must be `name`, of exactly its size: kInternal otherwise).
  void write(std::string_view name, const void* data, int64_t size_bytes);
  // After every tensor: fsyncs and closes. Throws kInternal when a tensor is missing, kIo.
  void finish();

  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }
  int64_t file_size_bytes() const;

 private:
  std::string path_;
  std::vector<SafetensorsTensor> tensors_;
  int64_t header_bytes_ = 0;  // 8 + padded JSON
  size_t next_ = 0;
  int fd_ = -1;
};

// The JSON header (without the 8-byte length, padded with spaces to a multiple of 8 bytes
// counting the length field) for tensors whose offsets are already set.
std::string safetensors_header_json(const std::vector<SafetensorsTensor>& tensors,
                                    const std::map<std::string, std::string>& metadata);

// A safetensors file opened read-only (memory-mapped) and fully validated.
class SafetensorsFile {
 public:
  // Throws kInput naming `path` and the fault when the file is shorter than its header says,
  // the header is not a JSON object (or has trailing bytes other than spaces), an entry lacks
  // or adds a field, a dtype is unknown, a shape has a negative dim, an entry's byte length is
  // not elements * dtype size, two entries share a name, or the entries, sorted by offset, do
  // not tile the data section exactly (a gap, an overlap, or bytes left over at the end).
  // Throws kIo when it cannot be read.
  static SafetensorsFile open(const std::string& path);

  const std::string& path() const { return file_.path(); }
  // Entries in file order (ascending offsets).
  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  int64_t header_size_bytes() const { return header_size_; }  // N, the JSON length
  // nullptr when absent.
  const SafetensorsTensor* find(std::string_view name) const;
  // The entry's bytes (inside the mapping; valid while this object lives).
  const uint8_t* data(const SafetensorsTensor& tensor) const;

 private:
  runtime::MappedFile file_;
  std::vector<SafetensorsTensor> tensors_;
  std::map<std::string, size_t> by_name_;
  std::map<std::string, std::string> metadata_;
  int64_t header_size_ = 0;
};

// model.safetensors.index.json of a sharded export: total bytes of tensor data and, per tensor
// name, the shard file holding it.
std::string safetensors_index_json(int64_t total_size_bytes, const std::map<std::string, std::string>& weight_map);

}  // namespace tandem::launch
