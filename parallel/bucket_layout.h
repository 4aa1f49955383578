// BucketLayout: how the parameters of one replication group are cut into gradient buckets and
// how each bucket is sharded for ZeRO. Pure arithmetic (no tensors), shared by the data-parallel
// optimizer and its tests.
// Buckets are filled walking the parameters in REVERSE order (the order backward produces their
// gradients), up to a size cap; a parameter larger than the cap gets a bucket of its own, and a
// bucket never mixes two `keys` (ZeRO-3 keys parameters by decoder layer so that a layer is
// gathered as whole buckets). Each bucket is padded with zeros to a multiple of the shard count
// N; rank r of N owns elements [r * shard_numel, (r + 1) * shard_numel) of every bucket, so a
// reduce-scatter or all-gather of one bucket maps exactly onto each rank's shard. A rank's shard
// of the group is the concatenation of its slices of every bucket (shard_offset below).
#pragma once

#include <cstdint>
#include <vector>

namespace tandem::parallel {

struct BucketSpec {
  std::vector<int64_t> members;  // parameter indices (into the group's list), in bucket order
  std::vector<int64_t> offsets;  // element offset of each member inside the bucket
  int64_t key = 0;               // the key every member shares
  int64_t used_numel = 0;        // elements that belong to parameters (the rest is padding)
  int64_t shard_numel = 0;       // per-rank slice: ceil(used_numel / N)
  int64_t shard_offset = 0;      // where this bucket's slice starts in a rank's shard buffers
  int64_t full_offset = 0;       // where the bucket starts in the concatenation of full buckets
};

struct BucketLayout {
  int64_t num_shards = 1;
  std::vector<BucketSpec> buckets;
  int64_t shard_numel = 0;         // sum of the buckets' shard_numel: a rank's shard buffer length
  int64_t full_numel = 0;          // shard_numel * num_shards: every bucket padded, concatenated
  std::vector<int64_t> bucket_of;  // parameter index -> bucket index
  std::vector<int64_t> slot_of;    // parameter index -> position inside its bucket's members

  int64_t bucket_numel(int64_t bucket) const { return buckets[bucket].shard_numel * num_shards; }
};

// `numels[i]` elements of parameter i (>= 0), `keys[i]` its key (same length; pass one value for
// no key breaks), `cap_numel` >= 1 the most elements a bucket takes unless a single parameter is
// larger, `num_shards` >= 1. Throws tandem::Error on inconsistent arguments.
BucketLayout plan_buckets(const std::vector<int64_t>& numels, const std::vector<int64_t>& keys, int64_t cap_numel,
                          int64_t num_shards);

// A contiguous run of elements [begin, begin + length).
struct ElementRun {
  int64_t begin = 0;
  int64_t length = 0;
};

// The parts of `window` (bucket-relative element range) covered by the members for which
// `selected[member]` is true, relative to window.begin, adjacent members merged into one run.
std::vector<ElementRun> selected_runs(const BucketSpec& bucket, const std::vector<int64_t>& numels,
                                      const std::vector<bool>& selected, ElementRun window);

// A run together with whether it lies inside a selection.
struct FlaggedRun {
  int64_t begin = 0;
  int64_t length = 0;
  bool selected = false;
};

// [0, numel) cut at the edges of `selected` (sorted, disjoint, non-empty runs inside [0, numel),
// as selected_runs returns them): the runs in order, alternating between inside and outside,
// together covering every element once (the fused AdamW launches one segment per run, each
// either decayed or not). Throws tandem::Error when `selected` is unsorted or out of range.
std::vector<FlaggedRun> partition_by_runs(int64_t numel, const std::vector<ElementRun>& selected);

}  // namespace tandem::parallel
