// Deterministic, layout-free parameter init (init.h). The stream seed mixes the run seed with
// an FNV-1a hash of the name through splitmix64, so nearby names get unrelated streams.
#include "model/init.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

namespace tandem::model {
namespace {

uint64_t fnv1a64(std::string_view text) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char ch : text) {
    h ^= ch;
    h *= 0x100000001b3ULL;
  }
  return h;
}

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace

uint64_t parameter_seed(uint64_t seed, std::string_view name) { return splitmix64(splitmix64(seed) ^ fnv1a64(name)); }

at::Tensor init_normal(uint64_t seed, std::string_view name, at::IntArrayRef full_shape, double std) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(parameter_seed(seed, name));
  at::Tensor t = at::empty(full_shape, at::TensorOptions().dtype(at::kFloat));
  t.normal_(0.0, std, gen);
  return t;
}

bool is_norm_weight(std::string_view name) {
  constexpr std::string_view kSuffix = ".weight";
  if (!name.ends_with(kSuffix)) return false;
  const std::string_view module = name.substr(0, name.size() - kSuffix.size());
  return module.ends_with("norm");
}

bool takes_weight_decay(std::string_view name) {
  return !is_norm_weight(name) && name.find(".bias") == std::string_view::npos;
}

}  // namespace tandem::model
