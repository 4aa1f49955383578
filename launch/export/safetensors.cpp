// Safetensors writer and strict reader (see safetensors.h for the format).
#include "launch/export/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <set>
#include <string_view>

#include "runtime/error.h"
#include "runtime/json.h"

namespace tandem::launch {
namespace {

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
int64_t as_index(const nlohmann::json& value, const std::string& where, std::string_view what) {
  TANDEM_CHECK_INPUT(value.is_number(), "{}: {} must be a number, got {}", where, what, json::type_name(value));
  const double number = value.get<double>();
  TANDEM_CHECK_INPUT(number >= 0 && number < 9007199254740992.0 &&
                         number == static_cast<double>(static_cast<int64_t>(number)),
                     "{}: {} must be a non-negative integer, got {}", where, what, number);
  return static_cast<int64_t>(number);
}

// The header's JSON text (without its space padding) after the length field has been checked
// against the file; sets `header_size` to N.
std::string_view header_text(const runtime::MappedFile& file, const std::string& path, int64_t& header_size) {
  const int64_t size = static_cast<int64_t>(file.size());
  TANDEM_CHECK_INPUT(size >= kLengthFieldBytes, "{}: {} bytes, too short for a safetensors file", path, size);
  const uint64_t length = read_uint64_le(file.data());
  TANDEM_CHECK_INPUT(
      length <= static_cast<uint64_t>(kMaxHeaderBytes) && static_cast<int64_t>(length) <= size - kLengthFieldBytes,
      "{}: header length {} does not fit the file of {} bytes (limit {})", path, length, size, kMaxHeaderBytes);
  header_size = static_cast<int64_t>(length);
  const std::string_view header(reinterpret_cast<const char*>(file.data()) + kLengthFieldBytes, length);
  TANDEM_CHECK_INPUT(!header.empty() && header.front() == '{', "{}: the header does not start with '{{'", path);
  // Only spaces may pad the JSON object (the format's padding); anything else after it is an error.
  const size_t last = header.find_last_not_of(' ');
  TANDEM_CHECK_INPUT(last != std::string_view::npos && header[last] == '}',
                     "{}: the header's JSON object is followed by bytes other than space padding", path);
  return header.substr(0, last + 1);
}

// Strict JSON (a tensor name twice is an error, not the last one winning).
nlohmann::json parse_header(std::string_view text, const std::string& path) {
  nlohmann::json root;
  try {
    root = json::parse(text);
  } catch (const Error& error) {
    TANDEM_THROW(kInput, "{}: header is not valid JSON: {}", path, error.message());
  }
  TANDEM_CHECK_INPUT(root.is_object(), "{}: the header is not a JSON object", path);
  return root;
}

std::map<std::string, std::string> read_metadata(const nlohmann::json& value, const std::string& where) {
  TANDEM_CHECK_INPUT(value.is_object(), "{} must be an object of strings", where);
  std::map<std::string, std::string> metadata;
  for (const auto& [key, item] : value.items()) {
    TANDEM_CHECK_INPUT(item.is_string(), "{}: value of '{}' is not a string", where, key);
    metadata[key] = item.get<std::string>();
  }
  return metadata;
}

// One tensor entry {"dtype", "shape", "data_offsets"}, checked against itself and the data size.
SafetensorsTensor read_entry(const std::string& name, const nlohmann::json& value, const std::string& where,
                             int64_t data_size) {
  TANDEM_CHECK_INPUT(value.is_object(), "{} is not an object", where);
  for (const auto& [key, item] : value.items()) {
    TANDEM_CHECK_INPUT(key == "dtype" || key == "shape" || key == "data_offsets", "{} has an unknown field '{}'", where,
                       key);
  }
  TANDEM_CHECK_INPUT(value.contains("dtype") && value.contains("shape") && value.contains("data_offsets"),
                     "{} needs dtype, shape and data_offsets", where);
  const nlohmann::json& dtype = value["dtype"];
  const nlohmann::json& shape = value["shape"];
  const nlohmann::json& offsets = value["data_offsets"];
  SafetensorsTensor tensor;
  tensor.name = name;
  TANDEM_CHECK_INPUT(dtype.is_string() && safetensors_dtype_size_bytes(dtype.get_ref<const std::string&>()) > 0,
                     "{}: unknown dtype", where);
  tensor.dtype = dtype.get<std::string>();
  TANDEM_CHECK_INPUT(shape.is_array(), "{}: shape is not a list", where);
  for (const nlohmann::json& dim : shape) tensor.shape.push_back(as_index(dim, where, "a shape dim"));
  TANDEM_CHECK_INPUT(offsets.is_array() && offsets.size() == 2, "{}: data_offsets is not [begin, end]", where);
  tensor.begin = as_index(offsets[0], where, "data_offsets[0]");
  tensor.end = as_index(offsets[1], where, "data_offsets[1]");
  TANDEM_CHECK_INPUT(tensor.begin <= tensor.end && tensor.end <= data_size,
                     "{}: data_offsets [{}, {}] lie outside the {} data bytes", where, tensor.begin, tensor.end,
                     data_size);
  const int64_t expected = tensor.numel() * safetensors_dtype_size_bytes(tensor.dtype);
  TANDEM_CHECK_INPUT(tensor.size_bytes() == expected, "{}: {} bytes for shape [{}] of {} (expected {})", where,
                     tensor.size_bytes(), fmt::join(tensor.shape, ", "), tensor.dtype, expected);
  return tensor;
}

// Sorts `tensors` by offset and checks that they tile the data section exactly.
void sort_and_check_tiling(std::vector<SafetensorsTensor>& tensors, const std::string& path, int64_t data_size) {
  std::stable_sort(tensors.begin(), tensors.end(), [](const SafetensorsTensor& a, const SafetensorsTensor& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  int64_t covered = 0;
  for (const SafetensorsTensor& t : tensors) {
    TANDEM_CHECK_INPUT(t.begin == covered, "{}: '{}' starts at data offset {} but the previous tensor ends at {} ({})",
                       path, t.name, t.begin, covered, t.begin > covered ? "a gap" : "an overlap");
    covered = t.end;
  }
  TANDEM_CHECK_INPUT(covered == data_size, "{}: tensors cover {} of the {} data bytes", path, covered, data_size);
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
  // append_unique: the writer has checked that names are unique (and none is __metadata__).
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json entries = nlohmann::ordered_json::object();
    for (const auto& [key, value] : metadata) json::append_unique(entries, key, value);
    json::append_unique(header, kMetadataKey, std::move(entries));
  }
  for (const SafetensorsTensor& t : tensors) {
    nlohmann::ordered_json entry;
    entry["dtype"] = t.dtype;
    entry["shape"] = t.shape;
    entry["data_offsets"] = nlohmann::ordered_json::array({t.begin, t.end});
    json::append_unique(header, t.name, std::move(entry));
  }
  std::string out = json::dump(header);
  // Pad so that the data section starts at a multiple of 8 bytes (the length field is 8 bytes).
  while (out.size() % 8 != 0) out += ' ';
  return out;
}

std::string safetensors_index_json(int64_t total_size_bytes, const std::map<std::string, std::string>& weight_map) {
  nlohmann::ordered_json files = nlohmann::ordered_json::object();
  for (const auto& [name, file] : weight_map) json::append_unique(files, name, file);
  nlohmann::ordered_json index;
  index["metadata"]["total_size"] = total_size_bytes;
  index["weight_map"] = std::move(files);
  return json::dump(index, 2) + "\n";  // as transformers writes it (json.dumps, indent 2)
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
  const nlohmann::json root = parse_header(header_text(file.file_, path, file.header_size_), path);
  const int64_t data_size = static_cast<int64_t>(file.file_.size()) - kLengthFieldBytes - file.header_size_;
  for (const auto& [name, value] : root.items()) {
    const std::string where = fmt::format("{}: '{}'", path, name);
    if (name == kMetadataKey) {
      file.metadata_ = read_metadata(value, where);
    } else {
      file.tensors_.push_back(read_entry(name, value, where, data_size));
    }
  }
  sort_and_check_tiling(file.tensors_, path, data_size);
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
