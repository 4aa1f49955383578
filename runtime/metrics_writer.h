// metrics.jsonl: one JSON object per optimizer step, appended to <run.output_dir>/metrics.jsonl
// and flushed after each line, so `tail -f` and scripts see every finished step. The file is a
// contract (DESIGN.md section 9): each step line has at least the keys of kStepMetricKeys
// (step, loss, lr, grad_norm, tokens_per_s); more keys are welcome. Keys keep the caller's order.
// Values are doubles, int64 or strings; a non-finite double is written as null (JSON has no NaN).
// Only rank 0 writes; a writer is not thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace tandem::runtime {

using MetricValue = std::variant<double, int64_t, std::string>;
using MetricField = std::pair<std::string, MetricValue>;

inline constexpr std::array<std::string_view, 5> kStepMetricKeys = {"step", "loss", "lr", "grad_norm", "tokens_per_s"};

// One JSON object (no trailing newline) with the fields in order. Never throws.
std::string metrics_json_line(const std::vector<MetricField>& fields);

class MetricsWriter {
 public:
  // Opens `path` for appending (creating parent directories). When `resume_after_step` is set,
  // lines whose "step" is greater are dropped first (atomically: rewrite + rename), so a run
  // resumed from the checkpoint of that step does not leave the dead run's later steps behind.
  // `required_keys` are checked by write(). Throws kIo.
  explicit MetricsWriter(std::string path, std::optional<int64_t> resume_after_step = std::nullopt,
                         std::vector<std::string> required_keys = {kStepMetricKeys.begin(), kStepMetricKeys.end()});
  ~MetricsWriter();
  MetricsWriter(const MetricsWriter&) = delete;
  MetricsWriter& operator=(const MetricsWriter&) = delete;

  // Appends one line and flushes it to the OS. A missing required key or a repeated key is a
  // caller bug (kInternal); a failed write throws kIo.
  void write(const std::vector<MetricField>& fields);

  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::vector<std::string> required_keys_;
  std::FILE* file_ = nullptr;
};

// The value of integer key `key` on a metrics line written by this writer, if present.
std::optional<int64_t> metrics_line_int(std::string_view line, std::string_view key);

}  // namespace tandem::runtime
