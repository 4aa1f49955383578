// YAML -> JobConfig binding through the structs' visit() listings (see config_loader.h).
// Every message names the dotted key and where it was set: "job.yaml:12: parallel.pp: ...",
// or "--set parallel.pp=x: parallel.pp: ..." for command-line overrides.
#include "launch/config/config_loader.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <type_traits>

#include "runtime/config_schema.h"

namespace tandem::launch {
namespace {

template <class T>
struct IsOptional : std::false_type {};
template <class T>
struct IsOptional<std::optional<T>> : std::true_type {};
template <class T>
struct IsVector : std::false_type {};
template <class T>
struct IsVector<std::vector<T>> : std::true_type {};

template <class T>
std::string type_name() {
  if constexpr (std::is_same_v<T, bool>) return "bool";
  else if constexpr (std::is_integral_v<T>) return "integer";
  else if constexpr (std::is_floating_point_v<T>) return "number";
  else if constexpr (std::is_same_v<T, std::string> || config::kIsConfigEnum<T>) return "string";
  else if constexpr (IsOptional<T>::value) return type_name<typename T::value_type>() + " or null";
  else if constexpr (IsVector<T>::value) return "list of " + type_name<typename T::value_type>();
  else static_assert(sizeof(T) == 0, "unsupported config field type");
}

std::vector<std::string> split(const std::string& text, char separator) {
  std::vector<std::string> parts;
  std::stringstream stream(text);
  for (std::string part; std::getline(stream, part, separator);) parts.push_back(part);
  return parts;
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

std::string did_you_mean(const std::string& name, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_distance = std::max<size_t>(2, name.size() / 3) + 1;
  for (const std::string& candidate : candidates) {
    const size_t distance = edit_distance(name, candidate);
    if (distance < best_distance) {
      best_distance = distance;
      best = candidate;
    }
  }
  return best.empty() ? std::string() : fmt::format(" (did you mean '{}'?)", best);
}

// Where keys came from: file lines via the YAML marks, overrides by their --set text.
struct Source {
  std::string name;
  std::map<std::string, std::string> overrides;  // dotted key -> "--set key=value"

  std::string where(const std::string& key, const YAML::Node& node) const {
    // A key set on the command line is reported as such, also for the keys inside it.
    for (const auto& [override_key, text] : overrides) {
      if (key == override_key || key.rfind(override_key + ".", 0) == 0) return text;
    }
    if (node.IsDefined() && node.Mark().line >= 0) return fmt::format("{}:{}", name, node.Mark().line + 1);
    return name;
  }
};

[[noreturn]] void fail(const Source& source, const std::string& key, const YAML::Node& node, const std::string& what) {
  TANDEM_THROW(kConfig, "{}: {}: {}", source.where(key, node), key, what);
}

template <class T>
void decode(const Source& source, const std::string& key, const YAML::Node& node, T& out) {
  if constexpr (IsOptional<T>::value) {
    if (node.IsNull()) {
      out.reset();
      return;
    }
    typename T::value_type value{};
    decode(source, key, node, value);
    out = value;
  } else if constexpr (IsVector<T>::value) {
    out.clear();
    if (node.IsNull()) return;
    if (node.IsScalar()) {  // "trace_steps: 5" means [5]
      typename T::value_type value{};
      decode(source, key, node, value);
      out.push_back(value);
      return;
    }
    if (!node.IsSequence()) fail(source, key, node, fmt::format("expected a {}", type_name<T>()));
    for (const YAML::Node& item : node) {
      typename T::value_type value{};
      decode(source, key, item, value);
      out.push_back(value);
    }
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (node.IsNull()) {
      out.clear();
      return;
    }
    if (!node.IsScalar()) fail(source, key, node, "expected a string, got a list or mapping");
    out = node.Scalar();
  } else if constexpr (config::kIsConfigEnum<T>) {
    if (!node.IsScalar()) fail(source, key, node, "expected a string, got a list or mapping");
    const std::optional<T> parsed = config::parse_enum<T>(node.Scalar());
    if (!parsed) {
      const std::vector<std::string> choices = split(config::enum_choices<T>(), '|');
      fail(source, key, node,
           fmt::format("'{}' is not one of {}{}", node.Scalar(), fmt::join(choices, ", "),
                       did_you_mean(node.Scalar(), choices)));
    }
    out = *parsed;
  } else {
    const std::string shown = node.IsScalar() ? "'" + node.Scalar() + "'" : std::string("a list or mapping");
    T value{};
    if (!node.IsScalar() || !YAML::convert<T>::decode(node, value)) {
      const std::string expected = std::is_same_v<T, bool> ? "true or false"
                                   : std::is_integral_v<T> ? "an integer"
                                                           : "a number";
      fail(source, key, node, fmt::format("expected {}, got {}", expected, shown));
    }
    if constexpr (std::is_floating_point_v<T>) {
      if (!std::isfinite(value)) fail(source, key, node, fmt::format("expected a finite number, got {}", shown));
    }
    out = value;
  }
}

template <class T>
void check_bounds(const Source& source, const std::string& key, const YAML::Node& node, const T& value,
                  const config::FieldInfo& info) {
  if constexpr (IsOptional<T>::value) {
    if (value) check_bounds(source, key, node, *value, info);
  } else if constexpr (IsVector<T>::value) {
    for (const auto& item : value) check_bounds(source, key, node, item, info);
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (info.choices == nullptr) return;
    const std::vector<std::string> choices = split(info.choices, '|');
    if (std::find(choices.begin(), choices.end(), value) == choices.end()) {
      fail(source, key, node,
           fmt::format("'{}' is not one of {}{}", value, fmt::join(choices, ", "), did_you_mean(value, choices)));
    }
  } else if constexpr (std::is_arithmetic_v<T> && !std::is_same_v<T, bool>) {
    const double number = static_cast<double>(value);
    if (number < info.min) fail(source, key, node, fmt::format("must be >= {} (got {})", info.min, value));
    if (number > info.max) fail(source, key, node, fmt::format("must be <= {} (got {})", info.max, value));
  }
}

// Binds one mapping of the YAML tree to one config struct.
class Binder {
 public:
  // `node` may be undefined (a section the file leaves out): every field keeps its default.
  Binder(YAML::Node node, std::string prefix, const Source& source)
      : node_(std::move(node)),
        is_map_(node_.IsDefined() && node_.IsMap()),
        prefix_(std::move(prefix)),
        source_(source) {}

  template <class T>
  void operator()(const char* name, T& field, const config::FieldInfo& info) {
    known_.emplace_back(name);
    if (!is_map_) return;
    const YAML::Node child = std::as_const(node_)[name];
    if (!child.IsDefined()) return;
    const std::string key = prefix_ + name;
    decode(source_, key, child, field);
    check_bounds(source_, key, child, field, info);
  }

  template <class S>
  void section(const char* name, S& sub, const char* /*doc*/) {
    known_.emplace_back(name);
    YAML::Node child(YAML::NodeType::Undefined);
    if (is_map_) {
      // A missing key yields an invalid node that yaml-cpp refuses to rebind; keep `child` undefined.
      const YAML::Node found = std::as_const(node_)[name];
      if (found.IsDefined()) child.reset(found);
    }
    const std::string key = prefix_ + name;
    if (child.IsDefined() && !child.IsMap() && !child.IsNull()) {
      fail(source_, key, child, "expected a section (a mapping of keys), got a single value or a list");
    }
    Binder inner(child, key + ".", source_);
    sub.visit(inner);
    inner.reject_unknown_keys();
  }

  void reject_unknown_keys() const {
    if (!is_map_) return;
    for (const auto& entry : node_) {
      const std::string name = entry.first.Scalar();
      if (std::find(known_.begin(), known_.end(), name) == known_.end()) {
        fail(source_, prefix_ + name, entry.first, fmt::format("unknown key{}", did_you_mean(name, known_)));
      }
    }
  }

 private:
  YAML::Node node_;
  bool is_map_;
  std::string prefix_;
  const Source& source_;
  std::vector<std::string> known_;
};

void apply_override(YAML::Node& root, const std::string& text, Source& source) {
  const size_t equals = text.find('=');
  TANDEM_CHECK_CONFIG(equals != std::string::npos && equals > 0,
                      "--set expects key=value, e.g. --set parallel.pp=2 (got '{}')", text);
  const std::string key = text.substr(0, equals);
  const std::string value_text = text.substr(equals + 1);
  const std::vector<std::string> parts = split(key, '.');
  for (const std::string& part : parts) {
    TANDEM_CHECK_CONFIG(!part.empty(), "--set {}: the key has an empty component", text);
  }
  YAML::Node value;
  try {
    value = YAML::Load(value_text);
  } catch (const YAML::Exception&) {
    value = YAML::Node(value_text);  // not valid YAML on its own: take it as a plain string
  }
  YAML::Node current(root);
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    YAML::Node next = current[parts[i]];
    if (!next.IsDefined() || next.IsNull()) {
      next = YAML::Node(YAML::NodeType::Map);
      current[parts[i]] = next;
    }
    TANDEM_CHECK_CONFIG(next.IsMap(), "--set {}: '{}' is a value, not a section", text,
                        fmt::join(parts.begin(), parts.begin() + static_cast<std::ptrdiff_t>(i) + 1, "."));
    current.reset(next);
  }
  current[parts.back()] = value;
  source.overrides[key] = "--set " + text;
}

YAML::Node find_node(const YAML::Node& root, const std::string& key) {
  YAML::Node current(root);
  for (const std::string& part : split(key, '.')) {
    if (!current.IsDefined() || !current.IsMap()) return YAML::Node(YAML::NodeType::Undefined);
    const YAML::Node child = std::as_const(current)[part];
    if (!child.IsDefined()) return YAML::Node(YAML::NodeType::Undefined);
    current.reset(child);
  }
  return current;
}

// yaml-cpp keeps both entries of a repeated key and its lookups return the first, so a second
// `pp: 2` further down would be silently ignored. Walk the tree as parsed (before any --set) and
// refuse a repeated key, naming both lines.
void reject_duplicate_keys(const YAML::Node& node, const std::string& prefix, const std::string& source_name) {
  if (node.IsSequence()) {
    for (const YAML::Node& item : node) reject_duplicate_keys(item, prefix, source_name);
    return;
  }
  if (!node.IsMap()) return;
  std::map<std::string, int> first_line;  // key -> 1-based line of its first occurrence
  for (const auto& entry : node) {
    const std::string name = entry.first.IsScalar() ? entry.first.Scalar() : std::string();
    const int line = entry.first.Mark().line + 1;
    const auto [it, inserted] = first_line.emplace(name, line);
    if (!inserted) {
      TANDEM_THROW(kConfig,
                   "{}:{}: {}{}: duplicate key (already set at line {}); YAML keeps only one of them: delete one",
                   source_name, line, prefix, name, it->second);
    }
    reject_duplicate_keys(entry.second, prefix + name + ".", source_name);
  }
}

// `world_size` 0: bind only, without resolve_and_validate (job_file_world).
JobConfig bind(YAML::Node root, Source& source, const std::vector<std::string>& overrides, int64_t world_size) {
  if (!root.IsDefined() || root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  TANDEM_CHECK_CONFIG(root.IsMap(), "{}: a job file must be a mapping of sections (run, model, parallel, ...)",
                      source.name);
  for (const std::string& text : overrides) apply_override(root, text, source);
  JobConfig config;
  Binder binder(root, "", source);
  config.visit(binder);
  binder.reject_unknown_keys();
  if (world_size == 0) return config;
  try {
    config.resolve_and_validate(world_size);
  } catch (const config::KeyError& error) {
    const YAML::Node node = find_node(root, error.key());
    TANDEM_THROW(kConfig, "{}: {}", source.where(error.key(), node), error.message());
  }
  return config;
}

// ---- printing and documentation ------------------------------------------------------------

template <class T>
std::string scalar_text(const T& value) {
  if constexpr (std::is_same_v<T, bool>) return value ? "true" : "false";
  else if constexpr (std::is_arithmetic_v<T>) return fmt::format("{}", value);
  else if constexpr (config::kIsConfigEnum<T>) return scalar_text(std::string(config::enum_name(value)));
  else if constexpr (std::is_same_v<T, std::string>) {
    // Quote what YAML would otherwise read as something other than this string.
    const bool plain = !value.empty() && value.find_first_of(":#{}[],&*!|>'\"%@`") == std::string::npos &&
                       value != "null" && value != "true" && value != "false" && value != "~" &&
                       !(std::isdigit(static_cast<unsigned char>(value[0])) || value[0] == '-' || value[0] == '.');
    return plain ? value : fmt::format("\"{}\"", value);
  } else if constexpr (IsOptional<T>::value) {
    return value ? scalar_text(*value) : std::string("null");
  } else if constexpr (IsVector<T>::value) {
    std::vector<std::string> items;
    for (const auto& item : value) items.push_back(scalar_text(item));
    return fmt::format("[{}]", fmt::join(items, ", "));
  }
}

class YamlPrinter {
 public:
  template <class T>
  void operator()(const char* name, T& field, const config::FieldInfo&) {
    out_ += fmt::format("{:{}}{}: {}\n", "", indent_, name, scalar_text(field));
  }
  template <class S>
  void section(const char* name, S& sub, const char*) {
    out_ += fmt::format("{:{}}{}:\n", "", indent_, name);
    indent_ += 2;
    sub.visit(*this);
    indent_ -= 2;
  }
  std::string out_;
  int indent_ = 0;
};

// Dotted key -> value text, for comparing two configs.
class ValueLister {
 public:
  template <class T>
  void operator()(const char* name, T& field, const config::FieldInfo&) {
    values_.emplace_back(prefix_ + name, scalar_text(field));
  }
  template <class S>
  void section(const char* name, S& sub, const char*) {
    const std::string saved = prefix_;
    prefix_ += std::string(name) + ".";
    sub.visit(*this);
    prefix_ = saved;
  }
  std::vector<std::pair<std::string, std::string>> values_;
  std::string prefix_;
};

class ReferencePrinter {
 public:
  template <class T>
  void operator()(const char* name, T& field, const config::FieldInfo& info) {
    std::string allowed;
    if (info.choices) allowed = fmt::format("{}", fmt::join(split(info.choices, '|'), ", "));
    if constexpr (config::kIsConfigEnum<T>)
      allowed = fmt::format("{}", fmt::join(split(config::enum_choices<T>(), '|'), ", "));
    if (std::isfinite(info.min) && std::isfinite(info.max)) allowed = fmt::format("{} .. {}", info.min, info.max);
    else if (std::isfinite(info.min)) allowed = fmt::format(">= {}", info.min);
    rows_ += fmt::format("| `{}{}` | {} | `{}` | {} | {} |\n", prefix_, name, type_name<T>(), scalar_text(field),
                         allowed, info.doc);
    keys_.push_back(prefix_ + name);
  }
  template <class S>
  void section(const char* name, S& sub, const char* doc) {
    const std::string saved = prefix_;
    if (saved.empty())
      rows_ += fmt::format("\n## `{}`: {}\n\n| key | type | default | allowed | meaning |\n|---|---|---|---|---|\n",
                           name, doc);
    prefix_ += std::string(name) + ".";
    sub.visit(*this);
    prefix_ = saved;
  }
  std::string rows_;
  std::string prefix_;
  std::vector<std::string> keys_;
};

}  // namespace

namespace {

// The parsed tree of a job file's text, its repeated keys refused.
YAML::Node parse_job_text(const std::string& yaml_text, const std::string& source_name) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::ParserException& error) {
    TANDEM_THROW(kConfig, "{}:{}:{}: YAML syntax error: {}", source_name, error.mark.line + 1, error.mark.column + 1,
                 error.msg);
  }
  reject_duplicate_keys(root, "", source_name);
  return root;
}

std::string read_job_file(const std::string& path) {
  std::ifstream file(path);
  TANDEM_CHECK_CONFIG(file.good(),
                      "cannot open job file '{}': check the path (it is relative to the directory "
                      "you launched from)",
                      path);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

}  // namespace

JobConfig load_job_config_from_string(const std::string& yaml_text, const std::string& source_name,
                                      const std::vector<std::string>& overrides, int64_t world_size) {
  TANDEM_CHECK(world_size > 0, "world size {} is not a number of ranks", world_size);
  Source source{source_name, {}};
  return bind(parse_job_text(yaml_text, source_name), source, overrides, world_size);
}

JobConfig load_job_config(const std::string& path, const std::vector<std::string>& overrides, int64_t world_size) {
  return load_job_config_from_string(read_job_file(path), path, overrides, world_size);
}

int64_t job_file_world(const std::string& path, const std::vector<std::string>& overrides) {
  Source source{path, {}};
  const JobConfig bound = bind(parse_job_text(read_job_file(path), path), source, overrides, /*world_size=*/0);
  const parallel::ParallelConfig& p = bound.parallel;
  return p.pp * p.tp * std::max<int64_t>(p.dp, 1);
}

std::string job_config_to_yaml(JobConfig config) {
  YamlPrinter printer;
  config.visit(printer);
  return printer.out_;
}

std::string job_config_reference_markdown() {
  JobConfig defaults;
  ReferencePrinter printer;
  defaults.visit(printer);
  return "# Job file reference\n\n"
         "Every key of a job YAML file, with its type, default, allowed values and meaning. This page is generated "
         "from the config structs by `build/bin/tandem config-reference > docs/config.md`; a unit test fails when it "
         "is out of date. Keys are set in the job file or on the command line with `--set section.key=value`; "
         "unknown keys are errors. How the parallel keys fit together: [parallelism guide](parallelism.md).\n" +
         printer.rows_;
}

std::vector<std::string> job_config_keys() {
  JobConfig defaults;
  ReferencePrinter printer;
  defaults.visit(printer);
  return printer.keys_;
}

std::vector<std::pair<std::string, std::string>> job_config_values(JobConfig config) {
  ValueLister lister;
  config.visit(lister);
  return lister.values_;
}

}  // namespace tandem::launch
