// A small blocking NBD client for the in-process server tests: raw socket access (to misbehave
// on purpose), the fixed-newstyle handshake, requests, and reassembled replies (simple or
// structured, possibly out of order).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "nbd/protocol.h"
#include "nbd/reply.h"
#include "nbd/wire.h"

namespace keel::nbd::test {

// Connects to a unix socket; -1 on failure.
int connect_unix(const std::string& path);

struct OptionReply {
  uint32_t option = 0;
  uint32_t type = 0;
  std::vector<uint8_t> data;
};

struct Chunk {
  uint16_t flags = 0;
  uint16_t type = 0;
  std::vector<uint8_t> payload;
};

struct ReplyMsg {
  uint64_t cookie = 0;
  bool structured = false;
  uint32_t error = 0;            // simple reply error, or the first error chunk's error
  std::vector<uint8_t> data;     // simple READ data, or structured READ data reassembled
  std::vector<Chunk> chunks;     // structured chunks in arrival order
  std::vector<BlockExtent> extents;  // from a BLOCK_STATUS chunk
};

class TestClient {
 public:
  explicit TestClient(int fd) : fd_(fd) {}
  ~TestClient();
  TestClient(const TestClient&) = delete;
  TestClient& operator=(const TestClient&) = delete;

  int fd() const { return fd_; }
  bool send_bytes(const std::vector<uint8_t>& b);
  // Reads exactly n bytes; nullopt on EOF/error/timeout (5 s).
  std::optional<std::vector<uint8_t>> recv_bytes(size_t n, int timeout_ms = 5000);
  // True if the server closed the connection (EOF within the timeout).
  bool wait_closed(int timeout_ms = 5000);

  // Greeting + client flags. Returns the handshake flags.
  std::optional<uint16_t> start(uint32_t client_flags = kClientFlagFixedNewstyle | kClientFlagNoZeroes);
  bool send_option(uint32_t option, const std::vector<uint8_t>& data);
  std::optional<OptionReply> read_option_reply();
  // Reads replies to one option until ACK or an error reply (inclusive).
  std::optional<std::vector<OptionReply>> option(uint32_t option, const std::vector<uint8_t>& data);

  // Negotiates SR (+ base:allocation) if asked and GOes to `name`. Returns eflags.
  std::optional<uint16_t> handshake(bool structured = true, bool meta = true,
                                    const std::string& name = "");
  uint64_t export_size() const { return size_; }

  bool send_request(uint16_t type, uint16_t flags, uint64_t cookie, uint64_t offset,
                    uint32_t length, const std::vector<uint8_t>& payload = {});
  // Reads one complete reply. For simple READ replies the expected length must be known, so
  // read requests are remembered by send_request.
  std::optional<ReplyMsg> read_reply(int timeout_ms = 10000);
  // send_request + read_reply for one request at a time.
  std::optional<ReplyMsg> roundtrip(uint16_t type, uint16_t flags, uint64_t offset, uint32_t length,
                                    const std::vector<uint8_t>& payload = {});

 private:
  int fd_;
  bool structured_ = false;
  uint64_t size_ = 0;
  uint64_t next_cookie_ = 1;
  std::map<uint64_t, std::pair<uint64_t, uint32_t>> reads_;  // cookie -> offset, length
  std::map<uint64_t, ReplyMsg> partial_;
};

}  // namespace keel::nbd::test
