// ReplicaGradSync: the gradient of a parameter that several pipeline slots hold is the sum of the
// gradients of all its copies, and every copy must end the step with that sum (then identical
// optimizer updates keep the copies identical). Which parameters are held more than once:
//  - DualPipe: every stage, twice (stage s on ranks s and P-1-s, one per flow direction);
//  - every placement: "model.embed_tokens.weight", held by stage 0 and, for a tied head or MTP
//    lookups, by the last stage (model::stage_holds_embedding), on one rank or on two.
// How: on each rank the local copies of a name are added in chunk order; when another rank holds
// it too, the two partial sums are exchanged by non-blocking p2p on the pp communicator and added
// lower pp rank first, so every copy gets bit-identical values. An exchange is posted as soon as
// every local chunk holding its parameters has run its last backward piece of the step
// (chunk_done), so it overlaps the rest of the schedule. At most two ranks hold a parameter in
// every placement tandem has (checked at construction).
// Not thread-safe; one per pipeline executor. Collective over the pp group in the sense that
// every rank must call begin_step/chunk_done/finish for the same step.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

#include "parallel/communicator.h"
#include "schedule/ir.h"

namespace tandem::model {
class Stage;
}

namespace tandem::schedule {

class ReplicaGradSync {
 public:
  // `chunks[c]` is this rank's stage of chunk c. Tags used: [tag_base, tag_base + S*S), S the
  // number of stages.
  ReplicaGradSync(const Placement& placement, int rank, const std::vector<std::shared_ptr<model::Stage>>& chunks,
                  parallel::CommunicatorPtr pp, int tag_base);
  ~ReplicaGradSync();
  ReplicaGradSync(const ReplicaGradSync&) = delete;
  ReplicaGradSync& operator=(const ReplicaGradSync&) = delete;

  // Parameters held by more than one slot with a copy on this rank (0: nothing to do).
  int num_replicated() const;
  // Forgets the previous step's progress.
  void begin_step();
  // Chunk `chunk` ran its last backward piece of the step: its gradients are final on this rank.
  void chunk_done(int chunk);
  // Posts what is still unposted, waits for every exchange and writes the sums into the .grad of
  // every copy (in place when defined, so flat gradient buffers stay intact). Blocking.
  void finish();

  // Whether this rank's copy in `chunk` is the one that stands for the parameter `name` where
  // each global parameter must count once (gradient norm, parameter counts, checkpoints): the
  // copy of the lowest (chunk, pp rank) holding it, so that under DualPipe every rank stands for
  // the stage it holds as chunk 0 and the ranks share the writing of a checkpoint evenly.
  bool is_primary(int chunk, const std::string& name) const;

  struct Bucket;  // defined in the .cpp

 private:
  void post(Bucket& bucket);

  int rank_ = 0;
  parallel::CommunicatorPtr pp_;
  std::vector<std::unique_ptr<Bucket>> buckets_;
  std::vector<std::vector<std::string>> non_primary_;  // [chunk] names whose primary copy is elsewhere
  std::vector<bool> chunk_done_;
  int num_replicated_ = 0;
};

}  // namespace tandem::schedule
