// runtime/json.h: the strict reader over nlohmann-json (values, errors with line and column or
// the path of the value), the number conventions of the writers, and the record-per-line layout.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "runtime/error.h"
#include "runtime/json.h"

namespace tandem::json {
namespace {

using nlohmann::ordered_json;

std::string parse_error(std::string_view text) {
  try {
    parse(text);
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInput) << e.message();
    return e.message();
  }
  return "no error";
}

TEST(JsonReader, Values) {
  const nlohmann::json v =
      parse(R"( {"a": [1, -2.5e1, true, false, null], "s": "x\"\\\n\u00e9\ud83d\ude00", "o": {}} )");
  ASSERT_TRUE(v.is_object());
  const nlohmann::json& a = v.at("a");
  EXPECT_EQ(a[0].get<double>(), 1);
  EXPECT_EQ(a[1].get<double>(), -25);
  EXPECT_TRUE(a[2].get<bool>());
  EXPECT_TRUE(a[4].is_null());
  EXPECT_EQ(v.at("s"), "x\"\\\n\xc3\xa9\xf0\x9f\x98\x80");
  EXPECT_TRUE(v.at("o").is_object());
  EXPECT_EQ(type_name(a), "an array");
  EXPECT_EQ(type_name(a[1]), "a number");
}

TEST(JsonReader, ErrorsNameTheLineOrThePath) {
  EXPECT_EQ(parse_error("{\n  \"a\": [1, 2,,]\n}"),
            "JSON error at line 2, column 14: syntax error while parsing value - unexpected ','; expected '[', '{', or "
            "a literal");
  EXPECT_NE(parse_error("[1] 2").find("at line 1, column 5"), std::string::npos);
  EXPECT_NE(parse_error("\"abc").find("missing closing quote"), std::string::npos);
  EXPECT_NE(parse_error("").find("unexpected end of input"), std::string::npos);
  EXPECT_EQ(parse_error("1e400"), "JSON error: number overflow parsing '1e400'");
  // nlohmann keeps the last of two equal keys; tandem's reader refuses them, naming where.
  EXPECT_EQ(parse_error(R"({"a": 1, "a": 2})"), "JSON error: key \"a\" appears twice in the top-level object");
  EXPECT_EQ(parse_error(R"({"x": [0, {"b": {"c": 1, "c": 2}}]})"), "JSON error: key \"c\" appears twice in x[1].b");
  EXPECT_NO_THROW(parse(R"({"a": {"k": 1}, "b": {"k": 2}})")) << "equal keys in different objects are fine";
  EXPECT_NO_THROW(parse(std::string(64, '[') + std::string(64, ']')));
  EXPECT_NE(parse_error(std::string(100, '[') + std::string(100, ']')).find("nested deeper than 64 levels at [0][0]"),
            std::string::npos);
}

TEST(JsonReader, IntegersAndNumbers) {
  const nlohmann::json v = parse(R"({"n": 3, "f": 2.0, "h": 2.5, "neg": -1, "s": "3"})");
  EXPECT_EQ(as_int(v.at("n"), "n", 1), 3);
  EXPECT_EQ(as_int(v.at("f"), "f", 1), 2);
  auto message = [&](const char* key, int min) {
    try {
      as_int(v.at(key), key, min);
    } catch (const Error& e) {
      return e.message();
    }
    return std::string("no error");
  };
  EXPECT_EQ(message("h", 1), "h must be an integer >= 1 (got 2.5)");
  EXPECT_EQ(message("neg", 0), "neg must be an integer >= 0 (got -1)");
  EXPECT_EQ(message("s", 0), "s must be an integer, not a string");
  EXPECT_EQ(number_at(v, "h"), 2.5);
  EXPECT_THROW(number_at(v, "s"), Error);
  EXPECT_THROW(number_at(v, "missing"), Error);
}

TEST(JsonWriter, NumbersPrintAsFmtDoes) {
  for (double x : {0.0, 5.0, -3.0, 1000.0, 1e6, 0.5, 0.1, 1.0 / 3.0, 2.5e-5, 1e-4, 0.0003, 123456.789, 1e20, 1e300}) {
    EXPECT_EQ(dump(number(x)), fmt::format("{}", x));
    EXPECT_EQ(std::stod(dump(number(x))), x) << "round trip";
  }
  EXPECT_EQ(dump(number(std::nan(""))), "null");
  EXPECT_EQ(dump(number(-std::numeric_limits<double>::infinity())), "null");
  EXPECT_EQ(dump(rounded(1234.56789, 3)), "1234.568");
  EXPECT_EQ(dump(rounded(1300.0000004, 3)), "1300");
  EXPECT_EQ(dump(ordered_json(1.0)), "1.0") << "plain nlohmann keeps the decimal point (config.json wants it)";
}

TEST(JsonWriter, Layouts) {
  ordered_json o;
  o["format"] = "x";
  o["n"] = 2;
  o["rows"] = ordered_json::array({ordered_json::array({"F0", "BW0"}), ordered_json::array({"F1", "BW1"})});
  o["layout"] = {{"pp", 2}, {"dp", 1}};
  o["empty"] = ordered_json::array();
  o["last"] = number(2.5);
  EXPECT_EQ(dump(o), R"({"format":"x","n":2,"rows":[["F0","BW0"],["F1","BW1"]],"layout":{"pp":2,"dp":1},"empty":[],)"
                     R"("last":2.5})");
  EXPECT_EQ(dump_line(o["layout"]), R"({"pp": 2, "dp": 1})");
  EXPECT_EQ(dump_rows(o), "{\"format\": \"x\", \"n\": 2,\n"
                          " \"rows\": [\n"
                          "  [\"F0\", \"BW0\"],\n"
                          "  [\"F1\", \"BW1\"]\n"
                          " ],\n"
                          " \"layout\": {\"pp\": 2, \"dp\": 1},\n"
                          " \"empty\": [], \"last\": 2.5}\n");
  EXPECT_EQ(dump_rows(ordered_json::array({{{"a", 1}}, {{"b", "c"}}})), "[\n{\"a\": 1},\n{\"b\": \"c\"}\n]\n");
  EXPECT_EQ(parse(dump_rows(o)), parse(dump(o)));
}

TEST(JsonWriter, EscapesAndKeepsOrder) {
  ordered_json o;
  append_unique(o, "z", "say \"hi\"\n\t\\ \x01");
  append_unique(o, "a", 1);
  append_unique(o, "bad\xff", "\xc3");  // invalid UTF-8 is replaced, not thrown
  EXPECT_EQ(dump(o), "{\"z\":\"say \\\"hi\\\"\\n\\t\\\\ \\u0001\",\"a\":1,\"bad\xef\xbf\xbd\":\"\xef\xbf\xbd\"}");
}

}  // namespace
}  // namespace tandem::json
