// Preconditions, the generate() entry point, and the single-direction generators (GPipe, 1F1B,
// interleaved 1F1B, ZB-H1). DualPipe and DualPipeV live in dualpipe.cpp. Each generator emits
// every rank's list in one pass, O(ops).
#include "schedule/generators.h"

#include <algorithm>

#include <spdlog/fmt/fmt.h>

#include "runtime/error.h"

namespace tandem::schedule {

int default_num_chunks(ScheduleKind kind) {
  switch (kind) {
    case ScheduleKind::kInterleaved:
    case ScheduleKind::kDualPipe:
    case ScheduleKind::kDualPipeV: return 2;
    default: return 1;
  }
}

std::optional<std::string> precondition_violation(ScheduleKind kind, int num_ranks, int num_microbatches,
                                                  int num_chunks) {
  const std::string_view name = schedule_kind_name(kind);
  const int p = num_ranks;
  const int m = num_microbatches;
  const int v = num_chunks == 0 ? default_num_chunks(kind) : num_chunks;
  if (p < 1) return fmt::format("{} needs pp >= 1 (got pp={})", name, p);
  if (m < 1) return fmt::format("{} needs micro_batches >= 1 (got {})", name, m);
  if (kind == ScheduleKind::kInterleaved) {
    if (v < 2) return fmt::format("interleaved needs chunks >= 2 per rank (got {}); use 1f1b for one chunk", v);
    if (m % p != 0) {
      return fmt::format("interleaved needs micro_batches divisible by pp (Megatron's rule; got {} % {} = {})", m, p,
                         m % p);
    }
    return std::nullopt;
  }
  if (v != default_num_chunks(kind)) {
    return fmt::format("{} holds {} chunk(s) per rank (got chunks={}); only interleaved takes a chunk count", name,
                       default_num_chunks(kind), v);
  }
  if (kind == ScheduleKind::kDualPipe) {
    if (p % 2 != 0) return fmt::format("dualpipe needs an even number of pipeline ranks (got pp={})", p);
    if (m < 2 * p) return fmt::format("dualpipe needs micro_batches >= 2*pp (got {} < {})", m, 2 * p);
    if (m % 2 != 0) {
      return fmt::format("dualpipe needs an even number of micro-batches, half flowing each way (got {})", m);
    }
  }
  if (kind == ScheduleKind::kDualPipeV && m < 2 * p) {
    return fmt::format("dualpipev needs micro_batches >= 2*pp (got {} < {})", m, 2 * p);
  }
  return std::nullopt;
}

namespace {
void check_preconditions(ScheduleKind kind, int num_ranks, int num_microbatches, int num_chunks) {
  if (auto rule = precondition_violation(kind, num_ranks, num_microbatches, num_chunks)) {
    TANDEM_THROW(kConfig, "{}", *rule);
  }
}

Schedule empty(ScheduleKind kind, int num_ranks, int num_microbatches, int num_chunks) {
  check_preconditions(kind, num_ranks, num_microbatches, num_chunks);
  return make_empty_schedule(kind, num_ranks, num_microbatches, num_chunks);
}
}  // namespace

Schedule generate(ScheduleKind kind, int num_ranks, int num_microbatches, int num_chunks) {
  check_preconditions(kind, num_ranks, num_microbatches, num_chunks);
  switch (kind) {
    case ScheduleKind::kGpipe: return generate_gpipe(num_ranks, num_microbatches);
    case ScheduleKind::k1F1B: return generate_1f1b(num_ranks, num_microbatches);
    case ScheduleKind::kInterleaved:
      return generate_interleaved(num_ranks, num_microbatches, num_chunks == 0 ? 2 : num_chunks);
    case ScheduleKind::kZb1p: return generate_zb1p(num_ranks, num_microbatches);
    case ScheduleKind::kDualPipe: return generate_dualpipe(num_ranks, num_microbatches);
    case ScheduleKind::kDualPipeV: return generate_dualpipev(num_ranks, num_microbatches);
  }
  TANDEM_THROW(kInternal, "unhandled schedule kind {}", static_cast<int>(kind));
}

Schedule generate_gpipe(int num_ranks, int num_microbatches) {
  Schedule s = empty(ScheduleKind::kGpipe, num_ranks, num_microbatches, 1);
  for (auto& ops : s.ranks) {
    ops.reserve(2 * static_cast<std::size_t>(num_microbatches));
    for (int mb = 0; mb < num_microbatches; ++mb) ops.push_back(Op::single(OpKind::kF, mb));
    for (int mb = 0; mb < num_microbatches; ++mb) ops.push_back(Op::single(OpKind::kBW, mb));
  }
  return s;
}

Schedule generate_1f1b(int num_ranks, int num_microbatches) {
  Schedule s = empty(ScheduleKind::k1F1B, num_ranks, num_microbatches, 1);
  const int m = num_microbatches;
  for (int r = 0; r < num_ranks; ++r) {
    auto& ops = s.ranks[static_cast<std::size_t>(r)];
    ops.reserve(2 * static_cast<std::size_t>(m));
    const int warmup = std::min(num_ranks - r - 1, m);
    for (int mb = 0; mb < warmup; ++mb) ops.push_back(Op::single(OpKind::kF, mb));
    for (int i = 0; i < m - warmup; ++i) {
      ops.push_back(Op::single(OpKind::kF, warmup + i));
      ops.push_back(Op::single(OpKind::kBW, i));
    }
    for (int mb = m - warmup; mb < m; ++mb) ops.push_back(Op::single(OpKind::kBW, mb));
  }
  return s;
}

Schedule generate_interleaved(int num_ranks, int num_microbatches, int num_chunks) {
  Schedule s = empty(ScheduleKind::kInterleaved, num_ranks, num_microbatches, num_chunks);
  const int p = num_ranks;
  const int v = num_chunks;
  const int total = num_microbatches * v;  // (micro-batch, chunk) visits per rank
  // The k-th forward (backward) of a rank: micro-batches go in groups of P, each group through
  // chunk 0, 1, ... (backward: v-1, v-2, ...) before the next group starts.
  auto forward = [&](int k) {
    const int group = k / (p * v);
    return Op::single(OpKind::kF, group * p + k % p, (k % (p * v)) / p);
  };
  auto backward = [&](int k) {
    const int group = k / (p * v);
    return Op::single(OpKind::kBW, group * p + k % p, v - 1 - (k % (p * v)) / p);
  };
  for (int r = 0; r < p; ++r) {
    auto& ops = s.ranks[static_cast<std::size_t>(r)];
    ops.reserve(2 * static_cast<std::size_t>(total));
    const int warmup = num_microbatches == p ? total : std::min((p - r - 1) * 2 + (v - 1) * p, total);
    for (int k = 0; k < warmup; ++k) ops.push_back(forward(k));
    for (int i = 0; i < total - warmup; ++i) {
      ops.push_back(forward(warmup + i));
      ops.push_back(backward(i));
    }
    for (int k = total - warmup; k < total; ++k) ops.push_back(backward(k));
  }
  return s;
}

Schedule generate_zb1p(int num_ranks, int num_microbatches) {
  Schedule s = empty(ScheduleKind::kZb1p, num_ranks, num_microbatches, 1);
  const int m = num_microbatches;
  for (int r = 0; r < num_ranks; ++r) {
    auto& ops = s.ranks[static_cast<std::size_t>(r)];
    ops.reserve(3 * static_cast<std::size_t>(m));
    int next_f = std::min(num_ranks - r, m);
    int next_w = 0;
    for (int mb = 0; mb < next_f; ++mb) ops.push_back(Op::single(OpKind::kF, mb));
    for (int i = 0; i < m; ++i) {
      ops.push_back(Op::single(OpKind::kB, i));
      // Rank r keeps r weight gradients queued: the deeper ranks finish their backwards first
      // and fill the drain with them, which is what takes (P-1)*W off 1F1B's bubble.
      if (i - next_w >= r) ops.push_back(Op::single(OpKind::kW, next_w++));
      if (next_f < m) ops.push_back(Op::single(OpKind::kF, next_f++));
    }
    while (next_w < m) ops.push_back(Op::single(OpKind::kW, next_w++));
  }
  return s;
}

}  // namespace tandem::schedule
