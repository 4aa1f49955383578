// JSON renderers: the simulation report (json) and Chrome trace events (chrome), built with
// nlohmann-json and laid out one record per line (runtime/json.h). Numbers are written in the
// shortest form that reads back exactly; Chrome timestamps are microseconds (to the nanosecond)
// with one time unit taken as one millisecond.
#include "runtime/json.h"
#include "schedule/render.h"

namespace tandem::schedule {

namespace {

using nlohmann::ordered_json;

std::string_view category(const Op& op) {
  if (!op.second) return op_kind_name(op.first.kind);
  return op.second->kind == OpKind::kBW ? "F+BW" : "F+B";
}

ordered_json rank_stats_json(const RankStats& st) {
  ordered_json out;
  out["rank"] = st.rank;
  out["busy"] = json::number(st.busy);
  out["bubble"] = json::number(st.bubble);
  out["bubble_fraction"] = json::number(st.bubble_fraction);
  out["peak_live_chunks"] = st.peak_live_chunks;
  out["param_chunks"] = st.param_chunks;
  out["num_ops"] = st.num_ops;
  return out;
}

// A metadata event ("M") naming or ordering a process (tid 0) or a thread.
ordered_json metadata_event(const char* name, std::size_t pid, std::size_t tid, const char* arg, ordered_json value) {
  ordered_json event;
  event["name"] = name;
  event["ph"] = "M";
  event["pid"] = pid;
  event["tid"] = tid;
  event["args"][arg] = std::move(value);
  return event;
}

// One complete event ("X") per op; a pair also names its second piece's micro-batch and stage.
ordered_json op_event(const Schedule& s, const SimResult& result, std::size_t pid, std::size_t r, std::size_t i) {
  const Op& op = s.ranks[r][i];
  const OpTime& t = result.timeline.ranks[r][i];
  ordered_json event;
  event["name"] = format_op(op, shows_chunk(s.kind));
  event["cat"] = category(op);
  event["ph"] = "X";
  event["pid"] = pid;
  event["tid"] = r;
  event["ts"] = json::rounded((t.start - result.origin) * 1e3, 3);
  event["dur"] = json::rounded((t.end - t.start) * 1e3, 3);
  ordered_json& args = event["args"];
  args["op"] = i;
  args["mb"] = op.first.mb;
  args["stage"] = s.stage_of(static_cast<int>(r), op.first);
  if (op.second) {
    args["mb2"] = op.second->mb;
    args["stage2"] = s.stage_of(static_cast<int>(r), *op.second);
  }
  return event;
}

}  // namespace

std::string render_json(const Schedule& s, const SimResult& result, const CostModel* costs) {
  const bool chunk = shows_chunk(s.kind);
  ordered_json root;
  root["kind"] = schedule_kind_name(s.kind);
  root["num_ranks"] = s.num_ranks;
  root["num_microbatches"] = s.num_microbatches;
  root["num_chunks"] = s.num_chunks;
  root["num_stages"] = s.num_stages;
  if (costs != nullptr) root["cost"] = costs->describe();
  root["makespan"] = json::number(result.makespan);
  root["bubble_fraction"] = json::number(result.bubble_fraction());
  root["max_bubble"] = json::number(result.max_bubble());
  root["peak_live_chunks"] = result.max_peak_live_chunks();
  ordered_json ranks = ordered_json::array();
  for (const RankStats& st : result.ranks) ranks.push_back(rank_stats_json(st));
  ordered_json timeline = ordered_json::array();
  for (std::size_t r = 0; r < s.ranks.size(); ++r) {
    for (std::size_t i = 0; i < s.ranks[r].size(); ++i) {
      const OpTime& t = result.timeline.ranks[r][i];
      ordered_json op;
      op["rank"] = r;
      op["index"] = i;
      op["token"] = format_op(s.ranks[r][i], chunk);
      op["start"] = json::number(t.start - result.origin);
      op["end"] = json::number(t.end - result.origin);
      timeline.push_back(std::move(op));
    }
  }
  root["ranks"] = std::move(ranks);
  root["timeline"] = std::move(timeline);
  return json::dump_rows(root);
}

std::string render_chrome(const Schedule& schedule, const SimResult& result) {
  const RunView run{default_title(schedule, result), &schedule, &result};
  return render_chrome(std::span<const RunView>(&run, 1));
}

std::string render_chrome(std::span<const RunView> runs) {
  ordered_json events = ordered_json::array();
  for (std::size_t pid = 0; pid < runs.size(); ++pid) {
    const Schedule& s = *runs[pid].schedule;
    events.push_back(metadata_event("process_name", pid, 0, "name", runs[pid].title));
    events.push_back(metadata_event("process_sort_index", pid, 0, "sort_index", pid));
    for (std::size_t r = 0; r < s.ranks.size(); ++r) {
      events.push_back(metadata_event("thread_name", pid, r, "name", "rank " + std::to_string(r)));
      events.push_back(metadata_event("thread_sort_index", pid, r, "sort_index", r));
    }
    for (std::size_t r = 0; r < s.ranks.size(); ++r) {
      for (std::size_t i = 0; i < s.ranks[r].size(); ++i) events.push_back(op_event(s, *runs[pid].result, pid, r, i));
    }
  }
  return json::dump_rows(events);
}

}  // namespace tandem::schedule
