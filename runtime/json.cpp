// tandem's JSON conventions over nlohmann-json (see json.h): a strict SAX front end to nlohmann's
// DOM builder, the number conventions of the writers, and the line-oriented layouts.
#include "runtime/json.h"

#include <cmath>
#include <limits>
#include <set>
#include <vector>

#include "runtime/error.h"

namespace tandem::json {
namespace {

constexpr int kMaxDepth = 64;
constexpr double kTwoTo53 = 9007199254740992.0;  // doubles below it hold every integer exactly

using nlohmann::json;
using nlohmann::ordered_json;

// nlohmann's DOM builder (detail::json_sax_dom_parser, what json::parse() itself runs, there
// since 3.2) behind a SAX filter that knows where it is (for messages), refuses a key repeated
// within one object (nlohmann keeps the last silently) and bounds the nesting.
class StrictSax {
 public:
  explicit StrictSax(json& root) : dom_(root, /*allow_exceptions=*/true) {}

  bool null() {
    element();
    return dom_.null();
  }
  bool boolean(bool value) {
    element();
    return dom_.boolean(value);
  }
  bool number_integer(json::number_integer_t value) {
    element();
    return dom_.number_integer(value);
  }
  bool number_unsigned(json::number_unsigned_t value) {
    element();
    return dom_.number_unsigned(value);
  }
  bool number_float(json::number_float_t value, const json::string_t& text) {
    element();
    return dom_.number_float(value, text);
  }
  bool string(json::string_t& value) {
    element();
    return dom_.string(value);
  }
  bool binary(json::binary_t& value) {
    element();
    return dom_.binary(value);
  }

  bool start_object(std::size_t size) {
    enter(true);
    return dom_.start_object(size);
  }
  bool start_array(std::size_t size) {
    enter(false);
    return dom_.start_array(size);
  }
  bool end_object() {
    leave();
    return dom_.end_object();
  }
  bool end_array() {
    leave();
    return dom_.end_array();
  }
  bool key(json::string_t& key) {
    Frame& frame = frames_.back();
    if (!frame.keys.insert(key).second) {
      TANDEM_THROW(kInput, "JSON error: key \"{}\" appears twice in {}", key, where(frame.path));
    }
    frame.key = key;
    return dom_.key(key);
  }

  template <class Exception>
  bool parse_error(std::size_t position, const std::string& token, const Exception& error) {
    return dom_.parse_error(position, token, error);  // throws `error`
  }

 private:
  struct Frame {
    bool object = false;
    std::string path;  // of this container
    std::set<std::string, std::less<>> keys;
    std::string key;        // the member being read
    std::size_t index = 0;  // the element being read
  };

  static std::string where(const std::string& path) { return path.empty() ? "the top-level object" : path; }

  // The path of the value about to be read.
  std::string child_path() const {
    if (frames_.empty()) return "";
    const Frame& frame = frames_.back();
    if (!frame.object) return fmt::format("{}[{}]", frame.path, frame.index);
    return frame.path.empty() ? frame.key : frame.path + "." + frame.key;
  }

  // A value of the innermost container is complete.
  void element() {
    if (!frames_.empty() && !frames_.back().object) ++frames_.back().index;
  }

  void enter(bool object) {
    std::string path = child_path();
    if (frames_.size() >= static_cast<std::size_t>(kMaxDepth)) {
      TANDEM_THROW(kInput, "JSON error: nested deeper than {} levels at {}", kMaxDepth, where(path));
    }
    frames_.push_back(Frame{object, std::move(path), {}, {}, 0});
  }

  void leave() {
    frames_.pop_back();
    element();
  }

  nlohmann::detail::json_sax_dom_parser<json> dom_;
  std::vector<Frame> frames_;
};

// nlohmann's message without its "[json.exception.parse_error.101] " tag, and "parse error"
// spelled as tandem's readers spell it: "JSON error at line 2, column 14: syntax error ...".
std::string describe(const nlohmann::json::exception& error) {
  std::string_view text = error.what();
  if (text.starts_with("[json.exception.")) {
    const std::size_t end = text.find("] ");
    if (end != std::string_view::npos) text.remove_prefix(end + 2);
  }
  if (text.starts_with("parse error")) {
    text.remove_prefix(std::string_view("parse error").size());
    return fmt::format("JSON error{}", text);
  }
  return fmt::format("JSON error: {}", text);
}

void append_key(std::string& out, const std::string& key) { out += dump(ordered_json(key)); }

}  // namespace

json parse(std::string_view text) {
  json root;
  StrictSax sax(root);
  try {
    json::sax_parse(text.begin(), text.end(), &sax, nlohmann::json::input_format_t::json, /*strict=*/true,
                    /*ignore_comments=*/false);
  } catch (const nlohmann::json::exception& error) {
    TANDEM_THROW(kInput, "{}", describe(error));
  }
  return root;
}

std::string_view type_name(const json& value) {
  switch (value.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
    case json::value_t::number_float: return "a number";
    case json::value_t::string: return "a string";
    case json::value_t::array: return "an array";
    case json::value_t::object: return "an object";
    case json::value_t::binary: return "binary data";
    case json::value_t::discarded: break;
  }
  return "nothing";
}

int as_int(const json& value, std::string_view path, int min) {
  TANDEM_CHECK_INPUT(value.is_number(), "{} must be an integer, not {}", path, type_name(value));
  const double d = value.get<double>();
  TANDEM_CHECK_INPUT(d == std::floor(d) && d >= min && d <= std::numeric_limits<int>::max(),
                     "{} must be an integer >= {} (got {})", path, min, d);
  return static_cast<int>(d);
}

double number_at(const json& object, std::string_view key) {
  const auto it = object.is_object() ? object.find(key) : object.end();
  TANDEM_CHECK_INPUT(it != object.end() && it->is_number(), "\"{}\" must be a number", key);
  return it->get<double>();
}

ordered_json number(double value) {
  if (!std::isfinite(value)) return nullptr;
  if (value == std::trunc(value) && std::fabs(value) < kTwoTo53) return static_cast<int64_t>(value);
  return value;
}

ordered_json rounded(double value, int decimals) {
  const double scale = std::pow(10.0, decimals);
  const double scaled = value * scale;
  if (!std::isfinite(scaled) || std::fabs(scaled) >= kTwoTo53) return number(value);  // no finer digits to drop
  return number(std::round(scaled) / scale);
}

void append_unique(ordered_json& object, std::string key, ordered_json value) {
  if (object.is_null()) object = ordered_json::object();
  TANDEM_CHECK(object.is_object(), "append_unique into {}", object.type_name());
  // ordered_map is a std::vector of pairs; its own emplace() first searches for `key`.
  auto& members = object.get_ref<ordered_json::object_t&>();
  static_cast<ordered_json::object_t::Container&>(members).emplace_back(std::move(key), std::move(value));
}

std::string dump(const ordered_json& value, int indent) {
  return value.dump(indent, ' ', /*ensure_ascii=*/false, ordered_json::error_handler_t::replace);
}

std::string dump_line(const ordered_json& value) {
  if (!value.is_structured()) return dump(value);
  std::string out(1, value.is_object() ? '{' : '[');
  bool first = true;
  for (auto it = value.begin(); it != value.end(); ++it) {
    if (!first) out += ", ";
    first = false;
    if (value.is_object()) {
      append_key(out, it.key());
      out += ": ";
    }
    out += dump_line(it.value());
  }
  out += value.is_object() ? '}' : ']';
  return out;
}

std::string dump_rows(const ordered_json& value) {
  std::string out;
  if (value.is_array()) {
    out += '[';
    for (std::size_t i = 0; i < value.size(); ++i) out += (i == 0 ? "\n" : ",\n") + dump_line(value[i]);
    out += value.empty() ? "]\n" : "\n]\n";
    return out;
  }
  if (!value.is_object()) return dump_line(value) + "\n";
  out += '{';
  bool first = true;
  bool line_open = true;  // the current line holds scalar members that the next one may join
  for (auto it = value.begin(); it != value.end(); ++it) {
    const ordered_json& member = it.value();
    const bool rows = member.is_array() && !member.empty();
    const bool own_line = rows || member.is_object();
    if (!first) out += own_line || !line_open ? ",\n " : ", ";
    first = false;
    append_key(out, it.key());
    out += ": ";
    if (rows) {
      out += '[';
      for (std::size_t i = 0; i < member.size(); ++i) out += (i == 0 ? "\n  " : ",\n  ") + dump_line(member[i]);
      out += "\n ]";
    } else {
      out += dump_line(member);
    }
    line_open = !own_line;
  }
  out += "}\n";
  return out;
}

}  // namespace tandem::json
