// Proves the parts of the engine core behave as docs/architecture.md says: the metadata cache
// pins what a caller holds, counts dirty entries and their sectors, and stays in its budget; a
// multi-cluster allocating write is one allocation and one data write; only the changed sectors
// of a table are written back; cache=none grows the file ahead and close() gives it back. QEMU's
// tools are the oracle for the images.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <atomic>
#include <condition_variable>
#include <fstream>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <thread>

#include "engine/cache_options.h"
#include "engine/engine_util.h"
#include "engine/qcow2_image.h"
#include "engine/table_cache.h"
#include "keel/events.h"

namespace keel::test {
namespace {

std::string q(const std::string& s) { return "'" + s + "'"; }

struct Counter : EventObserver {
  std::mutex mu;
  std::map<Event, int> n;
  void on_event(Event e) override {
    std::lock_guard<std::mutex> g(mu);
    ++n[e];
  }
  int operator[](Event e) {
    std::lock_guard<std::mutex> g(mu);
    return n[e];
  }
  void reset() {
    std::lock_guard<std::mutex> g(mu);
    n.clear();
  }
};

struct Table : CachedTableState {
  using Payload = std::vector<uint64_t>;
  Payload words;
  Payload& payload() { return words; }
};

TEST(TableCache, PinnedEntriesAreNeverEvicted) {
  TableCache<Table> c(65536, 4 * 65536);
  auto held = c.insert(0, std::make_shared<Table>());
  for (uint64_t k = 1; k < 50; ++k) c.insert(k * 65536, std::make_shared<Table>());
  EXPECT_TRUE(c.contains(0)) << "an entry whose handle is held was evicted";
  EXPECT_LE(c.cached_bytes(), 5u * 65536) << "the budget (plus the pinned entry) was not kept";
  held.reset();
  for (uint64_t k = 50; k < 60; ++k) c.insert(k * 65536, std::make_shared<Table>());
  EXPECT_FALSE(c.contains(0)) << "an unpinned, least recently used clean entry stayed";
}

TEST(TableCache, DirtyEntriesStayAndAreCountedInTheBudget) {
  TableCache<Table> c(65536, 4 * 65536);
  for (uint64_t k = 0; k < 8; ++k) {
    auto t = c.insert(k, std::make_shared<Table>());
    c.mark_dirty(*t, 8 * k, 8);
  }
  EXPECT_EQ(c.dirty_bytes(), 8u * 65536);
  for (uint64_t k = 0; k < 8; ++k) EXPECT_TRUE(c.contains(k)) << "dirty entry " << k << " was evicted";
  auto t = c.find(3);
  c.mark_clean(*t);
  EXPECT_EQ(c.dirty_bytes(), 7u * 65536);
}

TEST(TableCache, DirtyRunsCoverExactlyTheChangedSectors) {
  TableCache<Table> c(65536, 1 << 20);
  auto t = c.insert(0, std::make_shared<Table>());
  c.mark_dirty(*t, 8, 8);             // sector 0
  c.mark_dirty(*t, 512 * 5 + 500, 16);  // sectors 5 and 6
  c.mark_dirty(*t, 65536 - 8, 8);     // the last sector
  auto runs = TableCache<Table>::dirty_runs(*t, 65536);
  ASSERT_EQ(runs.size(), 3u);
  using Run = std::pair<uint64_t, uint64_t>;
  EXPECT_EQ(runs[0], Run(0, 512));
  EXPECT_EQ(runs[1], Run(2560, 3584));
  EXPECT_EQ(runs[2], Run(65024, 65536));
}

TEST(EngineCore, SequentialMegabyteWriteIsOneAllocationAndOneDataWrite) {
  TempDir d;
  const std::string img = d.path("a.qcow2");
  ASSERT_EQ(run("qemu-img create -q -f qcow2 " + q(img) + " 64M").exit_code, 0);
  Counter ev;
  OpenOptions o;
  o.observer = &ev;
  auto im = Image::open(img, o);
  ASSERT_TRUE(im) << im.error().message();
  auto data = pattern(1 << 20, 7);
  ASSERT_TRUE((*im)->write(4 << 20, data, false).is_ok());
  // The L2 table is one allocation, the 16 data clusters another.
  EXPECT_EQ(ev[Event::kClusterAlloc], 2);
  EXPECT_EQ(ev[Event::kDataWrite], 1);
  // Partial head and tail: the whole clusters in between are still one run.
  ev.reset();
  auto data2 = pattern((1 << 20) + 8192, 9);
  ASSERT_TRUE((*im)->write((8 << 20) + 4096, data2, false).is_ok());
  EXPECT_EQ(ev[Event::kClusterAlloc], 3) << "head cluster, run of 15, tail cluster";
  ASSERT_TRUE((*im)->close().is_ok());
  im->reset();
  ASSERT_EQ(qemu_check(img).exit_code, 0) << qemu_check(img).output;
  const std::string raw = d.path("a.raw");
  ASSERT_EQ(run("qemu-img convert -O raw " + q(img) + " " + q(raw)).exit_code, 0);
  auto got = open_ro(raw);
  std::vector<uint8_t> back(data.size());
  ASSERT_TRUE(got->read(4 << 20, back).is_ok());
  EXPECT_EQ(back, data);
  back.resize(data2.size());
  ASSERT_TRUE(got->read((8 << 20) + 4096, back).is_ok());
  EXPECT_EQ(back, data2);
  std::vector<uint8_t> z(4096);
  ASSERT_TRUE(got->read(8 << 20, z).is_ok());
  EXPECT_EQ(z, std::vector<uint8_t>(4096, 0)) << "the head cluster's unwritten part is not zero";
}

TEST(EngineCore, OverwriteAfterFlushWritesOnlyChangedSectorsOfTheTable) {
  TempDir d;
  const std::string img = d.path("s.qcow2");
  ASSERT_EQ(run("qemu-img create -q -f qcow2 " + q(img) + " 64M").exit_code, 0);
  // A recording file would be heavier; the file's allocation after an L2 update is the same
  // whichever way, so count bytes through a wrapper around the real file.
  struct Counting : BlockFile {
    std::unique_ptr<BlockFile> f;
    std::atomic<uint64_t>* bytes;
    Status read_at(uint64_t o, std::span<uint8_t> b) override { return f->read_at(o, b); }
    Status write_at(uint64_t o, std::span<const uint8_t> b) override {
      *bytes += b.size();
      return f->write_at(o, b);
    }
    Status sync() override { return f->sync(); }
    Status truncate(uint64_t s) override { return f->truncate(s); }
    Status allocate(uint64_t o, uint64_t l) override { return f->allocate(o, l); }
    Status punch(uint64_t o, uint64_t l) override { return f->punch(o, l); }
    Result<uint64_t> size() override { return f->size(); }
    uint64_t allocated_bytes() override { return f->allocated_bytes(); }
    Result<std::pair<bool, uint64_t>> probe_data(uint64_t o, uint64_t m) override { return f->probe_data(o, m); }
    uint32_t alignment() const override { return f->alignment(); }
    std::string name() const override { return f->name(); }
    Status lock(unsigned p, unsigned s) override { return f->lock(p, s); }
  };
  std::atomic<uint64_t> written{0};
  OpenOptions o;
  o.file_opener = [&](const std::string& path, const FileOptions& fo) -> Result<std::unique_ptr<BlockFile>> {
    auto f = open_posix_file(path, fo);
    if (!f) return f;
    auto c = std::make_unique<Counting>();
    c->f = std::move(*f);
    c->bytes = &written;
    return std::unique_ptr<BlockFile>(std::move(c));
  };
  auto im = Image::open(img, o);
  ASSERT_TRUE(im) << im.error().message();
  auto w = pattern(4096, 3);
  ASSERT_TRUE((*im)->write(0, w, false).is_ok());
  ASSERT_TRUE((*im)->flush().is_ok());
  written = 0;
  ASSERT_TRUE((*im)->write(1 << 20, w, false).is_ok());  // a new cluster in the same L2 table
  ASSERT_TRUE((*im)->flush().is_ok());
  // data (one cluster) + one refcount-block sector + one L2 sector, not two whole clusters.
  EXPECT_LE(written.load(), 65536u + 2 * 512) << "a flush rewrote whole tables";
  ASSERT_TRUE((*im)->close().is_ok());
  im->reset();
  ASSERT_EQ(qemu_check(img).exit_code, 0) << qemu_check(img).output;
  ASSERT_EQ(run("qemu-io -r -c 'read -P 3 0 4k' -c 'read -P 3 1M 4k' " + q(img) + " | grep -c 'read 4096'").output, "2\n");
}

TEST(EngineCore, CacheNoneGrowsAheadAndCloseGivesItBack) {
  TempDir d;
  const std::string img = d.path("g.qcow2");
  ASSERT_EQ(run("qemu-img create -q -f qcow2 " + q(img) + " 256M").exit_code, 0);
  OpenOptions o;
  o.cache = CacheMode::kNone;
  auto im = Image::open(img, o);
  ASSERT_TRUE(im) << im.error().message();
  std::vector<uint8_t> w(4096, 0x5a);
  for (uint64_t i = 0; i < 64; ++i) ASSERT_TRUE((*im)->write(i * 65536 + 4096, w, false).is_ok());
  ASSERT_TRUE((*im)->flush().is_ok());
  struct stat st {};
  ASSERT_EQ(stat(img.c_str(), &st), 0);
  const auto grown = static_cast<uint64_t>(st.st_size);
  ASSERT_TRUE((*im)->close().is_ok());
  im->reset();
  ASSERT_EQ(stat(img.c_str(), &st), 0);
  EXPECT_GT(grown, static_cast<uint64_t>(st.st_size)) << "the file was not grown ahead";
  // Header, refcount table and block, L1, L2 table and 64 data clusters.
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), (3 + 1 + 1 + 64) * 65536ull) << "close did not trim";
  ASSERT_EQ(qemu_check(img).exit_code, 0) << qemu_check(img).output;
  auto r = run("qemu-io -r -c 'read -P 0 0 4k' -c 'read -P 0x5a 4k 4k' -c 'read -P 0 8k 56k' -c 'read -P 0x5a 4132864 4k' " +
               q(img));
  EXPECT_EQ(r.output.find("Pattern verification failed"), std::string::npos) << r.output;
}

TEST(EngineCore, ConcurrentAllocatingWritersAgreeWithQemu) {
  TempDir d;
  const std::string img = d.path("c.qcow2");
  ASSERT_EQ(run("qemu-img create -q -f qcow2 -o cluster_size=4k " + q(img) + " 64M").exit_code, 0);
  OpenOptions o;
  o.l2_cache_size = 16 * 4096;  // a small cache: misses, eviction and prefetch under load
  auto im = Image::open(img, o);
  ASSERT_TRUE(im) << im.error().message();
  std::vector<std::thread> th;
  std::atomic<int> failures{0};
  for (int t = 0; t < 8; ++t)
    th.emplace_back([&, t] {
      std::vector<uint8_t> b(3 * 4096, static_cast<uint8_t>(0x10 + t));
      for (uint64_t i = 0; i < 200; ++i) {
        const uint64_t off = ((i * 8 + t) * 7919 % 4096) * 16384;  // spread over many L2 tables
        if (!(*im)->write(off, b, false).is_ok()) ++failures;
        std::vector<uint8_t> r(b.size());
        if (!(*im)->read(off, r).is_ok() || r != b) ++failures;
        if (i % 50 == 0 && !(*im)->flush().is_ok()) ++failures;
      }
    });
  for (auto& x : th) x.join();
  EXPECT_EQ(failures.load(), 0);
  ASSERT_TRUE((*im)->close().is_ok());
  im->reset();
  auto c = qemu_check(img);
  EXPECT_EQ(c.exit_code, 0) << c.output;
}

// A file that passes everything to `f`; the two below change only its sync.
struct ForwardingFile : BlockFile {
  std::unique_ptr<BlockFile> f;
  Status read_at(uint64_t o, std::span<uint8_t> b) override { return f->read_at(o, b); }
  Status write_at(uint64_t o, std::span<const uint8_t> b) override { return f->write_at(o, b); }
  Status truncate(uint64_t s) override { return f->truncate(s); }
  Status allocate(uint64_t o, uint64_t l) override { return f->allocate(o, l); }
  Status punch(uint64_t o, uint64_t l) override { return f->punch(o, l); }
  Result<uint64_t> size() override { return f->size(); }
  uint32_t alignment() const override { return f->alignment(); }
  std::string name() const override { return f->name(); }
};

// A file whose sync() waits until the test lets it go: the flush is held inside its sync.
struct GatedSyncFile : ForwardingFile {
  std::mutex mu;
  std::condition_variable cv;
  bool hold = false, in_sync = false;
  int pass = 0;  // syncs that go through before the held one
  Status sync() override {
    std::unique_lock<std::mutex> g(mu);
    if (hold && pass > 0) {
      --pass;
      g.unlock();
      return f->sync();
    }
    in_sync = true;
    cv.notify_all();
    cv.wait(g, [&] { return !hold; });
    in_sync = false;
    return f->sync();
  }
};

// Opens img with its file wrapped in a GatedSyncFile (*gated points at it).
Result<std::unique_ptr<Image>> open_gated(const std::string& img, GatedSyncFile** gated) {
  OpenOptions o;
  o.file_opener = [gated](const std::string& path, const FileOptions& fo) -> Result<std::unique_ptr<BlockFile>> {
    auto f = open_posix_file(path, fo);
    if (!f) return f;
    auto g = std::make_unique<GatedSyncFile>();
    g->f = std::move(*f);
    *gated = g.get();
    return std::unique_ptr<BlockFile>(std::move(g));
  };
  return Image::open(img, o);
}

// Calls `on_sync(n)` after the n-th sync of the file (n from 1) has returned.
struct SyncHookFile : ForwardingFile {
  std::function<void(int)> on_sync;
  int syncs = 0;
  Status sync() override {
    Status s = f->sync();
    if (on_sync) on_sync(++syncs);
    return s;
  }
};

// Growing an image writes a new L1 table from the one in memory. An allocating writer that runs
// while the resize's own flush syncs links a new L2 table; that link must not reach the file
// before the table does. Here the new table takes the cluster of a table a shrink freed (its old
// entries still on disk): the file as it stands once the resize has synced the new L1 and the
// size must pass qemu-img check (leaks allowed), and every write be readable after close.
TEST(EngineCore, ResizeGrowNeverLinksATableAWriterAddedUnwritten) {
  TempDir d;
  const std::string img = d.path("r.qcow2");
  ASSERT_EQ(run("qemu-img create -q -f qcow2 -o cluster_size=512 " + q(img) + " 1M").exit_code, 0);
  SyncHookFile* hook = nullptr;
  OpenOptions o;
  o.file_opener = [&hook](const std::string& path, const FileOptions& fo) -> Result<std::unique_ptr<BlockFile>> {
    auto f = open_posix_file(path, fo);
    if (!f) return f;
    auto h = std::make_unique<SyncHookFile>();
    h->f = std::move(*f);
    hook = h.get();
    return std::unique_ptr<BlockFile>(std::move(h));
  };
  auto im = Image::open(img, o);
  ASSERT_TRUE(im) << im.error().message();
  std::vector<uint8_t> old(2048, 0xa5), b(512, 0xbb);
  // Four clusters in the L2 table of [960K, 992K), then one at 0 (so they are not the file's
  // tail), then a shrink that frees them and their table.
  ASSERT_TRUE((*im)->write((960 << 10) + (16 << 10), old, false).is_ok());
  ASSERT_TRUE((*im)->write(0, b, false).is_ok());
  ASSERT_TRUE((*im)->flush().is_ok());
  ASSERT_TRUE((*im)->resize(512 << 10, true).is_ok());
  std::future<Status> writing;
  std::vector<uint8_t> after_l1;  // the file once the new L1 table and the size are synced
  hook->syncs = 0;
  hook->on_sync = [&](int n) {
    if (n == 1) {  // the resize's flush: a writer allocates a new L2 table and a data cluster
      writing = std::async(std::launch::async, [&] { return (*im)->write(256 << 10, b, false); });
      (void)writing.wait_for(std::chrono::milliseconds(500));  // it may have to wait for the resize
    } else if (n == 4) {
      auto size = hook->f->size();
      if (!size) return;
      after_l1.resize(*size);
      if (!hook->f->read_at(0, after_l1).is_ok()) after_l1.clear();
    }
  };
  ASSERT_TRUE((*im)->resize(4 << 20, false).is_ok());
  ASSERT_TRUE(writing.valid());
  ASSERT_TRUE(writing.get().is_ok());
  hook->on_sync = nullptr;
  ASSERT_FALSE(after_l1.empty());
  const std::string crashed = d.path("crashed.qcow2");
  {
    std::ofstream f(crashed, std::ios::binary);
    f.write(reinterpret_cast<const char*>(after_l1.data()), static_cast<std::streamsize>(after_l1.size()));
  }
  auto cc = qemu_check(crashed);
  EXPECT_TRUE(cc.exit_code == 0 || cc.exit_code == 3) << cc.output;
  ASSERT_TRUE((*im)->close().is_ok());
  im->reset();
  EXPECT_EQ(qemu_check(img).exit_code, 0);
  auto r = run("qemu-io -r -c 'read -P 0xbb 0 512' -c 'read -P 0xbb 256k 512' -c 'read -P 0 960k 64k' " + q(img));
  EXPECT_EQ(r.output.find("Pattern verification failed"), std::string::npos) << r.output;
}

TEST(EngineCore, OverwritesAndReadsFlowWhileAFlushSyncs) {
  TempDir d;
  const std::string img = d.path("o.qcow2");
  ASSERT_EQ(run("qemu-img create -q -f qcow2 " + q(img) + " 16M").exit_code, 0);
  GatedSyncFile* gated = nullptr;
  auto im = open_gated(img, &gated);
  ASSERT_TRUE(im) << im.error().message();
  std::vector<uint8_t> a(65536, 0xaa), b(4096, 0xbb);
  ASSERT_TRUE((*im)->write(0, a, false).is_ok());
  ASSERT_TRUE((*im)->flush().is_ok());
  ASSERT_TRUE((*im)->write(1 << 20, b, false).is_ok());  // an allocating write: the next flush syncs
  {
    std::lock_guard<std::mutex> g(gated->mu);
    gated->hold = true;
  }
  auto flushing = std::async(std::launch::async, [&] { return (*im)->flush(); });
  {
    std::unique_lock<std::mutex> g(gated->mu);
    ASSERT_TRUE(gated->cv.wait_for(g, std::chrono::seconds(10), [&] { return gated->in_sync; }));
  }
  auto overwrite = std::async(std::launch::async, [&] {
    Status s = (*im)->write(4096, b, false);
    std::vector<uint8_t> r(4096);
    if (s.is_ok()) s = (*im)->read(4096, r);
    return s.is_ok() && r == b;
  });
  const bool flowed = overwrite.wait_for(std::chrono::seconds(10)) == std::future_status::ready;
  {
    std::lock_guard<std::mutex> g(gated->mu);
    gated->hold = false;
  }
  gated->cv.notify_all();
  EXPECT_TRUE(flowed) << "an overwrite of an owned cluster waited for the flush's sync";
  EXPECT_TRUE(overwrite.get());
  EXPECT_TRUE(flushing.get().is_ok());
  ASSERT_TRUE((*im)->close().is_ok());
  im->reset();
  EXPECT_EQ(qemu_check(img).exit_code, 0);
  auto r = run("qemu-io -r -c 'read -P 0xaa 0 4k' -c 'read -P 0xbb 4k 4k' -c 'read -P 0xaa 8k 56k' -c 'read -P 0xbb 1M 4k' " + q(img));
  EXPECT_EQ(r.output.find("Pattern verification failed"), std::string::npos) << r.output;
}

// The guest flush's last sync (the links) lets allocating writes in: a write that needs a new
// data cluster and a new L2 table completes while that sync is held, the flush then succeeds,
// and the file as it stands right after the flush (a crash there) and after close are
// consistent for qemu-img check, with every flushed and every completed write readable.
TEST(EngineCore, AllocatingWritesFlowWhileAFlushSyncsItsLinks) {
  TempDir d;
  const std::string img = d.path("l.qcow2");
  ASSERT_EQ(run("qemu-img create -q -f qcow2 " + q(img) + " 4G").exit_code, 0);
  GatedSyncFile* gated = nullptr;
  auto im = open_gated(img, &gated);
  ASSERT_TRUE(im) << im.error().message();
  std::vector<uint8_t> a(65536, 0xaa), b(4096, 0xbb), c(8192, 0xcc);
  ASSERT_TRUE((*im)->write(0, a, false).is_ok());
  ASSERT_TRUE((*im)->flush().is_ok());
  ASSERT_TRUE((*im)->write(1 << 20, b, false).is_ok());  // new cluster, linked in the same L2 table
  {
    std::lock_guard<std::mutex> g(gated->mu);
    gated->hold = true;
    gated->pass = 1;  // phase 1's sync goes through; phase 2's (the links) is held
  }
  auto flushing = std::async(std::launch::async, [&] { return (*im)->flush(); });
  {
    std::unique_lock<std::mutex> g(gated->mu);
    ASSERT_TRUE(gated->cv.wait_for(g, std::chrono::seconds(10), [&] { return gated->in_sync; }));
  }
  auto allocating = std::async(std::launch::async, [&] {
    Status s = (*im)->write(3ull << 30, c, false);  // a new L2 table and a new data cluster
    if (s.is_ok()) s = (*im)->write(2 << 20, b, false);  // a new cluster in the linked table
    std::vector<uint8_t> r(8192);
    if (s.is_ok()) s = (*im)->read(3ull << 30, r);
    return s.is_ok() && r == c;
  });
  const bool flowed = allocating.wait_for(std::chrono::seconds(10)) == std::future_status::ready;
  {
    std::lock_guard<std::mutex> g(gated->mu);
    gated->hold = false;
  }
  gated->cv.notify_all();
  EXPECT_TRUE(flowed) << "an allocating write waited for the flush's last sync";
  EXPECT_TRUE(allocating.get());
  ASSERT_TRUE(flushing.get().is_ok());
  // A crash right after the flush: the file as it stands must be consistent (leaks allowed).
  const std::string crashed = d.path("crashed.qcow2");
  ASSERT_EQ(run("cp " + q(img) + " " + q(crashed)).exit_code, 0);
  auto cc = qemu_check(crashed);
  EXPECT_TRUE(cc.exit_code == 0 || cc.exit_code == 3) << cc.output;
  auto rc = run("qemu-io -r -c 'read -P 0xaa 0 64k' -c 'read -P 0xbb 1M 4k' " + q(crashed));
  EXPECT_EQ(rc.output.find("Pattern verification failed"), std::string::npos) << rc.output;
  ASSERT_TRUE((*im)->close().is_ok());
  im->reset();
  EXPECT_EQ(qemu_check(img).exit_code, 0);
  auto r = run("qemu-io -r -c 'read -P 0xaa 0 64k' -c 'read -P 0xbb 1M 4k' -c 'read -P 0xbb 2M 4k' "
               "-c 'read -P 0xcc 3G 8k' " + q(img));
  EXPECT_EQ(r.output.find("Pattern verification failed"), std::string::npos) << r.output;
}

// The guest flush's first sync (guest data, refcounts, new tables) lets allocating writes in
// too: while it is held, writes that need a new data cluster in a table this flush links, and a
// new L2 table, complete. The flush links only what was there at its cut: the file as it
// stands while its first sync is held, and right after the flush, pass qemu-img check with every
// flushed write readable, and a write made during the sync is linked by the next flush.
TEST(EngineCore, AllocatingWritesFlowWhileAFlushSyncsData) {
  TempDir d;
  const std::string img = d.path("s.qcow2");
  ASSERT_EQ(run("qemu-img create -q -f qcow2 " + q(img) + " 4G").exit_code, 0);
  GatedSyncFile* gated = nullptr;
  auto im = open_gated(img, &gated);
  ASSERT_TRUE(im) << im.error().message();
  std::vector<uint8_t> a(65536, 0xaa), b(4096, 0xbb), c(8192, 0xcc), e(4096, 0xee);
  ASSERT_TRUE((*im)->write(0, a, false).is_ok());
  ASSERT_TRUE((*im)->flush().is_ok());
  ASSERT_TRUE((*im)->write(1 << 20, b, false).is_ok());  // a new cluster, linked by the next flush
  ASSERT_TRUE((*im)->write(2ull << 30, b, false).is_ok());  // a new table, linked by the next flush
  {
    std::lock_guard<std::mutex> g(gated->mu);
    gated->hold = true;
    gated->pass = 0;  // the first sync (phase 1) is held
  }
  auto flushing = std::async(std::launch::async, [&] { return (*im)->flush(); });
  {
    std::unique_lock<std::mutex> g(gated->mu);
    ASSERT_TRUE(gated->cv.wait_for(g, std::chrono::seconds(10), [&] { return gated->in_sync; }));
  }
  auto allocating = std::async(std::launch::async, [&] {
    Status s = (*im)->write(3ull << 30, c, false);  // a new L2 table and a new data cluster
    if (s.is_ok()) s = (*im)->write(2 << 20, e, false);  // a new cluster in the table the flush links
    if (s.is_ok()) s = (*im)->write((2ull << 30) + (1 << 20), e, false);  // in the flush's new table
    std::vector<uint8_t> r(8192);
    if (s.is_ok()) s = (*im)->read(3ull << 30, r);
    return s.is_ok() && r == c;
  });
  const bool flowed = allocating.wait_for(std::chrono::seconds(10)) == std::future_status::ready;
  // A crash inside the first sync: what the file holds is consistent (leaks allowed), and the
  // writes flushed before are intact.
  const std::string during = d.path("during.qcow2");
  ASSERT_EQ(run("cp " + q(img) + " " + q(during)).exit_code, 0);
  {
    std::lock_guard<std::mutex> g(gated->mu);
    gated->hold = false;
  }
  gated->cv.notify_all();
  EXPECT_TRUE(flowed) << "an allocating write waited for the flush's first sync";
  EXPECT_TRUE(allocating.get());
  ASSERT_TRUE(flushing.get().is_ok());
  auto cd = qemu_check(during);
  EXPECT_TRUE(cd.exit_code == 0 || cd.exit_code == 3) << cd.output;
  auto rd = run("qemu-io -r -c 'read -P 0xaa 0 64k' " + q(during));
  EXPECT_EQ(rd.output.find("Pattern verification failed"), std::string::npos) << rd.output;
  // A crash right after the flush: its cut is linked; what came during its sync may be.
  const std::string after = d.path("after.qcow2");
  ASSERT_EQ(run("cp " + q(img) + " " + q(after)).exit_code, 0);
  auto ca = qemu_check(after);
  EXPECT_TRUE(ca.exit_code == 0 || ca.exit_code == 3) << ca.output;
  auto ra = run("qemu-io -r -c 'read -P 0xaa 0 64k' -c 'read -P 0xbb 1M 4k' -c 'read -P 0xbb 2G 4k' " + q(after));
  EXPECT_EQ(ra.output.find("Pattern verification failed"), std::string::npos) << ra.output;
  // ... and the writes made during its sync are not linked by it (the next flush links them).
  auto rn = run("qemu-io -r -c 'read -P 0 2M 4k' -c 'read -P 0 2049M 4k' -c 'read -P 0 3G 8k' " + q(after));
  EXPECT_EQ(rn.output.find("Pattern verification failed"), std::string::npos) << rn.output;
  ASSERT_TRUE((*im)->flush().is_ok());
  ASSERT_TRUE((*im)->close().is_ok());
  im->reset();
  auto cc = qemu_check(img);
  EXPECT_EQ(cc.exit_code, 0) << cc.output;
  auto r = run("qemu-io -r -c 'read -P 0xaa 0 64k' -c 'read -P 0xbb 1M 4k' -c 'read -P 0xee 2M 4k' "
               "-c 'read -P 0xbb 2G 4k' -c 'read -P 0xee 2049M 4k' -c 'read -P 0xcc 3G 8k' " + q(img));
  EXPECT_EQ(r.output.find("Pattern verification failed"), std::string::npos) << r.output;
}

// QEMU's cache options: the sizes QEMU's read_cache_sizes() would pick and its messages.
TEST(CacheOptions, SizesAndErrorsAsQemu) {
  using Opts = std::vector<std::pair<std::string, std::string>>;
  const CacheDefaults d{32ull << 20, 4ull << 20, 600};
  const uint64_t cs = 65536, disk = 1ull << 30;  // 1 GiB: 16384 clusters, 128 KiB of L2 entries
  auto cfg = [&](const Opts& o) { return read_cache_options(o, cs, disk, 8, d); };
  auto c = cfg({});
  ASSERT_TRUE(c);
  EXPECT_EQ(c->l2_bytes, 128u << 10);  // capped at what covers the disk
  EXPECT_EQ(c->refcount_bytes, 4u << 20);
  EXPECT_EQ(c->l2_entry_bytes, cs);
  EXPECT_EQ(c->clean_interval_s, 600u);
  c = cfg({{"cache-size", "1M"}});  // the L2 cache gets what covers the disk, refcounts the rest
  ASSERT_TRUE(c);
  EXPECT_EQ(c->l2_bytes, 128u << 10);
  EXPECT_EQ(c->refcount_bytes, (1u << 20) - (128u << 10));
  c = cfg({{"cache-size", "256k"}});  // too small for both: refcounts get their minimum first
  ASSERT_TRUE(c);
  EXPECT_EQ(c->refcount_bytes, 4 * cs);
  EXPECT_EQ(c->l2_bytes, 2 * cs);  // 0 left, raised to QEMU's minimum of two entries
  c = cfg({{"l2-cache-size", "128k"}, {"l2-cache-size", "96k"}, {"cache-clean-interval", "0"}});
  ASSERT_TRUE(c);
  EXPECT_EQ(c->l2_bytes, 2 * cs);  // the last one wins, raised to two whole tables
  EXPECT_EQ(c->l2_entry_bytes, 4096u);  // the cache does not cover the disk: 4 KiB entries
  EXPECT_EQ(c->clean_interval_s, 0u);
  auto err = [&](const Opts& o) { auto r = cfg(o); return r ? std::string("ok") : r.error().message(); };
  EXPECT_EQ(err({{"cache-size", "1M"}, {"l2-cache-size", "2M"}}), "l2-cache-size may not exceed cache-size");
  EXPECT_EQ(err({{"cache-size", "1M"}, {"refcount-cache-size", "2M"}}), "refcount-cache-size may not exceed cache-size");
  EXPECT_EQ(err({{"cache-size", "1M"}, {"l2-cache-size", "512k"}, {"refcount-cache-size", "512k"}}),
            "cache-size, l2-cache-size and refcount-cache-size may not be set at the same time");
  EXPECT_EQ(err({{"l2-cache-entry-size", "1000"}}),
            "L2 cache entry size must be a power of two between 512 and the cluster size (65536)");
  EXPECT_EQ(err({{"cache-clean-interval", "-1"}}), "Cache clean interval too big");
  EXPECT_EQ(err({{"cache-clean-interval", "x"}}), "Parameter 'cache-clean-interval' expects a number");
  EXPECT_EQ(err({{"l2-cache-size", "abc"}}).rfind("Parameter 'l2-cache-size' expects a non-negative number below 2^64", 0), 0u);
}

TEST(TableCache, DropUnusedKeepsWhatWasUsedSinceTheLastCleanAndWhatIsHeldOrDirty) {
  TableCache<Table> c(65536, 64 * 65536);
  for (uint64_t k = 0; k < 4; ++k) c.insert(k, std::make_shared<Table>());
  c.drop_unused();  // all four were used after the (initial) mark: kept
  EXPECT_EQ(c.cached_bytes(), 4 * 65536u);
  auto held = c.find(0);
  c.mark_dirty(*c.find(1), 0, 8);
  (void)c.find(2);  // used since the last clean
  c.drop_unused();
  EXPECT_TRUE(c.contains(0));   // held
  EXPECT_TRUE(c.contains(1));   // dirty
  EXPECT_TRUE(c.contains(2));   // used
  EXPECT_FALSE(c.contains(3));  // idle for an interval
  held.reset();
  c.drop_unused();
  EXPECT_FALSE(c.contains(0));
  EXPECT_FALSE(c.contains(2));
  EXPECT_TRUE(c.contains(1));
}

// cache-clean-interval=1 with tiny caches: the cleaner thread runs beside writers, readers and
// flushes (TSan watches it), the data and image stay right, and close does not wait for the
// interval.
TEST(EngineCore, CacheCleanerRunsBesideGuestIo) {
  TempDir d;
  const std::string img = d.path("c.qcow2");
  ASSERT_EQ(run("qemu-img create -q -f qcow2 -o cluster_size=4k " + q(img) + " 64M").exit_code, 0);
  OpenOptions o;
  o.qcow2_options = {{"l2-cache-size", "16k"}, {"refcount-cache-size", "16k"}, {"cache-clean-interval", "1"}};
  auto im = Image::open(img, o);
  ASSERT_TRUE(im) << im.error().message();
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(2500);
  std::vector<std::thread> ts;
  std::atomic<bool> ok{true};
  for (int t = 0; t < 3; ++t)
    ts.emplace_back([&, t] {
      std::vector<uint8_t> w(4096, uint8_t(0x40 + t)), r(4096);
      for (uint64_t i = 0; std::chrono::steady_clock::now() < until; ++i) {
        const uint64_t off = ((i * 7 + t) % 4096) * 16384 + t * 4096;  // spread over many L2 tables
        if (!(*im)->write(off, w, false).is_ok() || !(*im)->read(off, r).is_ok() || r != w) ok = false;
        if (i % 64 == 0 && !(*im)->flush().is_ok()) ok = false;
        if (i % 16 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    });
  for (auto& t : ts) t.join();
  EXPECT_TRUE(ok.load());
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE((*im)->close().is_ok());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(900));
  im->reset();
  EXPECT_EQ(qemu_check(img).exit_code, 0);
}

}  // namespace
}  // namespace keel::test
