// Describing config structs to the code that reads, prints and documents them. Each module owns
// plain `XxxConfig` structs; each struct lists its fields once, in a `visit(Visitor&)` member:
//     v("pp", pp, {.doc = "Pipeline-parallel degree", .min = 1});
//     v.section("pipeline", pipeline, "Pipeline schedule");
// Only launch/ turns YAML into these structs (via such a visitor), so no module depends on
// yaml-cpp; the same listing drives check-config's printout and docs/config.md.
// A choice among names is an `enum class` field, parsed once while loading: its module declares
//     constexpr config::EnumNames<Precision, 3> kPrecisionNames{{{Precision::kAuto, "auto"}, ...}};
//     constexpr const auto& config_enum_names(Precision) { return kPrecisionNames; }
// and everything else compares enum values, never strings.
#pragma once

#include <array>
#include <cstddef>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>

#include "runtime/error.h"

namespace tandem::config {

struct FieldInfo {
  const char* doc = "";                                   // one sentence: meaning and unit
  double min = -std::numeric_limits<double>::infinity();  // inclusive bounds for numbers
  double max = std::numeric_limits<double>::infinity();
  const char* choices = nullptr;  // "a|b|c" for enumerated strings
};

template <class E>
struct EnumName {
  E value;
  const char* name;
};
template <class E, size_t N>
using EnumNames = std::array<EnumName<E>, N>;

// Whether `E` is a config enum: an enum with a `config_enum_names(E)` found by lookup.
template <class E, class = void>
struct IsConfigEnum : std::false_type {};
template <class E>
struct IsConfigEnum<E, std::void_t<decltype(config_enum_names(E{}))>> : std::is_enum<E> {};
template <class E>
inline constexpr bool kIsConfigEnum = IsConfigEnum<E>::value;

// The name of `value` as job files spell it.
template <class E>
constexpr const char* enum_name(E value) {
  for (const auto& entry : config_enum_names(E{})) {
    if (entry.value == value) return entry.name;
  }
  return "?";
}

// The value named `name`, or nullopt.
template <class E>
constexpr std::optional<E> parse_enum(std::string_view name) {
  for (const auto& entry : config_enum_names(E{})) {
    if (name == entry.name) return entry.value;
  }
  return std::nullopt;
}

// "a|b|c": every name of `E`, in declaration order.
template <class E>
std::string enum_choices() {
  std::string out;
  for (const auto& entry : config_enum_names(E{})) out += (out.empty() ? "" : "|") + std::string(entry.name);
  return out;
}

// Error for a value that is wrong as a whole (cross-field rules in validate()). The YAML loader
// catches it and adds the file:line where `key` was set.
class KeyError : public Error {
 public:
  KeyError(std::string key, std::string message, const char* file, int line)
      : Error(ErrorKind::kConfig, key + ": " + message, file, line), key_(std::move(key)) {}
  const std::string& key() const { return key_; }

 private:
  std::string key_;
};

}  // namespace tandem::config

// Throws config::KeyError naming the full key (e.g. "parallel.ep") when `cond` is false.
#define TANDEM_CONFIG_REQUIRE(cond, key, ...)                                                  \
  do {                                                                                         \
    if (!(cond)) [[unlikely]]                                                                  \
      throw ::tandem::config::KeyError((key), ::fmt::format(__VA_ARGS__), __FILE__, __LINE__); \
  } while (0)
