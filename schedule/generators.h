// Schedule generators: GPipe, 1F1B, interleaved 1F1B, ZB-H1, DualPipe and DualPipeV, each
// producing the per-rank op lists that docs/dualpipe.md defines. Each
// states its own preconditions; generate() checks them and throws a kConfig error naming the
// rule, so `tandem schedule` exits 2 on bad input. Generated schedules always pass validate().
#pragma once

#include <optional>
#include <string>

#include "schedule/ir.h"

namespace tandem::schedule {

// The chunks per rank a kind uses when the caller leaves it open (num_chunks = 0): 2 for
// interleaved, dualpipe and dualpipev, 1 otherwise.
int default_num_chunks(ScheduleKind kind);

// The rule (kind, P, M, v) breaks, as a sentence for the user, or nullopt when the generator
// accepts it. v = 0 means default_num_chunks(kind). The rules:
//   all: pp >= 1, micro_batches >= 1; v must be the kind's own (1, or 2 for dualpipe/dualpipev)
//        unless the kind is interleaved.
//   interleaved: chunks >= 2 and micro_batches divisible by pp (Megatron's rule).
//   dualpipe: pp even, micro_batches even and >= 2*pp.
//   dualpipev: micro_batches >= 2*pp (any pp >= 1).
std::optional<std::string> precondition_violation(ScheduleKind kind, int num_ranks, int num_microbatches,
                                                  int num_chunks = 0);

// Generates the schedule. Throws tandem::Error(kConfig) with precondition_violation()'s message.
Schedule generate(ScheduleKind kind, int num_ranks, int num_microbatches, int num_chunks = 0);

// The individual generators; preconditions as above (checked).
// GPipe: every rank runs all F in order, then all BW in order.
Schedule generate_gpipe(int num_ranks, int num_microbatches);
// 1F1B: min(P-r-1, M) warm-up F, then F/BW alternating, then the remaining BW.
Schedule generate_1f1b(int num_ranks, int num_microbatches);
// Megatron's interleaved 1F1B with v chunks per rank: forwards in groups of P micro-batches per
// chunk, (P-r-1)*2 + (v-1)*P warm-up forwards (all of them when M == P).
Schedule generate_interleaved(int num_ranks, int num_microbatches, int num_chunks);
// ZB-H1: the 1F1B order with B split from W. Rank r runs min(P-r, M) forwards before its first
// B, keeps r weight gradients queued in the steady state (so its live activations never exceed
// P, as in 1F1B), and drains the queue at the end where 1F1B would idle.
Schedule generate_zb1p(int num_ranks, int num_microbatches);
// DualPipe and DualPipeV: the eight phases of docs/dualpipe.md#dualpipe-phases, exactly.
Schedule generate_dualpipe(int num_ranks, int num_microbatches);
Schedule generate_dualpipev(int num_ranks, int num_microbatches);

}  // namespace tandem::schedule
