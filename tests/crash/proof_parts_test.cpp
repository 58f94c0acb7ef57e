// Proves the proof's own parts are sound: patterns decode to their writer, the guest model allows
// exactly the contents the contract allows, the enumeration has the promised shape, and the
// checker and explorer do find planted bugs (a swapped L2 entry, a zeroed refcount, a broken
// header, an engine whose syncs are dropped) — a checker that finds nothing proves nothing.
#include <gtest/gtest.h>

#include <cstring>

#include "io/memory_file.h"
#include "io/recording_file.h"
#include "proof/checker.h"
#include "proof/enumerate.h"
#include "proof/explorer.h"
#include "proof/memory_fs.h"
#include "proof/pattern.h"
#include "proof/workload.h"

namespace keel::proof {
namespace {

TEST(Pattern, DecodesToItsWriter) {
  std::vector<uint8_t> s(512);
  fill_sector(7, 1234, s);
  Decoded d = decode_sector(s);
  EXPECT_EQ(d.kind, Decoded::kPattern);
  EXPECT_EQ(d.version, 7u);
  EXPECT_EQ(d.sector, 1234u);
  s[300] ^= 1;
  EXPECT_EQ(decode_sector(s).kind, Decoded::kGarbage);
  std::vector<uint8_t> z(512, 0);
  EXPECT_EQ(decode_sector(z).kind, Decoded::kZero);
  std::vector<uint8_t> a(512), b(512);
  fill_sector(7, 1, a);
  fill_sector(7, 2, b);
  EXPECT_NE(a, b);
}

TEST(GuestModel, FlushDiscardFuaAndUncertainty) {
  GuestModel m(8 * 512, /*backing_sectors=*/4);
  EXPECT_TRUE(m.allows(0, kBackingVersion));
  EXPECT_TRUE(m.allows(5, kZeroVersion));
  EXPECT_FALSE(m.allows(5, kBackingVersion));
  m.write(0, 2, 10);
  EXPECT_TRUE(m.allows(0, 10));
  EXPECT_TRUE(m.allows(0, kBackingVersion));  // not flushed yet
  m.flush();
  EXPECT_TRUE(m.allows(0, 10));
  EXPECT_FALSE(m.allows(0, kBackingVersion));
  m.discard(0, 1);
  m.flush();
  EXPECT_TRUE(m.allows(0, kZeroVersion));
  EXPECT_TRUE(m.allows(0, kBackingVersion));
  EXPECT_FALSE(m.allows(0, 10));
  m.write(1, 1, 11, /*certain=*/false);  // a failed write: maybe, maybe not
  m.flush();
  EXPECT_TRUE(m.allows(1, 10));
  EXPECT_TRUE(m.allows(1, 11));
  m.write(6, 1, 12);
  m.make_durable(6, 1);  // FUA
  EXPECT_FALSE(m.allows(6, kZeroVersion));
  m.settle(1, 11);
  EXPECT_FALSE(m.allows(1, 10));
}

TEST(Enumerate, SubsetsContainTheNewestOpAndSyncsGiveOneState) {
  auto rec = std::make_shared<Recording>();
  MemoryFile mem("f");
  auto f = *RecordingFile::wrap(mem.share(), rec, "f");
  std::vector<uint8_t> d(1024, 1);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(f->write_at(i * 4096, d).is_ok());  // ops 0-2
  ASSERT_TRUE(f->sync().is_ok());                                            // op 3
  for (int i = 0; i < 12; ++i) ASSERT_TRUE(f->write_at(i * 4096, {d.data(), 512}).is_ok());  // ops 4-15
  CrashCursor c(*rec);
  EnumerationConfig cfg;
  cfg.torn_variants = 3;
  cfg.random_torn = 0;
  c.seek(3);  // newest op 2, epoch {0,1,2}: 4 subsets + 3 torn variants of the 2-sector write
  auto s3 = enumerate_states(c, *rec, cfg, 1);
  EXPECT_EQ(s3.size(), 7u);
  for (const auto& s : s3) EXPECT_EQ(s.persisted.back(), 2u);
  EXPECT_LE(s3.size(), count_states(c, *rec, cfg));
  c.seek(4);  // after the sync
  EXPECT_EQ(enumerate_states(c, *rec, cfg, 1).size(), 1u);
  c.seek(16);  // 12 open ops > 10: kill state, samples, and every "all but one" at the epoch end
  auto big = enumerate_states(c, *rec, cfg, 1);
  EXPECT_GE(big.size(), 12u);
  EXPECT_LE(big.size(), count_states(c, *rec, cfg));
  EXPECT_EQ(enumerate_states(c, *rec, cfg, 1).size(), big.size());  // deterministic
}

// A small clean image made by the engine, with its model.
struct Clean {
  WorkloadSpec spec;
  std::vector<uint8_t> image;
  GuestModel model{0, 0};
};

Clean make_clean() {
  Clean c;
  c.spec.name = "planted";
  c.spec.create.size = 1 << 20;
  c.spec.create.cluster_size = 65536;
  GuestOp w0{GuestOpKind::kWrite, 0, 65536};
  GuestOp w1{GuestOpKind::kWrite, 65536, 65536};
  GuestOp fl{GuestOpKind::kFlush};
  c.spec.ops = {w0, w1, fl};
  MemoryFs fs;
  CreateOptions co = c.spec.create;
  co.file_opener = fs.opener();
  EXPECT_TRUE(create_image(MemoryFs::path(kImageName), co).is_ok());
  OpenOptions oo;
  oo.format = "qcow2";
  oo.file_opener = fs.opener();
  WorkloadRunner run(c.spec, [&] { return Image::open(MemoryFs::path(kImageName), oo); }, [] { return 0; });
  EXPECT_TRUE(run.open().is_ok());
  for (size_t i = 0; i < c.spec.ops.size(); ++i) EXPECT_TRUE(run.step(i).is_ok());
  EXPECT_TRUE(run.close().is_ok());
  c.model = initial_model(c.spec);
  for (const auto& m : run.marks()) apply_mark(c.model, c.spec, m);
  c.image = fs.bytes(kImageName);
  return c;
}

uint64_t be64(const std::vector<uint8_t>& b, uint64_t off) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | b.at(off + i);
  return v;
}

TEST(Checker, CleanImagePasses) {
  Clean c = make_clean();
  StateCheckOptions o;
  o.probe_write = true;
  StateVerdict v = check_state(c.spec, c.image, {}, c.model, o);
  for (const auto& [g, d] : v.details) ADD_FAILURE() << guarantee_name(g) << ": " << d;
  EXPECT_FALSE(v.any());
}

TEST(Checker, SwappedL2EntryIsForeignData) {
  Clean c = make_clean();
  uint64_t l1 = be64(c.image, 40);
  uint64_t l2 = be64(c.image, l1) & 0x00fffffffffffe00ull;
  ASSERT_NE(l2, 0u);
  // Guest cluster 0 now maps where guest cluster 1's data lives.
  std::memcpy(&c.image[l2], &c.image[l2 + 8], 8);
  StateVerdict v = check_state(c.spec, c.image, {}, c.model, {});
  EXPECT_TRUE(v.violated[static_cast<size_t>(Guarantee::kG4)]);
  EXPECT_TRUE(v.violated[static_cast<size_t>(Guarantee::kG2)]);  // two references, refcount 1
}

TEST(Checker, ZeroedRefcountIsInconsistent) {
  Clean c = make_clean();
  uint64_t reftable = be64(c.image, 48);
  uint64_t block = be64(c.image, reftable);
  ASSERT_NE(block, 0u);
  std::memset(&c.image[block], 0, 65536);  // every refcount 0, though everything is in use
  StateVerdict v = check_state(c.spec, c.image, {}, c.model, {});
  EXPECT_TRUE(v.violated[static_cast<size_t>(Guarantee::kG2)]);
}

TEST(Checker, BrokenHeaderDoesNotOpen) {
  Clean c = make_clean();
  c.image[0] = 'X';
  StateVerdict v = check_state(c.spec, c.image, {}, c.model, {});
  EXPECT_TRUE(v.violated[static_cast<size_t>(Guarantee::kG1)]);
}

TEST(Checker, LostDurableWriteIsG3) {
  Clean c = make_clean();
  GuestModel m = c.model;
  m.write(0, 1, 99);  // the model says v99 was flushed at sector 0; the image has v2
  m.flush();
  StateVerdict v = check_state(c.spec, c.image, {}, m, {});
  EXPECT_TRUE(v.violated[static_cast<size_t>(Guarantee::kG3)]);
  EXPECT_FALSE(v.violated[static_cast<size_t>(Guarantee::kG4)]);
}

TEST(Explorer, FindsViolationsWhenSyncsAreDropped) {
  ExploreConfig c;
  c.seed = 5;
  c.max_states = 400;
  c.sabotage = Sabotage::kDropSyncs;
  WorkloadReport r = explore_workload("alloc", c);
  ASSERT_TRUE(r.run_status.is_ok()) << r.run_status.message();
  EXPECT_GT(r.violations[static_cast<size_t>(Guarantee::kG3)], 0u) << format_report(r);
}

}  // namespace
}  // namespace keel::proof
