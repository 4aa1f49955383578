// GridLayout over every factorisation of 8 ranks (and every order and ep): coordinates are a
// bijection, every kind of group partitions the ranks, groups agree with coordinates, and EP
// and expert-DP groups tile the dp*tp domain of each stage.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>

#include "parallel/grid_layout.h"
#include "runtime/config_schema.h"

namespace tandem::parallel {
namespace {

constexpr GroupKind kAllKinds[] = {GroupKind::kTensor, GroupKind::kData,       GroupKind::kPipeline,
                                   GroupKind::kExpert, GroupKind::kExpertData, GroupKind::kDataTensor,
                                   GroupKind::kWorld};

int64_t expected_size(const GridLayout& layout, GroupKind kind) {
  switch (kind) {
    case GroupKind::kTensor: return layout.tp_size();
    case GroupKind::kData: return layout.dp_size();
    case GroupKind::kPipeline: return layout.pp_size();
    case GroupKind::kExpert: return layout.ep_size();
    case GroupKind::kExpertData: return layout.edp_size();
    case GroupKind::kDataTensor: return layout.dp_size() * layout.tp_size();
    case GroupKind::kWorld: return layout.world_size();
  }
  return -1;
}

void check_layout(const GridLayout& layout) {
  const int64_t world = layout.world_size();
  std::set<std::tuple<int64_t, int64_t, int64_t>> seen;
  for (int64_t rank = 0; rank < world; ++rank) {
    const GridCoord c = layout.coord(rank);
    ASSERT_EQ(layout.rank_at(c.tp, c.dp, c.pp), rank);
    ASSERT_TRUE(seen.insert({c.tp, c.dp, c.pp}).second) << "two ranks share a coordinate";
    ASSERT_LT(c.ep, layout.ep_size());
    ASSERT_LT(c.edp, layout.edp_size());
  }
  for (GroupKind kind : kAllKinds) {
    std::map<int64_t, std::vector<int64_t>> by_color;
    for (int64_t rank = 0; rank < world; ++rank) {
      const std::vector<int64_t> group = layout.group(kind, rank);
      ASSERT_EQ(static_cast<int64_t>(group.size()), expected_size(layout, kind)) << group_kind_name(kind);
      ASSERT_NE(std::find(group.begin(), group.end(), rank), group.end()) << "a rank is not in its own group";
      const int64_t color = layout.group_color(kind, rank);
      for (int64_t member : group) {
        ASSERT_EQ(layout.group_color(kind, member), color) << group_kind_name(kind);
        ASSERT_EQ(layout.group(kind, member), group) << "members disagree on their group";
      }
      by_color[color].push_back(rank);
    }
    // Groups partition the world: sizes add up.
    int64_t covered = 0;
    for (const auto& [color, members] : by_color) covered += static_cast<int64_t>(members.size());
    ASSERT_EQ(covered, world);
  }
  for (int64_t rank = 0; rank < world; ++rank) {
    const GridCoord c = layout.coord(rank);
    // Members of a group differ only along that group's axis; ranks inside a group are ordered.
    for (int64_t member : layout.group(GroupKind::kTensor, rank)) {
      ASSERT_EQ(layout.coord(member).dp, c.dp);
      ASSERT_EQ(layout.coord(member).pp, c.pp);
    }
    const auto tp_group = layout.group(GroupKind::kTensor, rank);
    ASSERT_EQ(tp_group[c.tp], rank);
    ASSERT_EQ(layout.group(GroupKind::kData, rank)[c.dp], rank);
    ASSERT_EQ(layout.group(GroupKind::kPipeline, rank)[c.pp], rank);
    ASSERT_EQ(layout.group(GroupKind::kExpert, rank)[c.ep], rank);
    ASSERT_EQ(layout.group(GroupKind::kExpertData, rank)[c.edp], rank);
    // An EP group and an expert-DP group meet in exactly one rank, and stay in one stage.
    const auto ep_group = layout.group(GroupKind::kExpert, rank);
    const auto edp_group = layout.group(GroupKind::kExpertData, rank);
    int64_t common = 0;
    for (int64_t member : ep_group) {
      ASSERT_EQ(layout.coord(member).pp, c.pp);
      common += std::count(edp_group.begin(), edp_group.end(), member);
    }
    ASSERT_EQ(common, 1);
  }
}

TEST(GridLayout, EveryFactorisationOfEightRanksEveryOrderEveryEp) {
  const std::vector<std::string> orders = {"tp-dp-pp", "tp-pp-dp", "dp-tp-pp", "dp-pp-tp", "pp-tp-dp", "pp-dp-tp"};
  int layouts = 0;
  for (int64_t pp : {1, 2, 4, 8}) {
    for (int64_t tp : {1, 2, 4, 8}) {
      if (8 % (pp * tp) != 0) continue;
      const int64_t dp = 8 / (pp * tp);
      for (int64_t ep = 1; ep <= dp * tp; ++ep) {
        if ((dp * tp) % ep != 0) continue;
        for (const std::string& order : orders) {
          SCOPED_TRACE(fmt::format("pp{} dp{} tp{} ep{} {}", pp, dp, tp, ep, order));
          const GridLayout layout = GridLayout::create(8, pp, 0, tp, ep, order);
          ASSERT_EQ(layout.dp_size(), dp);
          check_layout(layout);
          ++layouts;
        }
      }
    }
  }
  EXPECT_EQ(layouts, 6 * 30);  // 30 (pp, tp, ep) combinations on 8 ranks, 6 orders each
}

TEST(GridLayout, DefaultOrderPutsTensorPeersNextToEachOther) {
  const GridLayout layout = GridLayout::create(8, 2, 2, 2, 1, "tp-dp-pp");
  EXPECT_EQ(layout.group(GroupKind::kTensor, 5), (std::vector<int64_t>{4, 5}));
  EXPECT_EQ(layout.group(GroupKind::kData, 5), (std::vector<int64_t>{5, 7}));
  EXPECT_EQ(layout.group(GroupKind::kPipeline, 5), (std::vector<int64_t>{1, 5}));
  const GridCoord c = layout.coord(6);
  EXPECT_EQ(c.tp, 0);
  EXPECT_EQ(c.dp, 1);
  EXPECT_EQ(c.pp, 1);
}

TEST(GridLayout, ExpertGroupsFoldIntoDataAndTensorRanks) {
  // dp4 x tp2 = 8 ranks in one stage, ep4: EP groups are 4 consecutive dp*tp indices.
  const GridLayout layout = GridLayout::create(8, 1, 4, 2, 4, "tp-dp-pp");
  EXPECT_EQ(layout.group(GroupKind::kExpert, 0), (std::vector<int64_t>{0, 1, 2, 3}));
  EXPECT_EQ(layout.group(GroupKind::kExpert, 6), (std::vector<int64_t>{4, 5, 6, 7}));
  EXPECT_EQ(layout.group(GroupKind::kExpertData, 6), (std::vector<int64_t>{2, 6}));
  EXPECT_EQ(layout.edp_size(), 2);
}

void expect_config_error(int64_t world, int64_t pp, int64_t dp, int64_t tp, int64_t ep, const std::string& order,
                         const std::string& key, const std::string& fragment) {
  try {
    GridLayout::create(world, pp, dp, tp, ep, order);
    FAIL() << "expected an error about " << key;
  } catch (const config::KeyError& error) {
    EXPECT_EQ(error.key(), key);
    EXPECT_NE(error.message().find(fragment), std::string::npos) << error.message();
  }
}

TEST(GridLayout, BadLayoutsNameTheKeyAndTheArithmetic) {
  expect_config_error(4, 3, 0, 1, 1, "tp-dp-pp", "parallel.pp", "not divisible by pp*tp = 3*1 = 3");
  expect_config_error(8, 2, 2, 1, 1, "tp-dp-pp", "parallel.dp", "pp*dp*tp = 2*2*1 = 4 does not match the world of 8");
  expect_config_error(8, 2, 0, 2, 3, "tp-dp-pp", "parallel.ep", "ep = 3 must divide dp*tp = 2*2 = 4");
  expect_config_error(8, 2, 0, 2, 1, "tp-pp", "parallel.order", "not a permutation");
  expect_config_error(8, 2, 0, 2, 1, "tp-dp-dp", "parallel.order", "not a permutation");
  expect_config_error(8, -1, 0, 2, 1, "tp-dp-pp", "parallel.pp", "must be >= 1");
}

}  // namespace
}  // namespace tandem::parallel
