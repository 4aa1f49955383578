// JSON for every file tandem reads or writes, through nlohmann-json (cmake/TandemDeps.cmake says
// why that library), with what tandem wants on top of it:
//  - parse(): strict (a key twice in one object, or nesting deeper than 64 levels, is an error)
//    and failing with tandem::Error(kInput) that names the line and column, or the path of the
//    value. Parsed objects are nlohmann::json (sorted by key, O(log n) lookups).
//  - writers build nlohmann::ordered_json (members in the order they were added); number() and
//    rounded() turn doubles into values that print as fmt's "{}" does ("5", not "5.0"; shortest
//    round-trip digits otherwise; null for NaN and infinities).
//  - dump() (compact, `{"a":1}`), dump_line() (one line, `{"a": 1, "b": [2, 3]}`) and dump_rows()
//    (tandem's line-oriented layout of schedules, timelines and traces: one record per line).
// Only .cpp files include this header (it brings in nlohmann/json.hpp); public headers keep
// std::string-based APIs. A target that includes it links nlohmann_json::nlohmann_json PRIVATE.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace tandem::json {

// Parses one JSON document. Throws tandem::Error(kInput) "JSON error at line L, column C: ..."
// when malformed, or "JSON error: key "k" appears twice in <path>" / "... nested deeper than 64
// levels at <path>", where a path reads like `ranks[1]` or `weight_map` ("the top-level object").
nlohmann::json parse(std::string_view text);

// "null", "a boolean", "a number", "a string", "an array", "an object" (for messages).
std::string_view type_name(const nlohmann::json& value);

// `value` as an int >= min; throws Error(kInput) naming `path` otherwise ("num_microbatches must
// be an integer >= 1 (got 2.5)"). Integral doubles (2.0) are accepted.
int as_int(const nlohmann::json& value, std::string_view path, int min);
// The number under `key` of `object`; throws Error(kInput) naming it when absent or not a number.
double number_at(const nlohmann::json& object, std::string_view key);

// A double as a value that prints as fmt's "{}" prints it: integral values within +-2^53 as
// integers, other finite ones in shortest round-trip form, NaN and infinities as null.
nlohmann::ordered_json number(double value);
// `value` rounded to `decimals` places (as "{:.3f}" would keep it, without the trailing zeros).
nlohmann::ordered_json rounded(double value, int decimals);

// Appends `key: value` to `object` (an object or null) without ordered_json's linear search for
// an existing key, so building an object of n members stays O(n). The caller guarantees that
// the keys are unique.
void append_unique(nlohmann::ordered_json& object, std::string key, nlohmann::ordered_json value);

// Compact (`{"a":1,"b":[2,3]}`); `indent` >= 0 pretty-prints as nlohmann does (Python's
// json.dumps(indent=...) layout). Invalid UTF-8 in strings becomes U+FFFD instead of throwing.
std::string dump(const nlohmann::ordered_json& value, int indent = -1);
// One line with Python's default separators: {"a": 1, "b": [2, 3]}.
std::string dump_line(const nlohmann::ordered_json& value);
// tandem's record-per-line layout, ending in a newline. An array: one element per line. An
// object: consecutive scalar members share a line; an object member starts a line of its own;
// a non-empty array member starts a line and holds one element per line:
//   {"format": "tandem-schedule/1", "kind": "1f1b", "num_ranks": 2,
//    "ranks": [
//     ["F0", "BW0"],
//     ["F0", "BW0"]
//    ]}
// Elements and members are written as dump_line() writes them.
std::string dump_rows(const nlohmann::ordered_json& value);

}  // namespace tandem::json
