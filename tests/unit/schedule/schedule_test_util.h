// Helpers shared by the schedule tests: an independent op-count check (not the validator's
// code, so the two check each other) and a tiny XML well-formedness check for the SVG.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <vector>

#include "schedule/ir.h"

namespace tandem::schedule::testing {

// Empty when every (mb, stage) has exactly one F and exactly one backward (one BW, or one B and
// one W), and nothing else; otherwise the first problem found.
inline std::string count_problem(const Schedule& s) {
  const std::size_t keys = static_cast<std::size_t>(s.num_microbatches) * s.num_stages;
  std::vector<int> f(keys), bw(keys), b(keys), w(keys);
  for (int r = 0; r < s.num_ranks; ++r) {
    for (const Op& op : s.ranks[static_cast<std::size_t>(r)]) {
      for (const Piece* p : {&op.first, op.second ? &*op.second : nullptr}) {
        if (p == nullptr) continue;
        const std::size_t k = static_cast<std::size_t>(p->mb) * s.num_stages + s.stage_of(r, *p);
        if (k >= keys) return "piece out of range";
        (p->kind == OpKind::kF ? f : p->kind == OpKind::kBW ? bw : p->kind == OpKind::kB ? b : w)[k]++;
      }
    }
  }
  for (std::size_t k = 0; k < keys; ++k) {
    const bool backward_once = (bw[k] == 1 && b[k] == 0 && w[k] == 0) || (bw[k] == 0 && b[k] == 1 && w[k] == 1);
    if (f[k] != 1 || !backward_once) {
      return "mb " + std::to_string(k / s.num_stages) + " stage " + std::to_string(k % s.num_stages) + ": F x" +
             std::to_string(f[k]) + " BW x" + std::to_string(bw[k]) + " B x" + std::to_string(b[k]) + " W x" +
             std::to_string(w[k]);
    }
  }
  return {};
}

// Empty when every tag is closed in order (self-closing tags allowed); otherwise the problem.
inline std::string xml_problem(std::string_view text) {
  std::vector<std::string> open;
  std::size_t pos = 0;
  while ((pos = text.find('<', pos)) != std::string_view::npos) {
    const std::size_t end = text.find('>', pos);
    if (end == std::string_view::npos) return "unterminated tag";
    std::string_view tag = text.substr(pos + 1, end - pos - 1);
    pos = end + 1;
    if (tag.starts_with('?') || tag.starts_with('!')) continue;
    if (tag.starts_with('/')) {
      const std::string name(tag.substr(1));
      if (open.empty() || open.back() != name) return "unbalanced </" + name + ">";
      open.pop_back();
      continue;
    }
    if (tag.ends_with('/')) continue;
    open.emplace_back(tag.substr(0, tag.find(' ')));
  }
  return open.empty() ? std::string() : "unclosed <" + open.back() + ">";
}

inline std::size_t count_of(std::string_view text, std::string_view needle) {
  std::size_t n = 0;
  for (std::size_t pos = text.find(needle); pos != std::string_view::npos; pos = text.find(needle, pos + 1)) ++n;
  return n;
}

}  // namespace tandem::schedule::testing
