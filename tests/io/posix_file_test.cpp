// Proves a PosixFile opened with O_DIRECT (cache=none) moves the right bytes for transfers the
// device cannot take as they are: unaligned memory, offsets and lengths, from 1 byte to past the
// size the file keeps its bounce buffers for (so a kept buffer too small is passed over, and
// larger transfers take one of their own), and from several threads at once on disjoint ranges.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "keel/block_file.h"

namespace {

class PosixFileDirect : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/keel-posix-test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    keel::FileOptions o;
    o.create = true;
    o.direct = true;
    auto f = keel::open_posix_file(dir_ + "/f.raw", o);
    if (!f) GTEST_SKIP() << "O_DIRECT not available here: " << f.error().message();
    file_ = std::move(*f);
  }
  void TearDown() override {
    file_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::string dir_;
  std::unique_ptr<keel::BlockFile> file_;
};

std::vector<uint8_t> pattern(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  std::mt19937 rng(seed);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

// Writes `n` pattern bytes at `offset` from memory `skew` bytes past an allocation's start and
// reads them back the same way.
void roundtrip(keel::BlockFile& f, uint64_t offset, size_t n, size_t skew, uint32_t seed) {
  std::vector<uint8_t> src(n + skew), dst(n + skew, 0);
  const auto p = pattern(n, seed);
  std::copy(p.begin(), p.end(), src.begin() + static_cast<std::ptrdiff_t>(skew));
  ASSERT_TRUE(f.write_at(offset, {src.data() + skew, n}).is_ok()) << "offset " << offset << " length " << n;
  ASSERT_TRUE(f.read_at(offset, {dst.data() + skew, n}).is_ok()) << "offset " << offset << " length " << n;
  ASSERT_TRUE(std::equal(p.begin(), p.end(), dst.begin() + static_cast<std::ptrdiff_t>(skew)))
      << "offset " << offset << " length " << n << " skew " << skew << " (seed " << seed << ")";
}

TEST_F(PosixFileDirect, UnalignedTransfersOfEverySizeReadBack) {
  uint32_t seed = 1;
  // Ascending sizes: the kept buffers are too small for the next size up, and past their limit
  // (128 KiB) a transfer takes a buffer of its own; then small ones again reuse a kept one.
  for (size_t n : {1ul, 511ul, 4096ul, 4097ul, 65536ul, 65537ul, 131072ul, 131073ul, 262144ul + 17, 300ul}) {
    for (size_t skew : {0ul, 1ul, 8ul}) {
      for (uint64_t offset : {0ull, 7ull, 4096ull, 1ull << 20, (1ull << 20) + 4095}) {
        roundtrip(*file_, offset, n, skew, seed++);
      }
    }
  }
  // Neighbouring bytes of a small unaligned write are kept (read-modify-write of the sectors).
  const auto big = pattern(3 * 4096, 99);
  std::vector<uint8_t> src(big.begin(), big.end());
  ASSERT_TRUE(file_->write_at(8 << 20, {src.data() + 1, src.size() - 1}).is_ok());
  const std::vector<uint8_t> small = {0xaa, 0xbb, 0xcc};
  std::vector<uint8_t> skewed(small.size() + 1);
  std::copy(small.begin(), small.end(), skewed.begin() + 1);
  ASSERT_TRUE(file_->write_at((8 << 20) + 5000, {skewed.data() + 1, small.size()}).is_ok());
  std::vector<uint8_t> back(big.size() - 1);
  ASSERT_TRUE(file_->read_at(8 << 20, back).is_ok());
  for (size_t i = 0; i < back.size(); ++i) {
    const uint8_t want = (i >= 5000 && i < 5003) ? small[i - 5000] : big[i + 1];
    ASSERT_EQ(back[i], want) << "byte " << i;
  }
}

TEST_F(PosixFileDirect, ThreadsTransferAtOnce) {
  constexpr int kThreads = 6;
  // Every transfer inside the file: a direct read at the file's unaligned end while another
  // thread changes the size can fail with EINVAL (seen here on ext4; left for its own fix, see
  // docs/integrity.md), which is not what this test is about.
  ASSERT_TRUE(file_->truncate(static_cast<uint64_t>(kThreads + 1) << 24).is_ok());
  std::vector<std::thread> ts;
  std::vector<int> failures(kThreads, 0);
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        const size_t n = 1 + static_cast<size_t>((i * 7919 + t * 104729) % 150000);
        const uint64_t offset = (static_cast<uint64_t>(t) << 24) + static_cast<uint64_t>(i % 5) * 3;
        const auto p = pattern(n, static_cast<uint32_t>(t * 1000 + i));
        std::vector<uint8_t> src(n + 1), dst(n + 1);
        std::copy(p.begin(), p.end(), src.begin() + 1);
        if (!file_->write_at(offset, {src.data() + 1, n}).is_ok() ||
            !file_->read_at(offset, {dst.data() + 1, n}).is_ok() ||
            !std::equal(p.begin(), p.end(), dst.begin() + 1))
          ++failures[t];
      }
    });
  }
  for (auto& th : ts) th.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(failures[t], 0) << "thread " << t;
}

}  // namespace
