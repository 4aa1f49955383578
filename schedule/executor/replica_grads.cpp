// ReplicaGradSync (replica_grads.h). Parameters are grouped into buckets by (peer rank, set of
// global stages holding them): both ranks of a pair derive the same buckets, with names in the
// same (sorted) order, so one message per bucket and direction carries the whole partial sum.
#include "schedule/executor/replica_grads.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <map>
#include <set>

#include "model/stage.h"
#include "runtime/error.h"

namespace tandem::schedule {

struct ReplicaGradSync::Bucket {
  int peer = -1;            // the other rank holding these parameters; -1: only local copies
  std::vector<int> stages;  // global stages holding them (sorted), the bucket's identity
  int tag = 0;
  std::vector<std::string> names;               // sorted
  std::vector<std::vector<at::Tensor>> copies;  // [name] local copies, chunk order
  std::set<int> local_chunks;                   // chunks holding any of them
  bool posted = false;
  at::Tensor mine;    // flat local partial sums (sent)
  at::Tensor theirs;  // flat partial sums of the peer (received)
  parallel::WorkHandle send, recv;
};

namespace {

at::Tensor grad_or_zeros(const at::Tensor& param) {
  return param.grad().defined() ? param.grad() : at::zeros_like(param);
}

// Global stages holding `name`, given that stage `local_stage` holds it.
std::vector<int> stages_holding(const std::string& name, int local_stage, const model::ModelConfig& config,
                                int num_stages) {
  if (name != "model.embed_tokens.weight") return {local_stage};
  std::vector<int> stages{0};
  const model::StageSpec last{.index = num_stages - 1, .num_stages = num_stages};
  if (num_stages > 1 && model::stage_holds_embedding(config, last)) stages.push_back(num_stages - 1);
  return stages;
}

}  // namespace

ReplicaGradSync::ReplicaGradSync(const Placement& placement, int rank,
                                 const std::vector<std::shared_ptr<model::Stage>>& chunks, parallel::CommunicatorPtr pp,
                                 int tag_base)
    : rank_(rank), pp_(std::move(pp)), non_primary_(chunks.size()), chunk_done_(chunks.size(), false) {
  const int num_stages = placement.num_stages();
  // Slots (rank, chunk) of every stage.
  std::vector<std::vector<Slot>> holders(static_cast<size_t>(num_stages));
  for (int r = 0; r < placement.num_ranks(); ++r) {
    for (int c = 0; c < placement.num_chunks(); ++c) holders[placement.stage_of(r, c)].push_back({r, c});
  }
  // name -> (stages holding it, local copies by chunk)
  struct Entry {
    std::vector<int> stages;
    std::vector<std::pair<int, at::Tensor>> copies;
  };
  std::map<std::string, Entry> entries;
  for (size_t c = 0; c < chunks.size(); ++c) {
    const model::Stage& stage = *chunks[c];
    for (auto& [name, param] : stage.named_parameters()) {
      Entry& entry = entries[name];
      entry.stages = stages_holding(name, static_cast<int>(stage.spec().index), stage.config(), num_stages);
      entry.copies.emplace_back(static_cast<int>(c), param);
    }
  }
  std::map<std::pair<int, std::vector<int>>, std::unique_ptr<Bucket>> by_key;
  for (auto& [name, entry] : entries) {
    std::vector<Slot> slots;
    for (int s : entry.stages) slots.insert(slots.end(), holders[s].begin(), holders[s].end());
    std::set<int> peers;
    Slot primary = slots.front();
    for (const Slot& slot : slots) {
      if (slot.rank != rank_) peers.insert(slot.rank);
      if (std::pair(slot.chunk, slot.rank) < std::pair(primary.chunk, primary.rank)) primary = slot;
    }
    for (auto& [chunk, param] : entry.copies) {
      if (primary.rank != rank_ || primary.chunk != chunk) non_primary_[chunk].push_back(name);
    }
    TANDEM_CHECK(peers.size() <= 1, "parameter {} is held by {} pipeline ranks; the executor sums over at most two",
                 name, peers.size() + 1);
    if (peers.empty() && entry.copies.size() == 1) continue;  // a single copy: nothing to sum
    ++num_replicated_;
    const int peer = peers.empty() ? -1 : *peers.begin();
    std::unique_ptr<Bucket>& bucket = by_key[{peer, entry.stages}];
    if (!bucket) {
      bucket = std::make_unique<Bucket>();
      bucket->peer = peer;
      bucket->stages = entry.stages;
      const int first = entry.stages.front(), last = entry.stages.back();
      bucket->tag = tag_base + first * num_stages + last;
    }
    bucket->names.push_back(name);
    std::vector<at::Tensor> copies;
    for (auto& [chunk, param] : entry.copies) {
      copies.push_back(param);
      bucket->local_chunks.insert(chunk);
    }
    bucket->copies.push_back(std::move(copies));
  }
  for (auto& [key, bucket] : by_key) buckets_.push_back(std::move(bucket));
}

ReplicaGradSync::~ReplicaGradSync() = default;

int ReplicaGradSync::num_replicated() const { return num_replicated_; }

void ReplicaGradSync::begin_step() {
  std::fill(chunk_done_.begin(), chunk_done_.end(), false);
  for (auto& bucket : buckets_) {
    bucket->posted = false;
    bucket->send.reset();
    bucket->recv.reset();
  }
}

void ReplicaGradSync::post(Bucket& bucket) {
  std::vector<at::Tensor> partials;
  for (const std::vector<at::Tensor>& copies : bucket.copies) {
    at::Tensor sum = grad_or_zeros(copies.front()).detach().clone();
    for (size_t i = 1; i < copies.size(); ++i) sum.add_(grad_or_zeros(copies[i]));
    partials.push_back(sum.reshape({-1}));
  }
  bucket.mine = at::cat(partials);
  bucket.posted = true;
  if (bucket.peer < 0) return;
  bucket.theirs = at::empty_like(bucket.mine);
  bucket.recv = pp_->recv_async(bucket.theirs, bucket.peer, bucket.tag);
  bucket.send = pp_->send_async(bucket.mine, bucket.peer, bucket.tag);
}

void ReplicaGradSync::chunk_done(int chunk) {
  chunk_done_.at(static_cast<size_t>(chunk)) = true;
  for (auto& bucket : buckets_) {
    if (bucket->posted) continue;
    const bool ready = std::all_of(bucket->local_chunks.begin(), bucket->local_chunks.end(),
                                   [&](int c) { return chunk_done_[static_cast<size_t>(c)]; });
    if (ready) post(*bucket);
  }
}

void ReplicaGradSync::finish() {
  for (auto& bucket : buckets_) {
    if (!bucket->posted) post(*bucket);
  }
  for (auto& bucket : buckets_) {
    at::Tensor total = bucket->mine;
    if (bucket->peer >= 0) {
      bucket->recv->wait();
      bucket->send->wait();
      // Lower rank's partial first, on both ranks: identical bits everywhere.
      total = bucket->peer < rank_ ? bucket->theirs + bucket->mine : bucket->mine + bucket->theirs;
    }
    int64_t offset = 0;
    for (const std::vector<at::Tensor>& copies : bucket->copies) {
      const int64_t n = copies.front().numel();
      const at::Tensor slice = total.narrow(0, offset, n).view_as(copies.front());
      for (const at::Tensor& param : copies) {
        if (param.grad().defined()) {
          param.mutable_grad().copy_(slice);
        } else {
          param.mutable_grad() = slice.clone();
        }
      }
      offset += n;
    }
    bucket->send.reset();
    bucket->recv.reset();
    bucket->mine = bucket->theirs = at::Tensor();
  }
}

bool ReplicaGradSync::is_primary(int chunk, const std::string& name) const {
  const auto& names = non_primary_.at(static_cast<size_t>(chunk));
  return std::find(names.begin(), names.end(), name) == names.end();
}

}  // namespace tandem::schedule
