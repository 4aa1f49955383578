// The pipeline schedule IR: for every pipeline rank, the ordered list of ops it runs in one
// optimizer step. Generators produce it, the validator checks it, the simulator plays it and the
// executor (schedule/executor/) runs it on real stages, so what is simulated is what runs.
// Invariants of a valid Schedule (see validator.h): every (micro-batch, stage) has exactly one F
// and one backward (BW, or B followed later by W on the same rank); an op's (rank, chunk) is the
// slot the Placement gives its (micro-batch, stage); the p2p an op implies is derived from the
// Placement alone, never stored, so it cannot disagree with the op lists.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/config_schema.h"

namespace tandem::schedule {

enum class ScheduleKind : std::uint8_t { kGpipe, k1F1B, kInterleaved, kZb1p, kDualPipe, kDualPipeV };

// The names of the kinds (DESIGN.md section 9): job files (parallel.pipeline.schedule), the CLI
// and schedule JSON files spell them so.
inline constexpr config::EnumNames<ScheduleKind, 6> kScheduleKindNames{{{ScheduleKind::kGpipe, "gpipe"},
                                                                        {ScheduleKind::k1F1B, "1f1b"},
                                                                        {ScheduleKind::kInterleaved, "interleaved"},
                                                                        {ScheduleKind::kZb1p, "zb1p"},
                                                                        {ScheduleKind::kDualPipe, "dualpipe"},
                                                                        {ScheduleKind::kDualPipeV, "dualpipev"}}};
constexpr const auto& config_enum_names(ScheduleKind) { return kScheduleKindNames; }

inline constexpr std::array<ScheduleKind, 6> kAllScheduleKinds = {ScheduleKind::kGpipe,       ScheduleKind::k1F1B,
                                                                  ScheduleKind::kInterleaved, ScheduleKind::kZb1p,
                                                                  ScheduleKind::kDualPipe,    ScheduleKind::kDualPipeV};

// The kind's name in kScheduleKindNames.
std::string_view schedule_kind_name(ScheduleKind kind);

// Inverse of schedule_kind_name (case-insensitive). Throws tandem::Error(kConfig) naming the
// known kinds when `name` is none of them.
ScheduleKind parse_schedule_kind(std::string_view name);

// Whether tokens of this kind print the chunk (`F3.1`): only where a rank holds several stages
// that a micro-batch visits in turn (interleaved, dualpipev). DualPipe's chunk is implied by the
// micro-batch's direction, so it is not printed (docs/dualpipe.md#tokens).
bool shows_chunk(ScheduleKind kind);

// One compute piece. B computes the input gradient and queues its weight gradient, which a later
// W on the same rank computes; BW does both at once.
enum class OpKind : std::uint8_t { kF, kB, kW, kBW };

std::string_view op_kind_name(OpKind kind);  // "F", "B", "W", "BW"
constexpr bool is_backward(OpKind kind) { return kind == OpKind::kB || kind == OpKind::kBW; }
// The piece after which a micro-batch's activation on a stage is no longer needed.
constexpr bool frees_activation(OpKind kind) { return kind == OpKind::kBW || kind == OpKind::kW; }

// A piece names its micro-batch and the chunk (which of the rank's stages) it runs on.
struct Piece {
  OpKind kind = OpKind::kF;
  std::int32_t mb = 0;
  std::int32_t chunk = 0;
  bool operator==(const Piece&) const = default;
};

// One entry of a rank's list: a single piece, or an overlapped pair issued together so that
// each side's communication hides under the other side's compute. In a pair, `first` is the
// forward and `second` the backward (B or BW) of another micro-batch; the validator enforces it.
struct Op {
  Piece first;
  std::optional<Piece> second;

  bool is_pair() const { return second.has_value(); }
  static Op single(OpKind kind, int mb, int chunk = 0) { return Op{Piece{kind, mb, chunk}, std::nullopt}; }
  static Op pair(Piece forward, Piece backward) { return Op{forward, backward}; }
  bool operator==(const Op&) const = default;
};

// Where stages live. Rank r holds `num_chunks` stages; chunk c of rank r is global stage
// stage_of(r, c), and a micro-batch visits stages 0 .. num_stages-1 in order (forward), then
// back (backward).
enum class PlacementKind : std::uint8_t {
  kLinear,         // P stages; stage r on rank r (gpipe, 1f1b, zb1p)
  kInterleaved,    // v*P stages; chunk c of rank r is stage c*P + r (Megatron's virtual pipeline)
  kBidirectional,  // DualPipe: P stages, each held twice. Micro-batches 0..M/2-1 flow down and
                   // use chunk 0 (stage r on rank r); M/2..M-1 flow up and use chunk 1
                   // (stage P-1-r on rank r)
  kVShape,         // DualPipeV: 2P stages; chunk 0 of rank r is stage r, chunk 1 is 2P-1-r
};

struct Slot {
  int rank = 0;
  int chunk = 0;
  bool operator==(const Slot&) const = default;
};

// Pure arithmetic, O(1) per query. Construct through placement_for() or Schedule.
class Placement {
 public:
  Placement() = default;
  Placement(PlacementKind kind, int num_ranks, int num_chunks, int num_microbatches);

  PlacementKind kind() const { return kind_; }
  int num_ranks() const { return num_ranks_; }
  int num_chunks() const { return num_chunks_; }  // stages held per rank
  int num_stages() const { return num_stages_; }
  int num_microbatches() const { return num_microbatches_; }

  // Global stage of chunk `chunk` of `rank`. Precondition: both in range.
  int stage_of(int rank, int chunk) const;
  // Where micro-batch `mb` runs stage `stage`. Precondition: both in range.
  Slot slot_of(int mb, int stage) const;
  // The chunk a token without an explicit chunk means: the micro-batch's direction for DualPipe,
  // else 0.
  int default_chunk(int mb) const;
  bool is_last_stage(int stage) const { return stage == num_stages_ - 1; }

  bool operator==(const Placement&) const = default;

 private:
  PlacementKind kind_ = PlacementKind::kLinear;
  int num_ranks_ = 1;
  int num_chunks_ = 1;
  int num_stages_ = 1;
  int num_microbatches_ = 1;
};

// The placement a schedule kind uses. `num_chunks` matters only for interleaved.
Placement placement_for(ScheduleKind kind, int num_ranks, int num_chunks, int num_microbatches);

// --- Point-to-point implied by an op ------------------------------------------------------
enum class TensorKind : std::uint8_t { kActivation, kGradient };
std::string_view tensor_kind_name(TensorKind kind);  // "activation", "gradient"

// One message between two ranks, identified by (tensor, mb, from_stage). Between two ranks the
// activations and the gradients may cross (DualPipe), so an executor matches messages by that
// identity or keeps one FIFO channel per (peer, tensor kind); see channel_order_problem().
struct Transfer {
  TensorKind tensor = TensorKind::kActivation;
  int peer = 0;  // the rank on the other side
  int mb = 0;
  int from_stage = 0;  // stage that produces the tensor
  int to_stage = 0;    // stage that consumes it
  bool operator==(const Transfer&) const = default;
};

// What one piece receives before it runs, sends after it, and whether it computes the loss.
// F on stage s receives the activation of stage s-1 and sends its own to stage s+1; B/BW on stage
// s receives the gradient of stage s+1 and sends its own to stage s-1; W communicates nothing.
// No message exists where the neighbouring stage lives on the same rank (DualPipeV's turn at rank
// P-1, interleaved chunk wraps when P = 1). F on the last stage computes the loss, which is where
// the backward of that micro-batch starts.
struct PieceComm {
  std::optional<Transfer> recv;
  std::optional<Transfer> send;
  bool computes_loss = false;
};
PieceComm piece_comm(const Placement& placement, int rank, const Piece& piece);

// The same for a whole op: all receives are posted (and waited for) before the op starts; all
// sends are posted, non-blocking, when it ends.
struct OpComm {
  std::array<Transfer, 2> recv_storage{};
  std::array<Transfer, 2> send_storage{};
  int num_recvs = 0;
  int num_sends = 0;
  bool computes_loss = false;

  std::span<const Transfer> recvs() const { return {recv_storage.data(), static_cast<std::size_t>(num_recvs)}; }
  std::span<const Transfer> sends() const { return {send_storage.data(), static_cast<std::size_t>(num_sends)}; }
};
OpComm op_comm(const Placement& placement, int rank, const Op& op);

// --- The schedule -------------------------------------------------------------------------
struct Schedule {
  ScheduleKind kind = ScheduleKind::k1F1B;
  int num_ranks = 1;         // P: pipeline ranks
  int num_microbatches = 1;  // M: micro-batches per optimizer step
  int num_chunks = 1;        // v: stages held per rank (2 for dualpipe and dualpipev)
  int num_stages = 1;        // P, v*P or 2P, per the placement
  Placement placement;
  std::vector<std::vector<Op>> ranks;  // ranks[r] is rank r's op list, in execution order

  std::size_t num_ops() const;
  int stage_of(int rank, const Piece& piece) const { return placement.stage_of(rank, piece.chunk); }
  bool operator==(const Schedule&) const = default;
};

// A schedule of the given shape with empty op lists. Checks only that the sizes are positive and
// small enough to simulate (kConfig); the kind's own rules are the generators' business.
Schedule make_empty_schedule(ScheduleKind kind, int num_ranks, int num_microbatches, int num_chunks);

// --- Tokens (docs/dualpipe.md#tokens) -------------------------------------------------------------
// `F3`, `B4`, `W4`, `BW5`, `F3+BW5`; with the chunk: `F3.0`, `F4.1+BW0.0`.
void append_piece(std::string& out, const Piece& piece, bool show_chunk);
void append_op(std::string& out, const Op& op, bool show_chunk);
std::string format_op(const Op& op, bool show_chunk);

// Parses one token. A missing chunk means placement.default_chunk(mb). Throws
// tandem::Error(kInput) naming the token when it is malformed; range checks are the validator's.
Op parse_op(std::string_view token, const Placement& placement);

}  // namespace tandem::schedule
