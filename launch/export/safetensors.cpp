// Safetensors writer and strict reader (see safetensors.h for the format).
#include "launch/export/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <set>

#include "runtime/error.h"
#include "schedule/json_io.h"

namespace tandem::launch {
namespace {

namespace json = schedule::json;

constexpr int64_t kLengthFieldBytes = 8;
constexpr int64_t kMaxHeaderBytes = 100'000'000;  // the reference implementation's limit
constexpr const char* kMetadataKey = "__metadata__";

void append_uint64_le(std::string& out, uint64_t value) {
  for (int i = 0; i < 8; ++i) out += static_cast<char>((value >> (8 * i)) & 0xff);
}

uint64_t read_uint64_le(const uint8_t* bytes) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = (value << 8) | bytes[i];
  return value;
}

// A JSON number that must be a non-negative integer below 2^53 (exact in a double).
int64_t as_index(const json::Value& value, const std::string& path, std::string_view what) {
  TANDEM_CHECK_INPUT(value.is(json::Value::Type::kNumber), "{}: {} must be a number, got {}", path, what,
                     json::type_name(value.type()));
  const double number = value.as_number();
  TANDEM_CHECK_INPUT(number >= 0 && number < 9007199254740992.0 && number == static_cast<double>(static_cast<int64_t>(number)),
                     "{}: {} must be a non-negative integer, got {}", path, what, number);
  return static_cast<int64_t>(number);
}

}  // namespace

int64_t safetensors_dtype_size_bytes(std::string_view dtype) {
  if (dtype == "F64" || dtype == "I64" || dtype == "U64") return 8;
  if (dtype == "F32" || dtype == "I32" || dtype == "U32") return 4;
  if (dtype == "BF16" || dtype == "F16" || dtype == "I16" || dtype == "U16") return 2;
  if (dtype == "I8" || dtype == "U8" || dtype == "BOOL" || dtype == "F8_E4M3" || dtype == "F8_E5M2") return 1;
  return 0;
}

int64_t SafetensorsTensor::numel() const {
  int64_t n = 1;
  for (int64_t dim : shape) n *= dim;
  return n;
}

std::string safetensors_header_json(const std::vector<SafetensorsTensor>& tensors,
                                    const std::map<std::string, std::string>& metadata) {
  std::string out = "{";
  if (!metadata.empty()) {
    json::append_string(out, kMetadataKey);
    out += ":{";
    bool first = true;
    for (const auto& [key, value] : metadata) {
      if (!first) out += ',';
      first = false;
      json::append_string(out, key);
      out += ':';
      json::append_string(out, value);
    }
    out += '}';
  }
  for (size_t i = 0; i < tensors.size(); ++i) {
    const SafetensorsTensor& t = tensors[i];
    if (i > 0 || !metadata.empty()) out += ',';
    json::append_string(out, t.name);
    out += fmt::format(":{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{},{}]}}", t.dtype,
                       fmt::join(t.shape, ","), t.begin, t.end);
  }
  out += '}';
  // Pad so that the data section starts at a multiple of 8 bytes (the length field is 8 bytes).
  while (out.size() % 8 != 0) out += ' ';
  return out;
}

std::string safetensors_index_json(int64_t total_size_bytes, const std::map<std::string, std::string>& weight_map) {
  std::string out = fmt::format("{{\n  \"metadata\": {{\"total_size\": {}}},\n  \"weight_map\": {{", total_size_bytes);
  bool first = true;
  for (const auto& [name, file] : weight_map) {
    out += first ? "\n    " : ",\n    ";
    first = false;
    json::append_string(out, name);
    out += ": ";
    json::append_string(out, file);
  }
  out += "\n  }\n}\n";
  return out;
}

// --- writer ------------------------------------------------------------------------------------

SafetensorsWriter::SafetensorsWriter(std::string path, std::vector<SafetensorsTensor> tensors,
                                     const std::map<std::string, std::string>& metadata)
    : path_(std::move(path)), tensors_(std::move(tensors)) {
  std::set<std::string> names;
  int64_t offset = 0;
  for (SafetensorsTensor& t : tensors_) {
    TANDEM_CHECK(names.insert(t.name).second, "{}: tensor '{}' added twice", path_, t.name);
    TANDEM_CHECK(t.name != kMetadataKey, "{}: '{}' is reserved", path_, t.name);
    const int64_t element = safetensors_dtype_size_bytes(t.dtype);
    TANDEM_CHECK(element > 0, "{}: '{}' has unknown dtype '{}'", path_, t.name, t.dtype);
    for (int64_t dim : t.shape) TANDEM_CHECK(dim >= 0, "{}: '{}' has a negative dim", path_, t.name);
    t.begin = offset;
    t.end = offset + t.numel() * element;
    offset = t.end;
  }
  const std::string header = safetensors_header_json(tensors_, metadata);
  std::string prefix;
  append_uint64_le(prefix, header.size());
  prefix += header;
  header_bytes_ = static_cast<int64_t>(prefix.size());
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  TANDEM_CHECK_KIND(kIo, fd_ >= 0, "cannot create {}: {}", path_, std::strerror(errno));
  runtime::write_all(fd_, prefix.data(), prefix.size(), path_);
}

SafetensorsWriter::~SafetensorsWriter() {
  if (fd_ >= 0) ::close(fd_);
}

void SafetensorsWriter::write(std::string_view name, const void* data, int64_t size_bytes) {
  TANDEM_CHECK(fd_ >= 0 && next_ < tensors_.size(), "{}: '{}' written after the last tensor", path_, name);
  const SafetensorsTensor& t = tensors_[next_];
  TANDEM_CHECK(t.name == name, "{}: expected tensor '{}' next, got '{}'", path_, t.name, name);
  TANDEM_CHECK(t.size_bytes() == size_bytes, "{}: '{}' is {} bytes, the header says {}", path_, name, size_bytes,
               t.size_bytes());
  runtime::write_all(fd_, data, static_cast<size_t>(size_bytes), path_);
  ++next_;
}

void SafetensorsWriter::finish() {
  TANDEM_CHECK(fd_ >= 0, "{}: finished twice", path_);
  TANDEM_CHECK(next_ == tensors_.size(), "{}: {} of {} tensors written", path_, next_, tensors_.size());
  runtime::fsync_fd(fd_, path_);
  ::close(fd_);
  fd_ = -1;
}

int64_t SafetensorsWriter::file_size_bytes() const {
  return header_bytes_ + (tensors_.empty() ? 0 : tensors_.back().end);
}

// --- strict reader -----------------------------------------------------------------------------

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  SafetensorsFile file;
  file.file_ = runtime::MappedFile::open(path);
  const int64_t size = static_cast<int64_t>(file.file_.size());
  TANDEM_CHECK_INPUT(size >= kLengthFieldBytes, "{}: {} bytes, too short for a safetensors file", path, size);
  const uint64_t header_size = read_uint64_le(file.file_.data());
  TANDEM_CHECK_INPUT(header_size <= static_cast<uint64_t>(kMaxHeaderBytes) &&
                         static_cast<int64_t>(header_size) <= size - kLengthFieldBytes,
                     "{}: header length {} does not fit the file of {} bytes (limit {})", path, header_size, size,
                     kMaxHeaderBytes);
  file.header_size_ = static_cast<int64_t>(header_size);
  std::string_view header(reinterpret_cast<const char*>(file.file_.data()) + kLengthFieldBytes, header_size);
  TANDEM_CHECK_INPUT(!header.empty() && header.front() == '{', "{}: the header does not start with '{{'", path);
  // Only spaces may pad the JSON object (the format's padding); anything else after it is an error.
  const size_t last = header.find_last_not_of(' ');
  TANDEM_CHECK_INPUT(last != std::string_view::npos && header[last] == '}',
                     "{}: the header's JSON object is followed by bytes other than space padding", path);
  json::Value root;
  try {
    root = json::parse(header.substr(0, last + 1));
  } catch (const Error& error) {
    TANDEM_THROW(kInput, "{}: header is not valid JSON: {}", path, error.message());
  }
  TANDEM_CHECK_INPUT(root.is(json::Value::Type::kObject), "{}: the header is not a JSON object", path);

  const int64_t data_size = size - kLengthFieldBytes - file.header_size_;
  std::set<std::string> seen;
  for (size_t i = 0; i < root.keys().size(); ++i) {
    const std::string& name = root.keys()[i];
    const json::Value& value = root.items()[i];
    TANDEM_CHECK_INPUT(seen.insert(name).second, "{}: tensor '{}' appears twice in the header", path, name);
    const std::string where = fmt::format("{}: '{}'", path, name);
    if (name == kMetadataKey) {
      TANDEM_CHECK_INPUT(value.is(json::Value::Type::kObject), "{} must be an object of strings", where);
      for (size_t k = 0; k < value.keys().size(); ++k) {
        TANDEM_CHECK_INPUT(value.items()[k].is(json::Value::Type::kString), "{}: value of '{}' is not a string", where,
                           value.keys()[k]);
        file.metadata_[value.keys()[k]] = value.items()[k].as_string();
      }
      continue;
    }
    TANDEM_CHECK_INPUT(value.is(json::Value::Type::kObject), "{} is not an object", where);
    for (const std::string& key : value.keys()) {
      TANDEM_CHECK_INPUT(key == "dtype" || key == "shape" || key == "data_offsets", "{} has an unknown field '{}'",
                         where, key);
    }
    const json::Value* dtype = value.find("dtype");
    const json::Value* shape = value.find("shape");
    const json::Value* offsets = value.find("data_offsets");
    TANDEM_CHECK_INPUT(dtype != nullptr && shape != nullptr && offsets != nullptr,
                       "{} needs dtype, shape and data_offsets", where);
    SafetensorsTensor tensor;
    tensor.name = name;
    TANDEM_CHECK_INPUT(dtype->is(json::Value::Type::kString) && safetensors_dtype_size_bytes(dtype->as_string()) > 0,
                       "{}: unknown dtype", where);
    tensor.dtype = dtype->as_string();
    TANDEM_CHECK_INPUT(shape->is(json::Value::Type::kArray), "{}: shape is not a list", where);
    for (const json::Value& dim : shape->items()) tensor.shape.push_back(as_index(dim, where, "a shape dim"));
    TANDEM_CHECK_INPUT(offsets->is(json::Value::Type::kArray) && offsets->items().size() == 2,
                       "{}: data_offsets is not [begin, end]", where);
    tensor.begin = as_index(offsets->items()[0], where, "data_offsets[0]");
    tensor.end = as_index(offsets->items()[1], where, "data_offsets[1]");
    TANDEM_CHECK_INPUT(tensor.begin <= tensor.end && tensor.end <= data_size,
                       "{}: data_offsets [{}, {}] lie outside the {} data bytes", where, tensor.begin, tensor.end,
                       data_size);
    const int64_t expected = tensor.numel() * safetensors_dtype_size_bytes(tensor.dtype);
    TANDEM_CHECK_INPUT(tensor.size_bytes() == expected, "{}: {} bytes for shape [{}] of {} (expected {})", where,
                       tensor.size_bytes(), fmt::join(tensor.shape, ", "), tensor.dtype, expected);
    file.tensors_.push_back(std::move(tensor));
  }
  std::stable_sort(file.tensors_.begin(), file.tensors_.end(),
                   [](const SafetensorsTensor& a, const SafetensorsTensor& b) {
                     return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
                   });
  int64_t covered = 0;
  for (const SafetensorsTensor& t : file.tensors_) {
    TANDEM_CHECK_INPUT(t.begin == covered, "{}: '{}' starts at data offset {} but the previous tensor ends at {} ({})",
                       path, t.name, t.begin, covered, t.begin > covered ? "a gap" : "an overlap");
    covered = t.end;
  }
  TANDEM_CHECK_INPUT(covered == data_size, "{}: tensors cover {} of the {} data bytes", path, covered, data_size);
  for (size_t i = 0; i < file.tensors_.size(); ++i) file.by_name_[file.tensors_[i].name] = i;
  return file;
}

const SafetensorsTensor* SafetensorsFile::find(std::string_view name) const {
  const auto it = by_name_.find(std::string(name));
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

const uint8_t* SafetensorsFile::data(const SafetensorsTensor& tensor) const {
  return file_.data() + kLengthFieldBytes + header_size_ + tensor.begin;
}

}  // namespace tandem::launch
