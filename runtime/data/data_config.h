// The job file's data section, owned by runtime/data/. Plain data with a field listing
// (runtime/config_schema.h); cross-section rules live in launch/config/job_config.cpp.
#pragma once

#include <cstdint>
#include <string>

#include "runtime/config_schema.h"

namespace tandem::runtime {

struct DataConfig {
  std::string path = "data/tiny_corpus";  // prefix of the .bin/.idx pair
  std::string valid_path;                 // optional separate validation set prefix
  double valid_fraction = 0.01;           // documents held out when valid_path is empty
  int64_t seq_length = 128;
  int64_t micro_batch_size = 4;    // sequences per micro-batch per dp rank
  int64_t global_batch_size = 16;  // sequences per optimizer step, all dp ranks together
  std::string tokenizer = "byte";

  template <class V>
  void visit(V& v) {
    v("path", path, {.doc = "Dataset prefix: PATH.bin and PATH.idx (Megatron indexed format)"});
    v("valid_path", valid_path,
      {.doc = "Validation dataset prefix; empty = hold out valid_fraction of path's documents"});
    v("valid_fraction", valid_fraction, {.doc = "Fraction of documents held out for evaluation", .min = 0, .max = 0.5});
    v("seq_length", seq_length, {.doc = "Tokens per training sequence", .min = 2});
    v("micro_batch_size", micro_batch_size, {.doc = "Sequences per micro-batch on one data-parallel rank", .min = 1});
    v("global_batch_size", global_batch_size,
      {.doc = "Sequences per optimizer step over all data-parallel ranks", .min = 1});
    v("tokenizer", tokenizer, {.doc = "Tokenizer for preprocess and evaluation", .choices = "byte"});
  }
};

}  // namespace tandem::runtime
