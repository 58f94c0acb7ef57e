// Proves the crash recorder logs every state-changing op in order and that CrashCursor builds
// exactly the states the power-loss model allows: synced content, subsets, torn writes, sizes.
// The randomized test replays a MemoryFile history and prints its seed (KEEL_SEED to replay).
#include <gtest/gtest.h>

#include <cstdlib>
#include <random>

#include "io/fault_file.h"
#include "io/memory_file.h"
#include "io/recording_file.h"

namespace keel {
namespace {

struct Rig {
  std::shared_ptr<Recording> rec = std::make_shared<Recording>();
  MemoryFile mem{"img", std::vector<uint8_t>(1024, 0x11)};
  std::unique_ptr<RecordingFile> file;
  Rig() { file = *RecordingFile::wrap(mem.share(), rec, "img"); }
};

std::vector<uint8_t> filled(size_t n, uint8_t v) { return std::vector<uint8_t>(n, v); }

TEST(RecordingFile, LogsOpsInOrderWithSizesAndEvents) {
  Rig r;
  ASSERT_TRUE(r.file->write_at(1024, filled(512, 0x22)).is_ok());
  r.rec->on_event(Event::kL2Update);
  ASSERT_TRUE(r.file->sync().is_ok());
  ASSERT_TRUE(r.file->truncate(700).is_ok());
  ASSERT_TRUE(r.file->punch(0, 100).is_ok());
  ASSERT_TRUE(r.file->allocate(0, 4096).is_ok());
  std::vector<uint8_t> b(10);
  ASSERT_TRUE(r.file->read_at(0, b).is_ok());  // not recorded
  const auto& ops = r.rec->ops();
  ASSERT_EQ(ops.size(), 5u);
  EXPECT_EQ(ops[0].kind, FileOpKind::kWrite);
  EXPECT_EQ(ops[0].size_before, 1024u);
  EXPECT_EQ(ops[0].size_after, 1536u);
  EXPECT_EQ(ops[0].last_event, -1);
  EXPECT_EQ(ops[1].kind, FileOpKind::kSync);
  EXPECT_EQ(ops[1].last_event, static_cast<int>(Event::kL2Update));
  EXPECT_EQ(ops[2].kind, FileOpKind::kTruncate);
  EXPECT_EQ(ops[2].size_after, 700u);
  EXPECT_TRUE(ops[2].sets_size());
  EXPECT_FALSE(ops[3].sets_size());
  EXPECT_EQ(ops[4].size_after, 4096u);
  ASSERT_EQ(r.rec->events().size(), 1u);
  EXPECT_EQ(r.rec->events()[0].position, 1u);
  EXPECT_EQ(r.rec->base(0), filled(1024, 0x11));
  EXPECT_EQ(r.rec->count(0, FileOpKind::kSync), 1u);
}

TEST(RecordingFile, FailedOpsAreNotRecorded) {
  auto rec = std::make_shared<Recording>();
  MemoryFile mem("img");
  auto inj = std::make_shared<FaultInjector>();
  inj->add_rule(*parse_fault_rule("iotype=write,once=on"));
  auto f = *RecordingFile::wrap(std::make_unique<FaultFile>(mem.share(), inj), rec, "img");
  EXPECT_FALSE(f->write_at(0, filled(512, 1)).is_ok());
  EXPECT_TRUE(f->write_at(0, filled(512, 2)).is_ok());
  ASSERT_EQ(rec->ops().size(), 1u);
  EXPECT_EQ(rec->ops()[0].data[0], 2);
}

TEST(RecordingFile, ReopenKeepsFileId) {
  Rig r;
  ASSERT_TRUE(r.file->write_at(0, filled(512, 0x33)).is_ok());
  auto again = *RecordingFile::wrap(r.mem.share(), r.rec, "img");
  EXPECT_EQ(again->file_id(), r.file->file_id());
  EXPECT_EQ(r.rec->file_count(), 1u);
  EXPECT_EQ(r.rec->base(0), filled(1024, 0x11));  // the base is the content at first sight
}

TEST(CrashCursor, SubsetsTornWritesAndSizes) {
  Rig r;
  ASSERT_TRUE(r.file->write_at(0, filled(1024, 0xaa)).is_ok());    // op 0: 2 sectors
  ASSERT_TRUE(r.file->sync().is_ok());                             // op 1
  ASSERT_TRUE(r.file->write_at(512, filled(1024, 0xbb)).is_ok());  // op 2: grows to 1536
  ASSERT_TRUE(r.file->write_at(100, filled(10, 0xcc)).is_ok());    // op 3: inside sector 0
  CrashCursor c(*r.rec);
  EXPECT_EQ(c.last_crash_point(), 4u);
  c.seek(2);
  EXPECT_TRUE(c.open_ops().empty());
  EXPECT_EQ(c.synced(0), filled(1024, 0xaa));
  c.seek(4);
  ASSERT_EQ(c.open_ops(), (std::vector<uint32_t>{2, 3}));

  CrashState none{4, {}, {}};
  EXPECT_EQ(*c.materialize(none, 0), filled(1024, 0xaa));  // synced size, synced bytes

  CrashState only3{4, {3}, {}};
  auto s3 = *c.materialize(only3, 0);
  ASSERT_EQ(s3.size(), 1024u);
  EXPECT_EQ(s3[100], 0xcc);
  EXPECT_EQ(s3[99], 0xaa);

  CrashState torn{4, {2}, {{2, {false, true}}}};  // op 2 covers sectors 1, 2: only sector 2
  auto st = *c.materialize(torn, 0);
  ASSERT_EQ(st.size(), 1536u);  // the op set the size
  EXPECT_EQ(st[600], 0xaa);
  EXPECT_EQ(st[1100], 0xbb);

  CrashState bad{4, {1}, {}};  // a synced op is not open
  EXPECT_FALSE(c.materialize(bad, 0).has_value());
  CrashState wrong_point{3, {}, {}};
  EXPECT_FALSE(c.materialize(wrong_point, 0).has_value());
  c.seek(1);  // backwards restarts
  EXPECT_EQ(c.crash_point(), 1u);
  EXPECT_EQ(c.open_ops(), (std::vector<uint32_t>{0}));
}

TEST(CrashCursor, TruncateShrinkThenUnpersistedGrowth) {
  Rig r;
  ASSERT_TRUE(r.file->truncate(512).is_ok());                    // op 0
  ASSERT_TRUE(r.file->write_at(2048, filled(512, 0x44)).is_ok());  // op 1
  CrashCursor c(*r.rec);
  c.seek(2);
  auto shrink_only = *c.materialize({2, {0}, {}}, 0);
  EXPECT_EQ(shrink_only, filled(512, 0x11));
  auto write_only = *c.materialize({2, {1}, {}}, 0);  // truncate lost: old bytes stay
  ASSERT_EQ(write_only.size(), 2560u);
  EXPECT_EQ(write_only[600], 0x11);
  EXPECT_EQ(write_only[1500], 0);
  auto both = *c.materialize({2, {0, 1}, {}}, 0);
  ASSERT_EQ(both.size(), 2560u);
  EXPECT_EQ(both[600], 0);  // cut by the truncate, then zero-extended
  EXPECT_EQ(both[2048], 0x44);
}

uint64_t test_seed() {
  if (const char* s = std::getenv("KEEL_SEED")) return std::strtoull(s, nullptr, 0);
  return std::random_device{}();
}

// Every crash state's sectors hold either the synced bytes or bytes of a persisted write; the
// "all open ops" state equals the live file (the kill state); "none" equals the synced content.
TEST(CrashCursor, RandomHistoriesAgreeWithLiveFile) {
  uint64_t seed = test_seed();
  std::printf("RandomHistoriesAgreeWithLiveFile seed=%llu (replay: KEEL_SEED=%llu)\n",
              static_cast<unsigned long long>(seed), static_cast<unsigned long long>(seed));
  std::mt19937_64 rng(seed);
  for (int round = 0; round < 20; ++round) {
    auto rec = std::make_shared<Recording>();
    MemoryFile mem("f", filled(rng() % 4096, 0x01));
    MemoryFile shadow("shadow", mem.bytes());  // the live file, op by op
    auto f = *RecordingFile::wrap(mem.share(), rec, "f");
    std::vector<std::vector<uint8_t>> live{mem.bytes()};
    for (int i = 0; i < 40; ++i) {
      uint64_t off = rng() % 8192, len = 1 + rng() % 2000;
      switch (rng() % 8) {
        case 0: ASSERT_TRUE(f->sync().is_ok()); break;
        case 1: ASSERT_TRUE(f->truncate(rng() % 10000).is_ok()); break;
        case 2: ASSERT_TRUE(f->punch(off, len).is_ok()); break;
        case 3: ASSERT_TRUE(f->allocate(off, len).is_ok()); break;
        default: ASSERT_TRUE(f->write_at(off, filled(len, static_cast<uint8_t>(2 + i))).is_ok());
      }
      live.push_back(mem.bytes());
    }
    CrashCursor c(*rec);
    for (uint64_t cp = 0; cp <= c.last_crash_point(); ++cp) {
      c.seek(cp);
      const auto& open = c.open_ops();
      auto all = *c.materialize({cp, open, {}}, 0);
      ASSERT_EQ(all, live[cp]) << "seed " << seed << " round " << round << " crash point " << cp;
      auto none = *c.materialize({cp, {}, {}}, 0);
      ASSERT_EQ(none, c.synced(0));
      // A random subset with random tearing: each byte is synced, or from a persisted op.
      CrashState s{cp, {}, {}};
      for (uint32_t op : open)
        if (rng() % 2) s.persisted.push_back(op);
      for (uint32_t op : s.persisted) {
        const FileOp& o = rec->ops()[op];
        if (o.kind != FileOpKind::kWrite) continue;
        std::vector<bool> mask(o.sector_count());
        for (size_t k = 0; k < mask.size(); ++k) mask[k] = rng() % 2;
        s.torn.push_back({op, mask});
      }
      auto st = *c.materialize(s, 0);
      for (size_t b = 0; b < st.size(); ++b) {
        bool ok = (b < c.synced(0).size() && st[b] == c.synced(0)[b]) || st[b] == 0;
        for (uint32_t op : s.persisted) {
          const FileOp& o = rec->ops()[op];
          if (o.kind == FileOpKind::kWrite && b >= o.offset && b < o.offset + o.length &&
              st[b] == o.data[b - o.offset])
            ok = true;
        }
        ASSERT_TRUE(ok) << "seed " << seed << " byte " << b << " of " << s.describe();
      }
    }
  }
}

}  // namespace
}  // namespace keel
