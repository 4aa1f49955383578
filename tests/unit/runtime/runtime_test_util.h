// Helpers shared by the runtime unit tests: a scratch directory removed at scope exit, and
// small file manipulations used to simulate crashes and corruption. No std::filesystem: see
// runtime/file_util.h for why (libtorch.so's copies of its functions crash).
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "runtime/file_util.h"

namespace tandem::runtime::testing {

// A fresh directory under the system temp dir, named after the running test; removed on exit.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    const std::string name = info ? std::string(info->test_suite_name()) + "." + info->name() : "runtime";
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/tandem-" + name + "-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) ADD_FAILURE() << "mkdtemp failed for " << pattern;
    path_ = pattern;
  }
  ~TempDir() { remove_tree(path_); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline void spit(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Flips the bits of the byte at `offset` (counted from the end when negative).
inline void flip_byte(const std::string& path, long offset) {
  std::string bytes = slurp(path);
  const size_t at = offset >= 0 ? static_cast<size_t>(offset) : bytes.size() - static_cast<size_t>(-offset);
  bytes.at(at) = static_cast<char>(~bytes.at(at));
  spit(path, bytes);
}

// Shortens (or extends with zeros) a file, as a crash mid-write would.
inline void resize(const std::string& path, int64_t size) {
  ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>(size)), 0) << path;
}

}  // namespace tandem::runtime::testing
