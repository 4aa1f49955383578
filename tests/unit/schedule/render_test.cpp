// Renderers: ops output parses back to the same schedule, json and chrome parse and carry the
// promised keys, the SVG is well-formed with one op group per op, and two runs render side by
// side. Also writes docs/schedules/*.svg when TANDEM_WRITE_SCHEDULE_DOCS=1 and otherwise checks
// that the committed pictures are what the renderer produces now.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "runtime/error.h"
#include "runtime/json.h"
#include "schedule/generators.h"
#include "schedule/json_io.h"
#include "schedule/render.h"
#include "schedule/simulator.h"
#include "schedule_test_util.h"

namespace tandem::schedule {
namespace {

struct Case {
  ScheduleKind kind;
  int p, m, v;
};
const Case kCases[] = {{ScheduleKind::kGpipe, 3, 5, 0},       {ScheduleKind::k1F1B, 4, 8, 0},
                       {ScheduleKind::kInterleaved, 2, 4, 3}, {ScheduleKind::kZb1p, 4, 6, 0},
                       {ScheduleKind::kDualPipe, 4, 10, 0},   {ScheduleKind::kDualPipeV, 3, 7, 0}};

TEST(ScheduleRender, OpsParseBack) {
  for (const Case& c : kCases) {
    const Schedule s = generate(c.kind, c.p, c.m, c.v);
    const std::string text = render_ops(s);
    EXPECT_EQ(schedule_from_ops(text, c.kind, c.m, c.v), s) << text;
  }
}

TEST(ScheduleRender, JsonHasTheKeys) {
  const Schedule s = generate(ScheduleKind::kDualPipe, 4, 8);
  const CostModel costs = parse_cost_string("FB=2.5");
  const SimResult r = simulate(s, costs);
  const nlohmann::json doc = json::parse(render_json(s, r, &costs));
  ASSERT_TRUE(doc.contains("makespan"));
  EXPECT_EQ(doc.at("makespan").get<double>(), r.makespan);
  EXPECT_EQ(doc.at("kind"), "dualpipe");
  EXPECT_EQ(doc.at("cost"), "F=1,B=1,W=1,FB=2.5,P2P=0,A2A=0");
  const nlohmann::json& ranks = doc.at("ranks");
  ASSERT_TRUE(ranks.is_array());
  ASSERT_EQ(ranks.size(), 4u);
  for (std::size_t i = 0; i < 4; ++i) {
    const nlohmann::json& rank = ranks[i];
    EXPECT_EQ(rank.at("rank").get<double>(), static_cast<double>(i));
    EXPECT_EQ(rank.at("busy").get<double>(), r.ranks[i].busy);
    EXPECT_EQ(rank.at("bubble").get<double>(), r.ranks[i].bubble);
    EXPECT_EQ(rank.at("peak_live_chunks").get<double>(), 5);
  }
  ASSERT_TRUE(doc.contains("timeline"));
  EXPECT_EQ(doc.at("timeline").size(), s.num_ops());
  EXPECT_EQ(doc.at("timeline")[7].at("token"), "F3+BW5");
}

TEST(ScheduleRender, ChromeTraceHasOneTrackPerRank) {
  const Schedule s = generate(ScheduleKind::kZb1p, 3, 4);
  const SimResult r = simulate(s);
  const std::string text = render_chrome(s, r);
  const nlohmann::json doc = json::parse(text);
  ASSERT_TRUE(doc.is_array());
  EXPECT_EQ(testing::count_of(text, "\n"), doc.size() + 2) << "one event per line";
  std::size_t complete = 0, thread_names = 0;
  for (const nlohmann::json& e : doc) {
    EXPECT_EQ(e.at("pid"), 0);
    if (e.at("ph") == "X") {
      ++complete;
      EXPECT_TRUE(e.contains("ts") && e.contains("dur") && e.contains("tid") && e.contains("name"));
    } else if (e.at("name") == "thread_name") {
      EXPECT_EQ(e.at("args").at("name"), "rank " + std::to_string(e.at("tid").get<int>()));
      ++thread_names;
    }
  }
  EXPECT_EQ(complete, s.num_ops());
  EXPECT_EQ(thread_names, 3u);
}

TEST(ScheduleRender, SvgIsWellFormedWithOneGroupPerOp) {
  for (const Case& c : kCases) {
    const Schedule s = generate(c.kind, c.p, c.m, c.v);
    const SimResult r = simulate(s);
    const std::string svg = render_svg(s, r);
    EXPECT_TRUE(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    EXPECT_EQ(testing::xml_problem(svg), "");
    EXPECT_EQ(testing::count_of(svg, "<g class=\"op\">"), s.num_ops());
    std::size_t pieces = 0;
    for (const auto& ops : s.ranks) {
      for (const Op& op : ops) pieces += op.is_pair() ? 3 : 1;  // a pair: two halves and an outline
    }
    // Besides the op cells: the background, one row band per rank, and the legend swatches.
    EXPECT_GE(testing::count_of(svg, "<rect"), pieces + static_cast<std::size_t>(c.p));
    EXPECT_NE(svg.find(std::string(schedule_kind_name(c.kind)) + "  P="), std::string::npos);
  }
}

TEST(ScheduleRender, TwoRunsSideBySide) {
  const Schedule s = generate(ScheduleKind::k1F1B, 2, 4);
  const SimResult simulated = simulate(s);
  const SimResult measured = simulate(s, parse_cost_string("F=1.2,B=0.9,W=1.1,P2P=0.05"));
  const RunView runs[] = {{"simulated", &s, &simulated}, {"measured <rank 0 & 1>", &s, &measured}};
  const std::string svg = render_svg(runs, "1f1b: simulated vs measured");
  EXPECT_EQ(testing::xml_problem(svg), "");
  EXPECT_EQ(testing::count_of(svg, "<g class=\"op\">"), 2 * s.num_ops());
  EXPECT_NE(svg.find(">simulated</text>"), std::string::npos);
  EXPECT_NE(svg.find("measured &lt;rank 0 &amp; 1&gt;"), std::string::npos);
  const nlohmann::json trace = json::parse(render_chrome(runs));
  std::size_t per_pid[2] = {0, 0};
  for (const nlohmann::json& e : trace) {
    if (e.at("ph") == "X") ++per_pid[e.at("pid").get<int>()];
    if (e.at("name") == "process_name" && e.at("pid") == 1) {
      EXPECT_EQ(e.at("args").at("name"), "measured <rank 0 & 1>");
    }
  }
  EXPECT_EQ(per_pid[0], s.num_ops());
  EXPECT_EQ(per_pid[1], s.num_ops());
}

TEST(ScheduleRender, TableAndFormats) {
  const Schedule s = generate(ScheduleKind::k1F1B, 4, 8);
  const CostModel costs;
  const std::string table = render(OutputFormat::kTable, s, simulate(s), &costs);
  EXPECT_NE(table.find("1f1b schedule: pp=4  micro_batches=8"), std::string::npos) << table;
  EXPECT_NE(table.find("max per-rank bubble 9"), std::string::npos) << table;
  EXPECT_NE(table.find("   all "), std::string::npos) << table;
  EXPECT_EQ(parse_output_format("svg"), OutputFormat::kSvg);
  try {
    parse_output_format("png");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kConfig);
    EXPECT_NE(e.message().find("unknown output format 'png'"), std::string::npos);
  }
}

// The pictures under docs/schedules/ must be what `tandem schedule ... --format svg` draws now.
// Regenerate with: TANDEM_WRITE_SCHEDULE_DOCS=1 ctest -R DocsPicturesAreCurrent (or run the test binary).
TEST(ScheduleRender, DocsPicturesAreCurrent) {
  struct Picture {
    ScheduleKind kind;
    int p, m;
    const char* file;
  };
  const Picture pictures[] = {{ScheduleKind::kDualPipe, 8, 20, "dualpipe_p8_m20.svg"},
                              {ScheduleKind::kDualPipe, 4, 8, "dualpipe_p4_m8.svg"},
                              {ScheduleKind::kDualPipeV, 4, 8, "dualpipev_p4_m8.svg"},
                              {ScheduleKind::k1F1B, 4, 8, "1f1b_p4_m8.svg"},
                              {ScheduleKind::kZb1p, 4, 8, "zb1p_p4_m8.svg"}};
  const bool write = std::getenv("TANDEM_WRITE_SCHEDULE_DOCS") != nullptr;
  for (const Picture& pic : pictures) {
    const Schedule s = generate(pic.kind, pic.p, pic.m);
    const std::string svg = render_svg(s, simulate(s));
    const std::string path = std::string(TANDEM_SOURCE_DIR) + "/docs/schedules/" + pic.file;
    if (write) {
      write_output(svg, path, std::cout);
      continue;
    }
    std::ifstream in(path, std::ios::binary);
    ASSERT_TRUE(in.good()) << path << " is missing; run with TANDEM_WRITE_SCHEDULE_DOCS=1";
    std::stringstream committed;
    committed << in.rdbuf();
    EXPECT_EQ(committed.str(), svg) << path << " is stale; run with TANDEM_WRITE_SCHEDULE_DOCS=1";
  }
}

}  // namespace
}  // namespace tandem::schedule
