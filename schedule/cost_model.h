// The cost model the simulator plays a schedule under: per-op compute times (per stage or per
// (rank, chunk) slot, so embedding/head stages and measured times fit), the expert all-to-all
// inside F and B, an explicit overlapped-pair time, and p2p latency. Times are in milliseconds by
// convention (the unit model's 1 is 1 ms); nothing here depends on the unit.
//
// Overlap model (the one formula to know): a piece has compute c and all-to-all a. Alone it takes
// c + a (its all-to-all is exposed). In an overlapped pair (X, Y) each side's all-to-all runs
// while the other side computes:   pair = max(c_X, a_Y) + max(c_Y, a_X).
// With no all-to-all that is c_X + c_Y (F + B + W for F+BW); with a = c it hides completely.
// An explicit FB (the pair time of F + BW) replaces the formula; an F + B pair then costs FB - W.
#pragma once

#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "schedule/ir.h"

namespace tandem::schedule {

// Costs of the ops of one stage (or one slot).
struct OpCosts {
  double f = 1;              // forward compute, excluding its all-to-all
  double b = 1;              // input-grad backward compute (B), excluding its all-to-all
  double w = 1;              // weight-grad compute (W); no communication
  double f_a2a = 0;          // expert all-to-all inside F (dispatch + combine), exposed when F runs alone
  double b_a2a = 0;          // expert all-to-all inside B (and BW)
  std::optional<double> bw;  // explicit full-backward time; default b + w + b_a2a
  std::optional<double> fb;  // explicit F + BW pair time; default the overlap formula
  bool operator==(const OpCosts&) const = default;
};

// Time of a single piece that runs alone.
double piece_time(const OpCosts& costs, OpKind kind);
// Time of an overlapped pair of `first` (costs of its slot) and `second` (costs of its slot).
double pair_time(const OpCosts& first_costs, const Piece& first, const OpCosts& second_costs, const Piece& second);

class CostModel {
 public:
  // Unit costs: F = B = W = 1, no all-to-all, pair F+B+W = 3, zero latency.
  CostModel() = default;
  explicit CostModel(OpCosts uniform, double p2p_latency = 0) : uniform_(uniform), p2p_latency_(p2p_latency) {}

  const OpCosts& uniform() const { return uniform_; }
  double p2p_latency() const { return p2p_latency_; }
  void set_p2p_latency(double latency) { p2p_latency_ = latency; }

  // Overrides, looked up most specific first: slot (rank, chunk), then global stage, then uniform.
  // A slot override is how measured per-(rank, chunk, kind) times enter (see from_samples).
  void set_stage(int stage, const OpCosts& costs) { by_stage_[stage] = costs; }
  void set_slot(int rank, int chunk, const OpCosts& costs) { by_slot_[{rank, chunk}] = costs; }
  bool has_overrides() const { return !by_stage_.empty() || !by_slot_.empty(); }

  // The costs of every slot of `placement`, indexed rank * num_chunks + chunk.
  std::vector<OpCosts> resolve(const Placement& placement) const;

  // "F=1,B=1,W=1,FB=3,P2P=0,A2A=0" for the uniform part (overrides are noted as "+overrides").
  std::string describe() const;

 private:
  OpCosts uniform_;
  double p2p_latency_ = 0;
  std::map<int, OpCosts> by_stage_;
  std::map<std::pair<int, int>, OpCosts> by_slot_;
};

// Parses `F=1,B=1,W=1,FB=3,P2P=0,A2A=0` (any subset, any order, keys case-insensitive; spaces
// around pieces ignored). Keys: F, B, W (compute), BW (full backward), FB (pair F+BW), P2P
// (latency), A2A (all-to-all inside both F and B), A2A_F, A2A_B (each alone). Defaults F=B=W=1,
// A2A=0, P2P=0, FB = the overlap formula (F+B+W without all-to-all). Throws tandem::Error(kConfig)
// naming the bad piece: not KEY=VALUE, unknown key, key given twice, not a finite number >= 0.
CostModel parse_cost_string(std::string_view text);

// --- Measured times ------------------------------------------------------------------------
// One measured op duration, as the executor records it. For a pair, `kind` is ignored and
// `chunk` is the forward part's chunk.
struct OpSample {
  int rank = 0;
  int chunk = 0;
  OpKind kind = OpKind::kF;
  bool pair = false;
  double duration = 0;
};
// Averages the samples per (rank, chunk, kind) into slot overrides; a kind never measured on a
// slot keeps `fallback`'s value. Measured times include their all-to-all, so a2a is set to 0.
CostModel cost_model_from_samples(std::span<const OpSample> samples, const OpCosts& fallback, double p2p_latency = 0);

// --- Costs from work and hardware ----------------------------------------------------------
// Work of one stage for one micro-batch.
struct StageWork {
  double f_tflop = 0;      // forward compute, TFLOP
  double b_tflop = 0;      // input-grad backward compute, TFLOP
  double w_tflop = 0;      // weight-grad compute, TFLOP
  double f_a2a_bytes = 0;  // bytes each rank moves in the forward's expert all-to-all
  double b_a2a_bytes = 0;  // ... in the backward's
};
struct HardwareSpec {
  double tflops = 0;          // sustained TFLOP/s of one GPU
  double a2a_gbps = 0;        // all-to-all bandwidth per GPU, GB/s (0: no all-to-all cost)
  double p2p_gbps = 0;        // pipeline link bandwidth, GB/s (0: latency only)
  double p2p_latency_ms = 0;  // per-message latency
  double p2p_bytes = 0;       // bytes of one activation or gradient message
};
// A cost model in ms with one stage override per entry of `stages` (global stage index).
// Throws tandem::Error(kConfig) when tflops <= 0 or a rate is negative.
CostModel cost_model_from_work(std::span<const StageWork> stages, const HardwareSpec& hardware);

// Splits a whole model's work evenly over `num_stages` stages and adds the extras (embedding on
// the first stage, output head and loss on the last).
std::vector<StageWork> split_work_evenly(const StageWork& whole_model, int num_stages,
                                         const StageWork& first_stage_extra = {},
                                         const StageWork& last_stage_extra = {});

}  // namespace tandem::schedule
