// The backend's own all-to-all through tandem's Communicator (MPI on host tensors, NCCL on GPU
// tensors), at the message sizes an expert exchange of training moves: the reference that
// tests/bench/run_pipeline_scale_bench.sh sets the all-to-all bandwidth achieved inside training
// against. Run under mpirun, one rank per process; every rank sends --bytes to the other ranks per
// all-to-all (evenly split, in rows of --row-bytes, plus a slice of the same size to itself, as
// uniform routing does), fp32 rows. Per size: --warmup untimed rounds, then --iters timed ones,
// each from a barrier to the wait's return (and the device's completion on a GPU); the time of a
// round is the slowest rank's. Rank 0 prints one JSON line per size:
//   {"bench": "alltoall", "backend": "mpi", "ranks": 4, "bytes_sent": 1048576, "ms": 0.42, "gbps": 2.5}
// with ms the median round and gbps = bytes_sent / ms (the per-rank bandwidth, the same
// definition as tests/bench/scale_report.py uses for the exchanges of training).
#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "parallel/mpi_communicator.h"
#include "parallel/nccl_communicator.h"
#include "runtime/device.h"
#include "runtime/error.h"
#include "runtime/json.h"
#include "runtime/mpi_session.h"

namespace tandem::bench {
namespace {

constexpr const char* kUsage =
    "usage: mpirun -np P tandem_alltoall_bench [--device cpu|cuda] [--bytes \"B1 B2 ...\"] [--row-bytes N]\n"
    "                                          [--iters N] [--warmup N]\n"
    "  --bytes: bytes each rank sends to the other ranks per all-to-all (default \"65536 1048576 8388608\")\n";

struct Options {
  std::string device = "cpu";
  std::vector<int64_t> bytes = {65536, 1048576, 8388608};
  int64_t row_bytes = 1024;
  int iters = 20;
  int warmup = 3;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    TANDEM_CHECK_INPUT(i + 1 < argc, "{} needs a value\n{}", arg, kUsage);
    const std::string value = argv[++i];
    if (arg == "--device") {
      o.device = value;
    } else if (arg == "--bytes") {
      o.bytes.clear();
      std::istringstream in(value);
      for (int64_t b = 0; in >> b;) o.bytes.push_back(b);
    } else if (arg == "--row-bytes") {
      o.row_bytes = std::stoll(value);
    } else if (arg == "--iters") {
      o.iters = std::stoi(value);
    } else if (arg == "--warmup") {
      o.warmup = std::stoi(value);
    } else {
      TANDEM_THROW(kInput, "unknown option {}\n{}", arg, kUsage);
    }
  }
  TANDEM_CHECK_INPUT(o.device == "cpu" || o.device == "cuda", "--device is cpu or cuda, not {}", o.device);
  TANDEM_CHECK_INPUT(!o.bytes.empty() && o.row_bytes >= 4 && o.row_bytes % 4 == 0 && o.iters > 0,
                     "--bytes needs sizes, --row-bytes a multiple of 4, --iters > 0\n{}", kUsage);
  return o;
}

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int run(int argc, char** argv) {
  runtime::MpiSession mpi(&argc, &argv);
  const Options o = parse(argc, argv);
  const runtime::ProcessContext& process = mpi.context();
  const bool cuda = o.device == "cuda";
  at::Device device = at::kCPU;
  if (cuda)
    device =
        at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(runtime::select_device_for_local_rank(process.local_rank)));
  parallel::CommunicatorPtr comm = cuda ? parallel::make_nccl_communicator(MPI_COMM_WORLD, "ep")
                                        : parallel::make_mpi_communicator(MPI_COMM_WORLD, "ep");
  const parallel::CommunicatorPtr host = parallel::make_mpi_communicator(MPI_COMM_WORLD, "host");
  const int ranks = comm->size();
  const int64_t row_floats = o.row_bytes / 4;
  for (int64_t bytes : o.bytes) {
    // Rows per peer, at least one; the self slice is as large as one peer's.
    const int64_t per_peer = std::max<int64_t>(1, bytes / std::max(1, ranks - 1) / o.row_bytes);
    const std::vector<int64_t> splits(static_cast<size_t>(ranks), per_peer);
    const auto options = at::TensorOptions().dtype(at::kFloat).device(device);
    const at::Tensor input = at::ones({per_peer * ranks, row_floats}, options);
    const at::Tensor output = at::empty({per_peer * ranks, row_floats}, options);
    std::vector<double> rounds;
    for (int i = 0; i < o.warmup + o.iters; ++i) {
      host->barrier();
      const double start = now_ms();
      comm->all_to_all_async(output, input, splits, splits)->synchronize();
      at::Tensor elapsed = at::tensor({now_ms() - start}, at::kDouble);
      host->all_reduce(elapsed, parallel::ReduceOp::kMax);
      if (i >= o.warmup) rounds.push_back(elapsed.item<double>());
    }
    std::sort(rounds.begin(), rounds.end());
    const double ms = rounds[rounds.size() / 2];
    const int64_t sent = per_peer * (ranks - 1) * row_floats * 4;
    if (process.is_root()) {
      nlohmann::ordered_json line;
      line["bench"] = "alltoall";
      line["backend"] = comm->backend();
      line["ranks"] = ranks;
      line["bytes_sent"] = sent;
      line["ms"] = json::rounded(ms, 6);
      line["gbps"] = json::rounded(static_cast<double>(sent) / ms / 1e6, 6);
      std::printf("%s\n", json::dump_line(line).c_str());
      std::fflush(stdout);
    }
  }
  comm.reset();
  return 0;
}

}  // namespace
}  // namespace tandem::bench

int main(int argc, char** argv) {
  try {
    return tandem::bench::run(argc, argv);
  } catch (const tandem::Error& e) {
    std::fprintf(stderr, "tandem_alltoall_bench: %s\n", e.what());
    return 2;
  }
}
