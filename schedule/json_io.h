// Reading and writing schedules: a small JSON reader (enough for hand-written schedule files;
// no dependency), the schedule JSON format, and the ops notation read back. The JSON form is
//   {"kind": "1f1b", "num_ranks": 2, "num_microbatches": 2, "num_chunks": 1,
//    "ranks": [["F0", "F1", "BW0", "BW1"], ["F0", "BW0", "F1", "BW1"]]}
// with tokens in docs/dualpipe.md's notation; "num_ranks" and "num_chunks" may be left out, "format"
// and "comment" are allowed, any other key is an error. Read schedules are not validated here:
// call validate() (validator.h).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "schedule/ir.h"

namespace tandem::schedule {

namespace json {

// A parsed JSON value (a DOM). Objects keep their keys in file order.
class Value {
 public:
  enum class Type { kNull, kBool, kNumber, kString, kArray, kObject };

  Type type() const { return type_; }
  bool is(Type type) const { return type_ == type; }
  bool as_bool() const { return bool_; }
  double as_number() const { return number_; }
  const std::string& as_string() const { return string_; }
  // Array elements, or object values (in the order of keys()).
  const std::vector<Value>& items() const { return items_; }
  const std::vector<std::string>& keys() const { return keys_; }
  // The value under `key` of an object, or nullptr.
  const Value* find(std::string_view key) const;

 private:
  friend class Parser;
  Type type_ = Type::kNull;
  bool bool_ = false;
  double number_ = 0;
  std::string string_;
  std::vector<Value> items_;
  std::vector<std::string> keys_;
};

std::string_view type_name(Value::Type type);

// Parses one JSON document. Throws tandem::Error(kInput) with line and column when malformed.
Value parse(std::string_view text);

// Appends `text` as a quoted JSON string (escaping quotes, backslashes and control characters).
void append_string(std::string& out, std::string_view text);

// `v` as an int >= min; throws tandem::Error(kInput) naming `path` otherwise.
int as_int(const Value& v, std::string_view path, int min);
// The number under `key` of `object`; throws tandem::Error(kInput) naming it when absent or not a
// number.
double number_at(const Value& object, std::string_view key);

}  // namespace json

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
