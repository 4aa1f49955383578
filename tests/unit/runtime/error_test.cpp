// tandem::Error and the check macros: kinds map to exit codes, messages carry file:line, and
// with_location() adds rank and host.
#include <gtest/gtest.h>

#include "runtime/config_schema.h"
#include "runtime/error.h"

namespace tandem {
namespace {

TEST(Error, CheckThrowsWithConditionFileAndLine) {
  try {
    const int ranks = 3;
    TANDEM_CHECK(ranks % 2 == 0, "need an even number of ranks, got {}", ranks);
    FAIL() << "TANDEM_CHECK did not throw";
  } catch (const Error& error) {
    EXPECT_EQ(error.kind(), ErrorKind::kInternal);
    EXPECT_NE(std::string(error.what()).find("ranks % 2 == 0"), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find("got 3"), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find("tests/unit/runtime/error_test.cpp:"), std::string::npos) << error.what();
    EXPECT_GT(error.line(), 0);
  }
}

TEST(Error, UserErrorsExitWithTwoOthersWithOne) {
  EXPECT_EQ(exit_code_for(ErrorKind::kConfig), 2);
  EXPECT_EQ(exit_code_for(ErrorKind::kInput), 2);
  EXPECT_EQ(exit_code_for(ErrorKind::kRuntime), 1);
  EXPECT_EQ(exit_code_for(ErrorKind::kCommunication), 1);
  EXPECT_EQ(exit_code_for(ErrorKind::kInternal), 1);
  EXPECT_THROW(TANDEM_CHECK_CONFIG(false, "bad {}", "value"), Error);
  try {
    TANDEM_CHECK_INPUT(1 + 1 == 3, "corrupt file {}", "x.bin");
  } catch (const Error& error) {
    EXPECT_EQ(error.kind(), ErrorKind::kInput);
    EXPECT_EQ(error.message(), "corrupt file x.bin");
  }
}

TEST(Error, WithLocationNamesRankAndHost) {
  try {
    TANDEM_THROW(kCommunication, "all_reduce timed out on '{}'", "dp");
  } catch (const Error& error) {
    const Error located = error.with_location(3, "node7");
    EXPECT_EQ(located.rank(), 3);
    EXPECT_EQ(located.host(), "node7");
    const std::string what = located.what();
    EXPECT_EQ(what.rfind("[rank 3 on node7] communication error at tests/unit/runtime/error_test.cpp:", 0), 0u) << what;
    EXPECT_NE(what.find("all_reduce timed out on 'dp'"), std::string::npos);
    EXPECT_EQ(error.rank(), -1);  // the original is unchanged
  }
}

TEST(Error, ConfigKeyErrorCarriesTheKey) {
  try {
    TANDEM_CONFIG_REQUIRE(2 + 2 == 5, "parallel.ep", "must divide dp*tp = {}", 6);
  } catch (const config::KeyError& error) {
    EXPECT_EQ(error.key(), "parallel.ep");
    EXPECT_EQ(error.kind(), ErrorKind::kConfig);
    EXPECT_EQ(error.message(), "parallel.ep: must divide dp*tp = 6");
  }
}

}  // namespace
}  // namespace tandem
