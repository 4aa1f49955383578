// JSON renderers: the simulation report (json) and Chrome trace events (chrome). Numbers are
// written in the shortest form that reads back exactly; Chrome timestamps are microseconds with
// one time unit taken as one millisecond.
#include <spdlog/fmt/fmt.h>

#include "schedule/json_io.h"
#include "schedule/render.h"

namespace tandem::schedule {

namespace {
void append_op_token(std::string& out, const Op& op, bool chunk) {
  out += '"';
  append_op(out, op, chunk);
  out += '"';
}

std::string_view category(const Op& op) {
  if (!op.second) return op_kind_name(op.first.kind);
  return op.second->kind == OpKind::kBW ? "F+BW" : "F+B";
}
}  // namespace

std::string render_json(const Schedule& s, const SimResult& result, const CostModel* costs) {
  const bool chunk = shows_chunk(s.kind);
  std::string out = "{\"kind\": ";
  json::append_string(out, schedule_kind_name(s.kind));
  out += fmt::format(", \"num_ranks\": {}, \"num_microbatches\": {}, \"num_chunks\": {}, \"num_stages\": {}",
                     s.num_ranks, s.num_microbatches, s.num_chunks, s.num_stages);
  if (costs != nullptr) {
    out += ", \"cost\": ";
    json::append_string(out, costs->describe());
  }
  out += fmt::format(",\n \"makespan\": {}, \"bubble_fraction\": {}, \"max_bubble\": {}, \"peak_live_chunks\": {},\n",
                     result.makespan, result.bubble_fraction(), result.max_bubble(), result.max_peak_live_chunks());
  out += " \"ranks\": [";
  for (std::size_t r = 0; r < result.ranks.size(); ++r) {
    const RankStats& st = result.ranks[r];
    out += fmt::format(
        "{}\n  {{\"rank\": {}, \"busy\": {}, \"bubble\": {}, \"bubble_fraction\": {}, \"peak_live_chunks\": {}, "
        "\"param_chunks\": {}, \"num_ops\": {}}}",
        r == 0 ? "" : ",", st.rank, st.busy, st.bubble, st.bubble_fraction, st.peak_live_chunks, st.param_chunks,
        st.num_ops);
  }
  out += "\n ],\n \"timeline\": [";
  bool first = true;
  for (std::size_t r = 0; r < s.ranks.size(); ++r) {
    for (std::size_t i = 0; i < s.ranks[r].size(); ++i) {
      const OpTime& t = result.timeline.ranks[r][i];
      out += first ? "\n  " : ",\n  ";
      first = false;
      out += fmt::format("{{\"rank\": {}, \"index\": {}, \"token\": ", r, i);
      append_op_token(out, s.ranks[r][i], chunk);
      out += fmt::format(", \"start\": {}, \"end\": {}}}", t.start - result.origin, t.end - result.origin);
    }
  }
  out += "\n ]}\n";
  return out;
}

std::string render_chrome(const Schedule& schedule, const SimResult& result) {
  const RunView run{default_title(schedule, result), &schedule, &result};
  return render_chrome(std::span<const RunView>(&run, 1));
}

std::string render_chrome(std::span<const RunView> runs) {
  std::string out = "[";
  bool first = true;
  auto begin_event = [&] {
    out += first ? "\n" : ",\n";
    first = false;
  };
  for (std::size_t pid = 0; pid < runs.size(); ++pid) {
    const Schedule& s = *runs[pid].schedule;
    const SimResult& result = *runs[pid].result;
    const bool chunk = shows_chunk(s.kind);
    begin_event();
    out += fmt::format("{{\"name\": \"process_name\", \"ph\": \"M\", \"pid\": {}, \"tid\": 0, \"args\": {{\"name\": ",
                       pid);
    json::append_string(out, runs[pid].title);
    out += "}}";
    begin_event();
    out += fmt::format(
        "{{\"name\": \"process_sort_index\", \"ph\": \"M\", \"pid\": {0}, \"tid\": 0, \"args\": {{\"sort_index\": {0}}}}}",
        pid);
    for (std::size_t r = 0; r < s.ranks.size(); ++r) {
      begin_event();
      out += fmt::format(
          "{{\"name\": \"thread_name\", \"ph\": \"M\", \"pid\": {}, \"tid\": {}, \"args\": {{\"name\": \"rank {}\"}}}}",
          pid, r, r);
      begin_event();
      out += fmt::format(
          "{{\"name\": \"thread_sort_index\", \"ph\": \"M\", \"pid\": {0}, \"tid\": {1}, \"args\": {{\"sort_index\": "
          "{1}}}}}",
          pid, r);
    }
    for (std::size_t r = 0; r < s.ranks.size(); ++r) {
      for (std::size_t i = 0; i < s.ranks[r].size(); ++i) {
        const Op& op = s.ranks[r][i];
        const OpTime& t = result.timeline.ranks[r][i];
        begin_event();
        out += "{\"name\": ";
        append_op_token(out, op, chunk);
        out += fmt::format(
            ", \"cat\": \"{}\", \"ph\": \"X\", \"pid\": {}, \"tid\": {}, \"ts\": {:.3f}, \"dur\": {:.3f}, \"args\": "
            "{{\"op\": {}, \"mb\": {}, \"stage\": {}",
            category(op), pid, r, (t.start - result.origin) * 1e3, (t.end - t.start) * 1e3, i, op.first.mb,
            s.stage_of(static_cast<int>(r), op.first));
        if (op.second) {
          out += fmt::format(", \"mb2\": {}, \"stage2\": {}", op.second->mb,
                             s.stage_of(static_cast<int>(r), *op.second));
        }
        out += "}}";
      }
    }
  }
  out += "\n]\n";
  return out;
}

}  // namespace tandem::schedule
