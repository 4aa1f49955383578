// The documentation stays true to the code: docs/config.md is exactly what
// `tandem config-reference` generates from the config structs (so a new key cannot go
// undocumented), and every relative link and #anchor in README.md and docs/ resolves.
#include <gtest/gtest.h>

#include <cctype>
#include <regex>
#include <set>

#include "launch/config/config_loader.h"
#include "runtime/file_util.h"

namespace tandem::launch {
namespace {

const std::string kSourceDir = TANDEM_SOURCE_DIR;

TEST(Docs, ConfigReferenceIsGeneratedFromTheStructs) {
  const std::string committed = runtime::read_file(kSourceDir + "/docs/config.md");
  const std::string generated = job_config_reference_markdown();
  if (committed != generated) {
    // Name the first key that differs, then fail with the fix.
    size_t at = 0;
    while (at < committed.size() && at < generated.size() && committed[at] == generated[at]) ++at;
    const size_t line_start = generated.rfind('\n', at) == std::string::npos ? 0 : generated.rfind('\n', at) + 1;
    FAIL() << "docs/config.md is out of date; regenerate it with `build/bin/tandem config-reference > docs/config.md`."
           << " First difference in the generated text's line:\n"
           << generated.substr(line_start, generated.find('\n', at) - line_start);
  }
}

TEST(Docs, EveryKeyIsDocumented) {
  const std::string committed = runtime::read_file(kSourceDir + "/docs/config.md");
  const std::vector<std::string> keys = job_config_keys();
  EXPECT_GT(keys.size(), 50u);
  for (const std::string& key : keys) {
    EXPECT_NE(committed.find("| `" + key + "` |"), std::string::npos) << key << " is missing from docs/config.md";
  }
}

// GitHub's heading anchors: lower case, punctuation dropped except '-' and '_', spaces to '-'.
std::string anchor_of(const std::string& heading) {
  std::string out;
  for (const char c : heading) {
    const auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u) || c == '-' || c == '_') out += static_cast<char>(std::tolower(u));
    else if (c == ' ') out += '-';
  }
  return out;
}

std::set<std::string> anchors_in(const std::string& markdown) {
  std::set<std::string> anchors;
  std::map<std::string, int> seen;
  bool in_code = false;
  size_t pos = 0;
  while (pos < markdown.size()) {
    size_t end = markdown.find('\n', pos);
    if (end == std::string::npos) end = markdown.size();
    const std::string line = markdown.substr(pos, end - pos);
    if (line.rfind("```", 0) == 0) in_code = !in_code;
    if (!in_code && line.rfind("#", 0) == 0) {
      const size_t text = line.find_first_not_of('#');
      if (text != std::string::npos && line[text] == ' ') {
        const std::string base = anchor_of(line.substr(text + 1));
        const int n = seen[base]++;
        anchors.insert(n == 0 ? base : base + "-" + std::to_string(n));
      }
    }
    pos = end + 1;
  }
  return anchors;
}

void collect_markdown(const std::string& dir, std::vector<std::string>& out) {
  for (const std::string& name : runtime::list_directory(dir)) {
    const std::string path = dir + "/" + name;
    if (runtime::is_directory(path)) collect_markdown(path, out);
    else if (name.ends_with(".md")) out.push_back(path);
  }
}

TEST(Docs, InternalLinksResolve) {
  std::vector<std::string> pages = {kSourceDir + "/README.md"};
  collect_markdown(kSourceDir + "/docs", pages);
  ASSERT_GE(pages.size(), 8u) << "README.md and the docs/ pages";
  const std::regex link(R"(\]\(([^)\s]+)\))");
  int checked = 0;
  for (const std::string& page : pages) {
    const std::string text = runtime::read_file(page);
    const std::string dir = runtime::parent_directory(page);
    for (auto it = std::sregex_iterator(text.begin(), text.end(), link); it != std::sregex_iterator(); ++it) {
      const std::string target = (*it)[1];
      if (target.find("://") != std::string::npos || target.rfind("mailto:", 0) == 0) continue;
      const size_t hash = target.find('#');
      const std::string file = target.substr(0, hash);
      const std::string resolved = file.empty() ? page : dir + "/" + file;
      EXPECT_TRUE(runtime::path_exists(resolved))
          << page << ": link to '" << target << "': " << resolved << " does not exist";
      if (hash != std::string::npos && runtime::is_regular_file(resolved) && resolved.ends_with(".md")) {
        const std::string anchor = target.substr(hash + 1);
        EXPECT_TRUE(anchors_in(runtime::read_file(resolved)).count(anchor))
            << page << ": link to '" << target << "': no heading with anchor #" << anchor << " in " << resolved;
      }
      ++checked;
    }
  }
  EXPECT_GT(checked, 20) << "expected the docs to cross-link";
}

}  // namespace
}  // namespace tandem::launch
