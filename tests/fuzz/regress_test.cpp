// Proves every saved fuzz finding stays fixed: each input in tests/fuzz/regress/<target>/ is run
// through the harness of that target (the same code libFuzzer runs), under the normal build and
// under make test-asan. Each must return (no crash, no hang), and an error it reports must be one
// clean line naming what is wrong.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "harness.h"

namespace keel::fuzz {
namespace {

namespace fs = std::filesystem;

const std::map<std::string, std::function<Status(std::span<const uint8_t>)>> kHarnesses = {
    {"open_info", open_info}, {"check", check}, {"read", read}, {"write", write}, {"nbd", nbd},
    {"luks_header", luks_header},
};

std::vector<uint8_t> slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

TEST(FuzzRegress, EverySavedInputFailsCleanly) {
  const fs::path root = fs::path(KEEL_SOURCE_DIR) / "tests/fuzz/regress";
  int inputs = 0;
  for (const auto& [target, harness] : kHarnesses) {
    if (!fs::is_directory(root / target)) continue;
    for (const auto& entry : fs::directory_iterator(root / target)) {
      if (!entry.is_regular_file()) continue;
      SCOPED_TRACE(target + "/" + entry.path().filename().string());
      std::vector<uint8_t> bytes = slurp(entry.path());
      Status s = harness(bytes);
      if (!s.is_ok()) {
        EXPECT_FALSE(s.message().empty());
        EXPECT_EQ(s.message().find('\n'), std::string::npos) << s.message();
        EXPECT_LT(s.message().size(), 400u) << s.message();
      }
      ++inputs;
    }
  }
  std::printf("replayed %d saved fuzz inputs\n", inputs);
}

// The harnesses accept the seed shapes: an empty input and a tiny one fail cleanly.
TEST(FuzzRegress, TinyInputs) {
  const std::vector<uint8_t> empty, tiny = {'Q', 'F', 'I', 0xfb};
  for (const auto& [target, harness] : kHarnesses) {
    SCOPED_TRACE(target);
    (void)harness(empty);
    (void)harness(tiny);
  }
}

}  // namespace
}  // namespace keel::fuzz
