// Proves Image::map_direct hands out only host ranges the engine itself would read or overwrite
// in place (checked by pread/pwrite on the returned fd against Image::read and qemu-img check),
// maps reads of holes and zero clusters to zero ranges only where the engine reads zeros (no
// backing file), refuses everything that needs the engine (allocating writes, holes over a
// backing file, shared after a snapshot, an L2 table not in the cache, read-only, tracked
// bitmaps, subclusters not allocated), and that its ticket holds off a flush until released.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "engine/engine_util.h"

namespace keel::test {
namespace {

using namespace std::chrono_literals;

std::string make_image(const TempDir& dir, bool extended_l2 = false) {
  std::string img = dir.path("d.qcow2");
  CreateOptions co;
  co.size = 16ull << 20;
  co.extended_l2 = extended_l2;
  EXPECT_TRUE(create_image(img, co).is_ok());
  return img;
}

// Reads a ticket's ranges with pread, in guest order.
std::vector<uint8_t> pread_ticket(const DirectIo& io) {
  std::vector<uint8_t> out;
  for (const DirectSegment& s : io.segments()) {
    std::vector<uint8_t> b(s.length);
    if (!s.zeros()) {
      EXPECT_EQ(::pread(s.fd, b.data(), b.size(), static_cast<off_t>(s.host_offset)),
                static_cast<ssize_t>(b.size()));
    }
    out.insert(out.end(), b.begin(), b.end());
  }
  return out;
}

TEST(Qcow2Direct, ReadsAndOverwritesOfAllocatedClustersMapToTheirHostBytes) {
  TempDir dir;
  std::string img = make_image(dir);
  auto im = open_rw(img);
  ASSERT_TRUE(im);
  auto data = pattern(256 * 1024, 7);
  ASSERT_TRUE(im->write(1 << 20, data).is_ok());

  EXPECT_FALSE(im->map_direct(0, 4096, true));         // an allocating write
  {
    auto hole = im->map_direct(0, 4096, false);        // a hole, no backing file: zeros, no I/O
    ASSERT_TRUE(hole);
    ASSERT_EQ(hole->segments().size(), 1u);
    EXPECT_TRUE(hole->segments()[0].zeros());
    auto half = im->map_direct((1 << 20) - 4096, 8192, false);  // half hole, half data
    ASSERT_TRUE(half);
    ASSERT_EQ(half->segments().size(), 2u);
    EXPECT_TRUE(half->segments()[0].zeros());
    EXPECT_FALSE(half->segments()[1].zeros());
    auto got = pread_ticket(*half);
    std::vector<uint8_t> want(4096, 0);
    want.insert(want.end(), data.begin(), data.begin() + 4096);
    EXPECT_EQ(got, want);
  }

  auto r = im->map_direct((1 << 20) + 4096, 200 * 1024, false);
  ASSERT_TRUE(r);
  EXPECT_GE(r->segments().size(), 1u);
  auto got = pread_ticket(*r);
  EXPECT_TRUE(std::equal(got.begin(), got.end(), data.begin() + 4096));
  r->release();

  // Overwrite through the ticket; the engine then reads the new bytes.
  auto w = im->map_direct((1 << 20) + 65536, 65536, true);
  ASSERT_TRUE(w);
  auto fresh = pattern(65536, 99);
  uint64_t pos = 0;
  for (const DirectSegment& s : w->segments()) {
    ASSERT_EQ(::pwrite(s.fd, fresh.data() + pos, s.length, static_cast<off_t>(s.host_offset)),
              static_cast<ssize_t>(s.length));
    pos += s.length;
  }
  w->release();
  std::vector<uint8_t> back(65536);
  ASSERT_TRUE(im->read((1 << 20) + 65536, back).is_ok());
  EXPECT_EQ(back, fresh);
  ASSERT_TRUE(im->close().is_ok());
  im.reset();  // releases the image locks
  auto chk = qemu_check(img);
  EXPECT_EQ(chk.exit_code, 0) << chk.output;
}

TEST(Qcow2Direct, SharedClustersZerosAndReadOnlyImagesTakeTheEnginePath) {
  TempDir dir;
  std::string img = make_image(dir);
  {
    auto im = open_rw(img);
    ASSERT_TRUE(im);
    ASSERT_TRUE(im->write(0, pattern(65536, 1)).is_ok());
    ASSERT_TRUE(im->write_zeroes(65536, 65536, ZeroFlags{}).is_ok());
    EXPECT_TRUE(im->map_direct(0, 4096, true));
    auto z = im->map_direct(65536, 4096, false);  // a zero cluster reads as zeros, no I/O
    ASSERT_TRUE(z);
    EXPECT_TRUE(z->segments()[0].zeros());
    z->release();
    EXPECT_FALSE(im->map_direct(65536, 4096, true));  // writing it allocates: the engine's job
    ASSERT_TRUE(im->snapshot_create("s1").is_ok());
    EXPECT_TRUE(im->map_direct(0, 4096, false));   // still readable in place
    EXPECT_FALSE(im->map_direct(0, 4096, true));   // shared with the snapshot: COW needed
    ASSERT_TRUE(im->write(0, pattern(4096, 2)).is_ok());  // the engine copies it
    EXPECT_TRUE(im->map_direct(0, 4096, true));    // the copy is ours
    ASSERT_TRUE(im->close().is_ok());
  }
  auto ro = open_ro(img);
  ASSERT_TRUE(ro);
  EXPECT_FALSE(ro->map_direct(0, 4096, false));  // its L2 table is not cached yet: a miss
  std::vector<uint8_t> one(4096);
  ASSERT_TRUE(ro->read(0, one).is_ok());          // the engine loads it
  EXPECT_TRUE(ro->map_direct(0, 4096, false));
  EXPECT_FALSE(ro->map_direct(0, 4096, true));
}

TEST(Qcow2Direct, HolesOverABackingFileTakeTheEnginePathZeroClustersDoNot) {
  TempDir dir;
  std::string base = make_image(dir);
  {
    auto b = open_rw(base);
    ASSERT_TRUE(b);
    ASSERT_TRUE(b->write(0, pattern(4 * 65536, 5)).is_ok());
    ASSERT_TRUE(b->close().is_ok());
  }
  std::string top = dir.path("t.qcow2");
  CreateOptions co;
  co.size = 16ull << 20;
  co.backing_file = base;
  co.backing_format = "qcow2";
  ASSERT_TRUE(create_image(top, co).is_ok());
  auto im = open_rw(top);
  ASSERT_TRUE(im);
  ASSERT_TRUE(im->write_zeroes(65536, 65536, ZeroFlags{}).is_ok());
  EXPECT_FALSE(im->map_direct(0, 4096, false));       // the backing file's data: the engine reads it
  EXPECT_FALSE(im->map_direct(1 << 20, 4096, false)); // an unallocated entry: the same
  auto z = im->map_direct(65536, 4096, false);        // a zero cluster hides the backing data
  ASSERT_TRUE(z);
  EXPECT_TRUE(z->segments()[0].zeros());
  z->release();
  std::vector<uint8_t> back(4096);
  ASSERT_TRUE(im->read(65536, back).is_ok());
  EXPECT_EQ(back, std::vector<uint8_t>(4096, 0));
}

TEST(Qcow2Direct, TrackedBitmapsKeepWritesOnTheEnginePath) {
  TempDir dir;
  std::string img = make_image(dir);
  auto im = open_rw(img);
  ASSERT_TRUE(im);
  ASSERT_TRUE(im->write(0, pattern(65536, 1)).is_ok());
  EXPECT_TRUE(im->map_direct(0, 4096, true));
  ASSERT_TRUE(im->bitmap_add("b0").is_ok());
  EXPECT_FALSE(im->map_direct(0, 4096, true));
  EXPECT_TRUE(im->map_direct(0, 4096, false));
}

TEST(Qcow2Direct, ExtendedL2NeedsEveryTouchedSubclusterAllocated) {
  TempDir dir;
  std::string img = make_image(dir, true);
  auto im = open_rw(img);
  ASSERT_TRUE(im);
  ASSERT_TRUE(im->write(0, pattern(4096, 1)).is_ok());  // subcluster 0 of 32 (2 KiB each)
  EXPECT_TRUE(im->map_direct(0, 4096, false));
  EXPECT_TRUE(im->map_direct(0, 4096, true));
  EXPECT_FALSE(im->map_direct(0, 8192, false));
  EXPECT_FALSE(im->map_direct(4096, 4096, true));
}

TEST(Qcow2Direct, TicketHoldsOffFreesButNotTheFlushSyncs) {
  TempDir dir;
  std::string img = make_image(dir);
  auto im = open_rw(img);
  ASSERT_TRUE(im);
  ASSERT_TRUE(im->write(0, pattern(2 * 65536, 1)).is_ok());
  ASSERT_TRUE(im->flush().is_ok());
  auto t = im->map_direct(0, 4096, true);
  ASSERT_TRUE(t);
  // Nothing to free: the flush (its syncs) goes on while the ticket is held.
  ASSERT_TRUE(im->write(4 * 65536, pattern(4096, 2)).is_ok());
  EXPECT_TRUE(im->flush().is_ok());
  // A discard leaves a cluster to free: the flush's phase 3 waits for the ticket.
  ASSERT_TRUE(im->discard(65536, 65536).is_ok());
  std::atomic<bool> flushed{false};
  std::thread f([&] {
    EXPECT_TRUE(im->flush().is_ok());
    flushed = true;
  });
  std::this_thread::sleep_for(200ms);
  EXPECT_FALSE(flushed) << "a cluster was freed while a direct ticket could still write to it";
  // A free is waiting: new tickets are refused rather than waited for.
  EXPECT_FALSE(im->map_direct(0, 4096, false));
  t->release();
  f.join();
  EXPECT_TRUE(flushed);
  EXPECT_TRUE(im->map_direct(0, 4096, false));
}

TEST(Qcow2Direct, RawImagesMapOneToOne) {
  TempDir dir;
  std::string img = dir.path("r.raw");
  CreateOptions co;
  co.format = "raw";
  co.size = 1 << 20;
  ASSERT_TRUE(create_image(img, co).is_ok());
  auto im = open_rw(img, "raw");
  ASSERT_TRUE(im);
  auto t = im->map_direct(8192, 4096, true);
  ASSERT_TRUE(t);
  ASSERT_EQ(t->segments().size(), 1u);
  EXPECT_EQ(t->segments()[0].host_offset, 8192u);
  EXPECT_FALSE(im->map_direct(1 << 20, 4096, false));  // past the end
}

}  // namespace
}  // namespace keel::test
