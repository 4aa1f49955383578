// tandem_checkpoint_diff: compares two checkpoints tensor by tensor, by global name, whatever
// layouts wrote them (each tensor is assembled from the boxes its shards hold). The layout
// equivalence tests use it for "final weights equal the single-process run's": per tensor the
// relative difference max|a - b| / max|b| (b = the reference), and the worst of them printed.
//
// Usage: tandem_checkpoint_diff CANDIDATE REFERENCE [--tolerance T] [--kinds param,optimizer.exp_avg,...]
//                               [--list N]   (also print the N worst tensors)
//   CANDIDATE/REFERENCE: a checkpoint directory (step_XXXXXXXX) or a checkpoint root (its latest
//   valid checkpoint). Exit 0 when both hold the same tensors with the same global shapes and
//   every difference is within T (default 1e-5), 1 otherwise, 2 on unreadable input.
#include <ATen/ATen.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "runtime/checkpoint_store.h"
#include "runtime/checkpoint_tensors.h"
#include "runtime/error.h"
#include "runtime/file_util.h"

namespace {

using tandem::runtime::CheckpointReader;
using tandem::runtime::TensorKind;

CheckpointReader open_checkpoint(const std::string& path) {
  if (tandem::runtime::path_exists(path + "/manifest.pb"))
    return CheckpointReader(tandem::runtime::load_checkpoint(path));
  auto found = tandem::runtime::find_latest_valid(path);
  TANDEM_CHECK_INPUT(found.has_value(), "{}: neither a checkpoint nor a directory holding a valid one", path);
  return CheckpointReader(std::move(*found));
}

std::set<std::pair<std::string, TensorKind>> tensors_of(const CheckpointReader& reader) {
  std::set<std::pair<std::string, TensorKind>> out;
  for (const auto& record : reader.manifest().ranks) {
    for (const auto& entry : record.tensors) out.emplace(entry.name, entry.kind);
  }
  return out;
}

int run(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s CANDIDATE REFERENCE [--tolerance T] [--kinds k1,k2]\n", argv[0]);
    return 2;
  }
  double tolerance = 1e-5;
  size_t list = 0;
  std::set<std::string> kinds = {"param", "optimizer.exp_avg", "optimizer.exp_avg_sq", "buffer"};
  for (int i = 3; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--tolerance") {
      tolerance = std::atof(argv[i + 1]);
    } else if (flag == "--list") {
      list = static_cast<size_t>(std::atoi(argv[i + 1]));
    } else if (flag == "--kinds") {
      kinds.clear();
      std::string list = argv[i + 1];
      for (size_t start = 0; start <= list.size();) {
        const size_t comma = std::min(list.find(',', start), list.size());
        kinds.insert(list.substr(start, comma - start));
        start = comma + 1;
      }
    } else {
      std::fprintf(stderr, "unknown option %s\n", flag.c_str());
      return 2;
    }
  }
  CheckpointReader candidate = open_checkpoint(argv[1]);
  CheckpointReader reference = open_checkpoint(argv[2]);
  const auto names = tensors_of(reference);
  bool ok = names == tensors_of(candidate);
  if (!ok) std::printf("the checkpoints hold different tensors\n");
  if (candidate.manifest().step != reference.manifest().step) {
    std::printf("steps differ: %lld vs %lld\n", static_cast<long long>(candidate.manifest().step),
                static_cast<long long>(reference.manifest().step));
    ok = false;
  }
  double worst = 0;
  std::string worst_name;
  std::vector<std::pair<double, std::string>> all;
  int64_t compared = 0;
  for (const auto& [name, kind] : names) {
    const std::string kind_name(tandem::runtime::tensor_kind_name(kind));
    if (!kinds.count(kind_name) || !candidate.global_shape(name, kind)) continue;
    if (*candidate.global_shape(name, kind) != *reference.global_shape(name, kind)) {
      std::printf("%s (%s): global shapes differ\n", name.c_str(), kind_name.c_str());
      ok = false;
      continue;
    }
    const at::Tensor a = candidate.read_global(name, kind).to(at::kDouble);
    const at::Tensor b = reference.read_global(name, kind).to(at::kDouble);
    const double scale = b.numel() == 0 ? 1.0 : std::max(b.abs().max().item<double>(), 1e-30);
    const double diff = a.numel() == 0 ? 0.0 : (a - b).abs().max().item<double>() / scale;
    ++compared;
    std::string where;
    if (a.numel() > 0) {  // the element of the largest difference, for the listing
      const int64_t at = (a - b).abs().reshape({-1}).argmax().item<int64_t>();
      where = fmt::format(" at flat index {}: {:.9g} vs {:.9g}", at, a.reshape({-1})[at].item<double>(),
                          b.reshape({-1})[at].item<double>());
    }
    all.emplace_back(diff, name + " (" + kind_name + ")" + where);
    if (diff > worst || worst_name.empty()) worst = diff, worst_name = name + " (" + kind_name + ")";
  }
  std::sort(all.rbegin(), all.rend());
  for (size_t i = 0; i < std::min(list, all.size()); ++i) std::printf("%.3e %s\n", all[i].first, all[i].second.c_str());
  std::printf("compared %lld tensors; worst relative difference %.3e (%s)\n", static_cast<long long>(compared), worst,
              worst_name.c_str());
  return ok && compared > 0 && worst <= tolerance ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const tandem::Error& error) {
    std::fprintf(stderr, "%s\n", error.what());
    return 2;
  }
}
