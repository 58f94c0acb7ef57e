// Socket plumbing for the NBD server: exact reads with an optional deadline, gathered writes
// that never raise SIGPIPE, and listening sockets (unix, TCP, or inherited through systemd
// socket activation).
#pragma once

#include <sys/types.h>
#include <sys/uio.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "keel/status.h"

namespace keel::nbd {

using Deadline = std::optional<std::chrono::steady_clock::time_point>;

enum class ReadResult {
  kOk,
  kEof,      // the peer closed before the first byte
  kClosed,   // the peer closed or the socket failed part-way
  kTimeout,  // the deadline passed
};

// Reads exactly n bytes.
ReadResult read_exact(int fd, void* buf, size_t n, Deadline deadline = std::nullopt);
// Reads and throws away n bytes, in small pieces (bounded memory).
ReadResult skip_bytes(int fd, uint64_t n, Deadline deadline = std::nullopt);
// Writes all of the buffers (MSG_NOSIGNAL). False if the peer is gone.
bool write_all(int fd, const void* buf, size_t n);
bool writev_all(int fd, std::vector<iovec> iov);

// Creates a listening unix socket at path (replacing a stale socket file there). The file at
// path appears only once the socket listens, so a client that waits for it is never refused.
// `before_listen` (tests) runs after bind(), before listen().
Result<int> listen_unix(const std::string& path, const std::function<void()>& before_listen = nullptr);
// The identity (device, inode) of the file at a path, so that a server removes its socket or pid
// file at exit only if it is still its own: a later server on the same path replaces the file
// (listen_unix removes a stale socket), and the first one's exit must not remove the successor's.
struct FileId {
  dev_t dev = 0;
  ino_t ino = 0;
  bool valid = false;
};
FileId file_id(const std::string& path);
// Removes path if it is still the file `id` names; does nothing otherwise.
void unlink_if_same(const std::string& path, const FileId& id);
// Creates listening TCP sockets for addr:port (every address it resolves to).
Result<std::vector<int>> listen_tcp(const std::string& addr, uint16_t port);
// The port a listening TCP socket is bound to (for -p 0).
uint16_t bound_port(int fd);
// Listening sockets passed by systemd-style socket activation (LISTEN_PID/LISTEN_FDS, from
// fd 3); empty if none were passed. Unsets the variables so children do not inherit them.
std::vector<int> activation_sockets();

// "unix" for AF_UNIX peers, "addr:port" for TCP peers.
std::string peer_name(int fd);

}  // namespace keel::nbd
