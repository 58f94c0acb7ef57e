// Proves keel's persistent dirty bitmaps: the operations leave images QEMU reads the same way
// (qemu-img info --output=json, qemu-img check clean) and QEMU's bitmaps are read and changed
// correctly; tracked writes give the bits QEMU exports (qemu-nbd -B + nbdinfo --map); a bitmap
// is in use on disk exactly while it is tracked, and one left in use is refused; and, replaying
// every recorded write and sync, that a power cut during any bitmap operation or tracked session
// leaves an image that opens, checks without corruption, holds either the old or the new set of
// bitmaps, and never a bitmap out of use that misses an issued write. Random offsets print the
// seed (KEEL_SEED replays).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>

#include "engine/engine_util.h"
#include "io/memory_file.h"
#include "io/recording_file.h"
#include "keel/check.h"
#include "proof/enumerate.h"

namespace keel::test {
namespace {

std::string q(const std::string& s) { return "'" + s + "'"; }

void create(const std::string& path, uint64_t size, const std::string& backing = "", uint32_t cs = 65536,
            int version = 3) {
  CreateOptions co;
  co.size = size;
  co.cluster_size = cs;
  co.version = version;
  co.backing_file = backing;
  if (!backing.empty()) co.backing_format = "qcow2";
  Status st = create_image(path, co);
  ASSERT_TRUE(st.is_ok()) << static_cast<int>(st.code()) << " [" << st.message() << "]";
}

void fill(Image& im, uint64_t off, uint64_t len, uint8_t v) {
  std::vector<uint8_t> b(len, v);
  Status st = im.write(off, b);
  ASSERT_TRUE(st.is_ok()) << static_cast<int>(st.code()) << " [" << st.message() << "]";
}

// qemu-img info --output=json's bitmap list: name -> {flags, granularity}.
std::map<std::string, std::pair<std::vector<std::string>, uint64_t>> qemu_bitmaps(const std::string& img) {
  auto r = run("qemu-img info -U --output=json " + q(img));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  std::map<std::string, std::pair<std::vector<std::string>, uint64_t>> out;
  auto j = nlohmann::json::parse(r.output.substr(r.output.find('{')), nullptr, false);
  if (j.is_discarded()) return out;
  auto data = j["format-specific"]["data"];
  if (!data.contains("bitmaps")) return out;
  for (auto& b : data["bitmaps"])
    out[b["name"]] = {b["flags"].get<std::vector<std::string>>(), b["granularity"].get<uint64_t>()};
  return out;
}

void expect_clean(const std::string& img) {
  auto r = qemu_check(img);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("No errors were found"), std::string::npos) << r.output;
}

// Dirty extents (offset, length) as QEMU exports them: qemu-nbd -B NAME, nbdinfo --map.
std::vector<std::pair<uint64_t, uint64_t>> qemu_dirty(const std::string& img, const std::string& bitmap) {
  static int n = 0;
  std::string sock = img + "." + std::to_string(++n) + ".sock";
  // Without --persistent qemu-nbd exits when nbdinfo disconnects; wait for that (its lock).
  auto r = run("qemu-nbd -r -f qcow2 --fork -B " + q(bitmap) + " -k " + q(sock) + " " + q(img) +
               " && nbdinfo --map=qemu:dirty-bitmap:" + bitmap + " 'nbd+unix:///?socket=" + sock +
               "' && for i in $(seq 200); do [ -S " + q(sock) + " ] || break; sleep 0.02; done");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  std::vector<std::pair<uint64_t, uint64_t>> out;
  std::istringstream in(r.output);
  uint64_t off, len;
  int flag;
  std::string word;
  while (in >> off >> len >> flag >> word)
    if (flag == 1) out.emplace_back(off, len);
  return out;
}

std::vector<std::pair<uint64_t, uint64_t>> dirty_extents(const BitmapData& d) {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  for (uint64_t i = 0; i < d.bit_count(); ++i) {
    if (!d.test(i)) continue;
    uint64_t start = i * d.granularity, end = std::min<uint64_t>(start + d.granularity, d.virtual_size);
    if (!out.empty() && out.back().first + out.back().second == start) out.back().second += end - start;
    else out.emplace_back(start, end - start);
  }
  return out;
}

std::string fmt_cmd(const char* op, uint64_t off, uint64_t len) {
  return std::string(op) + " " + std::to_string(off) + " " + std::to_string(len);
}

BitmapData read_bits(Image& im, const std::string& name) {
  auto r = im.bitmap_read(name);
  EXPECT_TRUE(r.has_value()) << (r ? "" : r.error().message());
  return r ? *r : BitmapData{};
}

uint64_t seed() {
  static uint64_t s = [] {
    const char* e = std::getenv("KEEL_SEED");
    uint64_t v = e ? std::strtoull(e, nullptr, 10) : std::random_device{}();
    std::printf("qcow2_bitmap_test seed: %llu (KEEL_SEED replays)\n", static_cast<unsigned long long>(v));
    return v;
  }();
  return s;
}

TEST(Bitmaps, OperationsAsQemuSeesThem) {
  TempDir d;
  std::string img = d.path("a.qcow2");
  create(img, 64 << 20);
  {
    auto im = open_rw(img);
    ASSERT_TRUE(im->bitmap_add("a").is_ok());
    ASSERT_TRUE(im->bitmap_add("b", 4096, true).is_ok());
    ASSERT_TRUE(im->bitmap_add("c", 1 << 20).is_ok());
    ASSERT_TRUE(im->close().is_ok());
  }
  auto bm = qemu_bitmaps(img);
  ASSERT_EQ(bm.size(), 3u);
  EXPECT_EQ(bm["a"], (std::pair<std::vector<std::string>, uint64_t>{{"auto"}, 65536}));
  EXPECT_EQ(bm["b"], (std::pair<std::vector<std::string>, uint64_t>{{}, 4096}));
  EXPECT_EQ(bm["c"].second, 1u << 20);
  expect_clean(img);
  {
    auto im = open_rw(img);
    ASSERT_TRUE(im->bitmap_disable("a").is_ok());
    ASSERT_TRUE(im->bitmap_enable("b").is_ok());
    ASSERT_TRUE(im->bitmap_remove("c").is_ok());
    auto info = im->info();
    ASSERT_EQ(info.bitmaps.size(), 2u);
    EXPECT_TRUE(info.bitmaps[0].flags.empty());
    EXPECT_EQ(info.bitmaps[1].flags, std::vector<std::string>{"auto"});
    ASSERT_TRUE(im->close().is_ok());
  }
  bm = qemu_bitmaps(img);
  EXPECT_EQ(bm.size(), 2u);
  EXPECT_TRUE(bm["a"].first.empty());
  EXPECT_EQ(bm["b"].first, std::vector<std::string>{"auto"});
  expect_clean(img);
  {
    auto im = open_rw(img);
    ASSERT_TRUE(im->bitmap_remove("a").is_ok());
    ASSERT_TRUE(im->bitmap_remove("b").is_ok());
    ASSERT_TRUE(im->close().is_ok());
  }
  EXPECT_TRUE(qemu_bitmaps(img).empty());
  expect_clean(img);
  // No stale extension left behind: QEMU would warn about it.
  auto r = run("qemu-img info " + q(img));
  EXPECT_EQ(r.output.find("warning"), std::string::npos) << r.output;
}

TEST(Bitmaps, ErrorsCarryQemuMessages) {
  TempDir d;
  std::string img = d.path("a.qcow2");
  create(img, 64 << 20);
  auto im = open_rw(img);
  ASSERT_TRUE(im->bitmap_add("a").is_ok());
  auto expect = [](const Status& st, Code code, const std::string& msg) {
    EXPECT_EQ(st.code(), code) << st.message();
    EXPECT_EQ(st.message(), msg);
  };
  expect(im->bitmap_add("a"), Code::kInvalidArgument, "Bitmap already exists: a");
  expect(im->bitmap_add(""), Code::kInvalidArgument, "Bitmap name cannot be empty");
  expect(im->bitmap_add("x", 1000), Code::kInvalidArgument, "Granularity must be power of 2 and at least 512");
  expect(im->bitmap_add("x", 256), Code::kInvalidArgument, "Granularity must be power of 2 and at least 512");
  expect(im->bitmap_add(std::string(1024, 'n')), Code::kInvalidArgument,
         "Can't make bitmap '" + std::string(1024, 'n') + "' persistent in '" + img +
             "': Name length exceeds maximum (1023 characters)");
  EXPECT_TRUE(im->bitmap_add(std::string(1023, 'n')).is_ok());
  expect(im->bitmap_remove("nope"), Code::kNotFound, "Dirty bitmap 'nope' not found");
  expect(im->bitmap_clear("nope"), Code::kNotFound, "Dirty bitmap 'nope' not found");
  expect(im->bitmap_enable("nope"), Code::kNotFound, "Dirty bitmap 'nope' not found");
  EXPECT_EQ(im->bitmap_read("nope").error().code(), Code::kNotFound);
  BitmapData other{65536, 32 << 20, std::vector<uint8_t>(64, 0)};
  expect(im->bitmap_merge("a", other), Code::kInvalidArgument,
         "Bitmaps are of different sizes (destination size is 67108864, source size is 33554432) and can't be merged");
  ASSERT_TRUE(im->close().is_ok());
  im.reset();
  expect_clean(img);

  std::string v2 = d.path("v2.qcow2");
  create(v2, 1 << 20, "", 65536, 2);
  auto im2 = open_rw(v2);
  expect(im2->bitmap_add("a"), Code::kUnsupported,
         "Can't make bitmap 'a' persistent in '" + v2 + "': Cannot store dirty bitmaps in qcow2 v2 files");
  ASSERT_TRUE(im2->close().is_ok());

  std::string big = d.path("big.qcow2");
  create(big, 4ull << 40);
  auto im3 = open_rw(big);
  expect(im3->bitmap_add("a", 512), Code::kInvalidArgument,
         "Can't make bitmap 'a' persistent in '" + big +
             "': Too much space will be occupied by the bitmap. Use larger granularity");
  EXPECT_TRUE(im3->bitmap_add("a", 1024).is_ok());
  ASSERT_TRUE(im3->close().is_ok());
  im3.reset();
  expect_clean(big);

  std::string raw = d.path("r.raw");
  CreateOptions co;
  co.format = "raw";
  co.size = 1 << 20;
  ASSERT_TRUE(create_image(raw, co).is_ok());
  auto im4 = open_rw(raw, "raw");
  EXPECT_EQ(im4->bitmap_add("a").code(), Code::kUnsupported);
  EXPECT_EQ(im4->bitmap_remove("a").code(), Code::kNotFound);
}

// Tracked writes, compared bit for bit with QEMU's export of the same bitmap, with a model, and
// with QEMU tracking the same writes in a twin image.
TEST(Bitmaps, TrackedWritesMatchQemu) {
  TempDir d;
  std::string k = d.path("k.qcow2"), qi = d.path("q.qcow2");
  create(k, 32 << 20);
  std::mt19937_64 rng(seed());
  std::vector<std::string> qemu_cmds;
  std::set<uint64_t> model4k;  // 4 KiB granules written
  {
    auto im = open_rw(k);
    ASSERT_TRUE(im->bitmap_add("g4k", 4096).is_ok());
    ASSERT_TRUE(im->bitmap_add("g64k").is_ok());
    ASSERT_TRUE(im->bitmap_add("off", 512, true).is_ok());
    ASSERT_TRUE(im->close().is_ok());
  }
  ASSERT_EQ(run("cp " + q(k) + " " + q(qi)).exit_code, 0);
  {
    auto im = open_rw(k);
    for (int i = 0; i < 40; ++i) {
      uint64_t off = rng() % (32 << 20) / 512 * 512;
      uint64_t len = std::min<uint64_t>((rng() % 64 + 1) * 512, (32 << 20) - off);
      int kind = static_cast<int>(rng() % 4);
      Status st;
      std::string cmd;
      if (kind == 0 || kind == 1) {
        std::vector<uint8_t> b(len, static_cast<uint8_t>(i));
        st = im->write(off, b);
        cmd = fmt_cmd("write", off, len);
      } else if (kind == 2) {
        st = im->write_zeroes(off, len, ZeroFlags{});
        cmd = fmt_cmd("write -z", off, len);
      } else {
        st = im->discard(off, len);
        cmd = fmt_cmd("discard", off, len);
      }
      ASSERT_TRUE(st.is_ok()) << cmd << ": " << st.message();
      qemu_cmds.push_back(cmd);
      for (uint64_t g = off / 4096; g <= (off + len - 1) / 4096; ++g) model4k.insert(g);
      if (i == 20) {
        ASSERT_TRUE(im->flush().is_ok());
      }
    }
    // While the session is open the tracked bitmaps are in use on disk, the disabled one not.
    auto bm = qemu_bitmaps(k);
    EXPECT_EQ(bm["g4k"].first, (std::vector<std::string>{"in-use", "auto"}));
    EXPECT_TRUE(bm["off"].first.empty());
    // bitmap_read sees the tracked bits before they are stored.
    BitmapData live = read_bits(*im, "g4k");
    for (uint64_t g = 0; g < live.bit_count(); ++g) ASSERT_EQ(live.test(g), model4k.count(g) > 0) << "granule " << g;
    ASSERT_TRUE(im->close().is_ok());
  }
  expect_clean(k);
  auto bm = qemu_bitmaps(k);
  EXPECT_EQ(bm["g4k"].first, std::vector<std::string>{"auto"});
  std::string script;
  for (const auto& c : qemu_cmds) script += " -c '" + c + "'";
  ASSERT_EQ(run("qemu-io" + script + " " + q(qi)).exit_code, 0);
  auto im = open_ro(k);
  for (const char* name : {"g4k", "g64k", "off"}) {
    BitmapData bits = read_bits(*im, name);
    EXPECT_EQ(dirty_extents(bits), qemu_dirty(k, name)) << name << " (keel's bits vs QEMU's export of keel's image)";
    EXPECT_EQ(qemu_dirty(k, name), qemu_dirty(qi, name)) << name << " (keel's tracking vs QEMU's)";
  }
}

TEST(Bitmaps, QemuBitmapsReadAndChangedByKeel) {
  TempDir d;
  std::string img = d.path("a.qcow2"), other = d.path("o.qcow2");
  ASSERT_EQ(run("qemu-img create -q -f qcow2 " + q(img) + " 16M && qemu-img bitmap --add -g 8k " + q(img) +
                " q1 && qemu-img bitmap --add --disable " + q(img) + " q2 && qemu-io -c 'write 1M 10k' -c "
                "'write -z 5M 64k' " + q(img) + " && qemu-img create -q -f qcow2 " + q(other) +
                " 16M && qemu-img bitmap --add -g 512 " + q(other) + " o && qemu-io -c 'write 9M 1k' " + q(other))
                .exit_code,
            0);
  auto q1_before = qemu_dirty(img, "q1");
  auto oim = open_ro(other);
  {
    auto im = open_rw(img);
    EXPECT_EQ(dirty_extents(read_bits(*im, "q1")), q1_before);
    EXPECT_TRUE(dirty_extents(read_bits(*im, "q2")).empty());
    ASSERT_TRUE(im->bitmap_merge_from("q2", *im, "q1").is_ok());
    ASSERT_TRUE(im->bitmap_merge_from("q2", *oim, "o").is_ok());
    ASSERT_TRUE(im->bitmap_clear("q1").is_ok());
    fill(*im, 12 << 20, 4096, 0x33);  // q1 tracks it, q2 is disabled
    ASSERT_TRUE(im->close().is_ok());
  }
  expect_clean(img);
  auto q2 = qemu_dirty(img, "q2");
  EXPECT_EQ(q2, (std::vector<std::pair<uint64_t, uint64_t>>{{1 << 20, 65536}, {5 << 20, 65536}, {9 << 20, 65536}}));
  EXPECT_EQ(qemu_dirty(img, "q1"), (std::vector<std::pair<uint64_t, uint64_t>>{{12 << 20, 8192}}));
  // QEMU keeps using them.
  ASSERT_EQ(run("qemu-io -c 'write 2M 4k' " + q(img)).exit_code, 0);
  EXPECT_EQ(qemu_dirty(img, "q1"), (std::vector<std::pair<uint64_t, uint64_t>>{{2 << 20, 8192}, {12 << 20, 8192}}));
  expect_clean(img);
}

TEST(Bitmaps, InUseAfterACrashIsRefused) {
  TempDir d;
  std::string img = d.path("a.qcow2"), crashed = d.path("crashed.qcow2");
  create(img, 8 << 20);
  {
    auto im = open_rw(img);
    ASSERT_TRUE(im->bitmap_add("t").is_ok());
    ASSERT_TRUE(im->bitmap_add("d", 0, true).is_ok());
    fill(*im, 0, 65536, 1);
    ASSERT_TRUE(im->flush().is_ok());
    // The file as a power cut now would leave it: t is in use.
    ASSERT_EQ(run("cp " + q(img) + " " + q(crashed)).exit_code, 0);
    ASSERT_TRUE(im->close().is_ok());
  }
  EXPECT_EQ(qemu_bitmaps(crashed)["t"].first, (std::vector<std::string>{"in-use", "auto"}));
  expect_clean(crashed);
  auto im = open_rw(crashed);
  auto info = im->info();
  ASSERT_EQ(info.bitmaps.size(), 2u);
  EXPECT_EQ(info.bitmaps[0].flags, (std::vector<std::string>{"in-use", "auto"}));
  const std::string msg = "Bitmap 't' is inconsistent and cannot be used";
  EXPECT_EQ(im->bitmap_read("t").error().message(), msg);
  EXPECT_EQ(im->bitmap_clear("t").message(), msg);
  EXPECT_EQ(im->bitmap_enable("t").message(), msg);
  EXPECT_EQ(im->bitmap_disable("t").message(), msg);
  EXPECT_EQ(im->bitmap_merge("t", read_bits(*im, "d")).message(), msg);
  EXPECT_EQ(im->bitmap_add("t").message(), "Bitmap already exists: t");
  fill(*im, 1 << 20, 4096, 2);  // not tracked in t, and t stays in use
  ASSERT_TRUE(im->close().is_ok());
  im.reset();
  EXPECT_EQ(qemu_bitmaps(crashed)["t"].first, (std::vector<std::string>{"in-use", "auto"}));
  expect_clean(crashed);
  {
    auto im2 = open_rw(crashed);
    ASSERT_TRUE(im2->bitmap_remove("t").is_ok());
    ASSERT_TRUE(im2->close().is_ok());
  }
  EXPECT_EQ(qemu_bitmaps(crashed).count("t"), 0u);
  expect_clean(crashed);
  // The cleanly closed original: t covers the write.
  EXPECT_EQ(qemu_dirty(img, "t"), (std::vector<std::pair<uint64_t, uint64_t>>{{0, 65536}}));
}

TEST(Bitmaps, ResizeAndSnapshotApplyKeepBitmapsRight) {
  TempDir d;
  std::string img = d.path("a.qcow2");
  create(img, 8 << 20);
  {
    auto im = open_rw(img);
    ASSERT_TRUE(im->bitmap_add("t", 4096).is_ok());
    ASSERT_TRUE(im->bitmap_add("d", 4096, true).is_ok());
    fill(*im, 7 << 20, 1 << 20, 1);
    ASSERT_TRUE(im->resize(12 << 20, false).is_ok());
    fill(*im, 10 << 20, 4096, 2);
    Status st = im->close();
    ASSERT_TRUE(st.is_ok()) << static_cast<int>(st.code()) << " [" << st.message() << "]";
  }
  expect_clean(img);
  EXPECT_EQ(qemu_dirty(img, "t"), (std::vector<std::pair<uint64_t, uint64_t>>{{7 << 20, 1 << 20}, {10 << 20, 4096}}));
  {
    auto im = open_rw(img);
    ASSERT_TRUE(im->resize(6 << 20, true).is_ok());
    EXPECT_EQ(read_bits(*im, "t").virtual_size, 6u << 20);
    ASSERT_TRUE(im->snapshot_create("s").is_ok());
    ASSERT_TRUE(im->bitmap_clear("t").is_ok());
    ASSERT_TRUE(im->snapshot_apply("s").is_ok());  // the whole disk may have changed
    ASSERT_TRUE(im->close().is_ok());
  }
  expect_clean(img);
  EXPECT_EQ(qemu_dirty(img, "t"), (std::vector<std::pair<uint64_t, uint64_t>>{{0, 6 << 20}}));
  EXPECT_TRUE(qemu_dirty(img, "d").empty());
  EXPECT_EQ(run("qemu-io -c 'write 0 4k' " + q(img)).exit_code, 0);
  expect_clean(img);
}

// Header layouts: the extension is added and removed around a backing file name, in 512-byte
// and 4 KiB cluster images (no feature table), and a stale extension (autoclear bit cleared by
// a program without bitmap support) is ignored, then dropped on the first write.
TEST(Bitmaps, HeaderLayoutsAndStaleExtension) {
  TempDir d;
  std::string base = d.path("base.qcow2");
  create(base, 8 << 20);
  for (uint32_t cs : {512u, 4096u, 65536u}) {
    std::string img = d.path("top" + std::to_string(cs) + ".qcow2");
    create(img, 8 << 20, "base.qcow2", cs);
    {
      auto im = open_rw(img);
      ASSERT_TRUE(im->bitmap_add("a").is_ok());
      ASSERT_TRUE(im->bitmap_add("b").is_ok());
      ASSERT_TRUE(im->close().is_ok());
    }
    auto r = run("qemu-img info --output=json " + q(img));
    EXPECT_NE(r.output.find("\"backing-filename\": \"base.qcow2\""), std::string::npos) << r.output;
    EXPECT_EQ(qemu_bitmaps(img).size(), 2u) << cs;
    expect_clean(img);
    {
      auto im = open_rw(img);
      ASSERT_TRUE(im->bitmap_remove("a").is_ok());
      ASSERT_TRUE(im->bitmap_remove("b").is_ok());
      ASSERT_TRUE(im->close().is_ok());
    }
    r = run("qemu-img info " + q(img));
    EXPECT_NE(r.output.find("backing file: base.qcow2"), std::string::npos) << r.output;
    EXPECT_EQ(r.output.find("warning"), std::string::npos) << r.output;
    EXPECT_EQ(r.output.find("bitmaps"), std::string::npos) << r.output;
    expect_clean(img);
  }
  // Stale: clear autoclear bit 0 by hand (byte 95 of the header).
  std::string img = d.path("stale.qcow2");
  ASSERT_EQ(run("qemu-img create -q -f qcow2 " + q(img) + " 8M && qemu-img bitmap --add " + q(img) +
                " s && printf '\\0' | dd of=" + q(img) + " bs=1 seek=95 conv=notrunc status=none")
                .exit_code,
            0);
  {
    auto im = open_rw(img);
    EXPECT_TRUE(im->info().bitmaps.empty());
    fill(*im, 0, 4096, 1);
    ASSERT_TRUE(im->close().is_ok());
  }
  auto r = run("qemu-img info " + q(img));
  EXPECT_EQ(r.output.find("warning"), std::string::npos) << r.output;
  EXPECT_EQ(qemu_check(img).exit_code, 3) << "the stale bitmap's clusters are leaks, as with QEMU";
}

// ---- crash states ------------------------------------------------------------------------------

struct Recorded {
  std::shared_ptr<Recording> rec = std::make_shared<Recording>();
  std::vector<uint64_t> write_starts;  // op count when each tracked guest write began
  std::map<uint64_t, std::set<std::string>> published;  // op count -> bitmap names after a change
};

OpenOptions recording_options(const std::shared_ptr<Recording>& rec) {
  OpenOptions o;
  o.format = "qcow2";
  o.observer = rec.get();
  o.file_opener = [rec](const std::string& path, const FileOptions& f) -> Result<std::unique_ptr<BlockFile>> {
    auto inner = open_posix_file(path, f);
    if (!inner) return error(inner.error());
    auto r = RecordingFile::wrap(std::move(*inner), rec, path);
    if (!r) return error(r.error());
    return std::unique_ptr<BlockFile>(std::move(*r));
  };
  return o;
}

std::set<std::string> names_of(Image& im) {
  std::set<std::string> s;
  for (const auto& b : im.info().bitmaps) s.insert(b.name);
  return s;
}

// Judges every enumerated crash state of `r` for image `img`: it opens (read-only, from memory),
// keel's checker finds no corruption, its bitmap names are one of the published sets, and a
// bitmap not in use that tracked writes ("t") covers every write issued before the crash.
void judge_crash_states(const Recorded& r, const std::string& img, const std::string& dir, int qemu_samples) {
  const Recording& rec = *r.rec;
  int id = rec.find_file(img);
  ASSERT_GE(id, 0);
  std::vector<std::set<std::string>> allowed;
  for (const auto& [pos, names] : r.published) allowed.push_back(names);
  CrashCursor cursor(rec);
  proof::EnumerationConfig cfg;
  uint64_t states = 0, sampled = 0;
  const uint64_t total = cursor.last_crash_point();
  while (true) {
    for (const CrashState& s : proof::enumerate_states(cursor, rec, cfg, seed())) {
      auto bytes = cursor.materialize(s, static_cast<uint32_t>(id));
      ASSERT_TRUE(bytes.has_value());
      ++states;
      OpenOptions o;
      o.format = "qcow2";
      o.read_only = true;
      o.file_opener = [&](const std::string& path, const FileOptions& f) -> Result<std::unique_ptr<BlockFile>> {
        if (path == img) return std::unique_ptr<BlockFile>(std::make_unique<MemoryFile>(path, *bytes, true));
        return open_posix_file(path, f);
      };
      auto im = Image::open(img, o);
      ASSERT_TRUE(im.has_value()) << s.describe() << ": " << im.error().message();
      std::set<std::string> names = names_of(**im);
      EXPECT_TRUE(std::find(allowed.begin(), allowed.end(), names) != allowed.end())
          << s.describe() << ": unexpected bitmap set of " << names.size();
      for (const auto& b : (*im)->info().bitmaps) {
        if (b.name != "t" || (!b.flags.empty() && b.flags[0] == "in-use")) continue;
        BitmapData bits = read_bits(**im, "t");
        for (size_t w = 0; w < r.write_starts.size(); ++w)
          if (r.write_starts[w] < s.crash_point) {
            ASSERT_TRUE(bits.test(w)) << s.describe() << ": t is not in use but misses write " << w;
          }
      }
      MemoryFile mf(img, *bytes, true);
      auto c = check_qcow2(mf, CheckOptions{});
      ASSERT_TRUE(c.has_value()) << s.describe() << ": " << c.error().message();
      EXPECT_EQ(c->corruptions, 0u) << s.describe();
      EXPECT_EQ(c->check_errors, 0u) << s.describe();
      if (qemu_samples > 0 && states % 7 == 0 && sampled < static_cast<uint64_t>(qemu_samples)) {
        ++sampled;
        std::string path = dir + "/state.qcow2";
        std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes->data()),
                                                    static_cast<std::streamsize>(bytes->size()));
        auto qc = qemu_check(path);
        EXPECT_TRUE(qc.exit_code == 0 || qc.exit_code == 3) << s.describe() << ": " << qc.output;
        auto qi = run("qemu-img info --output=json " + q(path));
        EXPECT_EQ(qi.exit_code, 0) << s.describe() << ": " << qi.output;
      }
    }
    if (cursor.crash_point() == total) break;
    cursor.advance();
  }
  std::printf("%llu crash states judged (%llu by qemu-img too)\n", static_cast<unsigned long long>(states),
              static_cast<unsigned long long>(sampled));
  EXPECT_GT(states, 50u);
}

TEST(BitmapCrash, OperationsAroundABackingFileName) {
  TempDir d;
  std::string base = d.path("base.qcow2"), img = d.path("top.qcow2");
  create(base, 4 << 20);
  ASSERT_EQ(run("mkdir " + q(d.path("a-backing-file-name-long-enough-to-span-many-bytes"))).exit_code, 0);
  create(img, 4 << 20, "a-backing-file-name-long-enough-to-span-many-bytes/../base.qcow2");
  Recorded r;
  r.published[0] = {};
  {
    auto o = recording_options(r.rec);
    auto im = Image::open(img, o);
    ASSERT_TRUE(im.has_value()) << im.error().message();
    Image& i = **im;
    auto step = [&](const Status& st, std::set<std::string> names) {
      ASSERT_TRUE(st.is_ok()) << static_cast<int>(st.code()) << " [" << st.message() << "]";
      r.published[r.rec->op_count()] = std::move(names);
    };
    step(i.bitmap_add("a", 4096), {"a"});
    fill(i, 0, 8192, 1);
    step(i.bitmap_add("b", 0, true), {"a", "b"});
    step(i.bitmap_merge_from("b", i, "a"), {"a", "b"});
    step(i.bitmap_disable("a"), {"a", "b"});
    step(i.bitmap_remove("a"), {"b"});
    step(i.bitmap_clear("b"), {"b"});
    step(i.bitmap_remove("b"), {});
    ASSERT_TRUE(i.close().is_ok());
  }
  expect_clean(img);
  judge_crash_states(r, img, d.path(""), 25);
}

TEST(BitmapCrash, TrackedSessionNeverLeavesMissingBits) {
  TempDir d;
  std::string img = d.path("t.qcow2");
  create(img, 4 << 20);
  {
    auto im = open_rw(img);
    ASSERT_TRUE(im->bitmap_add("t", 65536).is_ok());
    ASSERT_TRUE(im->close().is_ok());
  }
  Recorded r;
  r.published[0] = {"t"};
  {
    auto o = recording_options(r.rec);
    auto im = Image::open(img, o);
    ASSERT_TRUE(im.has_value()) << im.error().message();
    // Write w lands in granule w, so bit w says whether write w was recorded.
    for (uint64_t w = 0; w < 12; ++w) {
      r.write_starts.push_back(r.rec->op_count());
      fill(**im, w * 65536 + 512 * w, 1024, static_cast<uint8_t>(w + 1));
      if (w % 4 == 3) {
        ASSERT_TRUE((*im)->flush().is_ok());
      }
    }
    ASSERT_TRUE((*im)->close().is_ok());
  }
  expect_clean(img);
  EXPECT_EQ(qemu_dirty(img, "t"), (std::vector<std::pair<uint64_t, uint64_t>>{{0, 12 * 65536}}));
  judge_crash_states(r, img, d.path(""), 25);
}

}  // namespace
}  // namespace keel::test
