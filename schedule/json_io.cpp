// The schedule JSON format (nlohmann-json through runtime/json.h) and the ops notation read back.
// Errors name the path of the bad value or the line of the ops text, because these files are
// written by hand.
#include "schedule/json_io.h"

#include <spdlog/fmt/fmt.h>

#include <vector>

#include "runtime/error.h"
#include "runtime/json.h"
#include "schedule/generators.h"

namespace tandem::schedule {

// --- Schedule JSON --------------------------------------------------------------------------

std::string schedule_to_json(const Schedule& s) {
  const bool chunk = shows_chunk(s.kind);
  nlohmann::ordered_json ranks = nlohmann::ordered_json::array();
  for (const auto& ops : s.ranks) {
    nlohmann::ordered_json tokens = nlohmann::ordered_json::array();
    for (const Op& op : ops) tokens.push_back(format_op(op, chunk));
    ranks.push_back(std::move(tokens));
  }
  nlohmann::ordered_json root;
  root["format"] = "tandem-schedule/1";
  root["kind"] = schedule_kind_name(s.kind);
  root["num_ranks"] = s.num_ranks;
  root["num_microbatches"] = s.num_microbatches;
  root["num_chunks"] = s.num_chunks;
  root["ranks"] = std::move(ranks);
  return json::dump_rows(root);
}

Schedule schedule_from_json(std::string_view text) {
  const nlohmann::json root = json::parse(text);
  TANDEM_CHECK_INPUT(root.is_object(), "a schedule file is a JSON object, not {}", json::type_name(root));
  for (const auto& [key, value] : root.items()) {
    TANDEM_CHECK_INPUT(key == "format" || key == "comment" || key == "kind" || key == "num_ranks" ||
                           key == "num_microbatches" || key == "num_chunks" || key == "ranks",
                       "unknown key \"{}\" in schedule file (known: kind, num_ranks, num_microbatches, num_chunks, "
                       "ranks, format, comment)",
                       key);
  }
  const auto kind = root.find("kind");
  const auto mbs = root.find("num_microbatches");
  const auto ranks = root.find("ranks");
  TANDEM_CHECK_INPUT(kind != root.end() && kind->is_string(), "schedule file needs \"kind\" as a string");
  TANDEM_CHECK_INPUT(mbs != root.end(), "schedule file needs \"num_microbatches\"");
  TANDEM_CHECK_INPUT(ranks != root.end() && ranks->is_array() && !ranks->empty(),
                     "schedule file needs \"ranks\": a non-empty array of per-rank token arrays");
  const std::string& kind_name = kind->get_ref<const std::string&>();
  const ScheduleKind schedule_kind = parse_schedule_kind(kind_name);
  const int num_ranks = static_cast<int>(ranks->size());
  if (const auto p = root.find("num_ranks"); p != root.end()) {
    const int declared = json::as_int(*p, "num_ranks", 1);
    TANDEM_CHECK_INPUT(declared == num_ranks, "num_ranks is {} but \"ranks\" lists {} ranks", declared, num_ranks);
  }
  const auto chunks = root.find("num_chunks");
  const int num_chunks = chunks != root.end() ? json::as_int(*chunks, "num_chunks", 1)
                                              : default_num_chunks(schedule_kind);
  TANDEM_CHECK_INPUT(schedule_kind == ScheduleKind::kInterleaved || num_chunks == default_num_chunks(schedule_kind),
                     "{} holds {} chunk(s) per rank, but num_chunks is {}", kind_name,
                     default_num_chunks(schedule_kind), num_chunks);
  Schedule s = make_empty_schedule(schedule_kind, num_ranks, json::as_int(*mbs, "num_microbatches", 1), num_chunks);
  for (int r = 0; r < num_ranks; ++r) {
    const nlohmann::json& list = (*ranks)[static_cast<std::size_t>(r)];
    TANDEM_CHECK_INPUT(list.is_array(), "ranks[{}] must be an array of op tokens", r);
    auto& ops = s.ranks[static_cast<std::size_t>(r)];
    ops.reserve(list.size());
    for (std::size_t i = 0; i < list.size(); ++i) {
      const nlohmann::json& token = list[i];
      TANDEM_CHECK_INPUT(token.is_string(), "ranks[{}][{}] must be a token string like \"F3\"", r, i);
      try {
        ops.push_back(parse_op(token.get_ref<const std::string&>(), s.placement));
      } catch (const Error& e) {
        TANDEM_THROW(kInput, "ranks[{}][{}]: {}", r, i, e.message());
      }
    }
  }
  return s;
}

// --- Ops notation -----------------------------------------------------------------------------

Schedule schedule_from_ops(std::string_view text, ScheduleKind kind, int num_microbatches, int num_chunks) {
  // Pass 1: the lines (the placement needs the rank count before tokens can be read).
  std::vector<std::pair<int, std::string_view>> lines;  // (line number, tokens)
  int line_number = 0;
  while (!text.empty()) {
    const std::size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    ++line_number;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    const std::size_t colon = line.find(':');
    const std::string expected = std::to_string(lines.size());
    std::string_view head = line.substr(0, colon);
    while (!head.empty() && head.front() == ' ') head.remove_prefix(1);
    TANDEM_CHECK_INPUT(colon != std::string_view::npos && head == expected,
                       "ops line {}: expected '{}: tok tok ...' (ranks in order from 0)", line_number, expected);
    lines.emplace_back(line_number, line.substr(colon + 1));
  }
  TANDEM_CHECK_INPUT(!lines.empty(), "ops text has no rank lines");
  Schedule s = make_empty_schedule(kind, static_cast<int>(lines.size()), num_microbatches,
                                   num_chunks == 0 ? default_num_chunks(kind) : num_chunks);
  for (std::size_t r = 0; r < lines.size(); ++r) {
    std::string_view rest = lines[r].second;
    while (true) {
      const std::size_t begin = rest.find_first_not_of(" \t\r");
      if (begin == std::string_view::npos) break;
      rest.remove_prefix(begin);
      const std::size_t end = rest.find_first_of(" \t\r");
      const std::string_view token = rest.substr(0, end);
      try {
        s.ranks[r].push_back(parse_op(token, s.placement));
      } catch (const Error& e) {
        TANDEM_THROW(kInput, "ops line {}: {}", lines[r].first, e.message());
      }
      if (end == std::string_view::npos) break;
      rest.remove_prefix(end);
    }
  }
  return s;
}

}  // namespace tandem::schedule
