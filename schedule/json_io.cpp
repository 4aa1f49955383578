// A small JSON reader (recursive descent, depth-limited, UTF-8 escapes), the schedule JSON
// format, and the ops notation read back. Errors carry line and column (JSON) or the path of the
// bad value, because these files are written by hand.
#include "schedule/json_io.h"

#include <charconv>
#include <cmath>
#include <limits>

#include <spdlog/fmt/fmt.h>

#include "runtime/error.h"
#include "schedule/generators.h"

namespace tandem::schedule {

namespace json {

const Value* Value::find(std::string_view key) const {
  for (std::size_t i = 0; i < keys_.size(); ++i) {
    if (keys_[i] == key) return &items_[i];
  }
  return nullptr;
}

std::string_view type_name(Value::Type type) {
  switch (type) {
    case Value::Type::kNull: return "null";
    case Value::Type::kBool: return "a boolean";
    case Value::Type::kNumber: return "a number";
    case Value::Type::kString: return "a string";
    case Value::Type::kArray: return "an array";
    case Value::Type::kObject: return "an object";
  }
  return "?";
}

class Parser {
 public:
  explicit Parser(std::string_view text) : text_(text) {}

  Value document() {
    skip_space();
    Value value = parse_value(0);
    skip_space();
    if (pos_ != text_.size()) fail("unexpected text after the JSON value");
    return value;
  }

 private:
  static constexpr int kMaxDepth = 64;

  [[noreturn]] void fail(std::string_view what) const {
    int line = 1;
    int column = 1;
    for (std::size_t i = 0; i < pos_ && i < text_.size(); ++i) {
      if (text_[i] == '\n') {
        ++line;
        column = 1;
      } else {
        ++column;
      }
    }
    TANDEM_THROW(kInput, "JSON error at line {} column {}: {}", line, column, what);
  }

  bool at_end() const { return pos_ >= text_.size(); }
  char peek() const { return at_end() ? '\0' : text_[pos_]; }

  void skip_space() {
    while (!at_end() && (peek() == ' ' || peek() == '\t' || peek() == '\n' || peek() == '\r')) ++pos_;
  }

  void expect(char c) {
    if (peek() != c) fail(fmt::format("expected '{}'", c));
    ++pos_;
  }

  void expect_word(std::string_view word) {
    if (text_.substr(pos_, word.size()) != word) fail(fmt::format("expected '{}'", word));
    pos_ += word.size();
  }

  Value parse_value(int depth) {
    if (depth > kMaxDepth) fail("nested deeper than 64 levels");
    Value value;
    switch (peek()) {
      case '{': parse_object(value, depth); break;
      case '[': parse_array(value, depth); break;
      case '"':
        value.type_ = Value::Type::kString;
        value.string_ = parse_string();
        break;
      case 't':
        expect_word("true");
        value.type_ = Value::Type::kBool;
        value.bool_ = true;
        break;
      case 'f':
        expect_word("false");
        value.type_ = Value::Type::kBool;
        break;
      case 'n': expect_word("null"); break;
      default:
        value.type_ = Value::Type::kNumber;
        value.number_ = parse_number();
        break;
    }
    return value;
  }

  void parse_object(Value& value, int depth) {
    value.type_ = Value::Type::kObject;
    expect('{');
    skip_space();
    if (peek() == '}') {
      ++pos_;
      return;
    }
    while (true) {
      skip_space();
      if (peek() != '"') fail("expected a string key");
      std::string key = parse_string();
      if (value.find(key) != nullptr) fail(fmt::format("key \"{}\" appears twice", key));
      skip_space();
      expect(':');
      skip_space();
      value.keys_.push_back(std::move(key));
      value.items_.push_back(parse_value(depth + 1));
      skip_space();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      expect('}');
      return;
    }
  }

  void parse_array(Value& value, int depth) {
    value.type_ = Value::Type::kArray;
    expect('[');
    skip_space();
    if (peek() == ']') {
      ++pos_;
      return;
    }
    while (true) {
      skip_space();
      value.items_.push_back(parse_value(depth + 1));
      skip_space();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      expect(']');
      return;
    }
  }

  double parse_number() {
    const std::size_t start = pos_;
    auto digits = [&] {
      const std::size_t from = pos_;
      while (!at_end() && peek() >= '0' && peek() <= '9') ++pos_;
      return pos_ > from;
    };
    if (peek() == '-') ++pos_;
    if (!digits()) fail("expected a value");
    if (peek() == '.') {
      ++pos_;
      if (!digits()) fail("expected digits after '.'");
    }
    if (peek() == 'e' || peek() == 'E') {
      ++pos_;
      if (peek() == '+' || peek() == '-') ++pos_;
      if (!digits()) fail("expected an exponent");
    }
    double number = 0;
    auto [ptr, ec] = std::from_chars(text_.data() + start, text_.data() + pos_, number);
    if (ec != std::errc() || !std::isfinite(number)) fail("number out of range");
    return number;
  }

  unsigned parse_hex4() {
    unsigned code = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = peek();
      unsigned digit = 0;
      if (c >= '0' && c <= '9') digit = static_cast<unsigned>(c - '0');
      else if (c >= 'a' && c <= 'f') digit = static_cast<unsigned>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') digit = static_cast<unsigned>(c - 'A' + 10);
      else fail("expected four hex digits after \\u");
      code = code * 16 + digit;
      ++pos_;
    }
    return code;
  }

  static void append_utf8(std::string& out, unsigned code) {
    if (code < 0x80) {
      out += static_cast<char>(code);
    } else if (code < 0x800) {
      out += static_cast<char>(0xC0 | (code >> 6));
      out += static_cast<char>(0x80 | (code & 0x3F));
    } else if (code < 0x10000) {
      out += static_cast<char>(0xE0 | (code >> 12));
      out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (code & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (code >> 18));
      out += static_cast<char>(0x80 | ((code >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (code & 0x3F));
    }
  }

  std::string parse_string() {
    expect('"');
    std::string out;
    while (true) {
      if (at_end()) fail("unterminated string");
      const char c = text_[pos_++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) fail("control character in string");
      if (c != '\\') {
        out += c;
        continue;
      }
      const char e = peek();
      ++pos_;
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          unsigned code = parse_hex4();
          if (code >= 0xD800 && code < 0xDC00 && text_.substr(pos_, 2) == "\\u") {
            pos_ += 2;
            const unsigned low = parse_hex4();
            if (low < 0xDC00 || low >= 0xE000) fail("bad UTF-16 surrogate pair");
            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
          }
          append_utf8(out, code);
          break;
        }
        default: --pos_; fail("bad escape in string");
      }
    }
  }

  std::string_view text_;
  std::size_t pos_ = 0;
};

Value parse(std::string_view text) { return Parser(text).document(); }

void append_string(std::string& out, std::string_view text) {
  out += '"';
  for (char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += fmt::format("\\u{:04x}", static_cast<unsigned>(static_cast<unsigned char>(c)));
        } else {
          out += c;
        }
    }
  }
  out += '"';
}

int as_int(const Value& v, std::string_view path, int min) {
  TANDEM_CHECK_INPUT(v.is(Value::Type::kNumber), "{} must be an integer, not {}", path, type_name(v.type()));
  const double d = v.as_number();
  TANDEM_CHECK_INPUT(d == std::floor(d) && d >= min && d <= std::numeric_limits<int>::max(),
                     "{} must be an integer >= {} (got {})", path, min, d);
  return static_cast<int>(d);
}

double number_at(const Value& object, std::string_view key) {
  const Value* v = object.find(key);
  TANDEM_CHECK_INPUT(v != nullptr && v->is(Value::Type::kNumber), "\"{}\" must be a number", key);
  return v->as_number();
}

}  // namespace json

// --- Schedule JSON --------------------------------------------------------------------------

std::string schedule_to_json(const Schedule& s) {
  const bool chunk = shows_chunk(s.kind);
  std::string out = "{\"format\": \"tandem-schedule/1\", \"kind\": ";
  json::append_string(out, schedule_kind_name(s.kind));
  out += fmt::format(", \"num_ranks\": {}, \"num_microbatches\": {}, \"num_chunks\": {},\n \"ranks\": [", s.num_ranks,
                     s.num_microbatches, s.num_chunks);
  for (std::size_t r = 0; r < s.ranks.size(); ++r) {
    out += r == 0 ? "\n  [" : ",\n  [";
    for (std::size_t i = 0; i < s.ranks[r].size(); ++i) {
      if (i > 0) out += ", ";
      out += '"';
      append_op(out, s.ranks[r][i], chunk);
      out += '"';
    }
    out += ']';
  }
  out += "\n ]}\n";
  return out;
}

Schedule schedule_from_json(std::string_view text) {
  const json::Value root = json::parse(text);
  TANDEM_CHECK_INPUT(root.is(json::Value::Type::kObject), "a schedule file is a JSON object, not {}",
                     json::type_name(root.type()));
  for (const std::string& key : root.keys()) {
    TANDEM_CHECK_INPUT(key == "format" || key == "comment" || key == "kind" || key == "num_ranks" ||
                           key == "num_microbatches" || key == "num_chunks" || key == "ranks",
                       "unknown key \"{}\" in schedule file (known: kind, num_ranks, num_microbatches, num_chunks, "
                       "ranks, format, comment)",
                       key);
  }
  const json::Value* kind = root.find("kind");
  const json::Value* mbs = root.find("num_microbatches");
  const json::Value* ranks = root.find("ranks");
  TANDEM_CHECK_INPUT(kind && kind->is(json::Value::Type::kString), "schedule file needs \"kind\" as a string");
  TANDEM_CHECK_INPUT(mbs != nullptr, "schedule file needs \"num_microbatches\"");
  TANDEM_CHECK_INPUT(ranks && ranks->is(json::Value::Type::kArray) && !ranks->items().empty(),
                     "schedule file needs \"ranks\": a non-empty array of per-rank token arrays");
  const ScheduleKind schedule_kind = parse_schedule_kind(kind->as_string());
  const int num_ranks = static_cast<int>(ranks->items().size());
  if (const json::Value* p = root.find("num_ranks")) {
    TANDEM_CHECK_INPUT(json::as_int(*p, "num_ranks", 1) == num_ranks, "num_ranks is {} but \"ranks\" lists {} ranks",
                       json::as_int(*p, "num_ranks", 1), num_ranks);
  }
  const int num_chunks = root.find("num_chunks") ? json::as_int(*root.find("num_chunks"), "num_chunks", 1)
                                                 : default_num_chunks(schedule_kind);
  TANDEM_CHECK_INPUT(schedule_kind == ScheduleKind::kInterleaved || num_chunks == default_num_chunks(schedule_kind),
                     "{} holds {} chunk(s) per rank, but num_chunks is {}", kind->as_string(),
                     default_num_chunks(schedule_kind), num_chunks);
  Schedule s = make_empty_schedule(schedule_kind, num_ranks, json::as_int(*mbs, "num_microbatches", 1), num_chunks);
  for (int r = 0; r < num_ranks; ++r) {
    const json::Value& list = ranks->items()[static_cast<std::size_t>(r)];
    TANDEM_CHECK_INPUT(list.is(json::Value::Type::kArray), "ranks[{}] must be an array of op tokens", r);
    auto& ops = s.ranks[static_cast<std::size_t>(r)];
    ops.reserve(list.items().size());
    for (std::size_t i = 0; i < list.items().size(); ++i) {
      const json::Value& token = list.items()[i];
      TANDEM_CHECK_INPUT(token.is(json::Value::Type::kString), "ranks[{}][{}] must be a token string like \"F3\"", r,
                         i);
      try {
        ops.push_back(parse_op(token.as_string(), s.placement));
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
