// Bucket planning (see bucket_layout.h).
#include "parallel/bucket_layout.h"

#include <algorithm>

#include "runtime/error.h"

namespace tandem::parallel {

BucketLayout plan_buckets(const std::vector<int64_t>& numels, const std::vector<int64_t>& keys, int64_t cap_numel,
                          int64_t num_shards) {
  TANDEM_CHECK(keys.size() == numels.size(), "plan_buckets: {} keys for {} parameters", keys.size(), numels.size());
  TANDEM_CHECK(cap_numel >= 1 && num_shards >= 1, "plan_buckets: cap {} and shard count {} must be >= 1", cap_numel,
               num_shards);
  BucketLayout layout;
  layout.num_shards = num_shards;
  layout.bucket_of.assign(numels.size(), -1);
  layout.slot_of.assign(numels.size(), -1);
  auto seal = [&](BucketSpec& bucket) {
    bucket.shard_numel = (bucket.used_numel + num_shards - 1) / num_shards;
    bucket.shard_offset = layout.shard_numel;
    bucket.full_offset = layout.full_numel;
    layout.shard_numel += bucket.shard_numel;
    layout.full_numel += bucket.shard_numel * num_shards;
    layout.buckets.push_back(std::move(bucket));
  };
  BucketSpec open;
  for (int64_t i = static_cast<int64_t>(numels.size()) - 1; i >= 0; --i) {
    TANDEM_CHECK(numels[i] >= 0, "plan_buckets: parameter {} has {} elements", i, numels[i]);
    const bool full = !open.members.empty() && open.used_numel + numels[i] > cap_numel;
    const bool other_key = !open.members.empty() && open.key != keys[i];
    if (full || other_key) {
      seal(open);
      open = BucketSpec{};
    }
    if (open.members.empty()) open.key = keys[i];
    layout.bucket_of[i] = static_cast<int64_t>(layout.buckets.size());
    layout.slot_of[i] = static_cast<int64_t>(open.members.size());
    open.members.push_back(i);
    open.offsets.push_back(open.used_numel);
    open.used_numel += numels[i];
  }
  if (!open.members.empty()) seal(open);
  return layout;
}

std::vector<ElementRun> selected_runs(const BucketSpec& bucket, const std::vector<int64_t>& numels,
                                      const std::vector<bool>& selected, ElementRun window) {
  std::vector<ElementRun> runs;
  const int64_t window_end = window.begin + window.length;
  for (size_t slot = 0; slot < bucket.members.size(); ++slot) {
    const int64_t member = bucket.members[slot];
    if (!selected[member]) continue;
    const int64_t begin = std::max(bucket.offsets[slot], window.begin);
    const int64_t end = std::min(bucket.offsets[slot] + numels[member], window_end);
    if (begin >= end) continue;
    if (!runs.empty() && runs.back().begin + runs.back().length == begin - window.begin) {
      runs.back().length += end - begin;
    } else {
      runs.push_back({begin - window.begin, end - begin});
    }
  }
  return runs;
}

std::vector<FlaggedRun> partition_by_runs(int64_t numel, const std::vector<ElementRun>& selected) {
  std::vector<FlaggedRun> runs;
  int64_t covered = 0;  // [0, covered) is in `runs`
  for (const ElementRun& run : selected) {
    TANDEM_CHECK(run.begin >= covered && run.length > 0 && run.begin + run.length <= numel,
                 "selected run [{}, {}) is empty, out of order or outside [0, {})", run.begin, run.begin + run.length,
                 numel);
    if (run.begin > covered) runs.push_back({covered, run.begin - covered, false});
    runs.push_back({run.begin, run.length, true});
    covered = run.begin + run.length;
  }
  if (covered < numel) runs.push_back({covered, numel - covered, false});
  return runs;
}

}  // namespace tandem::parallel
