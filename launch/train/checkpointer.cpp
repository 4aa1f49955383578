// Checkpointer (see checkpointer.h). Loading asks, for each local tensor, only for the boxes of
// the global tensor it covers, from whichever shard files hold them, so no rank ever assembles
// the whole model.
#include "launch/train/checkpointer.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <unistd.h>

#include <chrono>

#include "launch/config/config_loader.h"
#include "launch/train/step_runner.h"
#include "parallel/communicator.h"
#include "parallel/data_parallel_optimizer.h"
#include "runtime/checkpoint_store.h"
#include "runtime/checkpoint_tensors.h"
#include "runtime/data/gpt_sampler.h"
#include "runtime/log.h"
#include "runtime/process_context.h"

namespace tandem::launch {
namespace {

using parallel::ReduceOp;
using runtime::TensorKind;

// Rank 0 receives every rank's bytes (an uneven all-to-all in which only rank 0 receives).
std::vector<std::string> gather_to_root(parallel::Communicator& world, const std::string& bytes) {
  const int size = world.size();
  at::Tensor length = at::tensor({static_cast<int64_t>(bytes.size())}, at::kLong);
  at::Tensor lengths = at::empty({size}, at::kLong);
  world.all_gather(lengths, length);
  std::vector<int64_t> input_splits(static_cast<size_t>(size), 0);
  input_splits[0] = static_cast<int64_t>(bytes.size());
  std::vector<int64_t> output_splits(static_cast<size_t>(size), 0);
  int64_t total = 0;
  if (world.rank() == 0) {
    for (int r = 0; r < size; ++r) output_splits[static_cast<size_t>(r)] = lengths[r].item<int64_t>();
    for (int64_t n : output_splits) total += n;
  }
  at::Tensor input = at::empty({static_cast<int64_t>(bytes.size())}, at::kByte);
  std::memcpy(input.data_ptr(), bytes.data(), bytes.size());
  at::Tensor output = at::empty({total}, at::kByte);
  world.all_to_all(output, input, output_splits, input_splits);
  std::vector<std::string> gathered;
  if (world.rank() == 0) {
    int64_t offset = 0;
    for (int64_t n : output_splits) {
      gathered.emplace_back(reinterpret_cast<const char*>(output.data_ptr<uint8_t>()) + offset, static_cast<size_t>(n));
      offset += n;
    }
  }
  return gathered;
}

// Where box `local` of this rank's tensor lies in the global tensor.
runtime::TensorSlice to_global(runtime::TensorSlice local, const parallel::ParamSharding& sharding) {
  if (sharding.kind == parallel::ShardKind::kTensorParallel) {
    local.offsets[static_cast<size_t>(sharding.split_dim)] += sharding.offset;
  }
  return local;
}

// The checkpoint's kind of an optimizer state tensor.
TensorKind tensor_kind(parallel::StateKind kind) {
  switch (kind) {
    case parallel::StateKind::kParam: return TensorKind::kParam;
    case parallel::StateKind::kExpAvg: return TensorKind::kExpAvg;
    case parallel::StateKind::kExpAvgSq: return TensorKind::kExpAvgSq;
  }
  TANDEM_CHECK(false, "unknown optimizer state kind {}", static_cast<int>(kind));
  return TensorKind::kParam;
}

// Appends what this rank owns (parameters and both AdamW moments: the elements it counts in the
// gradient norm) as boxes of the global tensors.
void append_owned(runtime::ShardWriter& shard, const parallel::DataParallelOptimizer& optimizer) {
  optimizer.visit_owned([&](const parallel::ParamSharding& sharding, int64_t begin, const at::Tensor& param,
                            const at::Tensor& exp_avg, const at::Tensor& exp_avg_sq) {
    int64_t position = 0;  // into the views
    for (const runtime::TensorSlice& box :
         runtime::TensorSlice::flat_range(sharding.local_shape, begin, begin + param.numel())) {
      const runtime::TensorSlice global = to_global(box, sharding);
      const int64_t n = box.numel();
      for (const auto& [kind, values] : {std::pair{TensorKind::kParam, &param},
                                         {TensorKind::kExpAvg, &exp_avg},
                                         {TensorKind::kExpAvgSq, &exp_avg_sq}}) {
        runtime::append_tensor(shard, sharding.name, kind, values->narrow(0, position, n).view(box.lengths),
                               sharding.global_shape, global);
      }
      position += n;
    }
  });
}

// Elements [begin, begin + numel) of this rank's local tensor `sharding` of `kind`, read from the
// boxes of the global tensor they cover (and nothing else).
at::Tensor read_local_range(runtime::CheckpointReader& reader, const parallel::ParamSharding& sharding,
                            parallel::StateKind state_kind, int64_t begin, int64_t numel) {
  const TensorKind kind = tensor_kind(state_kind);
  const std::optional<std::vector<int64_t>> stored = reader.global_shape(sharding.name, kind);
  TANDEM_CHECK_INPUT(stored.has_value(), "{}: the checkpoint holds no '{}' ({}); it was written for another model",
                     reader.dir(), sharding.name, runtime::tensor_kind_name(kind));
  TANDEM_CHECK_INPUT(*stored == sharding.global_shape,
                     "{}: '{}' has shape {} in the checkpoint but {} in this model; the model config changed",
                     reader.dir(), sharding.name, fmt::join(*stored, "x"), fmt::join(sharding.global_shape, "x"));
  at::Tensor values = at::empty({numel}, at::kFloat);
  int64_t position = 0;
  for (const runtime::TensorSlice& box : runtime::TensorSlice::flat_range(sharding.local_shape, begin, begin + numel)) {
    const int64_t n = box.numel();
    values.narrow(0, position, n)
        .copy_(reader.read_global(sharding.name, kind, to_global(box, sharding)).reshape({-1}));
    position += n;
  }
  return values;
}

runtime::CheckpointLayout layout_of(const JobConfig& config, int64_t world_size) {
  runtime::CheckpointLayout layout;
  layout.world_size = world_size;
  layout.pp = config.parallel.pp;
  layout.dp = config.parallel.dp;
  layout.tp = config.parallel.tp;
  layout.ep = config.parallel.ep;
  layout.zero = config.parallel.zero;
  layout.schedule = config::enum_name(config.parallel.pipeline.schedule);
  layout.order = config.parallel.order;
  layout.virtual_stages = config.parallel.pipeline.virtual_stages;
  layout.micro_batches = config.parallel.pipeline.micro_batches;
  return layout;
}

}  // namespace

Checkpointer::Checkpointer(const JobConfig& config, const runtime::ProcessContext& process,
                           parallel::Communicator& world)
    : config_(config),
      process_(process),
      world_(world),
      root_(config.checkpoint.dir.empty() ? config.run.output_dir + "/checkpoints" : config.checkpoint.dir) {}

void Checkpointer::save(int64_t step, const CheckpointedState& state) {
  const auto start = std::chrono::steady_clock::now();
  const int rank = process_.rank;
  const runtime::CheckpointStore store(root_);

  // Rank 0 names the staging directory (its pid keeps concurrent writers apart) and creates it.
  at::Tensor token = at::tensor({static_cast<int64_t>(getpid())}, at::kLong);
  world_.broadcast(token, 0);
  std::string dir;
  if (rank == 0) dir = store.begin(step, token.item<int64_t>());
  world_.barrier();
  if (rank != 0) dir = store.staging_dir(step, token.item<int64_t>());

  runtime::ShardWriter shard(dir, rank);
  append_owned(shard, state.optimizer);
  // Buffers (routing biases) are identical on every rank holding them: each is stored once.
  for (const auto& [name, buffer] : state.runner.named_buffers(/*stored_only=*/true)) {
    runtime::append_tensor(shard, name, TensorKind::kBuffer, buffer);
  }
  const runtime::RankRecord record = shard.finish("", state.sampler.state().serialize());
  const std::vector<std::string> records = gather_to_root(world_, runtime::encode_rank_record(record));
  if (rank == 0) commit(store, dir, step, state, records, start);
  world_.barrier();  // nobody moves on (or exits) before the checkpoint is committed
}

void Checkpointer::commit(const runtime::CheckpointStore& store, const std::string& dir, int64_t step,
                          const CheckpointedState& state, const std::vector<std::string>& records,
                          std::chrono::steady_clock::time_point start) const {
  runtime::CheckpointManifest manifest;
  manifest.step = step;
  manifest.config_yaml = job_config_to_yaml(config_);
  manifest.layout = layout_of(config_, process_.world_size);
  manifest.optimizer_step = state.optimizer.step_count();
  manifest.scalars["consumed_samples"] = static_cast<double>(state.sampler.state().consumed_samples());
  for (const std::string& bytes : records) manifest.ranks.push_back(runtime::decode_rank_record(bytes));
  manifest.created_by = "tandem " TANDEM_VERSION_STRING;
  manifest.wall_time = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  const std::string final_dir = store.commit(dir, manifest, config_.checkpoint.keep_last);
  TANDEM_LOG_INFO("checkpoint", "step {} saved to {} in {:.2f} s", step, final_dir,
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
}

std::optional<int64_t> Checkpointer::resume(const CheckpointedState& state) {
  const std::optional<std::string> dir = find_resume_dir();
  if (!dir) return std::nullopt;
  runtime::CheckpointReader reader(runtime::load_checkpoint(*dir, /*verify_checksums=*/false));

  torch::autograd::AutoGradMode no_grad(false);
  // Each rank asks for what it keeps: whole local tensors where it holds them whole, its ZeRO
  // slice of the rest (moments from ZeRO 1, ZeRO-3's parameters). Pipeline copies load too.
  state.optimizer.load_state_ranges(
      [&](const parallel::ParamSharding& sharding, parallel::StateKind kind, int64_t begin, int64_t numel) {
        return read_local_range(reader, sharding, kind, begin, numel);
      });
  for (const auto& [name, buffer] : state.runner.named_buffers(/*stored_only=*/false)) {
    buffer.copy_(reader.read_global(name, TensorKind::kBuffer));
  }
  const runtime::CheckpointManifest& manifest = reader.manifest();
  state.optimizer.set_step_count(manifest.optimizer_step);
  const runtime::RankRecord* record = manifest.rank_record(0);
  TANDEM_CHECK_INPUT(record != nullptr, "{}: the manifest has no record of rank 0", *dir);
  state.sampler.restore(runtime::SamplerState::parse(record->data_state));
  if (process_.is_root()) TANDEM_LOG_INFO("checkpoint", "resumed from {} (step {})", *dir, manifest.step);
  return manifest.step;
}

std::optional<std::string> Checkpointer::find_resume_dir() const {
  const std::string& resume = config_.checkpoint.resume;
  if (resume == "none") return std::nullopt;
  const runtime::CheckpointStore store(root_);
  // Rank 0 picks and fully verifies the checkpoint; everyone then reads the same directory.
  std::string dir;
  at::Tensor step = at::tensor({int64_t{-1}}, at::kLong);
  if (process_.is_root()) {
    if (resume == "auto") {
      if (auto found = store.find_latest_valid()) {
        step.fill_(found->step);
        dir = found->dir;
      }
    } else {
      const runtime::LoadedCheckpoint found = runtime::load_checkpoint(resume);
      step.fill_(found.step);
      dir = found.dir;
    }
  }
  world_.broadcast(step, 0);
  if (step.item<int64_t>() < 0) {
    if (process_.is_root()) TANDEM_LOG_INFO("checkpoint", "no checkpoint in {}: starting from scratch", store.root());
    return std::nullopt;
  }
  if (!process_.is_root()) {
    dir = resume == "auto" ? store.root() + "/" + runtime::checkpoint_dir_name(step.item<int64_t>()) : resume;
  }
  return dir;
}

}  // namespace tandem::launch
