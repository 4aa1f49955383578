// `tandem` entry point and top-level error handling. Every command runs under one policy:
//  - an error during set-up (bad config or data; before SetupGate::pass) is agreed on by all
//    ranks, which exit together with the same code (2 for bad input);
//  - an error afterwards is logged with rank, host and file:line on the failing rank, then
//    MPI_Abort ends every rank within seconds: a job never hangs on a dead peer.
#include <CLI/CLI.hpp>

#include <map>

#include "launch/command.h"
#include "runtime/error.h"
#include "runtime/log.h"
#include "runtime/mpi_session.h"

namespace tandem::launch {
namespace {

class MpiSetupGate final : public SetupGate {
 public:
  explicit MpiSetupGate(const runtime::MpiSession& session) : session_(session) {}
  void pass() override { agree(0); }
  bool passed() const override { return passed_; }

  // Every rank calls this exactly once (pass() or the error path); MAX of the codes wins.
  int agree_exit_code(int code) {
    passed_ = true;
    return session_.max_over_ranks(code);
  }

 private:
  void agree(int code) {
    const int agreed = agree_exit_code(code);
    if (agreed != 0) throw PeerSetupFailed{agreed};
  }
  const runtime::MpiSession& session_;
  bool passed_ = false;
};

int handle_failure(int code, const std::string& message, MpiSetupGate& gate, const runtime::ProcessContext& process) {
  TANDEM_LOG_ERROR("launch", "{}", message);
  if (!gate.passed()) return gate.agree_exit_code(code);  // set-up phase: everyone exits with the agreed code
  if (process.world_size > 1) runtime::MpiSession::abort_job(code);
  return code;
}

int run(int argc, char** argv) {
  runtime::MpiSession session(&argc, &argv);
  const runtime::ProcessContext& process = session.context();
  runtime::init_logging(process, {});

  CLI::App app{"tandem: pretraining of DeepSeek-V3-style Mixture-of-Experts models"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Help for every command");
  std::map<const CLI::App*, CommandRunner> runners;
  auto add = [&](const char* name, CommandRunner runner) { runners[app.get_subcommand(name)] = std::move(runner); };
  add("check-config", add_check_config_command(app));
  add("schedule", add_schedule_command(app));
  add("config-reference", add_config_reference_command(app));

  MpiSetupGate gate(session);
  try {
    try {
      app.parse(argc, argv);
    } catch (const CLI::ParseError& error) {
      // Help and usage errors are printed by rank 0 only; usage errors are bad input (exit 2).
      int code = 0;
      if (process.is_root()) code = app.exit(error);
      else code = error.get_exit_code();
      return gate.agree_exit_code(code == 0 ? 0 : 2);
    }
    const CLI::App* chosen = app.get_subcommands().front();
    CommandEnv env{process, gate};
    const int code = runners.at(chosen)(env);
    if (!gate.passed()) return gate.agree_exit_code(code);
    return code;
  } catch (const PeerSetupFailed& failed) {
    TANDEM_LOG_WARN("launch", "another rank failed during set-up; exiting with code {}", failed.exit_code);
    return failed.exit_code;
  } catch (const Error& error) {
    const Error located = error.with_location(process.rank, process.host);
    return handle_failure(exit_code_for(error.kind()), located.what(), gate, process);
  } catch (const std::exception& error) {
    return handle_failure(1, fmt::format("[rank {} on {}] unexpected error: {}", process.rank, process.host, error.what()),
                          gate, process);
  }
}

}  // namespace
}  // namespace tandem::launch

int main(int argc, char** argv) {
  try {
    return tandem::launch::run(argc, argv);
  } catch (const tandem::Error& error) {
    // MPI itself could not start: there is no job to coordinate with.
    std::fprintf(stderr, "tandem: %s\n", error.what());
    return tandem::exit_code_for(error.kind());
  }
}
