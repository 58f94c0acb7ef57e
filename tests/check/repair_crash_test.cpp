// Proves that an interrupted `check -r all` never leaves an image worse than before: the repair of
// each damaged image is recorded operation by operation, and every state the power-loss model
// allows at every crash point (proof/enumerate.h: subsets of the unsynced writes, torn sectors) is
// checked: keel check reads it to the end, classifies it no worse than the damaged image, its guest
// data outside the damaged ranges is the pre-damage data, and repairing it again ends clean with
// that same data. Seeded (the enumeration's random samples): KEEL_SEED replays.
#include <gtest/gtest.h>

#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "check/corrupt_util.h"
#include "format/endian.h"
#include "format/header.h"
#include "io/memory_file.h"
#include "io/recording_file.h"
#include "keel/check.h"
#include "proof/enumerate.h"

namespace keel::testing {
namespace {

int severity(const CheckResult& r) { return r.corruptions ? 2 : r.leaks ? 1 : 0; }

bool inside(uint64_t off, const std::vector<GuestRange>& ranges) {
  for (const auto& r : ranges)
    if (off >= r.offset && off < r.offset + r.length) return true;
  return false;
}

// Compares guest contents sector by sector outside `lost`; returns the first differing offset or -1.
int64_t first_difference(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b,
                         const std::vector<GuestRange>& lost) {
  if (a.size() != b.size()) return 0;
  for (uint64_t o = 0; o < a.size(); o += 512)
    if (!inside(o, lost) && std::memcmp(&a[o], &b[o], std::min<uint64_t>(512, a.size() - o)) != 0)
      return static_cast<int64_t>(o);
  return -1;
}

struct Case {
  std::string name;
  std::vector<std::string> script;  // builds the base image ($I)
  bool has_damage = true;
  Damage damage = Damage::kRefcountZero;
  uint64_t target = 0;  // guest offset; UINT64_MAX = the last data cluster
  // Damage beyond the kinds of corrupt_util (returns the destroyed guest ranges).
  std::function<Result<std::vector<GuestRange>>(std::vector<uint8_t>&)> custom;
};

Result<format::Header> header_of(const std::vector<uint8_t>& img) {
  return format::decode_header(std::span<const uint8_t>(img.data(), std::min<size_t>(img.size(), 65536)),
                               UINT64_MAX, true);
}

std::vector<Case> cases() {
  const std::vector<std::string> base = {
      "qemu-img create -q -f qcow2 -o cluster_size=4096 $I 8M",
      "qemu-io -c 'write -P 0xaa 0 128k' -c 'write -P 0xbb 1M 64k' -c 'write -P 0xcc 5M 64k' $I"};
  const std::vector<std::string> lazy = {
      "qemu-img create -q -f qcow2 -o cluster_size=4096,lazy_refcounts=on $I 8M",
      "qemu-io -c 'write -P 0x5a 0 512' -c 'write -P 0x5b 2M 128k' -c 'sigraise 9' $I || true"};
  std::vector<Case> v;
  for (Damage d : all_damages()) {
    uint64_t target = d == Damage::kL1AtRefcountTable ? (5 << 20) : d == Damage::kTruncated ? UINT64_MAX : (1 << 20);
    v.push_back({std::string("c4k_") + damage_name(d), base, true, d, target});
  }
  v.push_back({"lazy_dirty", lazy, false, Damage::kRefcountZero, 0});
  // The lazy-refcounts hazard of qemu-qcow2-facts (h) 2: the file growth was lost, so an L2
  // entry points past the end and the refcounts of data clusters are missing.
  v.push_back({"lazy_dirty_truncated", lazy, true, Damage::kTruncated, UINT64_MAX});
  // A snapshot whose L1 table is misaligned: the repair deletes it (new snapshot table, written
  // with the rebuilt refcount structure and switched in the same header write).
  const std::vector<std::string> snaps = {
      "qemu-img create -q -f qcow2 -o cluster_size=4096 $I 8M", "qemu-io -c 'write -P 0xaa 0 256k' $I",
      "qemu-img snapshot -c s1 $I", "qemu-io -c 'write -P 0xbb 64k 64k' -c 'write -P 0xcc 3M 32k' $I",
      "qemu-img snapshot -c s2 $I", "qemu-io -c 'write -P 0xdd 1M 16k' $I"};
  v.push_back({"snapshot_l1_misaligned", snaps, false, Damage::kRefcountZero, 0,
               [](std::vector<uint8_t>& img) -> Result<std::vector<GuestRange>> {
                 KEEL_ASSIGN(auto h, header_of(img));
                 uint64_t p = h.snapshots_offset;  // entry 0: l1_table_offset
                 format::put_be64(&img[p], format::get_be64(&img[p]) + 512);
                 return std::vector<GuestRange>{};
               }});
  // The active L1 table past the end of the file: the repair writes a new (empty) one.
  v.push_back({"active_l1_past_eof", base, false, Damage::kRefcountZero, 0,
               [](std::vector<uint8_t>& img) -> Result<std::vector<GuestRange>> {
                 KEEL_ASSIGN(auto h, header_of(img));
                 format::put_be64(&img[40], (img.size() / 4096 + 64) * 4096);
                 return std::vector<GuestRange>{{0, h.size}};
               }});
  // Many leaks over several refcount blocks (1-bit refcounts, 512-byte clusters): an L1 entry
  // cleared, so its L2 table and data leak.
  const std::vector<std::string> small = {
      "qemu-img create -q -f qcow2 -o cluster_size=512,refcount_bits=1 $I 4M",
      "qemu-io -c 'write -P 0xaa 0 1M' -c 'write -P 0xbb 3M 64k' $I"};
  v.push_back({"rc1_c512_l1_entry_cleared", small, false, Damage::kRefcountZero, 0,
               [](std::vector<uint8_t>& img) -> Result<std::vector<GuestRange>> {
                 KEEL_ASSIGN(auto h, header_of(img));
                 format::put_be64(&img[h.l1_table_offset], 0);
                 return std::vector<GuestRange>{{0, 64 * 512}};
               }});
  v.push_back({"rc1_c512_refblock_dropped", small, true, Damage::kRefblockDropped, 0});
  return v;
}

class RepairCrashTest : public ::testing::TestWithParam<Case> {};

TEST_P(RepairCrashTest, EveryInterruptedStateIsNoWorse) {
  const Case& c = GetParam();
  const char* env_seed = std::getenv("KEEL_SEED");
  const uint64_t seed = env_seed ? std::strtoull(env_seed, nullptr, 0) : 1;
  std::printf("repair crash test %s: seed %llu (replay with KEEL_SEED=<seed>)\n", c.name.c_str(),
              static_cast<unsigned long long>(seed));
  TempDir dir;
  const std::string path = dir.file("base.qcow2");
  for (const auto& line : c.script) {
    std::string cmd = line, out;
    for (size_t p; (p = cmd.find("$I")) != std::string::npos;) cmd.replace(p, 2, path);
    ASSERT_EQ(run(cmd, &out), 0) << cmd << "\n" << out;
  }
  auto base = read_file(path);
  ASSERT_TRUE(base);
  auto expected = read_guest(*base);
  ASSERT_TRUE(expected) << expected.error().message();

  std::vector<uint8_t> damaged = *base;
  std::vector<GuestRange> lost;
  if (c.custom) {
    auto r = c.custom(damaged);
    ASSERT_TRUE(r) << r.error().message();
    lost = *r;
  } else if (c.has_damage) {
    uint64_t target = c.target;
    if (target == UINT64_MAX) {
      auto last = last_data_cluster(damaged);
      ASSERT_TRUE(last);
      target = *last;
    }
    auto r = damage_bytes(damaged, c.damage, target);
    ASSERT_TRUE(r) << r.error().message();
    lost = *r;
  }
  int damaged_severity;
  {
    MemoryFile f("damaged", damaged);
    auto r = check_qcow2(f, CheckOptions{});
    ASSERT_TRUE(r) << r.error().message();
    damaged_severity = severity(*r);
    ASSERT_GT(damaged_severity, 0);
  }

  // Record the repair.
  auto rec = std::make_shared<Recording>();
  {
    auto wrapped = RecordingFile::wrap(std::make_unique<MemoryFile>("img", damaged), rec, "img");
    ASSERT_TRUE(wrapped);
    CheckOptions all;
    all.repair = RepairMode::kAll;
    auto r = check_qcow2(**wrapped, all);
    ASSERT_TRUE(r) << r.error().message();
    ASSERT_EQ(r->corruptions + r->leaks + r->check_errors, 0u);
  }

  CrashCursor cursor(*rec);
  proof::EnumerationConfig config;
  uint64_t states = 0;
  const uint64_t last = cursor.last_crash_point();
  for (uint64_t cp = 1; cp <= last; ++cp) {
    cursor.advance();
    for (const CrashState& st : proof::enumerate_states(cursor, *rec, config, seed)) {
      auto bytes = cursor.materialize(st, 0);
      ASSERT_TRUE(bytes) << bytes.error().message();
      ++states;
      const std::string where = fmt::format("crash point {} of {}, state {}", cp, last, st.describe());
      MemoryFile f("state", *bytes);
      auto r = check_qcow2(f, CheckOptions{});
      ASSERT_TRUE(r) << where << ": check failed: " << r.error().message();
      EXPECT_EQ(r->check_errors, 0u) << where;
      EXPECT_LE(severity(*r), damaged_severity) << where;
      auto guest = read_guest(*bytes);
      ASSERT_TRUE(guest) << where << ": " << guest.error().message();
      EXPECT_EQ(first_difference(*expected, *guest, lost), -1) << where << ": undamaged guest data changed";
      // Running the repair again finishes the job.
      CheckOptions all;
      all.repair = RepairMode::kAll;
      auto again = check_qcow2(f, all);
      ASSERT_TRUE(again) << where << ": repair failed: " << again.error().message();
      EXPECT_EQ(again->corruptions + again->leaks + again->check_errors, 0u) << where;
      auto repaired = read_guest(f.bytes());
      ASSERT_TRUE(repaired);
      EXPECT_EQ(first_difference(*expected, *repaired, lost), -1) << where << ": data changed by the second repair";
      if (HasFailure()) return;
    }
  }
  std::printf("repair crash test %s: %llu file operations, %llu crash states checked\n", c.name.c_str(),
              static_cast<unsigned long long>(last), static_cast<unsigned long long>(states));
  EXPECT_GT(states, 0u);
}

INSTANTIATE_TEST_SUITE_P(Damages, RepairCrashTest, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

}  // namespace
}  // namespace keel::testing
