// PipelineExecutor (executor.h). A step keeps, per (micro-batch, chunk), the stage's input leaf
// and its output (hidden state or loss) from F to the backward piece; tensors between stages
// travel by tag (transfer_tag) through an inbox of posted receives, or through a same-rank
// hand-over map where the neighbouring stage lives on this rank. Every container is touched by
// one side of a pair at a time (the PairRunner's hand-over orders the accesses).
#include "schedule/executor/executor.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <chrono>
#include <deque>
#include <map>
#include <optional>

#include "model/autocast.h"
#include "model/stage.h"
#include "model/weight_grad_queue.h"
#include "parallel/mpi_progress.h"
#include "runtime/error.h"
#include "schedule/executor/pair_runner.h"
#include "schedule/executor/replica_grads.h"
#include "schedule/validator.h"

namespace tandem::schedule {

namespace {

// The pieces of an op in issue order (a pair: its forward, then its backward).
std::vector<Piece> pieces_of(const Op& op) {
  std::vector<Piece> out{op.first};
  if (op.second) out.push_back(*op.second);
  return out;
}

}  // namespace

int transfer_tag(const Placement& placement, const Transfer& transfer) {
  const int kind = transfer.tensor == TensorKind::kActivation ? 0 : 1;
  return (transfer.mb * placement.num_stages() + transfer.from_stage) * 2 + kind;
}

std::optional<std::string> weight_fifo_problem(const Schedule& schedule) {
  for (int r = 0; r < schedule.num_ranks; ++r) {
    std::deque<Piece> fifo;
    const auto& ops = schedule.ranks[static_cast<size_t>(r)];
    for (size_t i = 0; i < ops.size(); ++i) {
      for (const Piece& piece : pieces_of(ops[i])) {
        if (piece.kind == OpKind::kB) fifo.push_back(piece);
        if (piece.kind != OpKind::kW) continue;
        const bool matches = !fifo.empty() && fifo.front().mb == piece.mb && fifo.front().chunk == piece.chunk;
        if (!matches) {
          return fmt::format("rank {} op {} ({}) is not the oldest queued weight gradient ({}); the executor runs "
                             "W's first-in-first-out",
                             r, i, format_op(ops[i], true),
                             fifo.empty() ? std::string("none queued") : format_op(Op{fifo.front(), {}}, true));
        }
        fifo.pop_front();
      }
    }
  }
  return std::nullopt;
}

namespace {

using Clock = std::chrono::steady_clock;

double now_ms() { return std::chrono::duration<double, std::milli>(Clock::now().time_since_epoch()).count(); }

struct Posted {
  at::Tensor buffer;
  parallel::WorkHandle work;
};

// What F leaves for the backward of one (micro-batch, chunk).
struct Activation {
  at::Tensor input;   // the received hidden state as a leaf requiring grad; undefined on stage 0
  at::Tensor output;  // hidden state for the next stage, or the loss on the last stage
};

// A B whose weight gradients were queued: (mb, chunk), and whether it queued anything at all (a
// stage without split layers queues nothing, and its W has nothing to run).
struct QueuedW {
  int mb = 0;
  int chunk = 0;
  bool has_group = false;
};

}  // namespace

struct PipelineExecutor::State {
  const std::vector<at::Tensor>& tokens;
  std::vector<Activation> activations;    // [mb * num_chunks + chunk]
  std::map<int, Posted> inbox;            // posted receives by tag
  std::map<int, at::Tensor> handed_over;  // same-rank hand-overs by tag
  std::vector<parallel::WorkHandle> sends;
  std::deque<QueuedW> queued_w;
  size_t posted_until = 0;               // receives of ops [0, posted_until) are posted
  std::vector<at::Tensor> lm, mtp, aux;  // [mb] detached scalars (undefined: none here)
  StepReport report;

  explicit State(const std::vector<at::Tensor>& t) : tokens(t) {}
};

PipelineExecutor::PipelineExecutor(Schedule schedule, int rank, std::vector<std::shared_ptr<model::Stage>> chunks,
                                   parallel::CommunicatorPtr pp, ExecutorOptions options)
    : schedule_(std::move(schedule)), rank_(rank), chunks_(std::move(chunks)), pp_(std::move(pp)), options_(options) {
  check_valid(schedule_, ErrorKind::kInput);
  if (auto problem = weight_fifo_problem(schedule_)) TANDEM_THROW(kInput, "{}", *problem);
  const Placement& placement = schedule_.placement;
  TANDEM_CHECK(rank_ >= 0 && rank_ < schedule_.num_ranks, "pipeline rank {} outside a schedule of {} ranks", rank_,
               schedule_.num_ranks);
  TANDEM_CHECK(pp_ ? pp_->size() == schedule_.num_ranks && pp_->rank() == rank_ : schedule_.num_ranks == 1,
               "the pp communicator (rank {} of {}) does not match pipeline rank {} of {}", pp_ ? pp_->rank() : 0,
               pp_ ? pp_->size() : 1, rank_, schedule_.num_ranks);
  TANDEM_CHECK(static_cast<int>(chunks_.size()) == schedule_.num_chunks, "{} stages given for a schedule of {} chunks",
               chunks_.size(), schedule_.num_chunks);
  for (int c = 0; c < schedule_.num_chunks; ++c) {
    const model::StageSpec& spec = chunks_[static_cast<size_t>(c)]->spec();
    TANDEM_CHECK(spec.num_stages == schedule_.num_stages && spec.index == placement.stage_of(rank_, c),
                 "chunk {} of pipeline rank {} must be stage {} of {}, got stage {} of {}", c, rank_,
                 placement.stage_of(rank_, c), schedule_.num_stages, spec.index, spec.num_stages);
  }
  // One W FIFO for the rank (docs/dualpipe.md#weight-gradient-queue), and the pair runner's hook where pairs exist.
  queue_ = chunks_.front()->weight_grad_queue();
  bool has_pairs = false;
  for (const Op& op : schedule_.ranks[static_cast<size_t>(rank_)]) has_pairs = has_pairs || op.is_pair();
  if (options_.overlap_pairs && has_pairs) pairs_ = std::make_shared<PairRunner>();
  for (auto& chunk : chunks_) {
    chunk->set_weight_grad_queue(queue_);
    chunk->set_overlap_hook(pairs_);
  }
  replicas_ = std::make_unique<ReplicaGradSync>(placement, rank_, chunks_, pp_,
                                                2 * schedule_.num_microbatches * schedule_.num_stages);
  last_backward_op_.assign(chunks_.size(), -1);
  const auto& ops = schedule_.ranks[static_cast<size_t>(rank_)];
  for (size_t i = 0; i < ops.size(); ++i) {
    for (const Piece& piece : pieces_of(ops[i])) {
      if (piece.kind != OpKind::kF) last_backward_op_[static_cast<size_t>(piece.chunk)] = static_cast<int>(i);
    }
  }
}

PipelineExecutor::~PipelineExecutor() {
  for (auto& chunk : chunks_) chunk->set_overlap_hook(nullptr);
}

void PipelineExecutor::set_chunk_done_callback(std::function<void(int)> callback) { chunk_done_ = std::move(callback); }

bool PipelineExecutor::is_primary(int chunk, const std::string& name) const {
  return replicas_->is_primary(chunk, name);
}

namespace {

// The pieces of one step on one rank; a class so the piece functions share the step's state.
class StepRun {
 public:
  StepRun(const Schedule& schedule, int rank, const std::vector<std::shared_ptr<model::Stage>>& chunks,
          const parallel::CommunicatorPtr& pp, const ExecutorOptions& options, model::WeightGradQueue& queue,
          PipelineExecutor::State& state)
      : schedule_(schedule),
        placement_(schedule.placement),
        rank_(rank),
        chunks_(chunks),
        pp_(pp),
        options_(options),
        queue_(queue),
        s_(state) {}

  void post_receives_until(size_t end) {
    const auto& ops = schedule_.ranks[static_cast<size_t>(rank_)];
    end = std::min(end, ops.size());
    for (; s_.posted_until < end; ++s_.posted_until) {
      const OpComm comm = op_comm(placement_, rank_, ops[s_.posted_until]);
      for (const Transfer& t : comm.recvs()) {
        // The consumer's stage allocates what its producer sends: [B, T(/tp), C].
        const int stage = t.to_stage;
        const int chunk = slot_chunk(t.mb, stage);
        const auto shape = chunks_[static_cast<size_t>(chunk)]->hidden_shape(s_.tokens[static_cast<size_t>(t.mb)]);
        Posted posted;
        posted.buffer = at::empty(shape, at::TensorOptions().dtype(options_.activation_dtype).device(options_.device));
        posted.work = pp_->recv_async(posted.buffer, t.peer, transfer_tag(placement_, t));
        const bool fresh = s_.inbox.emplace(transfer_tag(placement_, t), std::move(posted)).second;
        TANDEM_CHECK(fresh, "two receives of the same tensor ({} of micro-batch {} from stage {})",
                     tensor_kind_name(t.tensor), t.mb, t.from_stage);
      }
    }
  }

  void wait_receives(const Op& op) {
    for (const Transfer& t : op_comm(placement_, rank_, op).recvs()) {
      auto it = s_.inbox.find(transfer_tag(placement_, t));
      TANDEM_CHECK(it != s_.inbox.end(), "the receive of {} (micro-batch {}) was never posted",
                   tensor_kind_name(t.tensor), t.mb);
      it->second.work->wait();
    }
  }

  void run_piece(const Piece& piece) {
    switch (piece.kind) {
      case OpKind::kF: forward(piece); break;
      case OpKind::kB:
      case OpKind::kBW: backward(piece); break;
      case OpKind::kW: weight_grads(piece); break;
    }
  }

  // Completed sends release their buffers; the rest go on in the background.
  void reap_sends() {
    std::erase_if(s_.sends, [](parallel::WorkHandle& work) { return work->is_completed(); });
  }

 private:
  int slot_chunk(int mb, int stage) const { return placement_.slot_of(mb, stage).chunk; }
  Activation& activation(const Piece& p) {
    return s_.activations[static_cast<size_t>(p.mb * schedule_.num_chunks + p.chunk)];
  }

  // The tensor a piece receives: from the inbox when it came over p2p, else the hand-over.
  at::Tensor take_input(const std::optional<Transfer>& recv, TensorKind kind, int mb, int from_stage) {
    const int tag = transfer_tag(placement_, Transfer{kind, rank_, mb, from_stage, 0});
    if (recv) {
      auto it = s_.inbox.find(tag);
      TANDEM_CHECK(it != s_.inbox.end() && it->second.work->is_completed(), "the {} of micro-batch {} has not arrived",
                   tensor_kind_name(kind), mb);
      at::Tensor buffer = std::move(it->second.buffer);
      s_.inbox.erase(it);
      return buffer;
    }
    auto it = s_.handed_over.find(tag);
    TANDEM_CHECK(it != s_.handed_over.end(), "the {} of micro-batch {} from stage {} was not produced on this rank",
                 tensor_kind_name(kind), mb, from_stage);
    at::Tensor value = std::move(it->second);
    s_.handed_over.erase(it);
    return value;
  }

  void give_output(const std::optional<Transfer>& send, TensorKind kind, int mb, int from_stage, at::Tensor value) {
    const int tag = transfer_tag(placement_, Transfer{kind, rank_, mb, from_stage, 0});
    value = value.to(options_.activation_dtype);
    if (send) {
      s_.sends.push_back(pp_->send_async(value.contiguous(), send->peer, tag));
    } else {
      s_.handed_over[tag] = std::move(value);
    }
  }

  void record(const Piece& piece) {
    std::vector<Op>& executed = s_.report.executed;
    if (current_op_started_) {
      executed.back().second = piece;
    } else {
      executed.push_back(Op{piece, std::nullopt});
      current_op_started_ = true;
    }
  }

 public:
  void begin_op() { current_op_started_ = false; }

 private:
  void forward(const Piece& p) {
    record(p);
    const int stage = placement_.stage_of(rank_, p.chunk);
    model::Stage& module = *chunks_[static_cast<size_t>(p.chunk)];
    const PieceComm comm = piece_comm(placement_, rank_, p);
    const at::Tensor& tokens = s_.tokens[static_cast<size_t>(p.mb)];
    at::Tensor hidden;
    if (stage > 0)
      hidden = take_input(comm.recv, TensorKind::kActivation, p.mb, stage - 1).detach().requires_grad_(true);
    model::StageOutput out;
    {
      const model::AutocastScope autocast(options_.device.type(), at::kBFloat16, options_.autocast_bf16);
      out = module.forward({.tokens = tokens, .hidden = hidden, .loss_scale = options_.loss_scale});
    }
    Activation& act = activation(p);
    act.input = hidden;
    const auto mb = static_cast<size_t>(p.mb);
    s_.aux[mb] = s_.aux[mb].defined() ? s_.aux[mb] + out.aux_loss.detach() : out.aux_loss.detach();
    if (placement_.is_last_stage(stage)) {
      act.output = out.losses.loss;
      s_.lm[mb] = out.losses.lm_loss.detach();
      s_.mtp[mb] = out.losses.mtp_loss.detach();
    } else {
      act.output = out.hidden;
      give_output(comm.send, TensorKind::kActivation, p.mb, stage, out.hidden.detach());
    }
  }

  void backward(const Piece& p) {
    record(p);
    const int stage = placement_.stage_of(rank_, p.chunk);
    model::Stage& module = *chunks_[static_cast<size_t>(p.chunk)];
    const PieceComm comm = piece_comm(placement_, rank_, p);
    Activation act = std::exchange(activation(p), Activation{});
    TANDEM_CHECK(act.output.defined(), "backward of micro-batch {} on stage {} before its forward", p.mb, stage);
    at::Tensor grad;
    if (placement_.is_last_stage(stage)) {
      grad = at::full({}, options_.loss_scale, act.output.options());
    } else {
      grad = take_input(comm.recv, TensorKind::kGradient, p.mb, stage + 1);
    }
    const bool defer = p.kind == OpKind::kB;
    const size_t groups_before = queue_.num_groups();
    module.backward({act.output}, {grad}, defer);
    if (defer) s_.queued_w.push_back({p.mb, p.chunk, queue_.num_groups() > groups_before});
    if (act.input.defined()) {
      TANDEM_CHECK(act.input.grad().defined(), "stage {} produced no gradient for its input (micro-batch {})", stage,
                   p.mb);
      give_output(comm.send, TensorKind::kGradient, p.mb, stage, act.input.grad());
    }
  }

  void weight_grads(const Piece& p) {
    record(p);
    TANDEM_CHECK(!s_.queued_w.empty() && s_.queued_w.front().mb == p.mb && s_.queued_w.front().chunk == p.chunk,
                 "W of micro-batch {} chunk {} is not the oldest queued weight gradient", p.mb, p.chunk);
    const QueuedW queued = s_.queued_w.front();
    s_.queued_w.pop_front();
    if (queued.has_group) TANDEM_CHECK(queue_.run_next_group(), "the weight-gradient queue lost a group");
  }

  const Schedule& schedule_;
  const Placement& placement_;
  int rank_;
  const std::vector<std::shared_ptr<model::Stage>>& chunks_;
  const parallel::CommunicatorPtr& pp_;
  const ExecutorOptions& options_;
  model::WeightGradQueue& queue_;
  PipelineExecutor::State& s_;
  bool current_op_started_ = false;
};

}  // namespace

StepReport PipelineExecutor::run_step(const std::vector<at::Tensor>& micro_batches) {
  TANDEM_CHECK(static_cast<int>(micro_batches.size()) == schedule_.num_microbatches,
               "{} micro-batches given for a schedule of {}", micro_batches.size(), schedule_.num_microbatches);
  const auto num_mb = static_cast<size_t>(schedule_.num_microbatches);
  auto state = std::make_unique<State>(micro_batches);
  state->activations.resize(num_mb * static_cast<size_t>(schedule_.num_chunks));
  state->lm.resize(num_mb);
  state->mtp.resize(num_mb);
  state->aux.resize(num_mb);
  const auto& ops = schedule_.ranks[static_cast<size_t>(rank_)];
  state->report.op_times.resize(ops.size());
  const long long switches_before = pairs_ ? pairs_->num_switches() : 0;
  std::optional<parallel::MpiProgressThread> progress;
  // MPI underneath (also host-staged device tensors): its transfers move only inside MPI calls.
  if (options_.progress_thread && (!pp_ || pp_->backend().rfind("mpi", 0) == 0)) progress.emplace();

  try {
    StepRun run(schedule_, rank_, chunks_, pp_, options_, *queue_, *state);
    replicas_->begin_step();
    const size_t lookahead = options_.recv_lookahead > 0 ? static_cast<size_t>(options_.recv_lookahead) : ops.size();
    for (size_t i = 0; i < ops.size(); ++i) {
      const Op& op = ops[i];
      run.post_receives_until(i + 1 + lookahead);
      run.wait_receives(op);
      run.begin_op();
      OpTime& time = state->report.op_times[i];
      time.start = now_ms();
      if (op.is_pair() && pairs_) {
        pairs_->run([&] { run.run_piece(op.first); }, [&] { run.run_piece(*op.second); });
      } else {
        run.run_piece(op.first);
        if (op.second) run.run_piece(*op.second);
      }
      time.end = now_ms();
      run.reap_sends();
      for (int c = 0; c < schedule_.num_chunks; ++c) {
        if (last_backward_op_[static_cast<size_t>(c)] != static_cast<int>(i)) continue;
        replicas_->chunk_done(c);
        if (chunk_done_) chunk_done_(c);
      }
    }
    for (parallel::WorkHandle& send : state->sends) send->wait();
    state->sends.clear();
    TANDEM_CHECK(state->inbox.empty() && state->handed_over.empty(), "{} received and {} handed-over tensors unused",
                 state->inbox.size(), state->handed_over.size());
    TANDEM_CHECK(state->queued_w.empty() && queue_->empty(), "weight gradients left queued at the end of the step");
    replicas_->finish();
  } catch (const std::exception& error) {
    // The step is lost; whatever is still in flight must not be waited for until its timeout
    // (peers may be gone): mark the pipeline communicator failed before the buffers go.
    if (pp_) pp_->abort(fmt::format("pipeline step failed on rank {}: {}", rank_, error.what()));
    queue_->discard_all();
    throw;
  }

  StepReport report = std::move(state->report);
  report.losses.resize(num_mb);
  for (size_t mb = 0; mb < num_mb; ++mb) {
    MicroBatchLosses& l = report.losses[mb];
    l.has_head = state->lm[mb].defined();
    if (l.has_head) {
      l.lm_loss = state->lm[mb].item<double>();
      l.mtp_loss = state->mtp[mb].item<double>();
    }
    if (state->aux[mb].defined()) l.aux_loss = state->aux[mb].item<double>();
  }
  report.pair_switches = pairs_ ? pairs_->num_switches() - switches_before : 0;
  return report;
}

std::optional<std::vector<double>> PipelineExecutor::evaluate(const std::vector<at::Tensor>& micro_batches) {
  torch::autograd::AutoGradMode no_grad(false);
  const Placement& placement = schedule_.placement;
  const int num_stages = placement.num_stages();
  std::optional<std::vector<double>> losses;
  std::vector<parallel::WorkHandle> sends;
  try {
    for (size_t e = 0; e < micro_batches.size(); ++e) {
      at::Tensor hidden;  // the previous stage's output when it ran on this rank
      auto tag_from = [&](int stage) {
        return transfer_tag(placement, Transfer{TensorKind::kActivation, 0, static_cast<int>(e), stage, 0});
      };
      for (int stage = 0; stage < num_stages; ++stage) {
        const Slot slot = placement.slot_of(0, stage);
        if (slot.rank != rank_) continue;
        model::Stage& module = *chunks_[static_cast<size_t>(slot.chunk)];
        if (stage > 0 && placement.slot_of(0, stage - 1).rank != rank_) {
          hidden = at::empty(module.hidden_shape(micro_batches[e]),
                             at::TensorOptions().dtype(options_.activation_dtype).device(options_.device));
          pp_->recv(hidden, placement.slot_of(0, stage - 1).rank, tag_from(stage - 1));
        }
        model::StageOutput out;
        {
          const model::AutocastScope autocast(options_.device.type(), at::kBFloat16, options_.autocast_bf16);
          out = module.forward({.tokens = micro_batches[e], .hidden = hidden});
        }
        if (placement.is_last_stage(stage)) {
          if (!losses) losses.emplace();
          losses->push_back(out.losses.lm_loss.item<double>());
          continue;
        }
        hidden = out.hidden.to(options_.activation_dtype);
        const int next = placement.slot_of(0, stage + 1).rank;
        if (next != rank_) sends.push_back(pp_->send_async(hidden.contiguous(), next, tag_from(stage)));
      }
    }
    for (parallel::WorkHandle& send : sends) send->wait();
  } catch (const std::exception& error) {
    if (pp_) pp_->abort(fmt::format("pipeline evaluation failed on rank {}: {}", rank_, error.what()));
    throw;
  }
  return losses;
}

}  // namespace tandem::schedule
