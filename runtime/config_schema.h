// Describing config structs to the code that reads, prints and documents them. Each module owns
// plain `XxxConfig` structs; each struct lists its fields once, in a `visit(Visitor&)` member:
//     v("pp", pp, {.doc = "Pipeline-parallel degree", .min = 1});
//     v.section("pipeline", pipeline, "Pipeline schedule");
// Only launch/ turns YAML into these structs (via such a visitor), so no module depends on
// yaml-cpp; the same listing drives check-config's printout and docs/config.md.
#pragma once

#include <limits>
#include <string>

#include "runtime/error.h"

namespace tandem::config {

struct FieldInfo {
  const char* doc = "";                                       // one sentence: meaning and unit
  double min = -std::numeric_limits<double>::infinity();      // inclusive bounds for numbers
  double max = std::numeric_limits<double>::infinity();
  const char* choices = nullptr;                              // "a|b|c" for enumerated strings
};

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
#define TANDEM_CONFIG_REQUIRE(cond, key, ...)                                                      \
  do {                                                                                             \
    if (!(cond)) [[unlikely]]                                                                      \
      throw ::tandem::config::KeyError((key), ::fmt::format(__VA_ARGS__), __FILE__, __LINE__);     \
  } while (0)
