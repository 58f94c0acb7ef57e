// A minimal blocking NBD client for the real-file-system harness's multi-connection test
// (proof/realfs.h): the fixed-newstyle handshake with NBD_OPT_EXPORT_NAME (simple replies only),
// then one request at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "keel/status.h"

namespace keel::proof {

class NbdSession {
 public:
  // Connects to the unix socket `path` (retrying for up to `wait_ms` while the server starts).
  static Result<std::unique_ptr<NbdSession>> connect(const std::string& path, int wait_ms);
  ~NbdSession();
  uint16_t eflags() const { return eflags_; }
  uint64_t export_size() const { return size_; }
  // Sends one request (with `payload` for a write) and waits for its simple reply.
  Status request(uint16_t type, uint16_t flags, uint64_t offset, uint32_t length,
                 std::span<const uint8_t> payload = {});
  // NBD_CMD_DISC, then closes the socket.
  void disconnect();

 private:
  NbdSession() = default;
  Status send_all(const void* p, size_t n);
  Status recv_all(void* p, size_t n);
  int fd_ = -1;
  uint16_t eflags_ = 0;
  uint64_t size_ = 0;
  uint64_t cookie_ = 1;
};

}  // namespace keel::proof
