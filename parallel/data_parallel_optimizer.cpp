// DataParallelOptimizer (see data_parallel_optimizer.h): splits parameters into groups by their
// synchronisation rule, keeps the global bucket launch order, the readiness of every gradient,
// the ZeRO-3 layer bookkeeping, and forwards the rest to the BucketedGroups.
#include "parallel/data_parallel_optimizer.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <tuple>
#include <unordered_map>
#include <utility>

#include "parallel/process_grid.h"
#include "runtime/error.h"

namespace tandem::parallel {
namespace {

bool trivial(const CommunicatorPtr& comm) { return !comm || comm->size() == 1; }
int size_of(const CommunicatorPtr& comm) { return comm ? comm->size() : 1; }

// "model.layers.{i}.<rest>" -> i, anything else -> -1.
int64_t default_layer_of(const std::string& name) {
  static constexpr std::string_view kPrefix = "model.layers.";
  if (name.rfind(kPrefix, 0) != 0) return -1;
  const size_t dot = name.find('.', kPrefix.size());
  if (dot == std::string::npos || dot == kPrefix.size()) return -1;
  int64_t layer = 0;
  for (size_t i = kPrefix.size(); i < dot; ++i) {
    if (name[i] < '0' || name[i] > '9') return -1;
    layer = layer * 10 + (name[i] - '0');
  }
  return layer;
}

// A bucket of one group, as the optimizer orders them.
struct BucketRef {
  size_t group = 0;
  int64_t bucket = 0;
};

}  // namespace

DataParallelGroups DataParallelGroups::from_grid(const ProcessGrid& grid) {
  DataParallelGroups groups;
  groups.tp = grid.shared(GroupKind::kTensor);
  groups.dp = grid.shared(GroupKind::kData);
  groups.edp = grid.shared(GroupKind::kExpertData);
  groups.dp_tp = grid.shared(GroupKind::kDataTensor);
  groups.world = grid.shared(GroupKind::kWorld);
  return groups;
}

struct DataParallelOptimizer::Impl {
  // ZeRO-3's LayerHooks: forwards to the optimizer while it lives (stages may keep the hooks
  // longer, e.g. inside an autograd graph).
  class Hooks final : public LayerHooks {
   public:
    explicit Hooks(Impl* owner) : owner_(owner) {}
    void detach() { owner_ = nullptr; }
    void before_forward(int64_t layer) override {
      if (owner_) owner_->use_layer(layer, owner_->next_layer(layer));
    }
    void after_forward(int64_t layer) override {
      if (owner_) owner_->release_layer(layer);
    }
    void before_backward(int64_t layer) override {
      if (owner_) owner_->use_layer(layer, owner_->previous_layer(layer));
    }
    void after_backward(int64_t layer) override {
      if (!owner_) return;
      owner_->release_layer(layer);
      owner_->on_layer_backward_done(layer);
    }

   private:
    Impl* owner_;
  };

  // Marks a parameter's gradient ready once autograd has accumulated it.
  class ReadyHook final : public torch::autograd::PostAccumulateGradHook {
   public:
    ReadyHook(Impl* owner, size_t group, int64_t member) : owner_(owner), group_(group), member_(member) {}
    void operator()(const torch::autograd::Variable& /*param*/) override { owner_->on_hook(group_, member_); }

   private:
    Impl* owner_;
    size_t group_;
    int64_t member_;
  };

  DataParallelGroups comms;
  DataParallelOptions options;
  std::vector<std::unique_ptr<BucketedGroup>> groups;
  std::vector<std::vector<int64_t>> original_index;                       // group -> member -> index in the params list
  std::unordered_map<const void*, std::pair<size_t, int64_t>> member_of;  // TensorImpl -> (group, member)
  std::vector<BucketRef> order;                                           // global launch order
  std::map<int64_t, std::vector<BucketRef>> layer_buckets;                // ZeRO-3: layer -> its gathered buckets
  std::shared_ptr<Hooks> hooks = std::make_shared<Hooks>(this);
  int64_t steps = 0;

  // Readiness of the backward in progress.
  bool armed = false;            // this backward's gradients are to be reduced
  bool hooks_mark_ready = true;  // autograd's accumulation means final (no deferred W)
  bool in_backward = false;
  std::vector<std::vector<bool>> ready;       // group -> member
  std::vector<std::vector<int64_t>> pending;  // group -> bucket -> gradients still to come
  std::vector<std::vector<bool>> launched;    // group -> bucket
  int64_t pending_total = 0;
  size_t cursor = 0;  // next position of `order` to launch
  // ZeRO-3 gathers parameters from layer callbacks on the same communicators the reductions use;
  // then reductions are launched from layer callbacks too, so that both kinds of collective are
  // issued in one order on every rank (gradient hooks fire in a rank-dependent order when ranks
  // skip different unused parameters, e.g. experts without tokens).
  bool layer_events = false;
  bool synced = false;  // finish_gradient_sync ran since zero_grad
  GradSyncStats stats;

  void reset_readiness() {
    pending_total = 0;
    for (size_t g = 0; g < groups.size(); ++g) {
      ready[g].assign(groups[g]->members().size(), false);
      const BucketLayout& layout = groups[g]->layout();
      launched[g].assign(layout.buckets.size(), false);
      for (size_t b = 0; b < layout.buckets.size(); ++b) {
        pending[g][b] = static_cast<int64_t>(layout.buckets[b].members.size());
        pending_total += pending[g][b];
      }
    }
    cursor = 0;
    stats = GradSyncStats{};
    stats.num_buckets = static_cast<int64_t>(order.size());
  }

  void launch(const BucketRef& ref, bool from_backward) {
    if (launched[ref.group][ref.bucket]) return;
    launched[ref.group][ref.bucket] = true;
    if (from_backward) {
      if (stats.launched_in_backward == 0) stats.grads_pending_at_first_launch = pending_total;
      ++stats.launched_in_backward;
    }
    groups[ref.group]->launch_reduction(ref.bucket);
  }

  // Called from autograd's accumulation (or mark_ready). Outside layer-event mode, buckets go
  // out strictly in `order` as the prefix of complete ones grows.
  void on_grad_ready(size_t group, int64_t member) {
    if (!armed || ready[group][member]) return;
    ready[group][member] = true;
    --pending_total;
    --pending[group][groups[group]->layout().bucket_of[member]];
    if (layer_events) return;
    while (cursor < order.size() && pending[order[cursor].group][order[cursor].bucket] == 0) {
      launch(order[cursor++], /*from_backward=*/true);
    }
    for (auto& g : groups) g->poll();
  }

  void on_hook(size_t group, int64_t member) {
    if (hooks_mark_ready) on_grad_ready(group, member);
  }

  // Layer-event mode (ZeRO-3 with gathered layers): the layer's backward is done, so its
  // gradients are final (a parameter it did not use, e.g. an expert that got no token, counts as
  // zero); every rank reaches this point in the same order, so the collectives match up.
  void on_layer_backward_done(int64_t layer) {
    if (!armed || !hooks_mark_ready) return;
    auto it = layer_buckets.find(layer);
    if (it == layer_buckets.end()) return;
    for (const BucketRef& ref : it->second) launch(ref, /*from_backward=*/true);
    for (auto& g : groups) g->poll();
  }

  void launch_remaining() {
    for (const BucketRef& ref : order) launch(ref, /*from_backward=*/false);
    cursor = order.size();
  }

  // ZeRO-3 layer use: make `layer` present, start gathering `prefetch` (-1 = none).
  void use_layer(int64_t layer, int64_t prefetch) {
    auto it = layer_buckets.find(layer);
    if (it == layer_buckets.end()) return;
    for (const BucketRef& ref : it->second) groups[ref.group]->gather_async(ref.bucket);
    if (auto next = layer_buckets.find(prefetch); next != layer_buckets.end()) {
      for (const BucketRef& ref : next->second) groups[ref.group]->gather_async(ref.bucket);
    }
    for (const BucketRef& ref : it->second) groups[ref.group]->wait_gathered(ref.bucket);
  }

  void release_layer(int64_t layer) {
    auto it = layer_buckets.find(layer);
    if (it == layer_buckets.end()) return;
    for (const BucketRef& ref : it->second) groups[ref.group]->release(ref.bucket);
  }

  void release_all_layers() {
    for (const auto& [layer, refs] : layer_buckets) release_layer(layer);
  }

  int64_t next_layer(int64_t layer) const {
    auto it = layer_buckets.upper_bound(layer);
    return it == layer_buckets.end() ? -1 : it->first;
  }
  int64_t previous_layer(int64_t layer) const {
    auto it = layer_buckets.lower_bound(layer);
    return it == layer_buckets.begin() ? -1 : std::prev(it)->first;
  }

  // Which gradient group a parameter joins: averaged over dp, partial over tp (summed over the
  // dp*tp group), or an expert (over expert-dp).
  enum MemberKind { kDense = 0, kTpPartial = 1, kExperts = 2, kNumMemberKinds = 3 };
  struct Classified {
    std::vector<GroupMember> members[kNumMemberKinds];
    std::vector<int64_t> indices[kNumMemberKinds];  // the members' positions in the constructor's list
  };

  // Sets up groups, buckets and launch order for `params` (the constructor's list).
  void build(const std::vector<ShardedParam>& params);
  void check_options(size_t num_params) const;
  Classified classify(const std::vector<ShardedParam>& params);  // also fills member_of
  void make_groups(Classified classified);
  void order_buckets();
};

void DataParallelOptimizer::Impl::check_options(size_t num_params) const {
  const int tp = size_of(comms.tp);
  const int dp = size_of(comms.dp);
  TANDEM_CHECK_CONFIG(options.zero_stage >= 0 && options.zero_stage <= 3, "parallel.zero = {} is not 0, 1, 2 or 3",
                      options.zero_stage);
  TANDEM_CHECK_CONFIG(options.bucket_mb > 0, "parallel.grad_bucket_mb = {} must be positive", options.bucket_mb);
  TANDEM_CHECK_CONFIG(options.reduce_dtype == at::kFloat || options.reduce_dtype == at::kBFloat16,
                      "gradients are reduced in float32 or bfloat16, not {}", c10::toString(options.reduce_dtype));
  TANDEM_CHECK_CONFIG(!trivial(comms.world) || (tp == 1 && dp == 1 && trivial(comms.edp)),
                      "the data-parallel optimizer needs the world communicator for the gradient norm");
  TANDEM_CHECK(options.counted.empty() || options.counted.size() == num_params, "{} counted flags for {} parameters",
               options.counted.size(), num_params);
}

DataParallelOptimizer::Impl::Classified DataParallelOptimizer::Impl::classify(const std::vector<ShardedParam>& params) {
  const int tp = size_of(comms.tp);
  const int tp_rank = comms.tp ? comms.tp->rank() : 0;
  Classified out;
  for (size_t i = 0; i < params.size(); ++i) {
    const ShardedParam& p = params[i];
    const ParamSharding& s = p.sharding;
    MemberKind kind = kDense;
    if (s.kind == ShardKind::kExpertParallel) {
      kind = kExperts;
    } else if (s.grad_partial_over_tp && tp > 1) {
      TANDEM_CHECK(s.kind == ShardKind::kReplicated,
                   "'{}': a gradient partial over tp is reduced over the dp*tp group, which needs the weight "
                   "replicated over tp; it is {}",
                   s.name, shard_kind_name(s.kind));
      kind = kTpPartial;
    }
    GroupMember member;
    member.sharding = s;
    member.param = p.param;
    member.decay = options.decays ? options.decays(s.name) : p.param.dim() >= 2;
    const bool excluded = !options.counted.empty() && !options.counted[i];
    // A dense weight replicated over tp has the same reduced gradient on every tp rank.
    const bool tp_copy = kind == kDense && s.kind == ShardKind::kReplicated && tp_rank != 0;
    member.counts_in_norm = !excluded && !tp_copy;
    member.key = options.layer_of(s.name);
    const void* impl = p.param.unsafeGetTensorImpl();
    TANDEM_CHECK(!member_of.count(impl), "parameter '{}' is passed twice to the data-parallel optimizer", s.name);
    member_of[impl] = {static_cast<size_t>(kind), static_cast<int64_t>(out.members[kind].size())};
    out.members[kind].push_back(std::move(member));
    out.indices[kind].push_back(static_cast<int64_t>(i));
  }
  return out;
}

void DataParallelOptimizer::Impl::make_groups(Classified classified) {
  const int tp = size_of(comms.tp);
  const int dp = size_of(comms.dp);
  const char* names[] = {"dense", "dense-tp-partial", "experts"};
  CommunicatorPtr group_comm[] = {comms.dp, nullptr, comms.edp};
  // Never the model's tp communicator, even when dp = 1: the model's backward issues its own
  // collectives on tp, and ours would interleave with them in a rank-dependent order.
  if (tp > 1) group_comm[kTpPartial] = comms.dp_tp;
  TANDEM_CHECK_CONFIG(classified.members[kTpPartial].empty() || comms.dp_tp,
                      "gradients partial over tp (tp = {}) need the dp*tp communicator", tp);
  TANDEM_CHECK_CONFIG(classified.members[kTpPartial].empty() || size_of(group_comm[kTpPartial]) == dp * tp,
                      "the dp*tp communicator has {} ranks, dp * tp = {}", size_of(group_comm[kTpPartial]), dp * tp);

  // Group index in `groups` per kind (kinds without parameters get no group).
  size_t kind_to_group[kNumMemberKinds] = {0, 0, 0};
  const int64_t cap = std::max<int64_t>(1, static_cast<int64_t>(options.bucket_mb * 1024.0 * 1024.0 / 4.0));
  for (int kind = 0; kind < kNumMemberKinds; ++kind) {
    if (classified.members[kind].empty()) continue;
    kind_to_group[kind] = groups.size();
    BucketedGroupOptions group_options;
    group_options.name = names[kind];
    group_options.comm = group_comm[kind];
    group_options.grad_scale = 1.0 / dp;
    group_options.zero_stage = options.zero_stage;
    group_options.bucket_cap_numel = cap;
    group_options.reduce_dtype = options.reduce_dtype;
    groups.push_back(std::make_unique<BucketedGroup>(std::move(classified.members[kind]), group_options));
    original_index.push_back(std::move(classified.indices[kind]));
  }
  for (auto& [impl, where] : member_of) where.first = kind_to_group[where.first];
}

void DataParallelOptimizer::Impl::order_buckets() {
  // Global launch order: by when a bucket should be complete in backward, i.e. by its earliest
  // parameter in the original order, latest first.
  std::vector<std::tuple<int64_t, size_t, int64_t>> keyed;
  for (size_t g = 0; g < groups.size(); ++g) {
    const BucketLayout& layout = groups[g]->layout();
    for (int64_t b = 0; b < static_cast<int64_t>(layout.buckets.size()); ++b) {
      int64_t earliest = INT64_MAX;
      for (int64_t m : layout.buckets[b].members) earliest = std::min(earliest, original_index[g][m]);
      keyed.emplace_back(-earliest, g, b);
    }
  }
  std::sort(keyed.begin(), keyed.end());
  for (const auto& [key, g, b] : keyed) {
    order.push_back({g, b});
    if (!groups[g]->persistent(b)) layer_buckets[groups[g]->layout().buckets[b].key].push_back({g, b});
  }
}

void DataParallelOptimizer::Impl::build(const std::vector<ShardedParam>& params) {
  check_options(params.size());
  if (!options.layer_of) options.layer_of = default_layer_of;
  make_groups(classify(params));
  order_buckets();
  layer_events = !layer_buckets.empty();
  ready.resize(groups.size());
  launched.resize(groups.size());
  pending.resize(groups.size());
  for (size_t g = 0; g < groups.size(); ++g) pending[g].assign(groups[g]->layout().buckets.size(), 0);
  reset_readiness();
}

}  // namespace tandem::parallel

namespace tandem::parallel {

DataParallelOptimizer::DataParallelOptimizer(const std::vector<ShardedParam>& params, DataParallelGroups groups,
                                             DataParallelOptions options)
    : impl_(std::make_unique<Impl>()) {
  impl_->comms = std::move(groups);
  impl_->options = std::move(options);
  impl_->build(params);
  for (const auto& [impl, where] : impl_->member_of) {
    const at::Tensor& param = impl_->groups[where.first]->members()[where.second].param;
    torch::autograd::impl::set_post_acc_grad_hooks(
        param, std::make_unique<Impl::ReadyHook>(impl_.get(), where.first, where.second));
  }
}

DataParallelOptimizer::~DataParallelOptimizer() {
  impl_->hooks->detach();
  for (const auto& group : impl_->groups) {
    for (const GroupMember& m : group->members()) torch::autograd::impl::set_post_acc_grad_hooks(m.param, nullptr);
  }
}

void DataParallelOptimizer::zero_grad() {
  TANDEM_CHECK(!impl_->in_backward, "zero_grad inside a backward (begin_backward without end_backward)");
  for (auto& group : impl_->groups) group->zero_grad();
  impl_->synced = false;
  impl_->reset_readiness();
}

void DataParallelOptimizer::begin_backward(bool final_backward, bool weight_grads_deferred) {
  Impl& s = *impl_;
  TANDEM_CHECK(!s.in_backward, "begin_backward twice without end_backward");
  s.reset_readiness();
  s.in_backward = true;
  s.armed = final_backward || s.options.zero_stage >= 2;
  s.hooks_mark_ready = !weight_grads_deferred;
}

void DataParallelOptimizer::mark_ready(const at::Tensor& param) {
  auto it = impl_->member_of.find(param.unsafeGetTensorImpl());
  TANDEM_CHECK(it != impl_->member_of.end(), "mark_ready: the tensor is not a parameter of this optimizer");
  impl_->on_grad_ready(it->second.first, it->second.second);
}

void DataParallelOptimizer::end_backward() {
  Impl& s = *impl_;
  TANDEM_CHECK(s.in_backward, "end_backward without begin_backward");
  if (s.armed) s.launch_remaining();
  if (s.options.zero_stage >= 2) {
    // The packed full gradients are freed before the next backward writes new ones.
    for (auto& group : s.groups) group->complete_reductions();
  }
  s.release_all_layers();
  s.armed = false;
  s.in_backward = false;
}

void DataParallelOptimizer::finish_gradient_sync() {
  Impl& s = *impl_;
  if (s.in_backward) end_backward();
  // No armed backward (ZeRO 0/1 with only non-final ones, or no begin/end_backward at all):
  // reduce everything now.
  s.launch_remaining();
  for (auto& group : s.groups) group->complete_reductions();
  s.synced = true;
}

double DataParallelOptimizer::global_grad_norm() {
  Impl& s = *impl_;
  TANDEM_CHECK(s.synced, "global_grad_norm before finish_gradient_sync");
  at::Tensor total = at::zeros({}, at::kDouble);
  for (const auto& group : s.groups) total = total + group->local_norm_squared().to(at::kCPU);
  total = total.reshape({1}).contiguous();
  if (!trivial(s.comms.world)) {
    // The communicator reduces tensors on its own device; the sum is a single number.
    const at::Device device = s.groups.empty() ? at::Device(at::kCPU)
                                               : s.groups.front()->members().front().param.device();
    at::Tensor on_device = total.to(device);
    s.comms.world->all_reduce(on_device, ReduceOp::kSum);
    total = on_device.to(at::kCPU);
  }
  return std::sqrt(total.item<double>());
}

void DataParallelOptimizer::step(double lr, double clip_scale) {
  Impl& s = *impl_;
  TANDEM_CHECK(s.synced, "optimizer step before finish_gradient_sync");
  ++s.steps;
  const AdamWStepScalars scalars = adamw_step_scalars(s.options.adamw, s.steps, lr);
  for (auto& group : s.groups) group->step(s.options.adamw, scalars, clip_scale);
}

int64_t DataParallelOptimizer::step_count() const { return impl_->steps; }
void DataParallelOptimizer::set_step_count(int64_t steps) { impl_->steps = steps; }

std::shared_ptr<LayerHooks> DataParallelOptimizer::layer_hooks() const { return impl_->hooks; }

void DataParallelOptimizer::visit_state(const StateVisitor& visit, bool global_shape) {
  Impl& s = *impl_;
  TANDEM_CHECK(!s.in_backward, "visit_state during a backward");
  for (auto& group : s.groups) {
    group->visit_state([&](int64_t member, StateKind kind, const at::Tensor& local) {
      const ParamSharding& sharding = group->members()[member].sharding;
      visit(sharding, kind, global_shape ? gather_full(local.contiguous(), sharding, s.comms.tp) : local);
    });
  }
}

void DataParallelOptimizer::load_state(const StateSource& source) {
  load_state_ranges([&](const ParamSharding& sharding, StateKind kind, int64_t begin, int64_t numel) {
    const at::Tensor full = source(sharding, kind);
    return full.defined() ? sharding.slice_of(full).reshape({-1}).narrow(0, begin, numel) : full;
  });
}

void DataParallelOptimizer::load_state_ranges(const RangeSource& source) {
  for (auto& group : impl_->groups) {
    group->load_state([&](int64_t member, StateKind kind, int64_t begin, int64_t numel) {
      return source(group->members()[member].sharding, kind, begin, numel);
    });
  }
}

void DataParallelOptimizer::visit_owned(const OwnedVisitor& visit) const {
  for (const auto& group : impl_->groups) {
    group->visit_owned([&](int64_t member, int64_t begin, const at::Tensor& param, const at::Tensor& exp_avg,
                           const at::Tensor& exp_avg_sq) {
      visit(group->members()[member].sharding, begin, param, exp_avg, exp_avg_sq);
    });
  }
}

ParamMemory DataParallelOptimizer::memory() const {
  ParamMemory total;
  for (const auto& group : impl_->groups) total += group->memory();
  return total;
}

std::string DataParallelOptimizer::describe() const {
  std::string out;
  for (const auto& group : impl_->groups) {
    const BucketLayout& layout = group->layout();
    int64_t used = 0;
    for (const BucketSpec& b : layout.buckets) used += b.used_numel;
    const CommunicatorPtr& comm = group->options().comm;
    out += fmt::format("{}: {} parameters, {} elements in {} buckets over {} ({} ranks), ZeRO {}\n",
                       group->options().name, group->members().size(), used, layout.buckets.size(),
                       comm ? comm->name() : "no group", layout.num_shards, group->options().zero_stage);
  }
  return out;
}

GradSyncStats DataParallelOptimizer::last_sync_stats() const { return impl_->stats; }

}  // namespace tandem::parallel
