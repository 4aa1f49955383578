// Process-grid arithmetic (see grid_layout.h for the numbering rules).
#include "parallel/grid_layout.h"

#include <algorithm>
#include <sstream>

#include "runtime/config_schema.h"

namespace tandem::parallel {

const char* group_kind_name(GroupKind kind) {
  switch (kind) {
    case GroupKind::kTensor: return "tp";
    case GroupKind::kData: return "dp";
    case GroupKind::kPipeline: return "pp";
    case GroupKind::kExpert: return "ep";
    case GroupKind::kExpertData: return "edp";
    case GroupKind::kDataTensor: return "dp_tp";
    case GroupKind::kWorld: return "world";
  }
  return "?";
}

GridLayout GridLayout::create(int64_t world_size, int64_t pp, int64_t dp, int64_t tp, int64_t ep,
                              const std::string& order) {
  TANDEM_CONFIG_REQUIRE(world_size >= 1, "parallel", "world size must be >= 1 (got {})", world_size);
  TANDEM_CONFIG_REQUIRE(pp >= 1, "parallel.pp", "must be >= 1 (got {})", pp);
  TANDEM_CONFIG_REQUIRE(tp >= 1, "parallel.tp", "must be >= 1 (got {})", tp);
  TANDEM_CONFIG_REQUIRE(dp >= 0, "parallel.dp", "must be >= 0 (got {}; 0 means world / (pp*tp))", dp);
  TANDEM_CONFIG_REQUIRE(ep >= 1, "parallel.ep", "must be >= 1 (got {})", ep);
  if (dp == 0) {
    TANDEM_CONFIG_REQUIRE(world_size % (pp * tp) == 0, "parallel.pp",
                          "the world of {} ranks is not divisible by pp*tp = {}*{} = {}; choose pp and tp whose "
                          "product divides the number of ranks",
                          world_size, pp, tp, pp * tp);
    dp = world_size / (pp * tp);
  }
  TANDEM_CONFIG_REQUIRE(pp * dp * tp == world_size, "parallel.dp",
                        "pp*dp*tp = {}*{}*{} = {} does not match the world of {} ranks; set parallel.dp to 0 "
                        "to derive it, or launch {} ranks",
                        pp, dp, tp, pp * dp * tp, world_size, pp * dp * tp);
  TANDEM_CONFIG_REQUIRE((dp * tp) % ep == 0, "parallel.ep",
                        "ep = {} must divide dp*tp = {}*{} = {} (experts are spread over the data- and "
                        "tensor-parallel ranks of one pipeline stage)",
                        ep, dp, tp, dp * tp);

  // Parse "tp-dp-pp" (innermost first) into strides.
  std::vector<std::string> axes;
  std::stringstream stream(order);
  for (std::string part; std::getline(stream, part, '-');) axes.push_back(part);
  std::vector<std::string> sorted = axes;
  std::sort(sorted.begin(), sorted.end());
  TANDEM_CONFIG_REQUIRE(sorted == (std::vector<std::string>{"dp", "pp", "tp"}), "parallel.order",
                        "'{}' is not a permutation of tp, dp and pp joined by '-' (e.g. tp-dp-pp)", order);
  GridLayout layout;
  layout.pp_ = pp;
  layout.dp_ = dp;
  layout.tp_ = tp;
  layout.ep_ = ep;
  layout.order_ = order;
  int64_t stride = 1;
  for (const std::string& axis : axes) {
    const int index = axis == "tp" ? 0 : axis == "dp" ? 1 : 2;
    layout.stride_[index] = stride;
    stride *= axis == "tp" ? tp : axis == "dp" ? dp : pp;
  }
  return layout;
}

GridCoord GridLayout::coord(int64_t rank) const {
  GridCoord c;
  c.tp = (rank / stride_[0]) % tp_;
  c.dp = (rank / stride_[1]) % dp_;
  c.pp = (rank / stride_[2]) % pp_;
  const int64_t domain_index = c.dp * tp_ + c.tp;
  c.ep = domain_index % ep_;
  c.edp = domain_index / ep_;
  return c;
}

int64_t GridLayout::rank_at(int64_t tp_rank, int64_t dp_rank, int64_t pp_rank) const {
  return tp_rank * stride_[0] + dp_rank * stride_[1] + pp_rank * stride_[2];
}

int64_t GridLayout::group_color(GroupKind kind, int64_t rank) const {
  // The color is the smallest global rank of the group: unique per group, equal inside it.
  return group(kind, rank).front();
}

std::vector<int64_t> GridLayout::group(GroupKind kind, int64_t rank) const {
  const GridCoord c = coord(rank);
  std::vector<int64_t> ranks;
  auto from_domain = [&](int64_t domain_index) { return rank_at(domain_index % tp_, domain_index / tp_, c.pp); };
  switch (kind) {
    case GroupKind::kTensor:
      for (int64_t t = 0; t < tp_; ++t) ranks.push_back(rank_at(t, c.dp, c.pp));
      break;
    case GroupKind::kData:
      for (int64_t d = 0; d < dp_; ++d) ranks.push_back(rank_at(c.tp, d, c.pp));
      break;
    case GroupKind::kPipeline:
      for (int64_t p = 0; p < pp_; ++p) ranks.push_back(rank_at(c.tp, c.dp, p));
      break;
    case GroupKind::kExpert:
      for (int64_t e = 0; e < ep_; ++e) ranks.push_back(from_domain(c.edp * ep_ + e));
      break;
    case GroupKind::kExpertData:
      for (int64_t x = 0; x < edp_size(); ++x) ranks.push_back(from_domain(x * ep_ + c.ep));
      break;
    case GroupKind::kDataTensor:
      for (int64_t d = 0; d < dp_ * tp_; ++d) ranks.push_back(from_domain(d));
      break;
    case GroupKind::kWorld:
      for (int64_t r = 0; r < world_size(); ++r) ranks.push_back(r);
      break;
  }
  return ranks;
}

std::string GridLayout::describe() const {
  std::string out = fmt::format("{} ranks = pp {} x dp {} x tp {} (order {}), ep {} over dp*tp, expert-dp {}\n",
                                world_size(), pp_, dp_, tp_, order_, ep_, edp_size());
  out += "  rank   pp   dp   tp   ep  edp\n";
  for (int64_t rank = 0; rank < world_size(); ++rank) {
    const GridCoord c = coord(rank);
    out += fmt::format("  {:>4} {:>4} {:>4} {:>4} {:>4} {:>4}\n", rank, c.pp, c.dp, c.tp, c.ep, c.edp);
  }
  return out;
}

}  // namespace tandem::parallel
