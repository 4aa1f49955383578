// `tandem generate CKPT (--prompt TEXT ... | --prompts FILE) [sampling options]`: completions
// from a checkpoint (model/generation.h), on one process or many. Under mpirun the ranks form
// the layout the --set overrides ask for (parallel.tp / parallel.ep; dp = the rest): the
// (prompt, sample) requests are dealt round-robin over the data-parallel ranks, the tp ranks of
// a group decode the same requests, and rank 0 writes every completion, ordered by prompt and
// sample, as JSONL (to --output, or stdout). The text is encoded with the byte tokenizer the
// checkpoint was trained with (runtime/data/byte_tokenizer.h); a prompt starts with BOS and a
// completion ends at EOD, a --stop string or --max-new-tokens.
#include <ATen/ATen.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <memory>

#include "launch/cli/command.h"
#include "launch/config/config_loader.h"
#include "launch/export/checkpoint_inspect.h"
#include "launch/train/checkpoint_weights.h"
#include "launch/train/training_device.h"
#include "model/generation.h"
#include "parallel/host_staged_communicator.h"
#include "parallel/process_grid.h"
#include "runtime/data/byte_tokenizer.h"
#include "runtime/json.h"
#include "runtime/log.h"
#include "runtime/process_context.h"

namespace tandem::launch {
namespace {

struct GenerateOptions {
  std::string checkpoint;
  std::vector<std::string> prompts;
  std::string prompts_file;
  std::string output;  // JSONL; empty: stdout
  int64_t samples = 1;
  int64_t batch_size = 16;
  int64_t comm_timeout_s = 300;
  std::vector<std::string> stop;
  std::vector<std::string> overrides;
  model::SamplingOptions sampling;
};

struct Prompt {
  int64_t id = 0;
  std::string text;
};

// --prompt texts, or the lines of --prompts: JSONL objects with a "prompt" string (and an
// optional integer "id") for a .jsonl file, else one prompt per non-empty line.
std::vector<Prompt> read_prompts(const GenerateOptions& options) {
  std::vector<Prompt> prompts;
  for (const std::string& text : options.prompts) prompts.push_back({static_cast<int64_t>(prompts.size()), text});
  if (options.prompts_file.empty()) return prompts;
  std::ifstream in(options.prompts_file);
  TANDEM_CHECK_INPUT(in.good(), "--prompts: cannot read {}", options.prompts_file);
  const bool jsonl = options.prompts_file.ends_with(".jsonl");
  std::string line;
  for (int64_t number = 1; std::getline(in, line); ++number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    if (!jsonl) {
      prompts.push_back({static_cast<int64_t>(prompts.size()), line});
      continue;
    }
    const std::string where = fmt::format("{}:{}", options.prompts_file, number);
    nlohmann::json record;
    try {
      record = json::parse(line);
    } catch (const Error& e) {
      TANDEM_CHECK_INPUT(false, "{}: {}", where, e.what());
    }
    TANDEM_CHECK_INPUT(record.is_object() && record.contains("prompt") && record["prompt"].is_string(),
                       "{}: expected an object with a string \"prompt\"", where);
    const int64_t id = record.contains("id") ? json::as_int(record["id"], where + " id", 0)
                                             : static_cast<int64_t>(prompts.size());
    prompts.push_back({id, record["prompt"].get<std::string>()});
  }
  TANDEM_CHECK_INPUT(!prompts.empty(), "no prompts: pass --prompt TEXT or --prompts FILE (got an empty {})",
                     options.prompts_file);
  return prompts;
}

// The checkpoint's job with the layout (and device) overrides, for this world size. dp is derived
// from the world, and the batch keys (unused here) are set so that any layout validates.
JobConfig generation_config(const runtime::LoadedCheckpoint& checkpoint, const std::vector<std::string>& overrides,
                            int64_t world_size) {
  for (const std::string& o : overrides) {
    TANDEM_CONFIG_REQUIRE(!o.starts_with("parallel.pp=") || o == "parallel.pp=1", "parallel.pp",
                          "generation runs the model as one stage; drop --set {} (split it with tp or ep)", o);
  }
  std::vector<std::string> all{"parallel.dp=0", "parallel.pipeline.micro_batches=0", "data.micro_batch_size=1",
                               fmt::format("data.global_batch_size={}", world_size)};
  all.insert(all.end(), overrides.begin(), overrides.end());
  const std::string where = checkpoint.dir + "/manifest.pb";
  return load_job_config_from_string(job_config_to_yaml(job_config_from_manifest(checkpoint.manifest, where)),
                                     where + " (job config)", all, world_size);
}

// The tokenizer's rules: never sample padding, BOS or the embedding rows past the vocabulary;
// EOD ends a completion; each --stop string ends one as its bytes.
model::SamplingOptions tokenizer_sampling(const GenerateOptions& options) {
  model::SamplingOptions s = options.sampling;
  s.vocab_limit = runtime::ByteTokenizer::kVocabSize;
  s.suppressed_token_ids = {runtime::ByteTokenizer::kBos, runtime::ByteTokenizer::kPad};
  s.stop_token_ids = {runtime::ByteTokenizer::kEod};
  const runtime::ByteTokenizer tokenizer;
  for (const std::string& stop : options.stop) {
    const std::vector<int32_t> ids = tokenizer.encode(stop);
    s.stop_sequences.emplace_back(ids.begin(), ids.end());
  }
  return s;
}

// Every (prompt, sample) request, dealt round-robin: request i goes to data-parallel rank i % dp.
std::vector<model::GenerationRequest> requests_of_rank(const std::vector<Prompt>& prompts, int64_t samples, int64_t dp,
                                                       int64_t dp_rank) {
  const runtime::ByteTokenizer tokenizer;
  std::vector<model::GenerationRequest> out;
  int64_t index = 0;
  for (const Prompt& p : prompts) {
    for (int64_t s = 0; s < samples; ++s, ++index) {
      if (index % dp != dp_rank) continue;
      const std::vector<int32_t> ids = tokenizer.encode(p.text, /*add_bos=*/true);
      out.push_back({.prompt_id = p.id, .sample_id = s, .prompt = {ids.begin(), ids.end()}});
    }
  }
  return out;
}

std::string completion_line(const model::Completion& c, const std::string& prompt) {
  const runtime::ByteTokenizer tokenizer;
  nlohmann::ordered_json o;
  o["prompt_id"] = c.prompt_id;
  o["sample_id"] = c.sample_id;
  o["prompt"] = prompt;
  o["completion"] = tokenizer.decode(c.tokens, /*skip_special=*/true);
  o["finish_reason"] = c.finish_reason;
  o["new_tokens"] = static_cast<int64_t>(c.tokens.size());
  double logprob = 0;
  for (float l : c.logprobs) logprob += l;
  o["logprob"] = json::number(logprob);
  return json::dump(o);
}

// Every rank's lines on rank 0 (empty elsewhere): sizes first, then the bytes.
std::vector<std::string> gather_lines(parallel::Communicator& world, const std::vector<std::string>& lines) {
  std::string joined;
  for (const std::string& l : lines) joined += l + "\n";
  at::Tensor size = at::full({1}, static_cast<int64_t>(joined.size()), at::kLong);
  at::Tensor sizes = at::empty({world.size()}, at::kLong);
  world.all_gather(sizes, size);
  const int64_t longest = sizes.max().item<int64_t>();
  at::Tensor bytes = at::zeros({longest}, at::kByte);
  std::copy(joined.begin(), joined.end(), bytes.data_ptr<uint8_t>());
  at::Tensor all = at::empty({world.size() * longest}, at::kByte);
  world.all_gather(all, bytes);
  std::vector<std::string> out;
  if (world.rank() != 0) return out;
  for (int64_t r = 0; r < world.size(); ++r) {
    const char* begin = reinterpret_cast<const char*>(all.data_ptr<uint8_t>()) + r * longest;
    std::string text(begin, static_cast<size_t>(sizes[r].item<int64_t>()));
    for (size_t start = 0, end; (end = text.find('\n', start)) != std::string::npos; start = end + 1) {
      out.push_back(text.substr(start, end - start));
    }
  }
  return out;
}

int run_generate(const GenerateOptions& options, const CommandEnv& env) {
  const std::vector<Prompt> prompts = read_prompts(options);
  const runtime::LoadedCheckpoint checkpoint =
      load_weights_checkpoint(options.checkpoint, "tandem generate CHECKPOINT");
  const JobConfig config = generation_config(checkpoint, options.overrides, env.process.world_size);
  const model::SamplingOptions sampling = tokenizer_sampling(options);
  model::Generator::check(sampling);
  const TrainingDevice device = resolve_training_device(config, env.process.local_rank, env.process.host);
  parallel::CommunicatorFactory factory =
      parallel::mpi_communicator_factory(std::chrono::seconds(options.comm_timeout_s));
  // Host-staged on GPUs: decoding exchanges little, and MPI's tag matching needs no set-up.
  if (device.device.is_cuda()) factory = parallel::host_staged_factory(std::move(factory));
  env.setup.pass();

  const parallel::ProcessGrid grid(parallel::GridLayout::create(env.process.world_size, 1, config.parallel.dp,
                                                                config.parallel.tp, config.parallel.ep,
                                                                config.parallel.order),
                                   env.process, factory);
  model::ParallelGroups groups{.tp = grid.shared(parallel::GroupKind::kTensor),
                               .ep = grid.shared(parallel::GroupKind::kExpert)};
  model::Model model(config.model, static_cast<uint64_t>(config.run.seed), groups);
  load_model_weights(checkpoint, model);
  model.to(device.device);
  if (device.bf16()) model.to(at::kBFloat16);
  model::Generator generator(model, sampling, grid.shared(parallel::GroupKind::kWorld));

  const std::vector<model::GenerationRequest> mine =
      requests_of_rank(prompts, options.samples, grid.layout().dp_size(), grid.coord().dp);
  // Every rank runs the same number of batches (ranks with fewer requests run empty ones).
  const int64_t per_rank = (static_cast<int64_t>(prompts.size()) * options.samples + grid.layout().dp_size() - 1) /
                           grid.layout().dp_size();
  std::vector<std::string> lines;
  int64_t new_tokens = 0;
  double seconds = 0;
  for (int64_t first = 0; first < per_rank; first += options.batch_size) {
    const auto begin = mine.begin() + std::min<int64_t>(first, static_cast<int64_t>(mine.size()));
    const auto end = mine.begin() + std::min<int64_t>(first + options.batch_size, static_cast<int64_t>(mine.size()));
    for (const model::Completion& c : generator.generate({begin, end})) {
      const auto prompt =
          std::find_if(prompts.begin(), prompts.end(), [&](const Prompt& p) { return p.id == c.prompt_id; });
      if (grid.coord().tp == 0) lines.push_back(completion_line(c, prompt->text));
    }
    if (grid.coord().tp == 0) new_tokens += generator.last_stats().new_tokens;
    seconds += generator.last_stats().seconds;
  }
  std::vector<std::string> all = gather_lines(grid.world(), lines);
  at::Tensor totals = at::tensor({static_cast<double>(new_tokens)}, at::kDouble);
  grid.world().all_reduce(totals, parallel::ReduceOp::kSum);
  at::Tensor slowest = at::tensor({seconds}, at::kDouble);
  grid.world().all_reduce(slowest, parallel::ReduceOp::kMax);
  if (!env.process.is_root()) return 0;
  // Ordered by (prompt_id, sample_id): the output does not depend on the layout.
  auto key = [](const std::string& line) {
    const nlohmann::json o = json::parse(line);
    return std::pair{o["prompt_id"].get<int64_t>(), o["sample_id"].get<int64_t>()};
  };
  std::stable_sort(all.begin(), all.end(), [&](const std::string& a, const std::string& b) { return key(a) < key(b); });
  std::string text;
  for (const std::string& l : all) text += l + "\n";
  if (options.output.empty()) {
    std::fputs(text.c_str(), stdout);
  } else {
    std::ofstream out(options.output, std::ios::binary | std::ios::trunc);
    out << text;
    TANDEM_CHECK_KIND(kIo, out.good(), "cannot write {}", options.output);
  }
  const double s = slowest.item<double>();
  TANDEM_LOG_INFO("generate", "{} completions, {} new tokens in {:.2f} s: {:.1f} tokens/s on {} ({} ranks, batch {})",
                  all.size(), static_cast<int64_t>(totals.item<double>()), s, s > 0 ? totals.item<double>() / s : 0.0,
                  device.device.str(), env.process.world_size, options.batch_size);
  return 0;
}

}  // namespace

CommandRunner add_generate_command(CLI::App& app) {
  auto o = std::make_shared<GenerateOptions>();
  CLI::App* command = app.add_subcommand("generate", "Sample completions of prompts from a checkpoint");
  command->add_option("checkpoint", o->checkpoint, "Checkpoint step directory, or a checkpoint root (uses latest)")
      ->required();
  command->add_option("--prompt", o->prompts, "A prompt (repeatable)");
  command->add_option("--prompts", o->prompts_file,
                      "File of prompts: JSONL with \"prompt\" (and \"id\"), or one per line");
  command->add_option("--output", o->output, "Write the completions here as JSONL (default: stdout)");
  command->add_option("--samples", o->samples, "Completions per prompt")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  command->add_option("--max-new-tokens", o->sampling.max_new_tokens, "Most tokens per completion")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  command->add_option("--temperature", o->sampling.temperature, "Sampling temperature; 0 is greedy")
      ->capture_default_str();
  command->add_option("--top-k", o->sampling.top_k, "Keep the k most likely tokens (0: all)")->capture_default_str();
  command->add_option("--top-p", o->sampling.top_p, "Nucleus: the smallest set reaching this probability")
      ->capture_default_str();
  command->add_option("--seed", o->sampling.seed, "Seed of the draws (a completion depends on seed, prompt id, sample)")
      ->capture_default_str();
  command->add_option("--stop", o->stop, "A string that ends a completion (repeatable)");
  command->add_option("--batch-size", o->batch_size, "Completions decoded together per rank")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  command->add_option("--set", o->overrides, "Override a job key: --set parallel.tp=2, --set run.device=cpu");
  command->add_option("--comm-timeout", o->comm_timeout_s, "Seconds a collective may wait for peers")
      ->check(CLI::PositiveNumber);
  return [o](const CommandEnv& env) {
    TANDEM_CHECK_INPUT(!o->prompts.empty() || !o->prompts_file.empty(), "pass --prompt TEXT or --prompts FILE");
    return run_generate(*o, env);
  };
}

}  // namespace tandem::launch
