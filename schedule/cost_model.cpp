// Cost model: piece and pair times (the overlap formula of cost_model.h), slot resolution, the
// --cost string parser, and the builders from measured samples and from work + hardware numbers.
#include "schedule/cost_model.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>

#include <spdlog/fmt/fmt.h>

#include "runtime/error.h"

namespace tandem::schedule {

namespace {
// Compute and all-to-all parts of one piece (the two inputs of the overlap formula).
struct Parts {
  double compute = 0;
  double a2a = 0;
};

Parts parts_of(const OpCosts& c, OpKind kind) {
  switch (kind) {
    case OpKind::kF: return {c.f, c.f_a2a};
    case OpKind::kB: return {c.b, c.b_a2a};
    case OpKind::kW: return {c.w, 0};
    case OpKind::kBW: return {c.bw ? std::max(0.0, *c.bw - c.b_a2a) : c.b + c.w, c.b_a2a};
  }
  return {};
}
}  // namespace

double piece_time(const OpCosts& costs, OpKind kind) {
  if (kind == OpKind::kBW && costs.bw) return *costs.bw;
  const Parts p = parts_of(costs, kind);
  return p.compute + p.a2a;
}

double pair_time(const OpCosts& first_costs, const Piece& first, const OpCosts& second_costs, const Piece& second) {
  if (first.kind == OpKind::kF && first_costs.fb) {
    if (second.kind == OpKind::kBW) return *first_costs.fb;
    if (second.kind == OpKind::kB) return std::max(0.0, *first_costs.fb - second_costs.w);
  }
  const Parts x = parts_of(first_costs, first.kind);
  const Parts y = parts_of(second_costs, second.kind);
  return std::max(x.compute, y.a2a) + std::max(y.compute, x.a2a);
}

std::vector<OpCosts> CostModel::resolve(const Placement& placement) const {
  const int v = placement.num_chunks();
  std::vector<OpCosts> out(static_cast<std::size_t>(placement.num_ranks()) * static_cast<std::size_t>(v), uniform_);
  if (!has_overrides()) return out;
  for (int r = 0; r < placement.num_ranks(); ++r) {
    for (int c = 0; c < v; ++c) {
      OpCosts& slot = out[static_cast<std::size_t>(r * v + c)];
      if (auto it = by_slot_.find({r, c}); it != by_slot_.end()) {
        slot = it->second;
      } else if (auto st = by_stage_.find(placement.stage_of(r, c)); st != by_stage_.end()) {
        slot = st->second;
      }
    }
  }
  return out;
}

std::string CostModel::describe() const {
  const OpCosts& u = uniform_;
  const double fb = pair_time(u, Piece{OpKind::kF, 0, 0}, u, Piece{OpKind::kBW, 1, 0});
  std::string out = fmt::format("F={},B={},W={}", u.f, u.b, u.w);
  if (u.bw) out += fmt::format(",BW={}", *u.bw);
  out += fmt::format(",FB={},P2P={}", fb, p2p_latency_);
  if (u.f_a2a == u.b_a2a) {
    out += fmt::format(",A2A={}", u.f_a2a);
  } else {
    out += fmt::format(",A2A_F={},A2A_B={}", u.f_a2a, u.b_a2a);
  }
  if (has_overrides()) out += "+overrides";
  return out;
}

// --- Cost string --------------------------------------------------------------------------------

namespace {
std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

std::string upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  }
  return out;
}

constexpr std::array<std::string_view, 9> kCostKeys = {"F", "B", "W", "BW", "FB", "P2P", "A2A", "A2A_F", "A2A_B"};
constexpr std::string_view kCostExample = "F=1,B=1,W=1,FB=3,P2P=0,A2A=0";
}  // namespace

CostModel parse_cost_string(std::string_view text) {
  OpCosts costs;
  double p2p = 0;
  std::array<bool, kCostKeys.size()> seen{};
  std::string_view rest = text;
  if (trim(rest).empty()) return CostModel(costs, p2p);
  while (true) {
    const std::size_t comma = rest.find(',');
    const std::string_view piece = trim(rest.substr(0, comma));
    const std::size_t eq = piece.find('=');
    TANDEM_CHECK_CONFIG(eq != std::string_view::npos && eq > 0,
                        "bad cost piece '{}' in '{}': expected KEY=VALUE (e.g. {})", piece, text, kCostExample);
    const std::string key = upper(trim(piece.substr(0, eq)));
    const std::string_view value_text = trim(piece.substr(eq + 1));
    const auto key_it = std::find(kCostKeys.begin(), kCostKeys.end(), key);
    TANDEM_CHECK_CONFIG(key_it != kCostKeys.end(),
                        "unknown cost key '{}' in '{}' (known: F, B, W, BW, FB, P2P, A2A, A2A_F, A2A_B)", key, piece);
    const auto index = static_cast<std::size_t>(key_it - kCostKeys.begin());
    TANDEM_CHECK_CONFIG(!seen[index], "cost key '{}' given twice in '{}'", key, text);
    seen[index] = true;
    double value = 0;
    const char* end = value_text.data() + value_text.size();
    auto [ptr, ec] = std::from_chars(value_text.data(), end, value);
    TANDEM_CHECK_CONFIG(!value_text.empty() && ec == std::errc() && ptr == end && std::isfinite(value),
                        "bad number '{}' in cost piece '{}'", value_text, piece);
    TANDEM_CHECK_CONFIG(value >= 0, "cost piece '{}' must be >= 0", piece);
    if (key == "F") costs.f = value;
    else if (key == "B") costs.b = value;
    else if (key == "W") costs.w = value;
    else if (key == "BW") costs.bw = value;
    else if (key == "FB") costs.fb = value;
    else if (key == "P2P") p2p = value;
    else if (key == "A2A") costs.f_a2a = costs.b_a2a = value;
    else if (key == "A2A_F") costs.f_a2a = value;
    else if (key == "A2A_B") costs.b_a2a = value;
    if (comma == std::string_view::npos) break;
    rest = rest.substr(comma + 1);
  }
  TANDEM_CHECK_CONFIG(!(seen[6] && (seen[7] || seen[8])), "cost string '{}' gives A2A and A2A_F/A2A_B; use one form",
                      text);
  return CostModel(costs, p2p);
}

// --- Measured samples -------------------------------------------------------------------------

CostModel cost_model_from_samples(std::span<const OpSample> samples, const OpCosts& fallback, double p2p_latency) {
  struct Mean {
    double sum = 0;
    int count = 0;
  };
  // Index 0..3 by OpKind, 4 for pairs.
  std::map<std::pair<int, int>, std::array<Mean, 5>> per_slot;
  for (const OpSample& s : samples) {
    TANDEM_CHECK_INPUT(s.duration >= 0 && std::isfinite(s.duration), "measured duration {} on rank {} is not >= 0",
                       s.duration, s.rank);
    Mean& m = per_slot[{s.rank, s.chunk}][s.pair ? 4 : static_cast<std::size_t>(s.kind)];
    m.sum += s.duration;
    ++m.count;
  }
  OpCosts base = fallback;
  base.f_a2a = base.b_a2a = 0;
  CostModel model(base, p2p_latency);
  for (const auto& entry : per_slot) {
    const std::pair<int, int>& slot = entry.first;
    const std::array<Mean, 5>& means = entry.second;
    OpCosts c = base;
    auto mean = [&means](std::size_t i) { return means[i].sum / means[i].count; };
    if (means[0].count) c.f = mean(0);
    if (means[1].count) c.b = mean(1);
    if (means[2].count) c.w = mean(2);
    if (means[3].count) c.bw = mean(3);
    if (means[4].count) c.fb = mean(4);
    model.set_slot(slot.first, slot.second, c);
  }
  return model;
}

// --- Work and hardware ------------------------------------------------------------------------

CostModel cost_model_from_work(std::span<const StageWork> stages, const HardwareSpec& hw) {
  TANDEM_CHECK_CONFIG(hw.tflops > 0, "hardware TFLOP/s must be > 0 (got {})", hw.tflops);
  TANDEM_CHECK_CONFIG(hw.a2a_gbps >= 0 && hw.p2p_gbps >= 0 && hw.p2p_latency_ms >= 0 && hw.p2p_bytes >= 0,
                      "hardware link rates, latency and message bytes must be >= 0");
  TANDEM_CHECK_CONFIG(!stages.empty(), "cost_model_from_work needs at least one stage");
  auto compute_ms = [&](double tflop) { return tflop / hw.tflops * 1e3; };
  auto a2a_ms = [&](double bytes) { return hw.a2a_gbps > 0 ? bytes / (hw.a2a_gbps * 1e9) * 1e3 : 0.0; };
  const double p2p_ms = hw.p2p_latency_ms + (hw.p2p_gbps > 0 ? hw.p2p_bytes / (hw.p2p_gbps * 1e9) * 1e3 : 0.0);
  OpCosts mean{0, 0, 0, 0, 0, std::nullopt, std::nullopt};
  std::vector<OpCosts> per_stage;
  per_stage.reserve(stages.size());
  for (const StageWork& s : stages) {
    OpCosts c{compute_ms(s.f_tflop), compute_ms(s.b_tflop), compute_ms(s.w_tflop), a2a_ms(s.f_a2a_bytes),
              a2a_ms(s.b_a2a_bytes), std::nullopt,          std::nullopt};
    const double n = static_cast<double>(stages.size());
    mean.f += c.f / n;
    mean.b += c.b / n;
    mean.w += c.w / n;
    mean.f_a2a += c.f_a2a / n;
    mean.b_a2a += c.b_a2a / n;
    per_stage.push_back(c);
  }
  // The uniform part (the mean stage) only matters for stages beyond the list.
  CostModel model(mean, p2p_ms);
  for (std::size_t i = 0; i < per_stage.size(); ++i) model.set_stage(static_cast<int>(i), per_stage[i]);
  return model;
}

std::vector<StageWork> split_work_evenly(const StageWork& whole, int num_stages, const StageWork& first_extra,
                                         const StageWork& last_extra) {
  TANDEM_CHECK_CONFIG(num_stages >= 1, "split_work_evenly needs num_stages >= 1 (got {})", num_stages);
  const double n = num_stages;
  StageWork even{whole.f_tflop / n, whole.b_tflop / n, whole.w_tflop / n, whole.f_a2a_bytes / n, whole.b_a2a_bytes / n};
  std::vector<StageWork> out(static_cast<std::size_t>(num_stages), even);
  auto add = [](StageWork& to, const StageWork& extra) {
    to.f_tflop += extra.f_tflop;
    to.b_tflop += extra.b_tflop;
    to.w_tflop += extra.w_tflop;
    to.f_a2a_bytes += extra.f_a2a_bytes;
    to.b_a2a_bytes += extra.b_a2a_bytes;
  };
  add(out.front(), first_extra);
  add(out.back(), last_extra);
  return out;
}

}  // namespace tandem::schedule
