// Proves the checker's oracles for the other layers find planted bugs: a consistent bitmap that
// lost the bits of a tracked write (G5), a bitmap that vanished (G5), a commit whose base lost its
// data while the top was emptied (G3), and a rebase that switched the backing file without
// copying (G3) — each on a clean image the same checks pass.
#include <gtest/gtest.h>

#include <functional>

#include "proof/checker.h"
#include "proof/memory_fs.h"
#include "proof/workload.h"

namespace keel::proof {
namespace {

// A workload run to its end on memory files, with the model its marks give.
struct Ran {
  WorkloadSpec spec;
  MemoryFs fs;
  GuestModel model{0, 0};
};

void run(Ran& r) {
  WorkloadSpec& s = r.spec;
  s.create.format = "qcow2";
  if (s.backing_bytes) {
    s.create.backing_file = kBackingName;
    s.create.backing_format = "raw";
    r.fs.put(kBackingName, backing_content(s));
  }
  if (s.new_backing_bytes) r.fs.put(kNewBackingName, new_backing_content(s));
  CreateOptions co = s.create;
  co.file_opener = r.fs.opener();
  ASSERT_TRUE(create_image(MemoryFs::path(kImageName), co).is_ok());
  OpenOptions oo;
  oo.format = "qcow2";
  oo.file_opener = r.fs.opener();
  auto layers = [&](const std::string& name, bool writable) {
    OpenOptions lo;
    lo.format = "raw";
    lo.read_only = !writable;
    lo.file_opener = oo.file_opener;
    return Image::open(MemoryFs::path(name), lo);
  };
  WorkloadRunner runner(s, [&] { return Image::open(MemoryFs::path(kImageName), oo); }, [] { return 0; }, layers);
  ASSERT_TRUE(runner.open().is_ok());
  for (size_t i = 0; i < s.ops.size(); ++i) {
    Status st = runner.step(i);
    ASSERT_TRUE(st.is_ok()) << s.ops[i].describe() << ": " << st.message();
  }
  ASSERT_TRUE(runner.close().is_ok());
  r.model = initial_model(s);
  for (const auto& m : runner.marks()) apply_mark(r.model, s, m);
}

GuestOp op(GuestOpKind k, uint64_t offset = 0, uint64_t length = 0) {
  GuestOp o;
  o.kind = k;
  o.offset = offset;
  o.length = length;
  return o;
}

StateVerdict check(Ran& r) {
  StateCheckOptions o;
  return check_state(r.spec, r.fs.bytes(kImageName), r.fs.bytes(kBackingName), r.model, o);
}

std::string details(const StateVerdict& v) {
  std::string s;
  for (const auto& [g, d] : v.details) s += std::string(guarantee_name(g)) + ": " + d + "\n";
  return s;
}

// Runs `plant` on the finished image opened read-write through Keel.
void plant(Ran& r, const std::function<void(Image&)>& f) {
  OpenOptions oo;
  oo.format = "qcow2";
  oo.file_opener = r.fs.opener();
  auto img = Image::open(MemoryFs::path(kImageName), oo);
  ASSERT_TRUE(img.has_value()) << img.error().message();
  f(**img);
  ASSERT_TRUE((*img)->close().is_ok());
}

void bitmap_run(Ran& r) {
  r.spec.create.size = 1 << 20;
  r.spec.create.cluster_size = 65536;
  GuestOp add = op(GuestOpKind::kBitmapAdd);
  add.name = "b";
  add.granularity = 4096;
  r.spec.ops = {add, op(GuestOpKind::kWrite, 65536, 8192), op(GuestOpKind::kFlush)};
  run(r);
}

TEST(LayerOracles, ClearedBitmapMissesAWrite) {
  Ran r;
  bitmap_run(r);
  StateVerdict clean = check(r);
  EXPECT_FALSE(clean.any()) << details(clean);
  plant(r, [](Image& im) { ASSERT_TRUE(im.bitmap_clear("b").is_ok()); });
  StateVerdict v = check(r);
  EXPECT_TRUE(v.violated[static_cast<size_t>(Guarantee::kG5)]) << details(v);
  EXPECT_FALSE(v.violated[static_cast<size_t>(Guarantee::kG3)]) << details(v);
}

TEST(LayerOracles, RemovedBitmapIsGone) {
  Ran r;
  bitmap_run(r);
  plant(r, [](Image& im) { ASSERT_TRUE(im.bitmap_remove("b").is_ok()); });
  StateVerdict v = check(r);
  EXPECT_TRUE(v.violated[static_cast<size_t>(Guarantee::kG5)]) << details(v);
}

TEST(LayerOracles, CommitWhoseBaseLostItsDataIsG3) {
  Ran r;
  r.spec.create.size = 1 << 20;
  r.spec.create.cluster_size = 65536;
  r.spec.backing_bytes = 1 << 20;
  r.spec.base_writable = true;
  r.spec.ops = {op(GuestOpKind::kWrite, 0, 65536), op(GuestOpKind::kWrite, 131072, 4096), op(GuestOpKind::kFlush),
                op(GuestOpKind::kCommit)};
  run(r);
  StateVerdict clean = check(r);
  EXPECT_FALSE(clean.any()) << details(clean);
  // The top was emptied but the base never got (or lost) the committed data.
  r.fs.put(kBackingName, backing_content(r.spec));
  StateVerdict v = check(r);
  EXPECT_TRUE(v.violated[static_cast<size_t>(Guarantee::kG3)]) << details(v);
}

TEST(LayerOracles, RebaseWithoutTheCopyIsG3) {
  Ran r;
  r.spec.create.size = 1 << 20;
  r.spec.create.cluster_size = 65536;
  r.spec.backing_bytes = 768 << 10;
  r.spec.new_backing_bytes = 1 << 20;
  r.spec.ops = {op(GuestOpKind::kWrite, 4096, 4096), op(GuestOpKind::kFlush)};
  run(r);
  StateVerdict clean = check(r);
  EXPECT_FALSE(clean.any()) << details(clean);
  // rebase -u: the header names the new backing file, nothing was copied.
  plant(r, [](Image& im) {
    AmendOptions o;
    o.backing_file = kNewBackingName;
    o.backing_format = "raw";
    ASSERT_TRUE(im.amend(o).is_ok());
  });
  StateVerdict v = check(r);
  EXPECT_TRUE(v.violated[static_cast<size_t>(Guarantee::kG3)]) << details(v);
}

}  // namespace
}  // namespace keel::proof
