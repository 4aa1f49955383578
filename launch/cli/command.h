// The shape of a `tandem` subcommand: it registers its options on the CLI app and returns the
// function that runs it once the command line has been parsed. Commands are plain functions in
// launch/cmd_*.cpp; main() knows nothing about any of them beyond this signature.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace tandem::runtime {
struct ProcessContext;
class SignalWatcher;
}  // namespace tandem::runtime

namespace tandem::launch {

// Job-wide agreement that every rank finished its set-up (config loaded, data found, ...).
// A command that runs collectives afterwards calls pass() once after its checks; a rank whose
// set-up threw takes part in the same agreement from the top-level handler instead, so every
// rank learns of the failure and all exit with the same code rather than hanging.
class SetupGate {
 public:
  virtual ~SetupGate() = default;
  // Collective over all ranks. Returns when every rank passed; throws PeerSetupFailed when any
  // rank failed its set-up (that rank logged the reason).
  virtual void pass() = 0;
  virtual bool passed() const = 0;
};

struct PeerSetupFailed {
  int exit_code;
};

struct CommandEnv {
  const runtime::ProcessContext& process;  // rank, world size, host of this process
  SetupGate& setup;
  runtime::SignalWatcher& signals;  // SIGINT/SIGTERM; a command that polls it calls set_graceful(true)
};

// The world a command that describes a job lays out: `given` (--world) when positive, else the
// MPI world under mpirun, else the world the job file lays out by itself (pp * tp * dp, dp 1
// where derived), so that outside mpirun a pipeline job is not refused for a world of 1.
int64_t described_job_world(int64_t given, const CommandEnv& env, const std::string& job_path,
                            const std::vector<std::string>& overrides);

// Runs the command; returns the process exit code (0 ok, 2 bad input, 1 failure) or throws
// tandem::Error, which the top-level handler turns into a logged message and that exit code.
using CommandRunner = std::function<int(const CommandEnv&)>;

// Each registers one subcommand on `app` and returns its runner.
CommandRunner add_schedule_command(CLI::App& app);          // tandem schedule ...
CommandRunner add_check_config_command(CLI::App& app);      // tandem check-config JOB.yaml
CommandRunner add_config_reference_command(CLI::App& app);  // tandem config-reference
CommandRunner add_simulate_command(CLI::App& app);          // tandem simulate JOB.yaml
CommandRunner add_plan_command(CLI::App& app);              // tandem plan JOB.yaml
CommandRunner add_train_command(CLI::App& app);             // tandem train JOB.yaml
CommandRunner add_preprocess_command(CLI::App& app);        // tandem preprocess --input FILE... --output PREFIX
CommandRunner add_export_command(CLI::App& app);            // tandem export CKPT_DIR OUT_DIR
CommandRunner add_checkpoint_command(CLI::App& app);        // tandem checkpoint inspect DIR
CommandRunner add_generate_command(CLI::App& app);          // tandem generate CKPT --prompt TEXT
}  // namespace tandem::launch
