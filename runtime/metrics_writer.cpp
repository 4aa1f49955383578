// JSON-lines metrics: hand-written serialisation (strings escaped per RFC 8259, doubles in
// shortest round-trip form), append + flush per line, truncation of a dead run's tail on resume.
#include "runtime/metrics_writer.h"

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <set>

#include "runtime/error.h"
#include "runtime/file_util.h"

namespace tandem::runtime {
namespace {

void append_json_string(std::string& out, std::string_view text) {
  out.push_back('"');
  for (const char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += fmt::format("\\u{:04x}", static_cast<unsigned>(c));
        } else {
          out.push_back(c);
        }
    }
  }
  out.push_back('"');
}

void append_value(std::string& out, const MetricValue& value) {
  if (const double* number = std::get_if<double>(&value)) {
    if (!std::isfinite(*number)) {
      out += "null";
      return;
    }
    char buffer[32];
    const auto result = std::to_chars(buffer, buffer + sizeof(buffer), *number);  // shortest round trip
    out.append(buffer, result.ptr);
  } else if (const int64_t* integer = std::get_if<int64_t>(&value)) {
    out += std::to_string(*integer);
  } else {
    append_json_string(out, std::get<std::string>(value));
  }
}

}  // namespace

std::string metrics_json_line(const std::vector<MetricField>& fields) {
  std::string line = "{";
  for (size_t i = 0; i < fields.size(); ++i) {
    if (i > 0) line.push_back(',');
    append_json_string(line, fields[i].first);
    line.push_back(':');
    append_value(line, fields[i].second);
  }
  line.push_back('}');
  return line;
}

std::optional<int64_t> metrics_line_int(std::string_view line, std::string_view key) {
  const std::string needle = fmt::format("\"{}\":", key);
  const size_t at = line.find(needle);
  if (at == std::string_view::npos) return std::nullopt;
  const char* begin = line.data() + at + needle.size();
  int64_t value = 0;
  const auto [end, error] = std::from_chars(begin, line.data() + line.size(), value);
  if (error != std::errc() || end == begin) return std::nullopt;
  return value;
}

MetricsWriter::MetricsWriter(std::string path, std::optional<int64_t> resume_after_step,
                             std::vector<std::string> required_keys)
    : path_(std::move(path)), required_keys_(std::move(required_keys)) {
  make_directories(parent_directory(path_));
  if (resume_after_step.has_value() && path_exists(path_)) {
    const std::string old = read_file(path_);
    std::string kept;
    size_t begin = 0;
    while (begin < old.size()) {
      size_t end = old.find('\n', begin);
      if (end == std::string::npos) end = old.size();  // a torn last line (the run died mid-write) is dropped
      const std::string_view line(old.data() + begin, end - begin);
      const std::optional<int64_t> step = metrics_line_int(line, "step");
      if (end < old.size() && (!step.has_value() || *step <= *resume_after_step)) {
        kept.append(line);
        kept.push_back('\n');
      }
      begin = end + 1;
    }
    if (kept.size() != old.size()) write_file_atomic(path_, kept);
  }
  file_ = std::fopen(path_.c_str(), "ab");
  TANDEM_CHECK_KIND(kIo, file_ != nullptr, "{}: cannot open for appending: {}", path_, std::strerror(errno));
}

MetricsWriter::~MetricsWriter() {
  if (file_ != nullptr) std::fclose(file_);
}

void MetricsWriter::write(const std::vector<MetricField>& fields) {
  std::set<std::string_view> seen;
  for (const auto& field : fields) {
    TANDEM_CHECK(seen.insert(field.first).second, "metrics: key '{}' given twice", field.first);
  }
  for (const std::string& key : required_keys_) {
    TANDEM_CHECK(seen.count(key) == 1, "metrics: the line lacks the required key '{}' (metrics.jsonl contract)",
                 key);
  }
  const std::string line = metrics_json_line(fields) + "\n";
  TANDEM_CHECK_KIND(kIo, std::fwrite(line.data(), 1, line.size(), file_) == line.size() && std::fflush(file_) == 0,
                    "{}: write failed: {}", path_, std::strerror(errno));
}

}  // namespace tandem::runtime
