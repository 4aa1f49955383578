// Reading and writing schedules: the schedule JSON format (parsed and written with nlohmann-json
// through runtime/json.h) and the ops notation read back. The JSON form is
//   {"kind": "1f1b", "num_ranks": 2, "num_microbatches": 2, "num_chunks": 1,
//    "ranks": [["F0", "F1", "BW0", "BW1"], ["F0", "BW0", "F1", "BW1"]]}
// with tokens in docs/dualpipe.md's notation; "num_ranks" and "num_chunks" may be left out, "format"
// and "comment" are allowed, any other key is an error. Read schedules are not validated here:
// call validate() (validator.h).
#pragma once

#include <string>
#include <string_view>

#include "schedule/ir.h"

namespace tandem::schedule {

// The JSON form above, tokens as render_ops() prints them.
std::string schedule_to_json(const Schedule& schedule);

// Parses the JSON form. Throws tandem::Error(kInput) naming the path of a bad value
// (`ranks[1][3]: bad op token 'X3' ...`), kConfig for an unknown kind.
Schedule schedule_from_json(std::string_view text);

// Parses render_ops() output back: one `r: tok tok ...` line per rank, r = 0, 1, ... in order
// (blank lines ignored). The shape (kind, M, chunks) is not in the text, so it is passed in;
// num_chunks = 0 means the kind's default. Throws tandem::Error(kInput) naming the line.
Schedule schedule_from_ops(std::string_view text, ScheduleKind kind, int num_microbatches, int num_chunks = 0);

}  // namespace tandem::schedule
