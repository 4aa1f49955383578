// Logging for all of tandem: the only header other modules include for it. Every line carries
// time, `[rNN/NN]` rank tag, level and module. By default rank 0 logs at info and the other
// ranks only warnings and errors (one rank's voice is enough for progress; every rank's voice is
// needed for failures); `all_ranks` turns info on everywhere.
#pragma once

#include <spdlog/spdlog.h>

#include <memory>
#include <string>
#include <string_view>

namespace tandem::runtime {

struct ProcessContext;

struct LogOptions {
  std::string level = "info";  // trace, debug, info, warn, error
  bool all_ranks = false;      // info from every rank, not only rank 0
  std::string file;            // also append to this file when non-empty (per-rank suffix added)
};

// Sets up the sinks and one logger per module (runtime, parallel, schedule, model, launch, data,
// checkpoint, train). Call once, early in main, before other threads start; calling it again
// replaces the configuration (used by tests).
void init_logging(const ProcessContext& process, const LogOptions& options);

// Logger for a module name; falls back to the default logger for an unknown name.
// Thread-safe after init_logging.
std::shared_ptr<spdlog::logger> logger(std::string_view module);

// Flushes every logger (before aborting, so the last lines reach the terminal).
void flush_logs();

}  // namespace tandem::runtime

#define TANDEM_LOG_DEBUG(module, ...) ::tandem::runtime::logger(module)->debug(__VA_ARGS__)
#define TANDEM_LOG_INFO(module, ...) ::tandem::runtime::logger(module)->info(__VA_ARGS__)
#define TANDEM_LOG_WARN(module, ...) ::tandem::runtime::logger(module)->warn(__VA_ARGS__)
#define TANDEM_LOG_ERROR(module, ...) ::tandem::runtime::logger(module)->error(__VA_ARGS__)
