// The NBD fuzz harness (harness.h): the input is the client's side of one connection. One
// thread sends it into a socketpair and then half-closes; another reads and throws away every
// reply; the server's Connection serves the other end on the calling thread, as `keel serve`
// does, over a qcow2 image in memory.
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <thread>
#include <vector>

#include "harness.h"
#include "overlap_probe.h"
#include "keel/image.h"
#include "nbd/connection.h"
#include "nbd/log.h"
#include "proof/memory_fs.h"

namespace keel::fuzz {
namespace {

constexpr uint64_t kExportBytes = 4ull << 20;
constexpr const char* kImage = "export.qcow2";

// The bytes of a fresh, empty 4 MiB qcow2 image with 4 KiB clusters (made once).
const std::vector<uint8_t>& template_image() {
  static const std::vector<uint8_t> bytes = [] {
    proof::MemoryFs fs;
    CreateOptions co;
    co.size = kExportBytes;
    co.cluster_size = 4096;
    co.file_opener = fs.opener();
    Status s = create_image(proof::MemoryFs::path(kImage), co);
    if (!s.is_ok()) __builtin_trap();
    return fs.bytes(kImage);
  }();
  return bytes;
}

// The same image damaged (issue 13): the refcounts of its metadata clusters (header, refcount
// table, refcount block, L1 table) at 0, so the first allocation lands on metadata unless the
// engine refuses it.
const std::vector<uint8_t>& damaged_image() {
  static const std::vector<uint8_t> bytes = [] {
    std::vector<uint8_t> b = template_image();
    auto be64 = [&](uint64_t o) {
      uint64_t v = 0;
      for (int i = 0; i < 8; ++i) v = v << 8 | b.at(o + i);
      return v;
    };
    const uint64_t cs = 4096, rt = be64(48), rb = be64(rt);  // 16-bit refcounts
    std::vector<uint64_t> meta = {0, rt, rb};
    for (const ProbeCluster& c : stable_metadata(b)) meta.push_back(c.offset);
    for (uint64_t off : meta) b.at(rb + off / cs * 2) = b.at(rb + off / cs * 2 + 1) = 0;
    return b;
  }();
  return bytes;
}

nbd::WorkerPool& pool() {
  static nbd::WorkerPool p(2);
  return p;
}

void send_all(int fd, std::span<const uint8_t> bytes) {
  while (!bytes.empty()) {
    ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // the server closed its end
    bytes = bytes.subspan(static_cast<size_t>(n));
  }
  ::shutdown(fd, SHUT_WR);
}

void drain(int fd) {
  uint8_t buf[64 * 1024];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
  }
}

}  // namespace

Status nbd(std::span<const uint8_t> client_bytes) {
  proof::MemoryFs fs;
  // Every fourth input length serves the damaged image; its metadata must come out unchanged.
  const bool damaged = client_bytes.size() % 4 == 3;
  fs.put(kImage, damaged ? damaged_image() : template_image());
  OpenOptions o;
  o.format = "qcow2";
  o.force_share = true;
  o.file_opener = fs.opener();
  auto img = Image::open(proof::MemoryFs::path(kImage), o);
  if (!img) return img.error();

  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return io_error(errno, "socketpair");
  nbd::ConnectionConfig cfg;
  cfg.export_cfg.size = (*img)->size();
  cfg.export_cfg.description = "fuzz";
  cfg.handshake_limit = std::chrono::milliseconds(0);
  cfg.policy.discard = nbd::DiscardMode::kUnmap;
  cfg.policy.detect_zeroes = nbd::DetectZeroes::kUnmap;
  // Every meta context keel serve can offer: -A and -B b0 (an enabled bitmap that tracks writes).
  cfg.export_cfg.meta.allocation_depth = true;
  if ((*img)->bitmap_add("b0").is_ok()) {
    auto bitmaps = nbd::ExportBitmaps::open(**img, {"b0"}, false);
    if (!bitmaps) return bitmaps.error();
    cfg.export_cfg.meta.bitmaps = (*bitmaps)->names();
    cfg.policy.bitmaps = *bitmaps;
  }
  std::thread feeder(send_all, sv[1], client_bytes);
  std::thread drainer(drain, sv[1]);
  {
    nbd::Connection conn(sv[0], 1, **img, cfg, pool());  // owns sv[0]
    conn.serve();
  }
  feeder.join();
  drainer.join();
  ::close(sv[1]);
  Status s = (*img)->close();
  if (damaged) {
    const std::vector<uint8_t>& was = damaged_image();
    const std::vector<uint8_t> now = fs.bytes(kImage);
    for (const ProbeCluster& c : stable_metadata(was))
      for (uint64_t i = c.offset; i < c.offset + c.size && i < was.size(); ++i)
        if (!(i >= 72 && i < 80) && (i >= now.size() || now[i] != was[i])) __builtin_trap();  // 72: the corrupt bit
  }
  return s;
}

}  // namespace keel::fuzz
