// A minimal blocking NBD client (see nbd_session.h).
#include "proof/nbd_session.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "nbd/protocol.h"

namespace keel::proof {
namespace {

void put_be(std::vector<uint8_t>& b, uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) b.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
uint64_t get_be(const uint8_t* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v = (v << 8) | p[i];
  return v;
}

}  // namespace

Result<std::unique_ptr<NbdSession>> NbdSession::connect(const std::string& path, int wait_ms) {
  std::unique_ptr<NbdSession> s(new NbdSession);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) return error(invalid("socket path too long: " + path));
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms);
  for (;;) {
    s->fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s->fd_ < 0) return error(io_error(errno, "socket"));
    if (::connect(s->fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) break;
    int e = errno;
    ::close(s->fd_);
    s->fd_ = -1;
    if (std::chrono::steady_clock::now() > deadline) return error(io_error(e, "connect " + path));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  uint8_t greeting[18];
  KEEL_TRY_R(s->recv_all(greeting, sizeof greeting));
  if (get_be(greeting, 8) != nbd::kNbdMagic || get_be(greeting + 8, 8) != nbd::kOptMagic)
    return error(Status(Code::kIo, "not an NBD newstyle server on " + path, EIO));
  std::vector<uint8_t> out;
  put_be(out, nbd::kClientFlagFixedNewstyle | nbd::kClientFlagNoZeroes, 4);
  put_be(out, nbd::kOptMagic, 8);
  put_be(out, nbd::kOptExportName, 4);
  put_be(out, 0, 4);  // the default export, name ""
  KEEL_TRY_R(s->send_all(out.data(), out.size()));
  uint8_t reply[10];
  KEEL_TRY_R(s->recv_all(reply, sizeof reply));
  s->size_ = get_be(reply, 8);
  s->eflags_ = static_cast<uint16_t>(get_be(reply + 8, 2));
  return s;
}

NbdSession::~NbdSession() {
  if (fd_ >= 0) ::close(fd_);
}

Status NbdSession::send_all(const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  while (n > 0) {
    ssize_t k = ::send(fd_, b, n, MSG_NOSIGNAL);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return io_error(errno, "nbd send");
    b += k;
    n -= static_cast<size_t>(k);
  }
  return Status::ok();
}

Status NbdSession::recv_all(void* p, size_t n) {
  auto* b = static_cast<uint8_t*>(p);
  while (n > 0) {
    ssize_t k = ::recv(fd_, b, n, 0);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return Status(Code::kIo, "nbd connection closed", k < 0 ? errno : EIO);
    b += k;
    n -= static_cast<size_t>(k);
  }
  return Status::ok();
}

Status NbdSession::request(uint16_t type, uint16_t flags, uint64_t offset, uint32_t length,
                           std::span<const uint8_t> payload) {
  std::vector<uint8_t> out;
  put_be(out, nbd::kRequestMagic, 4);
  put_be(out, flags, 2);
  put_be(out, type, 2);
  const uint64_t cookie = cookie_++;
  put_be(out, cookie, 8);
  put_be(out, offset, 8);
  put_be(out, length, 4);
  out.insert(out.end(), payload.begin(), payload.end());
  KEEL_TRY(send_all(out.data(), out.size()));
  uint8_t reply[16];
  KEEL_TRY(recv_all(reply, sizeof reply));
  if (get_be(reply, 4) != nbd::kSimpleReplyMagic || get_be(reply + 8, 8) != cookie)
    return Status(Code::kIo, "nbd: unexpected reply", EIO);
  uint32_t err = static_cast<uint32_t>(get_be(reply + 4, 4));
  if (err != 0) return Status(Code::kIo, "nbd request failed with error " + std::to_string(err), static_cast<int>(err));
  return Status::ok();
}

void NbdSession::disconnect() {
  if (fd_ < 0) return;
  std::vector<uint8_t> out;
  put_be(out, nbd::kRequestMagic, 4);
  put_be(out, 0, 2);
  put_be(out, nbd::kCmdDisc, 2);
  put_be(out, cookie_++, 8);
  put_be(out, 0, 8);
  put_be(out, 0, 4);
  (void)send_all(out.data(), out.size());
  ::close(fd_);
  fd_ = -1;
}

}  // namespace keel::proof
