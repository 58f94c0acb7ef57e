// A small blocking NBD client for the server tests (see test_client.h).
#include "nbd/test_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include "format/endian.h"

namespace keel::nbd::test {

using format::get_be16;
using format::get_be32;
using format::get_be64;

int connect_unix(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

TestClient::~TestClient() {
  if (fd_ >= 0) ::close(fd_);
}

bool TestClient::send_bytes(const std::vector<uint8_t>& b) {
  size_t done = 0;
  while (done < b.size()) {
    ssize_t n = ::send(fd_, b.data() + done, b.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

std::optional<std::vector<uint8_t>> TestClient::recv_bytes(size_t n, int timeout_ms) {
  std::vector<uint8_t> out(n);
  size_t got = 0;
  while (got < n) {
    pollfd p{fd_, POLLIN, 0};
    int rc = ::poll(&p, 1, timeout_ms);
    if (rc < 0 && errno == EINTR) continue;
    if (rc <= 0) return std::nullopt;
    ssize_t r = ::recv(fd_, out.data() + got, n - got, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return std::nullopt;
    got += static_cast<size_t>(r);
  }
  return out;
}

bool TestClient::wait_closed(int timeout_ms) {
  uint8_t buf[4096];
  for (;;) {
    pollfd p{fd_, POLLIN, 0};
    int rc = ::poll(&p, 1, timeout_ms);
    if (rc <= 0) return false;
    ssize_t r = ::recv(fd_, buf, sizeof buf, 0);
    if (r == 0) return true;
    if (r < 0) return errno == ECONNRESET;
  }
}

std::optional<uint16_t> TestClient::start(uint32_t client_flags) {
  auto g = recv_bytes(kGreetingBytes);
  if (!g || get_be64(g->data()) != kNbdMagic || get_be64(g->data() + 8) != kOptMagic)
    return std::nullopt;
  std::vector<uint8_t> f;
  ByteWriter(f).u32(client_flags);
  if (!send_bytes(f)) return std::nullopt;
  return get_be16(g->data() + 16);
}

bool TestClient::send_option(uint32_t option, const std::vector<uint8_t>& data) {
  auto b = encode_option_header({kOptMagic, option, static_cast<uint32_t>(data.size())});
  b.insert(b.end(), data.begin(), data.end());
  return send_bytes(b);
}

std::optional<OptionReply> TestClient::read_option_reply() {
  auto h = recv_bytes(20);
  if (!h || get_be64(h->data()) != kOptReplyMagic) return std::nullopt;
  OptionReply r;
  r.option = get_be32(h->data() + 8);
  r.type = get_be32(h->data() + 12);
  uint32_t len = get_be32(h->data() + 16);
  if (len > 0) {
    auto d = recv_bytes(len);
    if (!d) return std::nullopt;
    r.data = std::move(*d);
  }
  return r;
}

std::optional<std::vector<OptionReply>> TestClient::option(uint32_t opt,
                                                           const std::vector<uint8_t>& data) {
  if (!send_option(opt, data)) return std::nullopt;
  std::vector<OptionReply> out;
  for (;;) {
    auto r = read_option_reply();
    if (!r) return std::nullopt;
    out.push_back(*r);
    if (r->type == kRepAck || (r->type & kRepErrBit)) return out;
  }
}

std::optional<uint16_t> TestClient::handshake(bool structured, bool meta, const std::string& name) {
  if (!start()) return std::nullopt;
  if (structured) {
    auto r = option(kOptStructuredReply, {});
    if (!r || r->back().type != kRepAck) return std::nullopt;
    structured_ = true;
    if (meta) {
      auto m = option(kOptSetMetaContext,
                      encode_meta_context_request({name, {kMetaBaseAllocation}}));
      if (!m || m->back().type != kRepAck) return std::nullopt;
    }
  }
  auto r = option(kOptGo, encode_info_request({name, {kInfoBlockSize}}));
  if (!r || r->back().type != kRepAck) return std::nullopt;
  for (const auto& rep : *r) {
    if (rep.type == kRepInfo && rep.data.size() == 12 && get_be16(rep.data.data()) == kInfoExport) {
      size_ = get_be64(rep.data.data() + 2);
      return get_be16(rep.data.data() + 10);
    }
  }
  return std::nullopt;
}

bool TestClient::send_request(uint16_t type, uint16_t flags, uint64_t cookie, uint64_t offset,
                              uint32_t length, const std::vector<uint8_t>& payload) {
  auto b = encode_request_header({kRequestMagic, flags, type, cookie, offset, length});
  b.insert(b.end(), payload.begin(), payload.end());
  if (type == kCmdRead) reads_[cookie] = {offset, length};
  return send_bytes(b);
}

std::optional<ReplyMsg> TestClient::read_reply(int timeout_ms) {
  for (;;) {
    auto m = recv_bytes(4, timeout_ms);
    if (!m) return std::nullopt;
    uint32_t magic = get_be32(m->data());
    if (magic == kSimpleReplyMagic) {
      auto h = recv_bytes(12, timeout_ms);
      if (!h) return std::nullopt;
      ReplyMsg r;
      r.error = get_be32(h->data());
      r.cookie = get_be64(h->data() + 4);
      auto it = reads_.find(r.cookie);
      if (it != reads_.end()) {
        if (r.error == 0 && !structured_ && it->second.second > 0) {
          auto d = recv_bytes(it->second.second, timeout_ms);
          if (!d) return std::nullopt;
          r.data = std::move(*d);
        }
        reads_.erase(it);
      }
      return r;
    }
    if (magic != kStructuredReplyMagic) return std::nullopt;
    auto h = recv_bytes(16, timeout_ms);
    if (!h) return std::nullopt;
    Chunk c;
    c.flags = get_be16(h->data());
    c.type = get_be16(h->data() + 2);
    uint64_t cookie = get_be64(h->data() + 4);
    uint32_t len = get_be32(h->data() + 12);
    if (len > 0) {
      auto d = recv_bytes(len, timeout_ms);
      if (!d) return std::nullopt;
      c.payload = std::move(*d);
    }
    ReplyMsg& r = partial_[cookie];
    r.cookie = cookie;
    r.structured = true;
    auto rd = reads_.find(cookie);
    if (rd != reads_.end() && r.data.empty()) r.data.assign(rd->second.second, 0xAA);
    if (c.type == kChunkOffsetData && c.payload.size() >= 8 && rd != reads_.end()) {
      uint64_t off = get_be64(c.payload.data()) - rd->second.first;
      std::memcpy(r.data.data() + off, c.payload.data() + 8, c.payload.size() - 8);
    } else if (c.type == kChunkOffsetHole && c.payload.size() == 12 && rd != reads_.end()) {
      uint64_t off = get_be64(c.payload.data()) - rd->second.first;
      std::memset(r.data.data() + off, 0, get_be32(c.payload.data() + 8));
    } else if (c.type == kChunkBlockStatus && c.payload.size() >= 4) {
      for (size_t i = 4; i + 8 <= c.payload.size(); i += 8)
        r.extents.push_back({get_be32(c.payload.data() + i), get_be32(c.payload.data() + i + 4)});
    } else if ((c.type & 0x8000) && c.payload.size() >= 4 && r.error == 0) {
      r.error = get_be32(c.payload.data());
    }
    r.chunks.push_back(std::move(c));
    if (r.chunks.back().flags & kReplyFlagDone) {
      ReplyMsg done = std::move(r);
      partial_.erase(cookie);
      if (rd != reads_.end()) reads_.erase(rd);
      return done;
    }
  }
}

std::optional<ReplyMsg> TestClient::roundtrip(uint16_t type, uint16_t flags, uint64_t offset,
                                              uint32_t length, const std::vector<uint8_t>& payload) {
  uint64_t cookie = next_cookie_++;
  if (!send_request(type, flags, cookie, offset, length, payload)) return std::nullopt;
  auto r = read_reply();
  if (r && r->cookie != cookie) return std::nullopt;
  return r;
}

}  // namespace keel::nbd::test
