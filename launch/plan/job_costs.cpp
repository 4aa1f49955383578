// Job -> schedule cost inputs (see job_costs.h).
#include "launch/plan/job_costs.h"

#include "model/model_size.h"

namespace tandem::launch {

double rank_sustained_tflops(const JobConfig& config, int cpu_threads) {
  const HardwareConfig& hw = config.hardware;
  const double peak_tflops = config.run.device == runtime::DeviceKind::kCpu
                                 ? hw.cpu_gflops_per_core * static_cast<double>(cpu_threads) / 1000.0
                                 : hw.gpu_tflops;
  return peak_tflops * hw.mfu_assumed;
}

JobWork job_work(const JobConfig& config, int cpu_threads) {
  const model::ModelConfig& m = config.model;
  const parallel::ParallelConfig& p = config.parallel;
  const model::ModelSize size = model::compute_model_size(m);
  const double tokens = static_cast<double>(config.data.micro_batch_size * config.data.seq_length);
  const double seq = static_cast<double>(config.data.seq_length);
  const double tp = static_cast<double>(p.tp);
  constexpr double kTera = 1e12;

  // Attention score + value products per token and layer, forward: 2 * heads * (qk + v) * (T+1)/2.
  const double attention_per_layer = static_cast<double>(size.attention_heads) *
                                     static_cast<double>(size.attention_qk_dim + size.attention_v_dim) * (seq + 1.0) *
                                     tokens;
  const double head_matmul = 2.0 * static_cast<double>(m.vocab_size * m.hidden_size) * tokens;
  const double mtp_matmul = 2.0 * static_cast<double>(size.mtp_activated_matmul_params) * tokens;
  const double all_matmul = 2.0 * static_cast<double>(size.activated_matmul_params) * tokens;
  const double layer_matmul = all_matmul - head_matmul;  // lm_head is counted in activated params

  JobWork work;
  const double layers = static_cast<double>(m.num_hidden_layers);
  work.layers.f_tflop = (layer_matmul + layers * attention_per_layer) / tp / kTera;
  work.layers.b_tflop = (layer_matmul + 2.0 * layers * attention_per_layer) / tp / kTera;
  work.layers.w_tflop = layer_matmul / tp / kTera;
  const double depth = static_cast<double>(m.num_nextn_predict_layers);
  work.last_extra.f_tflop = (head_matmul + mtp_matmul + depth * attention_per_layer) / tp / kTera;
  work.last_extra.b_tflop = (head_matmul + mtp_matmul + 2.0 * depth * attention_per_layer) / tp / kTera;
  work.last_extra.w_tflop = (head_matmul + mtp_matmul) / tp / kTera;

  int64_t moe_layers = 0;
  for (int64_t layer = 0; layer < m.num_hidden_layers; ++layer) moe_layers += m.is_moe_layer(layer) ? 1 : 0;
  const double leaving = p.ep > 1 ? static_cast<double>(p.ep - 1) / static_cast<double>(p.ep) : 0.0;
  const double a2a_per_layer = 2.0 * tokens * static_cast<double>(m.num_experts_per_tok * m.hidden_size) * 2.0 *
                               leaving;
  work.layers.f_a2a_bytes = static_cast<double>(moe_layers) * a2a_per_layer;
  work.layers.b_a2a_bytes = work.layers.f_a2a_bytes;

  const HardwareConfig& hw = config.hardware;
  // EP groups are consecutive ranks of the dp*tp domain: inside a node while ep*tp fits one.
  const bool ep_inside_node = p.ep * p.tp <= hw.gpus_per_node;
  // Pipeline neighbours are dp*tp ranks apart in the default order.
  const bool pp_inside_node = p.dp * p.tp < hw.gpus_per_node;
  work.hardware.tflops = rank_sustained_tflops(config, cpu_threads);
  work.hardware.a2a_gbps = ep_inside_node ? hw.intra_node_gbps : hw.inter_node_gbps;
  work.hardware.p2p_gbps = pp_inside_node ? hw.intra_node_gbps : hw.inter_node_gbps;
  work.hardware.p2p_latency_ms = hw.p2p_latency_us / 1000.0;
  work.hardware.p2p_bytes = tokens * static_cast<double>(m.hidden_size) * 2.0 / (p.sequence_parallel ? tp : 1.0);
  return work;
}

}  // namespace tandem::launch
