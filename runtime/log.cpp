// Logging set-up: one stderr sink (plus an optional file) shared by a fixed set of module
// loggers registered with spdlog, so lookups after init need no locking of our own.
#include "runtime/log.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>

#include <array>

#include "runtime/error.h"
#include "runtime/process_context.h"

namespace tandem::runtime {
namespace {
constexpr std::array<const char*, 10> kModules = {"runtime", "parallel",   "schedule", "model", "launch",
                                                  "data",    "checkpoint", "train",    "comm",  "test"};

spdlog::level::level_enum parse_level(const std::string& level) {
  const auto parsed = spdlog::level::from_str(level);
  // from_str returns `off` for unknown names: refuse rather than silence everything.
  TANDEM_CHECK_CONFIG(parsed != spdlog::level::off || level == "off",
                      "logging.level: unknown level '{}' (use trace, debug, info, warn, error)", level);
  return parsed;
}
}  // namespace

void init_logging(const ProcessContext& process, const LogOptions& options) {
  auto level = parse_level(options.level);
  if (!options.all_ranks && process.rank != 0 && level < spdlog::level::warn) level = spdlog::level::warn;

  std::vector<spdlog::sink_ptr> sinks;
  sinks.push_back(std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
  if (!options.file.empty()) {
    sinks.push_back(std::make_shared<spdlog::sinks::basic_file_sink_mt>(
        fmt::format("{}.rank{}", options.file, process.rank), /*truncate=*/false));
  }
  const int width = process.world_size >= 100 ? 3 : 2;
  const std::string pattern =
      fmt::format("[%H:%M:%S.%e] [r{:0{}}/{:0{}}] [%^%l%$] [%n] %v", process.rank, width, process.world_size, width);
  spdlog::drop_all();
  auto make = [&](const std::string& name) {
    auto created = std::make_shared<spdlog::logger>(name, sinks.begin(), sinks.end());
    created->set_pattern(pattern);
    created->set_level(level);
    created->flush_on(spdlog::level::warn);
    return created;
  };
  for (const char* module : kModules) spdlog::register_logger(make(module));
  spdlog::set_default_logger(make("tandem"));
}

std::shared_ptr<spdlog::logger> logger(std::string_view module) {
  if (auto found = spdlog::get(std::string(module))) return found;
  return spdlog::default_logger();
}

void flush_logs() {
  spdlog::apply_all([](const std::shared_ptr<spdlog::logger>& each) { each->flush(); });
}

}  // namespace tandem::runtime
