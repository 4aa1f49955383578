// Measured timelines (measured.h): JSON round trip (runtime/json.h), assembly of one step's
// per-rank files, and the measured-vs-simulated comparison.
#include "schedule/measured.h"

#include <spdlog/fmt/fmt.h>

#include <algorithm>
#include <limits>

#include "runtime/error.h"
#include "runtime/json.h"
#include "schedule/render.h"
#include "schedule/validator.h"

namespace tandem::schedule {

std::string rank_timeline_to_json(const RankTimeline& t) {
  TANDEM_CHECK(t.ops.size() == t.times.size(), "a timeline of {} ops has {} times", t.ops.size(), t.times.size());
  const bool chunk = shows_chunk(t.kind);
  nlohmann::ordered_json ops = nlohmann::ordered_json::array();
  for (std::size_t i = 0; i < t.ops.size(); ++i) {
    nlohmann::ordered_json op;
    op["token"] = format_op(t.ops[i], chunk);
    op["start"] = json::number(t.times[i].start);
    op["end"] = json::number(t.times[i].end);
    ops.push_back(std::move(op));
  }
  nlohmann::ordered_json root;
  root["format"] = "tandem-timeline";
  root["kind"] = schedule_kind_name(t.kind);
  root["num_ranks"] = t.num_ranks;
  root["num_microbatches"] = t.num_microbatches;
  root["num_chunks"] = t.num_chunks;
  root["step"] = t.step;
  root["pp_rank"] = t.pp_rank;
  root["dp_rank"] = t.dp_rank;
  root["tp_rank"] = t.tp_rank;
  root["ops"] = std::move(ops);
  return json::dump_rows(root);
}

RankTimeline rank_timeline_from_json(std::string_view text) {
  const nlohmann::json root = json::parse(text);
  TANDEM_CHECK_INPUT(root.is_object(), "a timeline file is a JSON object");
  const auto format = root.find("format");
  TANDEM_CHECK_INPUT(format != root.end() && *format == "tandem-timeline",
                     "not a tandem timeline (\"format\" must be \"tandem-timeline\")");
  const auto kind = root.find("kind");
  TANDEM_CHECK_INPUT(kind != root.end() && kind->is_string(), "a timeline needs \"kind\" as a string");
  RankTimeline t;
  t.kind = parse_schedule_kind(kind->get_ref<const std::string&>());
  auto integer = [&](const char* key, int min) {
    const auto v = root.find(key);
    TANDEM_CHECK_INPUT(v != root.end(), "a timeline needs \"{}\"", key);
    return json::as_int(*v, key, min);
  };
  t.num_ranks = integer("num_ranks", 1);
  t.num_microbatches = integer("num_microbatches", 1);
  t.num_chunks = integer("num_chunks", 1);
  t.step = integer("step", 0);
  t.pp_rank = integer("pp_rank", 0);
  t.dp_rank = integer("dp_rank", 0);
  t.tp_rank = integer("tp_rank", 0);
  TANDEM_CHECK_INPUT(t.pp_rank < t.num_ranks, "pp_rank {} outside {} pipeline ranks", t.pp_rank, t.num_ranks);
  const Placement placement = placement_for(t.kind, t.num_ranks, t.num_chunks, t.num_microbatches);
  const auto ops = root.find("ops");
  TANDEM_CHECK_INPUT(ops != root.end() && ops->is_array(), "a timeline needs \"ops\" as an array");
  for (std::size_t i = 0; i < ops->size(); ++i) {
    const nlohmann::json& op = (*ops)[i];
    const auto token = op.is_object() ? op.find("token") : op.end();
    TANDEM_CHECK_INPUT(token != op.end() && token->is_string(), "ops[{}] needs a \"token\" string", i);
    try {
      t.ops.push_back(parse_op(token->get_ref<const std::string&>(), placement));
      t.times.push_back({json::number_at(op, "start"), json::number_at(op, "end")});
    } catch (const Error& e) {
      TANDEM_THROW(kInput, "ops[{}]: {}", i, e.message());
    }
    TANDEM_CHECK_INPUT(t.times.back().start <= t.times.back().end, "ops[{}] ends before it starts", i);
  }
  return t;
}

MeasuredStep assemble_measured_step(std::span<const RankTimeline> ranks) {
  TANDEM_CHECK_INPUT(!ranks.empty(), "no timelines to assemble");
  const RankTimeline& first = ranks.front();
  MeasuredStep out;
  out.step = first.step;
  out.schedule = make_empty_schedule(first.kind, first.num_ranks, first.num_microbatches, first.num_chunks);
  out.timeline.ranks.resize(static_cast<std::size_t>(first.num_ranks));
  std::vector<bool> seen(static_cast<std::size_t>(first.num_ranks), false);
  double origin = std::numeric_limits<double>::infinity();
  for (const RankTimeline& t : ranks) {
    TANDEM_CHECK_INPUT(
        t.kind == first.kind && t.num_ranks == first.num_ranks && t.num_microbatches == first.num_microbatches &&
            t.num_chunks == first.num_chunks && t.step == first.step,
        "timelines of different runs: pp rank {} has {} P={} M={} v={} step {}, pp rank {} has {} P={} "
        "M={} v={} step {}",
        first.pp_rank, schedule_kind_name(first.kind), first.num_ranks, first.num_microbatches, first.num_chunks,
        first.step, t.pp_rank, schedule_kind_name(t.kind), t.num_ranks, t.num_microbatches, t.num_chunks, t.step);
    const auto r = static_cast<std::size_t>(t.pp_rank);
    TANDEM_CHECK_INPUT(!seen[r], "two timelines of pp rank {}", t.pp_rank);
    seen[r] = true;
    out.schedule.ranks[r] = t.ops;
    out.timeline.ranks[r] = t.times;
    for (const OpTime& time : t.times) origin = std::min(origin, time.start);
  }
  for (std::size_t r = 0; r < seen.size(); ++r) TANDEM_CHECK_INPUT(seen[r], "the timeline of pp rank {} is missing", r);
  check_valid(out.schedule, ErrorKind::kInput);
  for (auto& times : out.timeline.ranks) {
    for (OpTime& time : times) {
      time.start -= origin;
      time.end -= origin;
    }
  }
  return out;
}

std::vector<OpSample> op_samples(const Schedule& schedule, const Timeline& timeline) {
  std::vector<OpSample> samples;
  for (std::size_t r = 0; r < schedule.ranks.size(); ++r) {
    for (std::size_t i = 0; i < schedule.ranks[r].size(); ++i) {
      const Op& op = schedule.ranks[r][i];
      const OpTime& t = timeline.ranks[r][i];
      samples.push_back({static_cast<int>(r), op.first.chunk, op.first.kind, op.is_pair(), t.end - t.start});
    }
  }
  return samples;
}

MeasuredComparison compare_measured(const MeasuredStep& step) {
  const Schedule& schedule = step.schedule;
  const std::vector<OpSample> samples = op_samples(schedule, step.timeline);
  // Kinds a slot never ran keep the mean of the kind over all slots (only matters for pieces the
  // schedule never issues there).
  OpCosts fallback;
  for (OpKind kind : {OpKind::kF, OpKind::kB, OpKind::kW}) {
    double sum = 0;
    int count = 0;
    for (const OpSample& s : samples) {
      if (!s.pair && s.kind == kind) sum += s.duration, ++count;
    }
    if (count == 0) continue;
    (kind == OpKind::kF ? fallback.f : kind == OpKind::kB ? fallback.b : fallback.w) = sum / count;
  }
  MeasuredComparison out{
      summarize(schedule, step.timeline), {}, cost_model_from_samples(samples, fallback), {}, {}, {}};
  out.simulated = simulate(schedule, out.costs);

  out.table =
      fmt::format("# step {}: {} P={} M={}, times in ms (simulated: the measured per-op times, no p2p latency)\n",
                  step.step, schedule_kind_name(schedule.kind), schedule.num_ranks, schedule.num_microbatches);
  out.table += fmt::format("  {:>4} {:>12} {:>12} {:>10} {:>12} {:>12} {:>10}\n", "rank", "measured", "busy", "bubble",
                           "simulated", "busy", "bubble");
  for (std::size_t r = 0; r < out.measured.ranks.size(); ++r) {
    const RankStats& m = out.measured.ranks[r];
    const RankStats& s = out.simulated.ranks[r];
    out.table += fmt::format("  {:>4} {:>12.2f} {:>12.2f} {:>9.1f}% {:>12.2f} {:>12.2f} {:>9.1f}%\n", r,
                             out.measured.makespan, m.busy, 100.0 * m.bubble_fraction, out.simulated.makespan, s.busy,
                             100.0 * s.bubble_fraction);
  }
  out.table += fmt::format("  {:>4} {:>12.2f} {:>12} {:>9.1f}% {:>12.2f} {:>12} {:>9.1f}%\n", "all",
                           out.measured.makespan, "", 100.0 * out.measured.bubble_fraction(), out.simulated.makespan,
                           "", 100.0 * out.simulated.bubble_fraction());

  const std::string measured_title = fmt::format("measured step {}: makespan {:.2f} ms, bubble {:.1f}%", step.step,
                                                 out.measured.makespan, 100.0 * out.measured.bubble_fraction());
  const std::string simulated_title =
      fmt::format("simulated with the measured op times: makespan {:.2f} ms, bubble {:.1f}%", out.simulated.makespan,
                  100.0 * out.simulated.bubble_fraction());
  const RunView runs[] = {{measured_title, &schedule, &out.measured}, {simulated_title, &schedule, &out.simulated}};
  out.chrome = render_chrome(runs);
  out.svg = render_svg(runs, fmt::format("{} P={} M={}: measured vs simulated", schedule_kind_name(schedule.kind),
                                         schedule.num_ranks, schedule.num_microbatches));
  return out;
}

}  // namespace tandem::schedule
