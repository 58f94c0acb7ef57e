// Proves two fixes the crash workloads of commit, rebase and bitmaps led to: a header rewrite
// (amend, rebase) never leaves a power-cut state that mixes the old and the new header — every
// recorded write torn at sectors in every combination still opens with the old or the new backing
// file name and compat level; and a bitmap change that meets an I/O error after allocating
// latches the image instead of carrying on with clusters counted that nothing references (a leak
// later flushes would make permanent).
#include <gtest/gtest.h>

#include <set>
#include <tuple>

#include "engine/engine_util.h"
#include "engine/fault_util.h"
#include "io/fault_file.h"
#include "io/memory_file.h"
#include "io/recording_file.h"
#include "keel/check.h"
#include "proof/enumerate.h"
#include "proof/memory_fs.h"

namespace keel::test {
namespace {

struct HeaderView {
  std::string backing;
  std::string compat;
  bool operator<(const HeaderView& o) const { return std::tie(backing, compat) < std::tie(o.backing, o.compat); }
};

HeaderView view_of(Image& im) {
  ImageInfo i = im.info();
  return {i.backing_filename, i.compat};
}

// Runs `amend` on a 64 KiB-cluster image over a backing file (so the feature-name table pushes
// the backing file name into sector 1), recording every write, then opens every crash state.
void every_state_is_old_or_new(const AmendOptions& amend) {
  proof::MemoryFs fs;
  CreateOptions base;
  base.size = 1 << 20;
  base.format = "raw";
  base.file_opener = fs.opener();
  ASSERT_TRUE(create_image(proof::MemoryFs::path("base.raw"), base).is_ok());
  CreateOptions co;
  co.size = 1 << 20;
  co.backing_file = "base.raw";
  co.backing_format = "raw";
  co.file_opener = fs.opener();
  ASSERT_TRUE(create_image(proof::MemoryFs::path("top.qcow2"), co).is_ok());

  auto rec = std::make_shared<Recording>();
  std::set<HeaderView> allowed;
  {
    OpenOptions o;
    o.format = "qcow2";
    o.no_backing = true;
    o.observer = rec.get();
    o.file_opener = fs.opener([rec](std::unique_ptr<BlockFile> inner, const std::string& name, const FileOptions&)
                                  -> Result<std::unique_ptr<BlockFile>> {
      auto r = RecordingFile::wrap(std::move(inner), rec, name);
      if (!r) return error(r.error());
      return std::unique_ptr<BlockFile>(std::move(*r));
    });
    auto im = Image::open(proof::MemoryFs::path("top.qcow2"), o);
    ASSERT_TRUE(im.has_value()) << im.error().message();
    allowed.insert(view_of(**im));
    Status st = (*im)->amend(amend);
    ASSERT_TRUE(st.is_ok()) << st.message();
    allowed.insert(view_of(**im));
    ASSERT_TRUE((*im)->close().is_ok());
  }
  const int id = rec->find_file("top.qcow2");
  ASSERT_GE(id, 0);
  CrashCursor cursor(*rec);
  proof::EnumerationConfig cfg;
  uint64_t states = 0;
  while (true) {
    for (const CrashState& s : proof::enumerate_states(cursor, *rec, cfg, 1)) {
      auto bytes = cursor.materialize(s, static_cast<uint32_t>(id));
      ASSERT_TRUE(bytes.has_value());
      ++states;
      OpenOptions o;
      o.format = "qcow2";
      o.read_only = true;
      o.no_backing = true;
      o.file_opener = [&](const std::string& path, const FileOptions&) -> Result<std::unique_ptr<BlockFile>> {
        return std::unique_ptr<BlockFile>(std::make_unique<MemoryFile>(path, *bytes, true));
      };
      auto im = Image::open(proof::MemoryFs::path("top.qcow2"), o);
      ASSERT_TRUE(im.has_value()) << s.describe() << ": " << im.error().message();
      HeaderView v = view_of(**im);
      EXPECT_TRUE(allowed.count(v)) << s.describe() << ": backing '" << v.backing << "', compat " << v.compat;
      MemoryFile mf("top.qcow2", *bytes, true);
      auto c = check_qcow2(mf, CheckOptions{});
      ASSERT_TRUE(c.has_value()) << s.describe() << ": " << c.error().message();
      EXPECT_EQ(c->corruptions, 0u) << s.describe();
    }
    if (cursor.crash_point() == cursor.last_crash_point()) break;
    cursor.advance();
  }
  EXPECT_GT(states, 3u);
}

TEST(HeaderRewrite, RenamingTheBackingFileIsNeverTorn) {
  AmendOptions o;
  o.backing_file = "a-much-longer-name-for-the-new-backing-file.raw";
  o.backing_format = "raw";
  every_state_is_old_or_new(o);
}

TEST(HeaderRewrite, RemovingTheBackingFileIsNeverTorn) {
  AmendOptions o;
  o.backing_file = "";
  every_state_is_old_or_new(o);
}

TEST(HeaderRewrite, ChangingTheCompatLevelIsNeverTorn) {
  AmendOptions o;
  o.version = 2;
  every_state_is_old_or_new(o);
}

TEST(BitmapFaults, FailedChangeLatchesInsteadOfLeaking) {
  proof::MemoryFs fs;
  auto inj = std::make_shared<FaultInjector>();
  auto im = create_with_faults(fs, "t.qcow2", "qcow2", 1 << 20, inj);
  ASSERT_TRUE(im.has_value()) << im.error().message();
  Image& i = **im;
  ASSERT_TRUE(i.bitmap_add("a", 4096).is_ok());
  std::vector<uint8_t> data(65536, 7);
  ASSERT_TRUE(i.write(0, data).is_ok());
  ASSERT_TRUE(i.flush().is_ok());
  // The first read after the new bitmap data is written: the old header, before the switch.
  auto rule = parse_fault_rule("event=bitmap_write,iotype=read,errno=EIO,once=on");
  ASSERT_TRUE(rule.has_value());
  inj->add_rule(*rule);
  EXPECT_FALSE(i.bitmap_add("b", 65536).is_ok());
  ASSERT_EQ(inj->injected().size(), 1u);
  // Carrying on would write the in-memory refcounts of the new, unreferenced clusters for good.
  EXPECT_FALSE(i.write(65536, data).is_ok()) << "the image must be latched";
  EXPECT_FALSE(i.close().is_ok());
  auto f = fs.handle("t.qcow2", true);
  auto c = check_qcow2(*f, CheckOptions{});
  ASSERT_TRUE(c.has_value()) << c.error().message();
  EXPECT_EQ(c->corruptions, 0u);
}

}  // namespace
}  // namespace keel::test
