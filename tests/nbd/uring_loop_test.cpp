// Proves the io_uring event loop serves a real qcow2 file correctly on both of its paths: reads
// and overwrites of allocated clusters go by direct I/O (counted), allocating writes, flushes,
// trims and zeroes by the worker pool, many of them in flight at once from several clients, with
// cache=writeback and cache=none (O_DIRECT); the image then reads back as the expected model
// through libkeel and passes qemu-img check. Runs under TSan (label threads).
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <future>
#include <random>
#include <map>
#include <set>
#include <thread>

#include "nbd/server.h"
#include "nbd/socket.h"
#include "nbd/test_client.h"
#include "nbd/uring_loop.h"

namespace keel::nbd {
namespace {

using test::TestClient;
using Bytes = std::vector<uint8_t>;

constexpr uint64_t kSize = 32ull << 20;
constexpr uint32_t kBlock = 4096;

Bytes block_of(uint64_t value) {
  Bytes b(kBlock);
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<uint8_t>(value * 131 + i * 7);
  return b;
}

class uring_loop : public ::testing::TestWithParam<CacheMode> {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/keel-uring-test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    img_ = dir_ + "/a.qcow2";
    sock_ = dir_ + "/s.sock";
    CreateOptions co;
    co.size = kSize;
    ASSERT_TRUE(create_image(img_, co).is_ok());
    OpenOptions oo;
    oo.cache = GetParam();
    auto im = Image::open(img_, oo);
    ASSERT_TRUE(im) << im.error().message();
    image_ = std::move(*im);
    ServerConfig cfg;
    cfg.persistent = true;
    cfg.max_connections = 4;
    cfg.worker_threads = 4;
    cfg.connection.export_cfg.size = kSize;
    cfg.connection.io_uring = true;
    cfg.connection.policy.flushes = flushes_;
    server_ = std::make_unique<Server>(*image_, cfg);
    auto fd = listen_unix(sock_);
    ASSERT_TRUE(fd);
    server_->add_listener(*fd);
    done_ = std::async(std::launch::async, [this] { server_->run(); });
  }
  void TearDown() override {
    if (server_) {
      server_->stop();
      done_.wait();
      server_.reset();
    }
    if (image_) {
      EXPECT_TRUE(image_->close().is_ok());
    }
    image_.reset();
    EXPECT_EQ(std::system(("rm -rf " + dir_).c_str()), 0);
  }
  std::unique_ptr<TestClient> client() {
    auto c = std::make_unique<TestClient>(test::connect_unix(sock_));
    EXPECT_TRUE(c->handshake(true));
    return c;
  }

  std::string dir_, img_, sock_;
  std::unique_ptr<Image> image_;
  std::unique_ptr<Server> server_;
  std::future<void> done_;
  std::shared_ptr<FlushGeneration> flushes_ = std::make_shared<FlushGeneration>();
};

// A client at depth 1: once 16 requests in a row found nothing else in flight, its allocating
// writes, flushes, trims and zeroes (the worker path's requests) run on the loop's own thread,
// and read back right; the image passes qemu-img check.
TEST_P(uring_loop, LoneRequestsRunOnTheLoopThread) {
  auto c = client();
  uint64_t inline_before = UringLoop::total_inline_requests();
  for (int i = 0; i < 15; ++i) ASSERT_EQ(c->roundtrip(kCmdFlush, 0, 0, 0)->error, 0u);
  EXPECT_EQ(UringLoop::total_inline_requests(), inline_before) << "inline before 16 lone requests";
  inline_before = UringLoop::total_inline_requests();
  for (uint64_t b = 0; b < 16; ++b)  // fresh clusters, 64 KiB apart: each allocates
    ASSERT_EQ(c->roundtrip(kCmdWrite, 0, b * 65536, kBlock, block_of(b + 7))->error, 0u);
  ASSERT_EQ(c->roundtrip(kCmdFlush, 0, 0, 0)->error, 0u);
  ASSERT_EQ(c->roundtrip(kCmdWriteZeroes, 0, 65536, kBlock)->error, 0u);
  EXPECT_EQ(UringLoop::total_inline_requests(), inline_before + 18);
  for (uint64_t b = 0; b < 16; ++b) {
    auto r = c->roundtrip(kCmdRead, 0, b * 65536, kBlock);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->data, b == 1 ? Bytes(kBlock, 0) : block_of(b + 7)) << "block " << b;
  }
  c.reset();
  server_->stop();
  done_.wait();
  server_.reset();
  ASSERT_TRUE(image_->close().is_ok());
  image_.reset();
  EXPECT_EQ(std::system(("qemu-img check -q " + img_).c_str()), 0);
}

// An overwrite served by direct I/O counts for the flushes like one on the worker path: the
// flush after it reaches the image instead of being answered as covered by the flush before.
TEST_P(uring_loop, FlushAfterADirectOverwriteReachesTheImage) {
  auto c = client();
  ASSERT_EQ(c->roundtrip(kCmdWrite, 0, 0, kBlock, block_of(1))->error, 0u);  // allocates: worker
  ASSERT_EQ(c->roundtrip(kCmdFlush, 0, 0, 0)->error, 0u);
  ASSERT_EQ(c->roundtrip(kCmdFlush, 0, 0, 0)->error, 0u);
  EXPECT_EQ(flushes_->skipped(), 1u);  // nothing written between the two
  const uint64_t direct_before = UringLoop::total_direct_requests();
  ASSERT_EQ(c->roundtrip(kCmdWrite, 0, 0, kBlock, block_of(2))->error, 0u);  // overwrite: direct
  ASSERT_EQ(UringLoop::total_direct_requests(), direct_before + 1) << "the overwrite was not direct";
  ASSERT_EQ(c->roundtrip(kCmdFlush, 0, 0, 0)->error, 0u);
  EXPECT_EQ(flushes_->skipped(), 1u) << "the flush after a direct overwrite was skipped";
  ASSERT_EQ(c->roundtrip(kCmdFlush, 0, 0, 0)->error, 0u);
  EXPECT_EQ(flushes_->skipped(), 2u);
}

TEST_P(uring_loop, DirectAndWorkerPathsAgreeWithTheModel) {
  // Allocate the first 4 MiB (worker path: allocating writes), then pipelined overwrites and
  // reads of it (direct path) from 3 clients on disjoint blocks, with flushes mixed in.
  constexpr uint64_t kBlocks = (4u << 20) / kBlock;
  std::vector<uint64_t> model(kBlocks);
  {
    auto c = client();
    Bytes big(4u << 20);
    for (uint64_t b = 0; b < kBlocks; ++b) {
      Bytes v = block_of(b + 1);
      std::copy(v.begin(), v.end(), big.begin() + static_cast<ptrdiff_t>(b * kBlock));
      model[b] = b + 1;
    }
    auto r = c->roundtrip(kCmdWrite, 0, 0, static_cast<uint32_t>(big.size()), big);
    ASSERT_TRUE(r);
    ASSERT_EQ(r->error, 0u);
  }
  const uint64_t direct_before = UringLoop::total_direct_requests();
  std::vector<std::thread> clients;
  for (uint64_t k = 0; k < 3; ++k) {
    clients.emplace_back([&, k] {
      auto c = client();
      std::mt19937_64 rng(k);
      uint64_t cookie = 1;
      size_t sent = 0;
      // 48 requests in flight per round, 10 rounds.
      for (int round = 0; round < 10; ++round) {
        // Requests in flight together are unordered: each touches a different block.
        std::set<uint64_t> used;
        std::map<uint64_t, uint64_t> expect;  // read cookie -> value (no write to it this round)
        for (int q = 0; q < 48; ++q) {
          uint64_t b;
          do {
            b = (rng() % (kBlocks / 3)) * 3 + k;  // this client's blocks only
          } while (!used.insert(b).second);
          if (q % 16 == 15) {
            ASSERT_TRUE(c->send_request(kCmdFlush, 0, cookie++, 0, 0));
          } else if (rng() % 2) {
            uint64_t v = rng() | 1;
            model[b] = v;
            ASSERT_TRUE(c->send_request(kCmdWrite, 0, cookie++, b * kBlock, kBlock, block_of(v)));
          } else {
            expect[cookie] = model[b];
            ASSERT_TRUE(c->send_request(kCmdRead, 0, cookie++, b * kBlock, kBlock));
          }
          ++sent;
        }
        for (int q = 0; q < 48; ++q) {
          auto r = c->read_reply();
          ASSERT_TRUE(r);
          EXPECT_EQ(r->error, 0u);
          if (auto it = expect.find(r->cookie); it != expect.end()) {
            EXPECT_EQ(r->data, block_of(it->second)) << "cookie " << r->cookie;
          }
        }
      }
      (void)sent;
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_GT(UringLoop::total_direct_requests(), direct_before) << "no request took the direct path";
  // Everything reads back as the model, through NBD (direct reads) and through libkeel.
  auto c = client();
  for (uint64_t b = 0; b < kBlocks; ++b) {
    auto r = c->roundtrip(kCmdRead, 0, b * kBlock, kBlock);
    ASSERT_TRUE(r);
    ASSERT_EQ(r->data, block_of(model[b])) << "block " << b;
  }
  // Worker-path commands mixed with direct reads.
  ASSERT_EQ(c->roundtrip(kCmdWriteZeroes, 0, 8u << 20, 1u << 20)->error, 0u);
  ASSERT_EQ(c->roundtrip(kCmdFlush, 0, 0, 0)->error, 0u);
  auto z = c->roundtrip(kCmdRead, 0, 8u << 20, 65536);
  ASSERT_TRUE(z);
  EXPECT_EQ(z->data, Bytes(65536, 0));
  c.reset();
  server_->stop();
  done_.wait();
  server_.reset();
  for (uint64_t b = 0; b < kBlocks; ++b) {
    Bytes got(kBlock);
    ASSERT_TRUE(image_->read(b * kBlock, got).is_ok());
    ASSERT_EQ(got, block_of(model[b])) << "block " << b;
  }
  ASSERT_TRUE(image_->close().is_ok());
  image_.reset();
  std::string out;
  FILE* p = ::popen(("qemu-img check " + img_ + " 2>&1").c_str(), "r");
  ASSERT_NE(p, nullptr);
  char buf[256];
  while (::fgets(buf, sizeof buf, p)) out += buf;
  EXPECT_EQ(::pclose(p), 0) << out;
}

TEST_P(uring_loop, UnalignedAndStructuredReadsOfAllocatedData) {
  auto c = client();
  Bytes d(65536);
  for (size_t i = 0; i < d.size(); ++i) d[i] = static_cast<uint8_t>(i * 13);
  ASSERT_EQ(c->roundtrip(kCmdWrite, 0, 1 << 20, 65536, d)->error, 0u);
  // Unaligned (engine path under O_DIRECT) and aligned (direct) reads, both structured.
  auto a = c->roundtrip(kCmdRead, 0, (1 << 20) + 100, 1000);
  ASSERT_TRUE(a);
  EXPECT_EQ(a->data, Bytes(d.begin() + 100, d.begin() + 1100));
  auto b = c->roundtrip(kCmdRead, 0, (1 << 20) + 8192, 16384);
  ASSERT_TRUE(b);
  EXPECT_EQ(b->data, Bytes(d.begin() + 8192, d.begin() + 8192 + 16384));
  // A read that crosses from allocated data into a hole: engine path, hole chunk.
  auto h = c->roundtrip(kCmdRead, 0, (1 << 20) + 61440, 8192);
  ASSERT_TRUE(h);
  Bytes want(d.begin() + 61440, d.end());
  want.resize(8192, 0);
  EXPECT_EQ(h->data, want);
}

INSTANTIATE_TEST_SUITE_P(Cache, uring_loop, ::testing::Values(CacheMode::kWriteback, CacheMode::kNone),
                         [](const ::testing::TestParamInfo<CacheMode>& p) {
                           return p.param == CacheMode::kNone ? "none" : "writeback";
                         });

}  // namespace
}  // namespace keel::nbd
