// StepLogger (see step_logger.h).
#include "launch/train/step_logger.h"

#include <string>
#include <utility>
#include <vector>

#include "model/model_size.h"
#include "runtime/file_util.h"
#include "runtime/log.h"
#include "runtime/metrics_writer.h"
#include "runtime/process_context.h"
#include "runtime/tensorboard_writer.h"

namespace tandem::launch {
namespace {

std::string format_duration(double seconds) {
  const auto total = static_cast<int64_t>(std::max(0.0, seconds) + 0.5);
  if (total >= 3600) return fmt::format("{}:{:02}:{:02}", total / 3600, (total / 60) % 60, total % 60);
  return fmt::format("{}:{:02}", total / 60, total % 60);
}

std::string progress_bar(int64_t done, int64_t total) {
  constexpr int kWidth = 20;
  const auto filled = static_cast<int>(kWidth * done / std::max<int64_t>(total, 1));
  return "[" + std::string(static_cast<size_t>(filled), '#') + std::string(static_cast<size_t>(kWidth - filled), '.') +
         "]";
}

}  // namespace

StepLogger::StepLogger(const JobConfig& config, const runtime::ProcessContext& process,
                       std::optional<int64_t> resumed_step, double peak_flops)
    : config_(config),
      peak_flops_(peak_flops),
      flops_per_token_(model::compute_model_size(config.model).train_flops_per_token(config.data.seq_length)),
      tokens_per_step_(config.data.global_batch_size * config.data.seq_length),
      first_step_(resumed_step.value_or(0)),
      run_start_(std::chrono::steady_clock::now()) {
  if (!process.is_root()) return;
  runtime::make_directories(config.run.output_dir);
  // Lines after the resumed step (or every line, starting afresh) belong to a run that did not
  // finish them: dropped, so that metrics.jsonl never holds a step twice.
  metrics_ =
      std::make_unique<runtime::MetricsWriter>(config.run.output_dir + "/metrics.jsonl", resumed_step.value_or(0));
  if (config.logging.tensorboard) {
    tensorboard_ = std::make_unique<runtime::TensorBoardWriter>(config.run.output_dir + "/tensorboard", process.host);
    // The dead run's events after the resumed step stay in its file: TensorBoard hides them.
    if (resumed_step) tensorboard_->add_session_start(*resumed_step + 1);
  }
}

StepLogger::~StepLogger() = default;

void StepLogger::log(const StepRecord& r, double step_seconds) {
  if (!metrics_) return;
  const double tokens_per_s = static_cast<double>(tokens_per_step_) / step_seconds;
  const double mfu = flops_per_token_ * tokens_per_s / peak_flops_;
  const int64_t steps = config_.train.steps;
  const StepLosses& l = r.losses;
  if (r.step % config_.logging.log_interval == 0 || r.step == steps || r.step == first_step_ + 1) {
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - run_start_).count();
    const double eta = elapsed / static_cast<double>(r.step - first_step_) * static_cast<double>(steps - r.step);
    TANDEM_LOG_INFO("train",
                    "step {:>5}/{} {} loss {:.4f} (lm {:.4f} mtp {:.4f}) | lr {:.2e} | gnorm {:.3f} | {:.0f} tok/s | "
                    "mfu {:.1f}% | imbalance {:.2f} | {:.2f} s/step | eta {}{}",
                    r.step, steps, progress_bar(r.step, steps), l.loss, l.lm_loss, l.mtp_loss, r.lr, r.grad_norm,
                    tokens_per_s, 100.0 * mfu, r.expert_imbalance, step_seconds, format_duration(eta),
                    r.eval_loss ? fmt::format(" | eval {:.4f}", *r.eval_loss) : std::string());
  }
  std::vector<runtime::MetricField> fields = {{"step", r.step},
                                              {"loss", l.loss},
                                              {"lm_loss", l.lm_loss},
                                              {"mtp_loss", l.mtp_loss},
                                              {"aux_loss", l.aux_loss},
                                              {"lr", r.lr},
                                              {"grad_norm", r.grad_norm},
                                              {"tokens_per_s", tokens_per_s},
                                              {"mfu", mfu},
                                              {"expert_imbalance", r.expert_imbalance},
                                              {"step_time_s", step_seconds},
                                              {"consumed_tokens", r.step * tokens_per_step_}};
  if (r.eval_loss) fields.emplace_back("eval_loss", *r.eval_loss);
  metrics_->write(fields);
  if (tensorboard_) {
    // Every series of metrics.jsonl (eval_loss under its established tag eval/lm_loss).
    std::vector<std::pair<std::string, double>> scalars;
    for (const auto& [key, value] : fields) {
      if (key == "step") continue;
      const double number = std::holds_alternative<double>(value) ? std::get<double>(value)
                                                                  : static_cast<double>(std::get<int64_t>(value));
      scalars.emplace_back(key == "eval_loss" ? std::string("eval/lm_loss") : "train/" + key, number);
    }
    tensorboard_->add_scalars(r.step, scalars);
  }
}

void StepLogger::flush() {
  if (tensorboard_) tensorboard_->flush();
}

}  // namespace tandem::launch
