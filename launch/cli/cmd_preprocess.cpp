// `tandem preprocess --input FILE... --output PREFIX [--split-on LINE|blank-line|file] [--dtype D]`:
// turns text files into a Megatron-compatible indexed dataset (PREFIX.bin + PREFIX.idx) with
// the byte tokenizer, one sequence per document and no EOD stored (the sampler adds EODs).
// Documents are separated by a line equal to LINE (e.g. `%` for fortune files), by one or more
// blank lines, or are whole files; whitespace-only documents are dropped. Runs on rank 0 only
// (other ranks return at once) and prints the counts and the corpus' unigram entropy, the loss
// level a model must get below to have learned more than letter frequencies.
#include <CLI/CLI.hpp>

#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "launch/cli/command.h"
#include "runtime/data/byte_tokenizer.h"
#include "runtime/data/indexed_dataset.h"
#include "runtime/error.h"
#include "runtime/file_util.h"
#include "runtime/process_context.h"

namespace tandem::launch {
namespace {

struct PreprocessOptions {
  std::vector<std::string> inputs;
  std::string output;
  std::string split_on = "file";
  std::string dtype = "uint16";
};

bool is_blank(std::string_view text) { return text.find_first_not_of(" \t\r\n\f\v") == std::string_view::npos; }

// Calls add(document) for each document of `text` under the split rule.
template <class Add>
void split_documents(const std::string& text, const std::string& split_on, Add&& add) {
  if (split_on == "file") {
    if (!is_blank(text)) add(std::string_view(text));
    return;
  }
  const bool on_blank = split_on == "blank-line";
  size_t document_begin = 0, line_begin = 0;
  auto flush = [&](size_t end) {
    const std::string_view document(text.data() + document_begin, end - document_begin);
    if (!is_blank(document)) add(document);
  };
  while (line_begin < text.size()) {
    size_t line_end = text.find('\n', line_begin);
    const size_t next = line_end == std::string::npos ? text.size() : line_end + 1;
    if (line_end == std::string::npos) line_end = text.size();
    std::string_view line(text.data() + line_begin, line_end - line_begin);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (on_blank ? is_blank(line) : line == split_on) {
      flush(line_begin);
      document_begin = next;
    }
    line_begin = next;
  }
  flush(text.size());
}

std::string human(double value) {
  if (value >= 1e9) return fmt::format("{:.2f}G", value / 1e9);
  if (value >= 1e6) return fmt::format("{:.2f}M", value / 1e6);
  if (value >= 1e3) return fmt::format("{:.1f}K", value / 1e3);
  return fmt::format("{:.0f}", value);
}

int run_preprocess(const PreprocessOptions& options) {
  const std::optional<runtime::TokenDtype> dtype = runtime::token_dtype_from_name(options.dtype);
  TANDEM_CHECK_CONFIG(dtype.has_value(), "--dtype: unknown dtype '{}' (uint8, int8, int16, uint16, int32, int64)",
                      options.dtype);
  TANDEM_CHECK_CONFIG(!runtime::token_dtype_is_float(*dtype) && runtime::token_dtype_min_id(*dtype) <= 0 &&
                          runtime::token_dtype_max_id(*dtype) >= runtime::ByteTokenizer::kVocabSize - 1,
                      "--dtype: {} cannot hold the byte tokenizer's ids 0-{} (bytes and special tokens); use uint16",
                      options.dtype, runtime::ByteTokenizer::kVocabSize - 1);
  for (const std::string& input : options.inputs) {
    TANDEM_CHECK_INPUT(runtime::is_regular_file(input), "--input: {} not found or not a regular file", input);
  }
  runtime::make_directories(runtime::parent_directory(options.output));

  const runtime::ByteTokenizer tokenizer;
  runtime::IndexedDatasetWriter writer(options.output, *dtype);
  int64_t input_bytes = 0;
  for (const std::string& input : options.inputs) {
    const std::string text = runtime::read_file(input);
    input_bytes += static_cast<int64_t>(text.size());
    split_documents(text, options.split_on,
                    [&](std::string_view document) { writer.add_document(tokenizer.encode(document)); });
  }
  TANDEM_CHECK_INPUT(writer.num_documents() > 0,
                     "no documents in the {} input file(s) with --split-on {}: every document was empty or blank",
                     options.inputs.size(), options.split_on);
  writer.finish();

  // Read the result back: it checks the files and gives the statistics.
  const runtime::IndexedDataset dataset = runtime::IndexedDataset::open(options.output);
  const runtime::CorpusStats stats = runtime::compute_corpus_stats(dataset, runtime::ByteTokenizer::kVocabSize);
  const double stored_bytes =
      static_cast<double>(*runtime::file_size(dataset.bin_path()) + *runtime::file_size(dataset.idx_path()));
  std::string out;
  out += fmt::format("wrote {} and {} ({} bytes, dtype {})\n", dataset.bin_path(), dataset.idx_path(),
                     human(stored_bytes), options.dtype);
  out += fmt::format("  input files            {:>12}  ({} bytes of text)\n", options.inputs.size(), input_bytes);
  out += fmt::format("  documents              {:>12}\n", stats.num_documents);
  out += fmt::format("  tokens (bytes)         {:>12}  (mean {:.1f}, min {}, max {} per document)\n", stats.num_tokens,
                     static_cast<double>(stats.num_tokens) / static_cast<double>(stats.num_documents),
                     stats.shortest_document, stats.longest_document);
  out += fmt::format("  tokens with EODs       {:>12}\n", stats.num_tokens + stats.num_documents);
  out +=
      fmt::format("  unigram entropy        {:>12.4f}  bits/byte (of the stored text)\n", stats.entropy_bits_per_token);
  out += fmt::format("  unigram entropy        {:>12.4f}  bits/token = {:.4f} nats/token (training stream with "
                     "EODs: the loss of a frequency-only model)\n",
                     stats.stream_entropy_bits_per_token, stats.stream_entropy_bits_per_token * std::log(2.0));
  std::fputs(out.c_str(), stdout);
  std::fflush(stdout);
  return 0;
}

}  // namespace

CommandRunner add_preprocess_command(CLI::App& app) {
  auto options = std::make_shared<PreprocessOptions>();
  CLI::App* command = app.add_subcommand("preprocess",
                                         "Turn text files into a Megatron indexed dataset (.bin/.idx) with the byte "
                                         "tokenizer");
  command->add_option("--input", options->inputs, "Text files (repeatable, or several after one --input)")
      ->required()
      ->expected(1, -1);
  command->add_option("--output", options->output, "Output prefix: writes PREFIX.bin and PREFIX.idx")->required();
  command
      ->add_option("--split-on", options->split_on,
                   "Document boundary: a separator LINE (e.g. %), blank-line (one or more blank lines), or file "
                   "(one document per file)")
      ->capture_default_str();
  command->add_option("--dtype", options->dtype, "Token dtype in the .bin file (Megatron dtype names)")
      ->capture_default_str();
  return [options](const CommandEnv& env) {
    if (!env.process.is_root()) return 0;  // one writer; the others have nothing to do
    return run_preprocess(*options);
  };
}

}  // namespace tandem::launch
