// Simulator: runs the engine with a cost model and reduces the timeline to per-rank statistics in
// one pass per rank (ops on a rank run one after another, so list order is time order).
#include "schedule/simulator.h"

#include <algorithm>
#include <limits>

#include "runtime/error.h"

namespace tandem::schedule {

double SimResult::max_bubble() const {
  double worst = 0;
  for (const RankStats& r : ranks) worst = std::max(worst, r.bubble);
  return worst;
}

int SimResult::max_peak_live_chunks() const {
  int worst = 0;
  for (const RankStats& r : ranks) worst = std::max(worst, r.peak_live_chunks);
  return worst;
}

double SimResult::bubble_fraction() const {
  if (ranks.empty() || makespan <= 0) return 0;
  double idle = 0;
  for (const RankStats& r : ranks) idle += r.bubble;
  return idle / (static_cast<double>(ranks.size()) * makespan);
}

SimResult simulate(const Schedule& schedule, const CostModel& costs) {
  PlayResult played = play(schedule, &costs);
  if (!played.completed) TANDEM_THROW(kInput, "{}", describe_deadlock(schedule, played));
  return summarize(schedule, std::move(played.timeline));
}

SimResult summarize(const Schedule& schedule, Timeline timeline) {
  TANDEM_CHECK_INPUT(timeline.ranks.size() == schedule.ranks.size(), "timeline has {} ranks, schedule has {}",
                     timeline.ranks.size(), schedule.ranks.size());
  SimResult result;
  double first = std::numeric_limits<double>::infinity();
  double last = -std::numeric_limits<double>::infinity();
  result.ranks.resize(schedule.ranks.size());
  for (std::size_t r = 0; r < schedule.ranks.size(); ++r) {
    const auto& ops = schedule.ranks[r];
    const auto& times = timeline.ranks[r];
    TANDEM_CHECK_INPUT(times.size() == ops.size(), "timeline of rank {} has {} ops, schedule has {}", r, times.size(),
                       ops.size());
    RankStats& stats = result.ranks[r];
    stats.rank = static_cast<int>(r);
    stats.num_ops = ops.size();
    stats.param_chunks = schedule.placement.num_chunks();
    int live = 0;
    for (std::size_t i = 0; i < ops.size(); ++i) {
      TANDEM_CHECK_INPUT(times[i].end >= times[i].start, "rank {} op {} ends ({}) before it starts ({})", r, i,
                         times[i].end, times[i].start);
      stats.busy += times[i].end - times[i].start;
      first = std::min(first, times[i].start);
      last = std::max(last, times[i].end);
      for (const Piece* p : {&ops[i].first, ops[i].second ? &*ops[i].second : nullptr}) {
        if (p == nullptr) continue;
        if (p->kind == OpKind::kF) stats.peak_live_chunks = std::max(stats.peak_live_chunks, ++live);
        if (frees_activation(p->kind)) --live;
      }
    }
  }
  if (first > last) first = last = 0;  // no ops at all
  result.origin = first;
  result.makespan = last - first;
  for (RankStats& stats : result.ranks) {
    stats.bubble = result.makespan - stats.busy;
    stats.bubble_fraction = result.makespan > 0 ? stats.bubble / result.makespan : 0;
  }
  result.timeline = std::move(timeline);
  return result;
}

}  // namespace tandem::schedule
