// JSON-lines metrics: one compact nlohmann-json object per line (runtime/json.h: doubles in
// shortest round-trip form, integral ones as integers, non-finite ones as null), append + flush
// per line, truncation of a dead run's tail on resume.
#include "runtime/metrics_writer.h"

#include <cerrno>
#include <cstring>
#include <set>

#include "runtime/error.h"
#include "runtime/file_util.h"
#include "runtime/json.h"

namespace tandem::runtime {

std::string metrics_json_line(const std::vector<MetricField>& fields) {
  nlohmann::ordered_json line = nlohmann::ordered_json::object();
  for (const auto& [key, value] : fields) {
    nlohmann::ordered_json encoded;
    if (const double* number = std::get_if<double>(&value)) {
      encoded = json::number(*number);
    } else if (const int64_t* integer = std::get_if<int64_t>(&value)) {
      encoded = *integer;
    } else {
      encoded = std::get<std::string>(value);
    }
    json::append_unique(line, key, std::move(encoded));  // as given: write() refuses a repeated key
  }
  return json::dump(line);
}

std::optional<int64_t> metrics_line_int(std::string_view line, std::string_view key) {
  const nlohmann::json object = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (!object.is_object()) return std::nullopt;  // also a torn line (discarded)
  const auto it = object.find(key);
  if (it == object.end() || !it->is_number_integer()) return std::nullopt;
  return it->get<int64_t>();
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
    TANDEM_CHECK(seen.count(key) == 1, "metrics: the line lacks the required key '{}' (metrics.jsonl contract)", key);
  }
  const std::string line = metrics_json_line(fields) + "\n";
  TANDEM_CHECK_KIND(kIo, std::fwrite(line.data(), 1, line.size(), file_) == line.size() && std::fflush(file_) == 0,
                    "{}: write failed: {}", path_, std::strerror(errno));
}

}  // namespace tandem::runtime
