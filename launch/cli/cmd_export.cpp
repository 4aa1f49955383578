// `tandem export CKPT_DIR OUT_DIR [--dtype bf16|fp32] [--max-shard-size 5GB]`: a checkpoint (a
// step directory, or a checkpoint root whose `latest` is used) -> a Hugging Face model folder
// (launch/export/hf_export.h). Runs on rank 0 only; prints what it wrote.
#include <CLI/CLI.hpp>

#include <cctype>
#include <cstdio>
#include <memory>

#include "launch/cli/command.h"
#include "launch/export/hf_export.h"
#include "runtime/error.h"
#include "runtime/process_context.h"

namespace tandem::launch {
namespace {

struct ExportCommandOptions {
  std::string checkpoint;
  std::string out_dir;
  std::string max_shard_size = "5GB";
  ExportOptions export_options;
};

// "5GB" -> 5e9, "300MB", "64KiB", "1000" (bytes). Decimal units as Hugging Face uses them.
int64_t parse_size_bytes(const std::string& text) {
  size_t digits = 0;
  while (digits < text.size() && (std::isdigit(static_cast<unsigned char>(text[digits])) || text[digits] == '.'))
    ++digits;
  const std::string unit = text.substr(digits);
  static const std::vector<std::pair<std::string, double>> kUnits = {{"", 1},
                                                                     {"B", 1},
                                                                     {"KB", 1e3},
                                                                     {"MB", 1e6},
                                                                     {"GB", 1e9},
                                                                     {"TB", 1e12},
                                                                     {"KiB", 1024.0},
                                                                     {"MiB", 1024.0 * 1024},
                                                                     {"GiB", 1024.0 * 1024 * 1024}};
  double scale = 0;
  for (const auto& [name, factor] : kUnits) {
    if (unit == name) scale = factor;
  }
  double value = 0;
  try {
    value = digits > 0 ? std::stod(text.substr(0, digits)) : 0.0;
  } catch (const std::exception&) {
    value = 0;
  }
  TANDEM_CHECK_CONFIG(scale > 0 && value * scale >= 1, "--max-shard-size: '{}' is not a size like 5GB, 500MB or 4096",
                      text);
  return static_cast<int64_t>(value * scale);
}

int run_export(ExportCommandOptions& options) {
  options.export_options.max_shard_bytes = parse_size_bytes(options.max_shard_size);
  const ExportResult result = export_hugging_face(options.checkpoint, options.out_dir, options.export_options);
  std::string out = fmt::format("exported {} (step {}) to {} as {}: {} tensors, {:.3f} GB of {} data\n",
                                result.checkpoint_dir, result.step, options.out_dir, result.architecture,
                                result.num_tensors, static_cast<double>(result.total_bytes) / 1e9,
                                options.export_options.dtype);
  for (const std::string& file : result.files) out += fmt::format("  {}/{}\n", options.out_dir, file);
  if (!options.export_options.reference_logits_path.empty()) {
    out += fmt::format("  reference logits: {}\n", options.export_options.reference_logits_path);
  }
  for (const std::string& warning : result.warnings) out += fmt::format("warning: {}\n", warning);
  std::fputs(out.c_str(), stdout);
  std::fflush(stdout);
  return 0;
}

}  // namespace

CommandRunner add_export_command(CLI::App& app) {
  auto options = std::make_shared<ExportCommandOptions>();
  CLI::App* command = app.add_subcommand("export", "Write a checkpoint as a Hugging Face model folder (config.json + "
                                                   "safetensors)");
  command
      ->add_option("checkpoint", options->checkpoint, "Checkpoint step directory, or a checkpoint root (uses latest)")
      ->required();
  command->add_option("out_dir", options->out_dir, "Output folder")->required();
  command->add_option("--dtype", options->export_options.dtype, "Weight dtype: bf16 or fp32")
      ->check(CLI::IsMember({"bf16", "fp32"}))
      ->capture_default_str();
  command
      ->add_option("--max-shard-size", options->max_shard_size,
                   "Largest safetensors file before sharding into model-0000k-of-0000n files + index (5GB, 500MB, "
                   "bytes)")
      ->capture_default_str();
  command->add_flag("--overwrite", options->export_options.overwrite, "Replace an earlier export in OUT_DIR");
  command->add_option("--reference-logits", options->export_options.reference_logits_path,
                      "Also write tandem's logits for fixed tokens to this .safetensors file (for parity checks, "
                      "scripts/check_hf_export.py); builds the whole model in memory");
  return [options](const CommandEnv& env) {
    if (!env.process.is_root()) return 0;
    return run_export(*options);
  };
}

}  // namespace tandem::launch
