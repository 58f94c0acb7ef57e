// Proves keel.h's thread contract: one keel_image used from several threads at once with every
// call keel.h allows concurrently (read, write, write-zeroes, discard, flush, block status, size,
// info JSON) gives each thread what it wrote, and the image qemu-io reads back afterwards is that
// data and passes qemu-img check. Runs under ThreadSanitizer in the tsan preset (label threads).
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "capi/capi_util.h"
#include "keel/keel.h"

namespace {

using keel_capi_test::sh;

constexpr uint64_t kCluster = 65536;
constexpr uint64_t kSlot = 4 * kCluster;  // one thread's unit of work: 4 clusters
constexpr int kSlots = 64;
constexpr int kThreads = 4;

uint8_t pattern(int slot) { return static_cast<uint8_t>(0x20 + slot); }

// What thread `t` does to each slot it owns (slot % kThreads == t): write the pattern over the
// whole slot, zero cluster 1, discard cluster 2, and check each step with reads and block status
// while the other threads allocate, zero and discard clusters of their own slots next to it.
// Returns the first failure, or "" when every call did what keel.h says.
std::string work(keel_image* img, int t) {
  std::vector<uint8_t> buf(kSlot), back(kSlot);
  keel_error err;
  auto fail = [&](const char* what, int slot) {
    return std::string(what) + " slot " + std::to_string(slot) + ": " + err.message;
  };
  for (int slot = t; slot < kSlots; slot += kThreads) {
    uint64_t off = slot * kSlot;
    std::fill(buf.begin(), buf.end(), pattern(slot));
    unsigned flags = slot % 3 == 0 ? KEEL_WRITE_FUA : 0;
    if (keel_write(img, off, buf.data(), kSlot, flags, &err) != KEEL_OK) return fail("write", slot);
    if (keel_read(img, off, back.data(), kSlot, &err) != KEEL_OK) return fail("read", slot);
    if (back != buf) return "slot " + std::to_string(slot) + " does not read back what was written";
    if (keel_write_zeroes(img, off + kCluster, kCluster, slot % 2 ? KEEL_ZERO_MAY_UNMAP : 0, &err) != KEEL_OK)
      return fail("write_zeroes", slot);
    if (keel_discard(img, off + 2 * kCluster, kCluster, &err) != KEEL_OK) return fail("discard", slot);
    keel_extent e;
    if (keel_block_status(img, off + kCluster, kCluster, &e, &err) != KEEL_OK) return fail("block_status", slot);
    if (!e.zero) return "block status of zeroed cluster of slot " + std::to_string(slot) + " is not zero";
    if (keel_read(img, off, back.data(), kSlot, &err) != KEEL_OK) return fail("read", slot);
    for (uint64_t i = 0; i < kSlot; i += 512) {
      uint8_t want = i / kCluster == 1 || i / kCluster == 2 ? 0 : pattern(slot);
      if (back[i] != want || back[i + 511] != want)
        return "slot " + std::to_string(slot) + " byte " + std::to_string(i) + " reads " +
               std::to_string(back[i]) + ", want " + std::to_string(want);
    }
    if (keel_size(img) != kSlots * kSlot) return "keel_size changed";
    if (slot % 8 == t) {
      char* json = nullptr;
      if (keel_info_json(img, &json, &err) != KEEL_OK) return fail("info_json", slot);
      keel_free(json);
    }
    if (slot % 5 == 0 && keel_flush(img, &err) != KEEL_OK) return fail("flush", slot);
  }
  if (keel_flush(img, &err) != KEEL_OK) return fail("flush", -1);
  return "";
}

TEST(CApiThreads, OneImageManyThreadsEveryConcurrentCall) {
  char tmpl[] = "/tmp/keel_capi_threads_XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  std::string dir = tmpl, path = dir + "/a.qcow2";
  keel_create_options co;
  keel_create_options_init(&co);
  co.size = kSlots * kSlot;
  keel_error err;
  ASSERT_EQ(keel_create(path.c_str(), &co, &err), KEEL_OK) << err.message;
  keel_image* img = nullptr;
  ASSERT_EQ(keel_open(path.c_str(), nullptr, &img, &err), KEEL_OK) << err.message;

  std::vector<std::string> result(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; t++) threads.emplace_back([&, t] { result[t] = work(img, t); });
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; t++) EXPECT_EQ(result[t], "") << "thread " << t;
  ASSERT_EQ(keel_close(img, &err), KEEL_OK) << err.message;

  // The oracle: qemu-io reads every slot as the threads left it, qemu-img check finds nothing.
  std::string cmd = "qemu-io -f qcow2";
  for (int slot = 0; slot < kSlots; slot++) {
    uint64_t off = slot * kSlot;
    char c[160];
    std::snprintf(c, sizeof c, " -c 'read -q -P %u %llu 64k' -c 'read -q -P 0 %llu 128k' -c 'read -q -P %u %llu 64k'",
                  pattern(slot), static_cast<unsigned long long>(off),
                  static_cast<unsigned long long>(off + kCluster), pattern(slot),
                  static_cast<unsigned long long>(off + 3 * kCluster));
    cmd += c;
  }
  std::string out;
  EXPECT_EQ(sh(cmd + " '" + path + "'", &out), 0) << out;
  EXPECT_EQ(out, "");  // -q: qemu-io prints only a failed pattern check
  EXPECT_EQ(sh("qemu-img check -q '" + path + "'", &out), 0) << out;
  sh("rm -rf '" + dir + "'");
}

}  // namespace
