// Proves the in-process server over a real unix socket with an in-memory image: handshake and
// I/O, pipelined requests answered out of order with 64 in flight, several clients at once, and
// that hostile or vanishing clients (garbage, bad magic, oversized options and requests, half
// requests, clients that never read) are refused or dropped while other clients keep being
// served; also the lifecycle: DISC and stop() finish the requests in flight, -e queues extra
// clients, without -t the server ends with its last client, the handshake has a time limit.
// Every test runs twice: on the reader/writer threads and on the io_uring event loop.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <future>
#include <random>
#include <thread>

#include "format/endian.h"
#include "nbd/mem_image.h"
#include "nbd/server.h"
#include "nbd/socket.h"
#include "nbd/test_client.h"

namespace keel::nbd {
namespace {

using test::MemImage;
using test::TestClient;
using Bytes = std::vector<uint8_t>;
using namespace std::chrono_literals;

Bytes pattern(size_t n, uint8_t seed) {
  Bytes b(n);
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(seed + i * 7);
  return b;
}

class nbd_server : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/keel-nbd-test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    sock_ = dir_ + "/s.sock";
  }
  void TearDown() override {
    stop();
    ::unlink(sock_.c_str());
    ::rmdir(dir_.c_str());
  }

  void start(ServerConfig cfg = {}, uint64_t size = 64 << 20, bool read_only = false) {
    image_ = std::make_unique<MemImage>(size, read_only);
    cfg.connection.export_cfg.size = size;
    cfg.connection.export_cfg.read_only = read_only;
    cfg.connection.io_uring = GetParam();
    if (cfg.max_connections == 1) cfg.max_connections = 8;
    server_ = std::make_unique<Server>(*image_, cfg);
    auto fd = listen_unix(sock_);
    ASSERT_TRUE(fd);
    server_->add_listener(*fd);
    done_ = std::async(std::launch::async, [this] { server_->run(); });
  }
  void stop() {
    if (!server_) return;
    server_->stop();
    done_.wait();
    server_.reset();
  }
  bool finished_within(std::chrono::milliseconds t) {
    return done_.wait_for(t) == std::future_status::ready;
  }
  std::unique_ptr<TestClient> client() {
    int fd = test::connect_unix(sock_);
    EXPECT_GE(fd, 0);
    return std::make_unique<TestClient>(fd);
  }
  std::unique_ptr<TestClient> ready_client(bool structured = true) {
    auto c = client();
    EXPECT_TRUE(c->handshake(structured));
    return c;
  }
  // A fresh client can still do I/O.
  void expect_serving() {
    auto c = ready_client();
    Bytes data = pattern(4096, 99);
    auto w = c->roundtrip(kCmdWrite, 0, 1 << 20, 4096, data);
    ASSERT_TRUE(w);
    EXPECT_EQ(w->error, 0u);
    auto r = c->roundtrip(kCmdRead, 0, 1 << 20, 4096);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->data, data);
  }

  std::string dir_, sock_;
  std::unique_ptr<MemImage> image_;
  std::unique_ptr<Server> server_;
  std::future<void> done_;
};

// The socket file appears only once the socket listens: between bind() and listen() nothing is
// at the path (a client polling for the file would otherwise connect and be refused), and a
// stale socket file there is replaced.
TEST(nbd_socket, UnixSocketFileAppearsOnlyWhenListening) {
  char tmpl[] = "/tmp/keel-sock-test.XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl, path = dir + "/s.sock";
  for (int round = 0; round < 2; ++round) {  // the second round finds the first one's file
    bool checked = false;
    auto fd = listen_unix(path, [&] {
      struct stat st;
      EXPECT_NE(::lstat(path.c_str(), &st), 0) << "round " << round << ": the socket file exists before listen()";
      checked = true;
    });
    ASSERT_TRUE(fd) << fd.error().message();
    EXPECT_TRUE(checked);
    int c = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
    EXPECT_EQ(::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a), 0) << std::strerror(errno);
    ::close(c);
    ::close(*fd);
  }
  EXPECT_EQ(std::system(("rm -rf " + dir).c_str()), 0);
}

// A server removes its socket file at exit only while it is its own: a second server on the same
// path has replaced the file, and the first one's exit must leave the second's socket in place
// (before, it unlinked the path, and a client of the second server got ENOENT).
TEST(nbd_socket, ExitRemovesOnlyItsOwnSocketFile) {
  char tmpl[] = "/tmp/keel-sock-test.XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl, path = dir + "/s.sock";
  auto first = listen_unix(path);
  ASSERT_TRUE(first) << first.error().message();
  const FileId first_id = file_id(path);
  ASSERT_TRUE(first_id.valid);
  auto second = listen_unix(path);
  ASSERT_TRUE(second) << second.error().message();
  const FileId second_id = file_id(path);
  ASSERT_TRUE(second_id.valid);
  EXPECT_NE(first_id.ino, second_id.ino);
  ::close(*first);
  unlink_if_same(path, first_id);  // the first server exits
  struct stat st;
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << "the first server's exit removed the second's socket file";
  unlink_if_same(path, second_id);  // the second exits
  EXPECT_NE(::lstat(path.c_str(), &st), 0) << "the second server's exit left its socket file";
  ::close(*second);
  EXPECT_EQ(std::system(("rm -rf " + dir).c_str()), 0);
}

TEST_P(nbd_server, HandshakeWriteRead) {
  ServerConfig cfg;
  cfg.persistent = true;
  start(cfg);
  auto c = client();
  auto eflags = c->handshake();
  ASSERT_TRUE(eflags);
  EXPECT_EQ(*eflags, 0xced);
  EXPECT_EQ(c->export_size(), 64u << 20);
  Bytes data = pattern(10000, 1);
  auto w = c->roundtrip(kCmdWrite, kCmdFlagFua, 12345, 10000, data);
  ASSERT_TRUE(w);
  EXPECT_EQ(w->error, 0u);
  EXPECT_EQ(image_->fua_writes(), 1u);
  auto r = c->roundtrip(kCmdRead, 0, 12345, 10000);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->error, 0u);
  EXPECT_EQ(r->data, data);
  EXPECT_EQ(image_->contents(12345, 10000), data);
  auto f = c->roundtrip(kCmdFlush, 0, 0, 0);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->error, 0u);
  EXPECT_EQ(image_->flushes(), 1u);
  auto bs = c->roundtrip(kCmdBlockStatus, 0, 0, 1 << 20);
  ASSERT_TRUE(bs);
  ASSERT_GE(bs->extents.size(), 2u);
  EXPECT_EQ(bs->extents[0].flags, kStateHole | kStateZero);
  EXPECT_EQ(bs->extents[0].length, 12288u);
  EXPECT_EQ(bs->extents[1].flags, 0u);
}

TEST_P(nbd_server, SimpleRepliesWithoutStructuredReplies) {
  ServerConfig cfg;
  cfg.persistent = true;
  start(cfg);
  auto c = client();
  auto eflags = c->handshake(false);
  ASSERT_TRUE(eflags);
  EXPECT_FALSE(*eflags & kEflagSendDf);
  Bytes data = pattern(4096, 3);
  ASSERT_EQ(c->roundtrip(kCmdWrite, 0, 0, 4096, data)->error, 0u);
  auto r = c->roundtrip(kCmdRead, 0, 0, 4096);
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->structured);
  EXPECT_EQ(r->data, data);
  auto e = c->roundtrip(kCmdRead, 0, 64 << 20, 1);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->error, kErrInval);
  // Block status needs a negotiated context.
  auto bs = c->roundtrip(kCmdBlockStatus, 0, 0, 512);
  ASSERT_TRUE(bs);
  EXPECT_EQ(bs->error, kErrInval);
}

TEST_P(nbd_server, PipelinedRequestsCompleteOutOfOrder) {
  ServerConfig cfg;
  cfg.persistent = true;
  start(cfg);
  auto c = ready_client();
  Bytes data = pattern(1 << 20, 5);
  ASSERT_EQ(c->roundtrip(kCmdWrite, 0, 0, 1 << 20, data)->error, 0u);
  image_->set_read_delay(0, 300ms);
  // The slow read first, then 63 fast ones: 64 in flight.
  ASSERT_TRUE(c->send_request(kCmdRead, 0, 1000, 0, 4096));
  for (uint64_t i = 1; i < 64; ++i)
    ASSERT_TRUE(c->send_request(kCmdRead, 0, 1000 + i, i * 4096, 4096));
  std::vector<uint64_t> order;
  for (int i = 0; i < 64; ++i) {
    auto r = c->read_reply();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->error, 0u);
    uint64_t idx = r->cookie - 1000;
    ASSERT_LT(idx, 64u);
    EXPECT_EQ(r->data, Bytes(data.begin() + idx * 4096, data.begin() + (idx + 1) * 4096)) << idx;
    order.push_back(idx);
  }
  EXPECT_NE(order.front(), 0u) << "the slow read should not hold back the others";
  EXPECT_EQ(order.back(), 0u);
  EXPECT_GT(image_->max_concurrency(), 1);
}

TEST_P(nbd_server, ManyWritesInFlightThenVerify) {
  ServerConfig cfg;
  cfg.persistent = true;
  start(cfg);
  auto c = ready_client();
  image_->set_write_delay(2ms);
  std::mt19937 rng(7);
  std::vector<std::pair<uint64_t, Bytes>> writes;
  for (uint64_t i = 0; i < 200; ++i) {
    Bytes d = pattern(65536, static_cast<uint8_t>(rng()));
    writes.emplace_back(i * 65536, d);
  }
  // A sender thread keeps up to 200 requests coming; the server applies back-pressure.
  std::thread sender([&] {
    for (uint64_t i = 0; i < writes.size(); ++i)
      ASSERT_TRUE(c->send_request(kCmdWrite, 0, i, writes[i].first, 65536, writes[i].second));
  });
  for (size_t i = 0; i < writes.size(); ++i) {
    auto r = c->read_reply();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->error, 0u);
  }
  sender.join();
  for (const auto& [off, d] : writes) EXPECT_EQ(image_->contents(off, d.size()), d);
}

TEST_P(nbd_server, SeveralClientsAtOnce) {
  ServerConfig cfg;
  cfg.persistent = true;
  start(cfg);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([this, t] {
      auto c = ready_client();
      for (int i = 0; i < 20; ++i) {
        uint64_t off = (uint64_t(t) * 20 + i) * 8192;
        Bytes d = pattern(8192, static_cast<uint8_t>(t * 31 + i));
        auto w = c->roundtrip(kCmdWrite, 0, off, 8192, d);
        ASSERT_TRUE(w);
        EXPECT_EQ(w->error, 0u);
        auto r = c->roundtrip(kCmdRead, 0, off, 8192);
        ASSERT_TRUE(r);
        EXPECT_EQ(r->data, d);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_GE(server_->connections_accepted(), 4u);
}

TEST_P(nbd_server, GarbageAndBadMagicDropOnlyThatClient) {
  ServerConfig cfg;
  cfg.persistent = true;
  start(cfg);
  auto good = ready_client();
  // Garbage instead of client flags.
  {
    auto c = client();
    ASSERT_TRUE(c->recv_bytes(kGreetingBytes));
    ASSERT_TRUE(c->send_bytes(Bytes{0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8}));
    EXPECT_TRUE(c->wait_closed());
  }
  // Bad option magic.
  {
    auto c = client();
    ASSERT_TRUE(c->start());
    Bytes junk(64, 0x41);
    ASSERT_TRUE(c->send_bytes(junk));
    EXPECT_TRUE(c->wait_closed());
  }
  // Pure random bytes from the first byte on.
  {
    auto c = client();
    std::mt19937 rng(1);
    Bytes junk(100000);
    for (auto& b : junk) b = static_cast<uint8_t>(rng());
    (void)c->send_bytes(junk);
    EXPECT_TRUE(c->wait_closed());
  }
  // Bad request magic in transmission.
  {
    auto c = ready_client();
    Bytes junk(28, 0x55);
    ASSERT_TRUE(c->send_bytes(junk));
    EXPECT_TRUE(c->wait_closed());
  }
  // The first client is unaffected.
  Bytes d = pattern(512, 9);
  ASSERT_EQ(good->roundtrip(kCmdWrite, 0, 0, 512, d)->error, 0u);
  EXPECT_EQ(good->roundtrip(kCmdRead, 0, 0, 512)->data, d);
}

TEST_P(nbd_server, OversizedOptionIsSkippedAndRefused) {
  ServerConfig cfg;
  cfg.persistent = true;
  start(cfg);
  auto c = client();
  ASSERT_TRUE(c->start());
  Bytes big(1 << 20, 'x');
  auto reps = c->option(kOptGo, big);
  ASSERT_TRUE(reps);
  EXPECT_EQ(reps->back().type, kRepErrTooBig);
  // Haggling goes on.
  reps = c->option(99, {});
  ASSERT_TRUE(reps);
  EXPECT_EQ(reps->back().type, kRepErrUnsup);
  reps = c->option(kOptGo, encode_info_request({"", {}}));
  ASSERT_TRUE(reps);
  EXPECT_EQ(reps->back().type, kRepAck);
}

TEST_P(nbd_server, RequestErrorsKeepTheConnection) {
  ServerConfig cfg;
  cfg.persistent = true;
  start(cfg);
  auto c = ready_client();
  // Larger than 32 MiB: the payload is read and dropped, the stream stays in step.
  uint32_t huge = (32u << 20) + 4096;
  Bytes payload(huge, 1);
  auto w = c->roundtrip(kCmdWrite, 0, 0, huge, payload);
  ASSERT_TRUE(w);
  EXPECT_EQ(w->error, kErrInval);
  auto r = c->roundtrip(kCmdRead, 0, 0, (32u << 20) + 1);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->error, kErrInval);
  // Past the end.
  EXPECT_EQ(c->roundtrip(kCmdRead, 0, (64 << 20) - 10, 11)->error, kErrInval);
  Bytes small(20, 2);
  EXPECT_EQ(c->roundtrip(kCmdWrite, 0, (64 << 20) - 10, 20, small)->error, kErrNoSpc);
  EXPECT_EQ(c->roundtrip(kCmdWriteZeroes, 0, 64 << 20, 1)->error, kErrNoSpc);
  // Unknown command and unknown flags.
  EXPECT_EQ(c->roundtrip(77, 0, 0, 0)->error, kErrInval);
  EXPECT_EQ(c->roundtrip(kCmdRead, 0x100, 0, 512)->error, kErrInval);
  // Still fine.
  EXPECT_EQ(c->roundtrip(kCmdRead, 0, 0, 512)->error, 0u);
  EXPECT_FALSE(image_->allocated(0));
}

TEST_P(nbd_server, ReadOnlyExportRefusesWrites) {
  ServerConfig cfg;
  cfg.persistent = true;
  start(cfg, 1 << 20, true);
  auto c = client();
  auto eflags = c->handshake();
  ASSERT_TRUE(eflags);
  EXPECT_TRUE(*eflags & kEflagReadOnly);
  EXPECT_FALSE(*eflags & kEflagSendTrim);
  Bytes d(4096, 1);
  EXPECT_EQ(c->roundtrip(kCmdWrite, 0, 0, 4096, d)->error, kErrPerm);
  EXPECT_EQ(c->roundtrip(kCmdWriteZeroes, 0, 0, 4096)->error, kErrPerm);
  EXPECT_EQ(c->roundtrip(kCmdTrim, 0, 0, 4096)->error, kErrPerm);
  EXPECT_EQ(c->roundtrip(kCmdRead, 0, 0, 4096)->error, 0u);
  EXPECT_EQ(c->roundtrip(kCmdFlush, 0, 0, 0)->error, 0u);
}

TEST_P(nbd_server, HalfRequestsAndVanishingClients) {
  ServerConfig cfg;
  cfg.persistent = true;
  start(cfg);
  // Half a request header, then close.
  {
    auto c = ready_client();
    Bytes h = encode_request_header({kRequestMagic, 0, kCmdWrite, 1, 0, 4096});
    h.resize(13);
    ASSERT_TRUE(c->send_bytes(h));
  }
  // A full header and half the write payload, then close.
  {
    auto c = ready_client();
    Bytes h = encode_request_header({kRequestMagic, 0, kCmdWrite, 1, 0, 65536});
    h.resize(h.size() + 1000, 7);
    ASSERT_TRUE(c->send_bytes(h));
  }
  // Many reads sent and the client gone before any reply.
  {
    auto c = ready_client();
    for (uint64_t i = 0; i < 64; ++i) ASSERT_TRUE(c->send_request(kCmdRead, 0, i, 0, 1 << 20));
  }
  // Half a request and then silence, while others work.
  auto stalled = ready_client();
  Bytes h = encode_request_header({kRequestMagic, 0, kCmdRead, 1, 0, 4096});
  h.resize(20);
  ASSERT_TRUE(stalled->send_bytes(h));
  expect_serving();
  // The stalled client does not block the shutdown.
  server_->stop();
  EXPECT_TRUE(finished_within(5s));
}

TEST_P(nbd_server, ClientThatNeverReadsIsCutAtShutdown) {
  ServerConfig cfg;
  cfg.persistent = true;
  cfg.stop_grace = 300ms;
  start(cfg);
  auto c = ready_client();
  Bytes data(32u << 20, 0x33);
  ASSERT_EQ(c->roundtrip(kCmdWrite, 0, 0, 32u << 20, data)->error, 0u);
  // 32 MiB reads and no reading of replies: the server's sends block.
  std::thread sender([&] {
    for (uint64_t i = 0; i < 8; ++i)
      if (!c->send_request(kCmdRead, kCmdFlagDf, i, 0, 32u << 20)) break;
  });
  std::this_thread::sleep_for(300ms);
  expect_serving();
  server_->stop();
  EXPECT_TRUE(finished_within(5s));
  ::shutdown(c->fd(), SHUT_RDWR);
  sender.join();
}

TEST_P(nbd_server, DiscFinishesRequestsInFlight) {
  ServerConfig cfg;
  cfg.persistent = true;
  start(cfg);
  image_->set_write_delay(50ms);
  auto c = ready_client();
  for (uint64_t i = 0; i < 16; ++i)
    ASSERT_TRUE(c->send_request(kCmdWrite, 0, i, i * 4096, 4096, pattern(4096, uint8_t(i))));
  ASSERT_TRUE(c->send_request(kCmdDisc, 0, 99, 0, 0));
  for (int i = 0; i < 16; ++i) {
    auto r = c->read_reply();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->error, 0u);
  }
  EXPECT_TRUE(c->wait_closed());
  for (uint64_t i = 0; i < 16; ++i)
    EXPECT_EQ(image_->contents(i * 4096, 4096), pattern(4096, uint8_t(i)));
}

TEST_P(nbd_server, StopFinishesRequestsInFlight) {
  ServerConfig cfg;
  cfg.persistent = true;
  start(cfg);
  image_->set_write_delay(50ms);
  auto c = ready_client();
  for (uint64_t i = 0; i < 16; ++i)
    ASSERT_TRUE(c->send_request(kCmdWrite, 0, i, i * 4096, 4096, pattern(4096, uint8_t(i))));
  std::this_thread::sleep_for(20ms);  // let the server read them
  server_->stop();
  for (int i = 0; i < 16; ++i) {
    auto r = c->read_reply();
    ASSERT_TRUE(r) << i;
    EXPECT_EQ(r->error, 0u);
  }
  EXPECT_TRUE(c->wait_closed());
  EXPECT_TRUE(finished_within(5s));
}

TEST_P(nbd_server, NotPersistentEndsWithTheLastClient) {
  ServerConfig cfg;
  cfg.persistent = false;
  start(cfg);
  {
    auto a = ready_client();
    auto b = ready_client();
    a.reset();
    EXPECT_FALSE(finished_within(200ms));
    ASSERT_EQ(b->roundtrip(kCmdRead, 0, 0, 512)->error, 0u);
  }
  EXPECT_TRUE(finished_within(5s));
}

TEST_P(nbd_server, SharedLimitQueuesExtraClients) {
  ServerConfig cfg;
  cfg.persistent = true;
  start(cfg);
  stop();
  cfg.max_connections = 2;
  // start() bumps 1 to 8; 2 stays 2.
  start(cfg);
  auto a = ready_client();
  auto b = ready_client();
  auto c = client();  // sits in the listen backlog
  EXPECT_FALSE(c->recv_bytes(kGreetingBytes, 300));
  a.reset();
  EXPECT_TRUE(c->recv_bytes(kGreetingBytes, 5000));
}

TEST_P(nbd_server, HandshakeTimeLimit) {
  ServerConfig cfg;
  cfg.persistent = true;
  cfg.connection.handshake_limit = 200ms;
  start(cfg);
  auto idle = client();
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(idle->wait_closed(5000));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
  expect_serving();
}

TEST_P(nbd_server, ExportNameOption) {
  ServerConfig cfg;
  cfg.persistent = true;
  cfg.connection.export_cfg.name = "disk0";
  start(cfg);
  {
    auto c = client();
    ASSERT_TRUE(c->start());
    Bytes name = {'d', 'i', 's', 'k', '0'};
    ASSERT_TRUE(c->send_option(kOptExportName, name));
    auto r = c->recv_bytes(10);  // NO_ZEROES was negotiated
    ASSERT_TRUE(r);
    EXPECT_EQ(format::get_be64(r->data()), 64u << 20);
    EXPECT_EQ(format::get_be16(r->data() + 8), 0xced & ~kEflagSendDf);
  }
  {
    auto c = client();
    ASSERT_TRUE(c->start());
    Bytes name = {'n', 'o'};
    ASSERT_TRUE(c->send_option(kOptExportName, name));
    EXPECT_TRUE(c->wait_closed());
  }
}

INSTANTIATE_TEST_SUITE_P(Aio, nbd_server, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& p) {
                           return p.param ? "io_uring" : "threads";
                         });

}  // namespace
}  // namespace keel::nbd
