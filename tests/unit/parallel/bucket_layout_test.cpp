// Bucket planning: reverse order, size cap, oversized parameters alone, key breaks, padding to
// the shard count, shard/full offsets, the runs of selected members inside a window, and the
// cut of an optimizer extent into decayed / not-decayed segments (the fused AdamW's launches).
#include "parallel/bucket_layout.h"

#include <gtest/gtest.h>

#include "runtime/error.h"

namespace tandem::parallel {
namespace {

TEST(BucketLayout, FillsInReverseOrderUpToTheCap) {
  // Parameters 0..4 of 3, 2, 2, 9, 1 elements, cap 6, 4 shards.
  const std::vector<int64_t> numels{3, 2, 2, 9, 1};
  const BucketLayout layout = plan_buckets(numels, {0, 0, 0, 0, 0}, 6, 4);
  ASSERT_EQ(layout.buckets.size(), 4u);
  // Reverse: [4] (adding 3's 9 would pass 6), [3] alone (larger than the cap), [2, 1] (4 of
  // 6; adding 0's 3 would pass it), [0].
  EXPECT_EQ(layout.buckets[0].members, (std::vector<int64_t>{4}));
  EXPECT_EQ(layout.buckets[1].members, (std::vector<int64_t>{3}));
  EXPECT_EQ(layout.buckets[2].members, (std::vector<int64_t>{2, 1}));
  EXPECT_EQ(layout.buckets[2].offsets, (std::vector<int64_t>{0, 2}));
  EXPECT_EQ(layout.buckets[3].members, (std::vector<int64_t>{0}));
  // Shard sizes: ceil(used / 4).
  EXPECT_EQ(layout.buckets[1].shard_numel, 3);  // 9 -> 3 per rank, 12 with padding
  EXPECT_EQ(layout.bucket_numel(1), 12);
  EXPECT_EQ(layout.bucket_of[3], 1);
  EXPECT_EQ(layout.slot_of[3], 0);
  int64_t shard = 0, full = 0;
  for (const BucketSpec& b : layout.buckets) {
    EXPECT_EQ(b.shard_offset, shard);
    EXPECT_EQ(b.full_offset, full);
    shard += b.shard_numel;
    full += b.shard_numel * 4;
  }
  EXPECT_EQ(layout.shard_numel, shard);
  EXPECT_EQ(layout.full_numel, full);
}

TEST(BucketLayout, EverythingInOneBucketAndOneParameterPerBucket) {
  const std::vector<int64_t> numels{4, 4, 4};
  const BucketLayout one = plan_buckets(numels, {0, 0, 0}, 1 << 20, 2);
  ASSERT_EQ(one.buckets.size(), 1u);
  EXPECT_EQ(one.buckets[0].members, (std::vector<int64_t>{2, 1, 0}));
  EXPECT_EQ(one.buckets[0].offsets, (std::vector<int64_t>{0, 4, 8}));
  const BucketLayout each = plan_buckets(numels, {0, 0, 0}, 1, 2);
  ASSERT_EQ(each.buckets.size(), 3u);
  for (size_t b = 0; b < 3; ++b) EXPECT_EQ(each.buckets[b].members, (std::vector<int64_t>{2 - int64_t(b)}));
}

TEST(BucketLayout, KeysNeverShareABucket) {
  // Layers: -1 (embedding), 0, 0, 1, -1 (head); a large cap still breaks at every key change.
  const BucketLayout layout = plan_buckets({2, 2, 2, 2, 2}, {-1, 0, 0, 1, -1}, 100, 1);
  ASSERT_EQ(layout.buckets.size(), 4u);
  EXPECT_EQ(layout.buckets[0].key, -1);
  EXPECT_EQ(layout.buckets[1].key, 1);
  EXPECT_EQ(layout.buckets[2].members, (std::vector<int64_t>{2, 1}));
  EXPECT_EQ(layout.buckets[3].key, -1);
}

TEST(BucketLayout, SelectedRunsMergeNeighboursAndClipToTheWindow) {
  // One bucket: members 2 (3 el), 1 (4 el), 0 (5 el) at offsets 0, 3, 7.
  const std::vector<int64_t> numels{5, 4, 3};
  const BucketLayout layout = plan_buckets(numels, {0, 0, 0}, 100, 3);
  const BucketSpec& b = layout.buckets[0];
  ASSERT_EQ(b.shard_numel, 4);
  // Members 2 and 1 selected: [0, 7) merged; window [4, 8) -> [0, 3) relative.
  const auto runs = selected_runs(b, numels, {false, true, true}, {4, 4});
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0].begin, 0);
  EXPECT_EQ(runs[0].length, 3);
  // Member 0 only, window [8, 12): elements 8..11 are member 0's [1, 5) -> run [0, 4).
  const auto last = selected_runs(b, numels, {true, false, false}, {8, 4});
  ASSERT_EQ(last.size(), 1u);
  EXPECT_EQ(last[0].begin, 0);
  EXPECT_EQ(last[0].length, 4);
  // Members 2 and 0 (not adjacent): two runs in the full window.
  EXPECT_EQ(selected_runs(b, numels, {true, false, true}, {0, 12}).size(), 2u);
}

// Flags of [0, numel) element by element, from a partition (checks coverage on the way).
std::vector<int> flags_of(const std::vector<FlaggedRun>& runs, int64_t numel) {
  std::vector<int> flags(numel, -1);
  int64_t next = 0;
  for (const FlaggedRun& run : runs) {
    EXPECT_EQ(run.begin, next) << "runs must be in order and leave no gap";
    EXPECT_GT(run.length, 0);
    for (int64_t i = run.begin; i < run.begin + run.length; ++i) flags[i] = run.selected ? 1 : 0;
    next = run.begin + run.length;
  }
  EXPECT_EQ(next, numel);
  return flags;
}

TEST(BucketLayout, PartitionByRunsCoversTheExtentAlternatingFlags) {
  // The decay runs of a ZeRO-1 slice of a real bucket: members 2 (3 el, no decay: a norm
  // weight), 1 (4 el, decayed), 0 (5 el, decayed) over 2 shards; rank 1's slice [6, 12).
  const std::vector<int64_t> numels{5, 4, 3};
  const BucketLayout layout = plan_buckets(numels, {0, 0, 0}, 100, 2);
  const BucketSpec& b = layout.buckets[0];
  const std::vector<bool> decays{true, true, false};
  for (const ElementRun window : {ElementRun{0, 6}, ElementRun{6, 6}, ElementRun{0, 12}}) {
    const auto runs = partition_by_runs(window.length, selected_runs(b, numels, decays, window));
    const std::vector<int> flags = flags_of(runs, window.length);
    for (int64_t i = 0; i < window.length; ++i) {
      EXPECT_EQ(flags[i], window.begin + i >= 3 ? 1 : 0) << "element " << window.begin + i;
    }
    for (size_t r = 1; r < runs.size(); ++r) EXPECT_NE(runs[r].selected, runs[r - 1].selected);
  }
  // Edge cases: nothing selected, everything selected, a run at each end, an empty extent.
  EXPECT_EQ(flags_of(partition_by_runs(5, {}), 5), (std::vector<int>{0, 0, 0, 0, 0}));
  EXPECT_EQ(flags_of(partition_by_runs(3, {{0, 3}}), 3), (std::vector<int>{1, 1, 1}));
  EXPECT_EQ(flags_of(partition_by_runs(7, {{0, 2}, {5, 2}}), 7), (std::vector<int>{1, 1, 0, 0, 0, 1, 1}));
  EXPECT_EQ(partition_by_runs(7, {{0, 2}, {5, 2}}).size(), 3u);
  EXPECT_TRUE(partition_by_runs(0, {}).empty());
  // Runs out of order or past the end are refused rather than updating elements twice.
  EXPECT_THROW(partition_by_runs(7, {{4, 2}, {1, 2}}), Error);
  EXPECT_THROW(partition_by_runs(7, {{5, 3}}), Error);
}

}  // namespace
}  // namespace tandem::parallel
