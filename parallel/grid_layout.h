// GridLayout: the pure arithmetic of the process grid (DESIGN.md section 2), with no
// communicators, so check-config can lay out a 2048-GPU job on a laptop.
// world = pp * dp * tp. Ranks are numbered by the order string, innermost axis first
// (default "tp-dp-pp": TP peers are adjacent, so they share a node). Expert parallelism folds
// into the dp*tp ranks of a pipeline stage: with d = dp_rank * tp + tp_rank, ep_rank = d % ep
// and the expert-data-parallel index is d / ep; EP groups are ep consecutive d's, expert-DP
// groups stride over them (expert weights are replicated over dp*tp/ep ranks).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace tandem::parallel {

// Every kind of group a rank belongs to.
enum class GroupKind { kTensor, kData, kPipeline, kExpert, kExpertData, kDataTensor, kWorld };
const char* group_kind_name(GroupKind kind);  // "tp", "dp", "pp", "ep", "edp", "dp_tp", "world"

struct GridCoord {
  int64_t tp = 0;
  int64_t dp = 0;
  int64_t pp = 0;
  int64_t ep = 0;   // rank inside its expert-parallel group
  int64_t edp = 0;  // rank inside its expert-data-parallel group
};

class GridLayout {
 public:
  // Validates the degrees against the world size; `dp` 0 means world / (pp * tp).
  // Throws config::KeyError naming the parallel.* key at fault, with the arithmetic spelled out.
  static GridLayout create(int64_t world_size, int64_t pp, int64_t dp, int64_t tp, int64_t ep,
                           const std::string& order);

  int64_t world_size() const { return pp_ * dp_ * tp_; }
  int64_t pp_size() const { return pp_; }
  int64_t dp_size() const { return dp_; }
  int64_t tp_size() const { return tp_; }
  int64_t ep_size() const { return ep_; }
  int64_t edp_size() const { return dp_ * tp_ / ep_; }
  const std::string& order() const { return order_; }

  GridCoord coord(int64_t rank) const;
  int64_t rank_at(int64_t tp_rank, int64_t dp_rank, int64_t pp_rank) const;
  // Global ranks of `rank`'s group of this kind, ordered by rank inside the group.
  std::vector<int64_t> group(GroupKind kind, int64_t rank) const;
  // A number that is equal for exactly the ranks of one group of this kind (MPI_Comm_split color).
  int64_t group_color(GroupKind kind, int64_t rank) const;

  // Human-readable rank map: one line per rank with its coordinates (check-config, logs).
  std::string describe() const;

 private:
  GridLayout() = default;
  int64_t pp_ = 1, dp_ = 1, tp_ = 1, ep_ = 1;
  std::string order_;
  std::array<int64_t, 3> stride_{};  // stride of tp, dp, pp in the global rank
};

}  // namespace tandem::parallel
