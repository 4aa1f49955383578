// PipelineExecutor: runs one rank's op list of a Schedule (ir.h) on that rank's model stages, so
// what was generated, validated and simulated is what runs. Per op:
//  - F (mb, chunk): the stage's forward on the micro-batch's tokens and the activation of the
//    previous stage (received, or handed over on this rank when that stage lives here too); on
//    the last stage it computes the losses (LM, MTP, balance), where the backward starts.
//  - B: the backward for inputs, weight gradients queued (FIFO shared by the rank's stages); W:
//    runs the oldest queued group (checked to be the one the schedule names); BW: both at once.
//  - a pair F+B/BW: both halves overlapped through a PairRunner (pair_runner.h): they trade turns
//    while the MoE dispatch/combine of one side is in flight. With overlap off, one after the
//    other; both give the same bits.
// Communication follows the IR's piece_comm(): every receive of the step is posted at step start
// (or `recv_lookahead` ops ahead), matched by a tag naming (tensor, micro-batch, producing stage),
// and waited for just before its op; sends are posted as soon as the piece producing them ends
// and completed in the background. An MpiProgressThread keeps MPI transfers moving during compute.
// After its last backward piece a chunk's gradients are final on this rank: the executor starts
// summing the gradients of parameters held by several pipeline slots (replica_grads.h: DualPipe's
// two copies of each stage, the embedding shared by the first and last stages) and calls the
// chunk-done callback (e.g. to start a data-parallel reduction of that chunk). Nothing in here
// depends on the schedule kind: only the op lists and the placement.
// Not thread-safe; one executor per pipeline rank. run_step is collective over the pp group and,
// through the stages, over their tensor/expert groups.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "parallel/communicator.h"
#include "schedule/ir.h"
#include "schedule/play.h"

namespace tandem::model {
class Stage;
class WeightGradQueue;
}  // namespace tandem::model

namespace tandem::schedule {

class PairRunner;
class ReplicaGradSync;

struct ExecutorOptions {
  // The gradient each micro-batch's loss starts its backward with (1 / micro-batches for a mean
  // over the step); also scales the balance loss injected inside the stages.
  double loss_scale = 1.0;
  // dtype and device of the activations and gradients passed between stages (what a producer
  // sends is converted to it, so a receive buffer always matches).
  at::ScalarType activation_dtype = at::kFloat;
  at::Device device = at::kCPU;
  // Run every forward under bf16 autocast on `device`'s type (model/autocast.h). The scope is
  // opened around each forward on the thread that runs it: the pair runner's worker thread does
  // not inherit the caller's (thread-local) autocast state.
  bool autocast_bf16 = false;
  // Overlap the halves of F+B pairs (PairRunner); false runs them one after the other.
  bool overlap_pairs = true;
  // Run an MpiProgressThread during each step when the pp communicator is MPI.
  bool progress_thread = true;
  // Post the receives of the next `recv_lookahead` ops when an op starts; 0 posts all of the step
  // at its start (fine for MPI; stream-ordered backends want a small window).
  int recv_lookahead = 0;
};

// Losses of one micro-batch as seen by this rank.
struct MicroBatchLosses {
  bool has_head = false;  // this rank ran the micro-batch's last stage (lm/mtp valid)
  double lm_loss = 0;
  double mtp_loss = 0;
  double aux_loss = 0;  // balance loss of the micro-batch in this rank's stages (sum)
};

struct StepReport {
  // Measured time of each op of this rank's list, in ms on the system-wide monotonic clock
  // (comparable between the ranks of one host; subtract a common origin to draw).
  std::vector<OpTime> op_times;
  // The pieces as they ran, in order (an overlapped pair: its forward, then its backward).
  std::vector<Op> executed;
  std::vector<MicroBatchLosses> losses;  // [micro-batch]
  long long pair_switches = 0;           // turns handed over inside pairs this step
};

class PipelineExecutor {
 public:
  // `chunks[c]` must be the stage placement.stage_of(rank, c) of `schedule`; `pp` the pipeline
  // communicator (rank `rank` of schedule.num_ranks; may be null when there is one rank). The
  // schedule is validated (kInput), and its W order must be the FIFO order of its B's on every
  // rank. Sets one shared weight-gradient queue and (with overlap) the pair runner's hook on
  // every chunk.
  PipelineExecutor(Schedule schedule, int rank, std::vector<std::shared_ptr<model::Stage>> chunks,
                   parallel::CommunicatorPtr pp, ExecutorOptions options = {});
  ~PipelineExecutor();
  PipelineExecutor(const PipelineExecutor&) = delete;
  PipelineExecutor& operator=(const PipelineExecutor&) = delete;

  const Schedule& schedule() const { return schedule_; }
  int rank() const { return rank_; }
  const ExecutorOptions& options() const { return options_; }
  void set_loss_scale(double loss_scale) { options_.loss_scale = loss_scale; }

  // Called on this thread right after chunk `chunk` ran its last backward piece of a step.
  void set_chunk_done_callback(std::function<void(int chunk)> callback);

  // Runs one step: micro_batches[mb] holds micro-batch mb's tokens [B, T+1] int64 (the same on
  // every pp rank). Gradients accumulate into the stages' .grad (zero them before); on return,
  // every weight gradient of the step is computed and summed over the replicas of each
  // parameter. Throws tandem::Error on a communication failure (the step is lost).
  StepReport run_step(const std::vector<at::Tensor>& micro_batches);

  // Forward only (evaluation): every micro-batch (any count) goes through stages 0 .. S-1 along the
  // path micro-batch 0 takes in training (DualPipe: the downward copies), without autograd. Returns
  // each micro-batch's LM loss on the rank holding the last stage of that path, nullopt on the
  // others. Put the stages in eval mode (Stage::train(false)) first. Collective over pp.
  std::optional<std::vector<double>> evaluate(const std::vector<at::Tensor>& micro_batches);

  // See ReplicaGradSync::is_primary.
  bool is_primary(int chunk, const std::string& name) const;

  struct State;  // per-step state, defined in executor.cpp

 private:
  Schedule schedule_;
  int rank_;
  std::vector<std::shared_ptr<model::Stage>> chunks_;
  parallel::CommunicatorPtr pp_;
  ExecutorOptions options_;
  std::shared_ptr<model::WeightGradQueue> queue_;
  std::shared_ptr<PairRunner> pairs_;
  std::unique_ptr<ReplicaGradSync> replicas_;
  std::vector<int> last_backward_op_;  // [chunk] index of the op holding its last backward piece
  std::function<void(int)> chunk_done_;
};

// The tag of a pipeline message (tensor, micro-batch, producing stage); below
// 2 * num_microbatches * num_stages. Exposed for tests.
int transfer_tag(const Placement& placement, const Transfer& transfer);

// The problem with running `schedule`'s W's from one FIFO per rank (the order of W's differs from
// the order of the B's they complete), or nullopt.
std::optional<std::string> weight_fifo_problem(const Schedule& schedule);

}  // namespace tandem::schedule
