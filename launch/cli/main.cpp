// `tandem` entry point and top-level error handling. Every command runs under one policy:
//  - an error during set-up (bad config or data; before SetupGate::pass) is agreed on by all
//    ranks, which exit together with the same code (2 for bad input);
//  - an error afterwards is logged with rank and host on the failing rank (file:line only for
//    internal errors; the debug log has it for every error), then
//    MPI_Abort ends every rank within seconds: a job never hangs on a dead peer.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <map>

#include "launch/cli/command.h"
#include "runtime/error.h"
#include "runtime/log.h"
#include "runtime/mpi_session.h"
#include "runtime/signal_watcher.h"

namespace tandem::launch {
namespace {

class MpiSetupGate final : public SetupGate {
 public:
  explicit MpiSetupGate(const runtime::MpiSession& session) : session_(session) {}
  void pass() override {
    const int agreed = agree(0, "", "");
    if (agreed != 0) throw PeerSetupFailed{agreed};
  }
  bool passed() const override { return passed_; }

  // Every rank calls this exactly once (through pass() or the error path), so it always matches
  // up. Returns the largest exit code of all ranks. A failing rank's message is logged by the
  // lowest rank that has the same message, with the ranks that share it: one line for an error
  // that every rank hit (a bad config), one per distinct error otherwise.
  int agree(int code, const std::string& message, const std::string& digest_text) {
    passed_ = true;
    const uint64_t digest = message.empty() ? 0 : (std::hash<std::string>{}(digest_text) | 1);
    const std::vector<uint64_t> codes = session_.all_gather(static_cast<uint64_t>(code));
    const std::vector<uint64_t> digests = session_.all_gather(digest);
    const int rank = session_.context().rank;
    int first = -1, count = 0;
    for (size_t other = 0; other < digests.size(); ++other) {
      if (digest != 0 && digests[other] == digest) {
        if (first < 0) first = static_cast<int>(other);
        ++count;
      }
    }
    if (digest != 0 && first == rank) {
      const std::string shared = count == 1 ? std::string()
                                            : fmt::format(" ({} of {} ranks report the same)", count, codes.size());
      TANDEM_LOG_ERROR("launch", "{}{}", message, shared);
    }
    return static_cast<int>(*std::max_element(codes.begin(), codes.end()));
  }

 private:
  const runtime::MpiSession& session_;
  bool passed_ = false;
};

// `message` names rank and host; `digest_text` is the same without them, so that ranks that hit
// the same error recognise it as the same.
int handle_failure(int code, const std::string& message, const std::string& digest_text, MpiSetupGate& gate,
                   const runtime::ProcessContext& process) {
  if (!gate.passed()) return gate.agree(code, message, digest_text);  // set-up: all exit with the agreed code
  TANDEM_LOG_ERROR("launch", "{}", message);
  if (process.world_size > 1) runtime::MpiSession::abort_job(code);
  return code;
}

int run(int argc, char** argv) {
  // First, before MPI starts its threads: they must inherit the blocked SIGINT/SIGTERM mask.
  runtime::SignalWatcher signals;
  runtime::MpiSession session(&argc, &argv);
  const runtime::ProcessContext& process = session.context();
  // Until a command loads its job's logging section: TANDEM_LOG_LEVEL=debug also shows, e.g.,
  // where an error was raised.
  runtime::LogOptions log_options;
  if (const char* level = std::getenv("TANDEM_LOG_LEVEL"); level != nullptr && *level != '\0')
    log_options.level = level;
  try {
    runtime::init_logging(process, log_options);
  } catch (const Error&) {
    runtime::init_logging(process, {});
    TANDEM_LOG_WARN("launch", "TANDEM_LOG_LEVEL={} is not a level (trace, debug, info, warn, error); logging at info",
                    log_options.level);
  }

  CLI::App app{"tandem: pretraining of DeepSeek-V3-style Mixture-of-Experts models"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Help for every command");
  std::map<const CLI::App*, CommandRunner> runners;
  auto add = [&](const char* name, CommandRunner runner) { runners[app.get_subcommand(name)] = std::move(runner); };
  add("train", add_train_command(app));
  add("check-config", add_check_config_command(app));
  add("schedule", add_schedule_command(app));
  add("config-reference", add_config_reference_command(app));
  add("simulate", add_simulate_command(app));
  add("plan", add_plan_command(app));
  add("preprocess", add_preprocess_command(app));
  add("export", add_export_command(app));
  add("checkpoint", add_checkpoint_command(app));
  add("generate", add_generate_command(app));

  MpiSetupGate gate(session);
  try {
    try {
      app.parse(argc, argv);
    } catch (const CLI::ParseError& error) {
      // Help and usage errors are printed by rank 0 only; usage errors are bad input (exit 2).
      int code = 0;
      if (process.is_root()) code = app.exit(error);
      else code = error.get_exit_code();
      return gate.agree(code == 0 ? 0 : 2, "", "");
    }
    const CLI::App* chosen = app.get_subcommands().front();
    CommandEnv env{process, gate, signals};
    const int code = runners.at(chosen)(env);
    if (!gate.passed()) return gate.agree(code, "", "");
    return code;
  } catch (const PeerSetupFailed& failed) {
    TANDEM_LOG_WARN("launch", "another rank failed during set-up (its error is above); exiting with code {}",
                    failed.exit_code);
    return failed.exit_code;
  } catch (const Error& error) {
    // A user reads what went wrong and what to do; the source location helps only a developer
    // (debug log), except for a broken invariant of tandem itself, which is a bug to report.
    const Error located = error.with_location(process.rank, process.host);
    TANDEM_LOG_DEBUG("launch", "{}", located.what());
    const std::string message = error.kind() == ErrorKind::kInternal
                                    ? std::string(located.what())
                                    : fmt::format("[rank {} on {}] {}: {}", process.rank, process.host,
                                                  error_kind_name(error.kind()), error.message());
    return handle_failure(exit_code_for(error.kind()), message, error.what(), gate, process);
  } catch (const std::exception& error) {
    return handle_failure(1,
                          fmt::format("[rank {} on {}] unexpected error: {}", process.rank, process.host, error.what()),
                          error.what(), gate, process);
  }
}

}  // namespace
}  // namespace tandem::launch

int main(int argc, char** argv) {
  try {
    return tandem::launch::run(argc, argv);
  } catch (const tandem::Error& error) {
    // MPI itself could not start: there is no job to coordinate with.
    std::fprintf(stderr, "tandem: %s: %s\n", std::string(tandem::error_kind_name(error.kind())).c_str(),
                 error.message().c_str());
    return tandem::exit_code_for(error.kind());
  }
}
