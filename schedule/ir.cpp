// Schedule IR: kind names, placements, the p2p an op implies, and the token notation.
// Everything here is O(1) arithmetic per query, because the validator and simulator call it for
// every op of schedules with a hundred thousand ops.
#include "schedule/ir.h"

#include <charconv>
#include <cstddef>

#include "runtime/error.h"

namespace tandem::schedule {

namespace {
// Keeps the per-(micro-batch, stage) tables of the validator and simulator within ~100 MB.
constexpr long long kMaxStageVisits = 1LL << 24;
constexpr int kMaxRanks = 1 << 16;

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}
}  // namespace

std::string_view schedule_kind_name(ScheduleKind kind) { return config::enum_name(kind); }

ScheduleKind parse_schedule_kind(std::string_view name) {
  for (ScheduleKind kind : kAllScheduleKinds) {
    if (iequals(name, schedule_kind_name(kind))) return kind;
  }
  std::vector<std::string_view> known;
  for (ScheduleKind kind : kAllScheduleKinds) known.push_back(schedule_kind_name(kind));
  TANDEM_THROW(kConfig, "unknown schedule kind '{}' (known: {})", name, fmt::join(known, ", "));
}

bool shows_chunk(ScheduleKind kind) { return kind == ScheduleKind::kInterleaved || kind == ScheduleKind::kDualPipeV; }

std::string_view op_kind_name(OpKind kind) {
  switch (kind) {
    case OpKind::kF: return "F";
    case OpKind::kB: return "B";
    case OpKind::kW: return "W";
    case OpKind::kBW: return "BW";
  }
  return "?";
}

std::string_view tensor_kind_name(TensorKind kind) {
  return kind == TensorKind::kActivation ? "activation" : "gradient";
}

// --- Placement --------------------------------------------------------------------------------

Placement::Placement(PlacementKind kind, int num_ranks, int num_chunks, int num_microbatches)
    : kind_(kind), num_ranks_(num_ranks), num_chunks_(num_chunks), num_microbatches_(num_microbatches) {
  TANDEM_CHECK(num_ranks >= 1 && num_chunks >= 1 && num_microbatches >= 1, "bad placement sizes P={} v={} M={}",
               num_ranks, num_chunks, num_microbatches);
  switch (kind) {
    case PlacementKind::kLinear:
      TANDEM_CHECK(num_chunks == 1, "a linear placement holds one chunk per rank (got {})", num_chunks);
      num_stages_ = num_ranks;
      break;
    case PlacementKind::kInterleaved: num_stages_ = num_chunks * num_ranks; break;
    case PlacementKind::kBidirectional:
      TANDEM_CHECK(num_chunks == 2, "DualPipe holds two chunks per rank (got {})", num_chunks);
      num_stages_ = num_ranks;
      break;
    case PlacementKind::kVShape:
      TANDEM_CHECK(num_chunks == 2, "DualPipeV holds two chunks per rank (got {})", num_chunks);
      num_stages_ = 2 * num_ranks;
      break;
  }
}

int Placement::stage_of(int rank, int chunk) const {
  switch (kind_) {
    case PlacementKind::kLinear: return rank;
    case PlacementKind::kInterleaved: return chunk * num_ranks_ + rank;
    case PlacementKind::kBidirectional: return chunk == 0 ? rank : num_ranks_ - 1 - rank;
    case PlacementKind::kVShape: return chunk == 0 ? rank : 2 * num_ranks_ - 1 - rank;
  }
  return rank;
}

Slot Placement::slot_of(int mb, int stage) const {
  switch (kind_) {
    case PlacementKind::kLinear: return {stage, 0};
    case PlacementKind::kInterleaved: return {stage % num_ranks_, stage / num_ranks_};
    case PlacementKind::kBidirectional:
      return default_chunk(mb) == 0 ? Slot{stage, 0} : Slot{num_ranks_ - 1 - stage, 1};
    case PlacementKind::kVShape: return stage < num_ranks_ ? Slot{stage, 0} : Slot{2 * num_ranks_ - 1 - stage, 1};
  }
  return {stage, 0};
}

int Placement::default_chunk(int mb) const {
  if (kind_ != PlacementKind::kBidirectional) return 0;
  return mb < num_microbatches_ / 2 ? 0 : 1;
}

Placement placement_for(ScheduleKind kind, int num_ranks, int num_chunks, int num_microbatches) {
  switch (kind) {
    case ScheduleKind::kGpipe:
    case ScheduleKind::k1F1B:
    case ScheduleKind::kZb1p: return Placement(PlacementKind::kLinear, num_ranks, 1, num_microbatches);
    case ScheduleKind::kInterleaved:
      return Placement(PlacementKind::kInterleaved, num_ranks, num_chunks, num_microbatches);
    case ScheduleKind::kDualPipe: return Placement(PlacementKind::kBidirectional, num_ranks, 2, num_microbatches);
    case ScheduleKind::kDualPipeV: return Placement(PlacementKind::kVShape, num_ranks, 2, num_microbatches);
  }
  TANDEM_THROW(kInternal, "unhandled schedule kind {}", static_cast<int>(kind));
}

// --- Point-to-point ---------------------------------------------------------------------------

PieceComm piece_comm(const Placement& placement, int rank, const Piece& piece) {
  PieceComm comm;
  if (piece.kind == OpKind::kW) return comm;
  const int stage = placement.stage_of(rank, piece.chunk);
  const bool has_prev = stage > 0;
  const bool has_next = stage + 1 < placement.num_stages();
  const int prev_rank = has_prev ? placement.slot_of(piece.mb, stage - 1).rank : -1;
  const int next_rank = has_next ? placement.slot_of(piece.mb, stage + 1).rank : -1;
  if (piece.kind == OpKind::kF) {
    if (has_prev && prev_rank != rank)
      comm.recv = Transfer{TensorKind::kActivation, prev_rank, piece.mb, stage - 1, stage};
    if (has_next && next_rank != rank)
      comm.send = Transfer{TensorKind::kActivation, next_rank, piece.mb, stage, stage + 1};
    comm.computes_loss = !has_next;
  } else {
    if (has_next && next_rank != rank)
      comm.recv = Transfer{TensorKind::kGradient, next_rank, piece.mb, stage + 1, stage};
    if (has_prev && prev_rank != rank)
      comm.send = Transfer{TensorKind::kGradient, prev_rank, piece.mb, stage, stage - 1};
  }
  return comm;
}

OpComm op_comm(const Placement& placement, int rank, const Op& op) {
  OpComm out;
  auto add = [&](const Piece& piece) {
    PieceComm comm = piece_comm(placement, rank, piece);
    if (comm.recv) out.recv_storage[out.num_recvs++] = *comm.recv;
    if (comm.send) out.send_storage[out.num_sends++] = *comm.send;
    out.computes_loss = out.computes_loss || comm.computes_loss;
  };
  add(op.first);
  if (op.second) add(*op.second);
  return out;
}

// --- Schedule ---------------------------------------------------------------------------------

std::size_t Schedule::num_ops() const {
  std::size_t total = 0;
  for (const auto& list : ranks) total += list.size();
  return total;
}

Schedule make_empty_schedule(ScheduleKind kind, int num_ranks, int num_microbatches, int num_chunks) {
  TANDEM_CHECK_CONFIG(num_ranks >= 1 && num_ranks <= kMaxRanks, "{} needs 1 <= pp <= {} (got pp={})",
                      schedule_kind_name(kind), kMaxRanks, num_ranks);
  TANDEM_CHECK_CONFIG(num_microbatches >= 1, "{} needs micro_batches >= 1 (got {})", schedule_kind_name(kind),
                      num_microbatches);
  TANDEM_CHECK_CONFIG(num_chunks >= 1, "{} needs chunks >= 1 (got {})", schedule_kind_name(kind), num_chunks);
  Schedule schedule;
  schedule.kind = kind;
  schedule.placement = placement_for(kind, num_ranks, num_chunks, num_microbatches);
  schedule.num_ranks = num_ranks;
  schedule.num_microbatches = num_microbatches;
  schedule.num_chunks = schedule.placement.num_chunks();
  schedule.num_stages = schedule.placement.num_stages();
  const long long visits = static_cast<long long>(num_microbatches) * schedule.num_stages;
  TANDEM_CHECK_CONFIG(visits <= kMaxStageVisits,
                      "{} with pp={} micro_batches={} has {} (micro-batch, stage) pairs; the limit is {}",
                      schedule_kind_name(kind), num_ranks, num_microbatches, visits, kMaxStageVisits);
  schedule.ranks.resize(static_cast<std::size_t>(num_ranks));
  return schedule;
}

// --- Tokens -----------------------------------------------------------------------------------

void append_piece(std::string& out, const Piece& piece, bool show_chunk) {
  out += op_kind_name(piece.kind);
  char buffer[16];
  auto result = std::to_chars(buffer, buffer + sizeof buffer, piece.mb);
  out.append(buffer, result.ptr);
  if (show_chunk) {
    out += '.';
    result = std::to_chars(buffer, buffer + sizeof buffer, piece.chunk);
    out.append(buffer, result.ptr);
  }
}

void append_op(std::string& out, const Op& op, bool show_chunk) {
  append_piece(out, op.first, show_chunk);
  if (op.second) {
    out += '+';
    append_piece(out, *op.second, show_chunk);
  }
}

std::string format_op(const Op& op, bool show_chunk) {
  std::string out;
  append_op(out, op, show_chunk);
  return out;
}

namespace {
// Reads a non-negative decimal at text[pos...]; returns false when there is none.
bool read_number(std::string_view text, std::size_t& pos, int& value) {
  const char* begin = text.data() + pos;
  const char* end = text.data() + text.size();
  if (begin == end || *begin < '0' || *begin > '9') return false;
  auto [ptr, ec] = std::from_chars(begin, end, value);
  if (ec != std::errc()) return false;
  pos += static_cast<std::size_t>(ptr - begin);
  return true;
}

Piece parse_piece(std::string_view piece_text, std::string_view token, const Placement& placement) {
  Piece piece;
  std::size_t pos = 0;
  if (piece_text.starts_with("BW")) {
    piece.kind = OpKind::kBW;
    pos = 2;
  } else if (!piece_text.empty() && (piece_text[0] == 'F' || piece_text[0] == 'B' || piece_text[0] == 'W')) {
    piece.kind = piece_text[0] == 'F' ? OpKind::kF : piece_text[0] == 'B' ? OpKind::kB : OpKind::kW;
    pos = 1;
  } else {
    TANDEM_THROW(kInput, "bad op token '{}': '{}' must start with F, B, W or BW", token, piece_text);
  }
  int mb = 0;
  if (!read_number(piece_text, pos, mb)) {
    TANDEM_THROW(kInput, "bad op token '{}': expected a micro-batch number after '{}'", token,
                 op_kind_name(piece.kind));
  }
  piece.mb = mb;
  piece.chunk = placement.default_chunk(mb);
  if (pos < piece_text.size() && piece_text[pos] == '.') {
    ++pos;
    int chunk = 0;
    if (!read_number(piece_text, pos, chunk)) {
      TANDEM_THROW(kInput, "bad op token '{}': expected a chunk number after '.'", token);
    }
    piece.chunk = chunk;
  }
  if (pos != piece_text.size()) {
    TANDEM_THROW(kInput, "bad op token '{}': unexpected '{}'", token, piece_text.substr(pos));
  }
  return piece;
}
}  // namespace

Op parse_op(std::string_view token, const Placement& placement) {
  const std::size_t plus = token.find('+');
  if (plus == std::string_view::npos) return Op{parse_piece(token, token, placement), std::nullopt};
  Op op{parse_piece(token.substr(0, plus), token, placement), std::nullopt};
  op.second = parse_piece(token.substr(plus + 1), token, placement);
  return op;
}

}  // namespace tandem::schedule
