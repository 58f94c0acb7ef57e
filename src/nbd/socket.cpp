// Socket plumbing for the NBD server (see socket.h).
#include "nbd/socket.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include <fmt/format.h>

namespace keel::nbd {
namespace {

// Waits until fd is readable or the deadline passes. False on timeout.
bool wait_readable(int fd, const Deadline& deadline) {
  if (!deadline) return true;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        *deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    int rc = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), INT32_MAX)));
    if (rc > 0) return true;
    if (rc < 0 && errno != EINTR) return true;  // let read() report the error
  }
}

}  // namespace

ReadResult read_exact(int fd, void* buf, size_t n, Deadline deadline) {
  auto* p = static_cast<uint8_t*>(buf);
  size_t got = 0;
  while (got < n) {
    if (!wait_readable(fd, deadline)) return ReadResult::kTimeout;
    ssize_t rc = ::read(fd, p + got, n - got);
    if (rc > 0) {
      got += static_cast<size_t>(rc);
      continue;
    }
    if (rc < 0 && errno == EINTR) continue;
    if (rc == 0 && got == 0) return ReadResult::kEof;
    return ReadResult::kClosed;
  }
  return ReadResult::kOk;
}

ReadResult skip_bytes(int fd, uint64_t n, Deadline deadline) {
  uint8_t scratch[64 * 1024];
  while (n > 0) {
    size_t step = static_cast<size_t>(std::min<uint64_t>(n, sizeof scratch));
    ReadResult r = read_exact(fd, scratch, step, deadline);
    if (r != ReadResult::kOk) return r == ReadResult::kEof ? ReadResult::kClosed : r;
    n -= step;
  }
  return ReadResult::kOk;
}

bool write_all(int fd, const void* buf, size_t n) {
  return writev_all(fd, {iovec{const_cast<void*>(buf), n}});
}

bool writev_all(int fd, std::vector<iovec> iov) {
  size_t first = 0;
  while (first < iov.size()) {
    if (iov[first].iov_len == 0) {
      ++first;
      continue;
    }
    msghdr msg{};
    msg.msg_iov = iov.data() + first;
    msg.msg_iovlen = std::min<size_t>(iov.size() - first, IOV_MAX);
    ssize_t rc = ::sendmsg(fd, &msg, MSG_NOSIGNAL);
    if (rc < 0 && errno == ENOTSOCK)
      rc = ::writev(fd, msg.msg_iov, static_cast<int>(msg.msg_iovlen));
    if (rc < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    auto done = static_cast<size_t>(rc);
    while (done > 0 && first < iov.size()) {
      if (done >= iov[first].iov_len) {
        done -= iov[first].iov_len;
        ++first;
      } else {
        iov[first].iov_base = static_cast<uint8_t*>(iov[first].iov_base) + done;
        iov[first].iov_len -= done;
        done = 0;
      }
    }
  }
  return true;
}

FileId file_id(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return {};
  return FileId{st.st_dev, st.st_ino, true};
}

void unlink_if_same(const std::string& path, const FileId& id) {
  const FileId now = file_id(path);
  if (id.valid && now.valid && now.dev == id.dev && now.ino == id.ino) ::unlink(path.c_str());
}

Result<int> listen_unix(const std::string& path, const std::function<void()>& before_listen) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr.sun_path)
    return error(invalid(fmt::format("unix socket path '{}' is empty or too long", path)));
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode))
      return error(invalid(fmt::format("'{}' exists and is not a socket", path)));
    ::unlink(path.c_str());
  }
  // The socket file appears at `path` only once it accepts connections: bound and listening under
  // a temporary name beside it, then renamed into place (atomic). A client that waits for the
  // file and then connects is never refused, as it can be by a server that binds at `path`
  // (the file exists from bind(), a connect before listen() gets ECONNREFUSED). Where the
  // temporary name would not fit in sun_path, the socket is bound at `path` directly.
  const std::string tmp = fmt::format("{}.{}.tmp", path, ::getpid());
  const bool via_tmp = tmp.size() < sizeof addr.sun_path;
  if (via_tmp) {
    std::memcpy(addr.sun_path, tmp.c_str(), tmp.size() + 1);
    ::unlink(tmp.c_str());
  }
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return error(io_error(errno, "socket"));
  const bool bound = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  if (bound && before_listen) before_listen();
  if (!bound || ::listen(fd, 128) < 0 || (via_tmp && ::rename(tmp.c_str(), path.c_str()) < 0)) {
    int err = errno;
    ::close(fd);
    if (via_tmp) ::unlink(tmp.c_str());
    return error(io_error(err, fmt::format("cannot listen on '{}'", path)));
  }
  return fd;
}

Result<std::vector<int>> listen_tcp(const std::string& addr, uint16_t port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  std::string service = std::to_string(port);
  int rc = ::getaddrinfo(addr.empty() ? nullptr : addr.c_str(), service.c_str(), &hints, &res);
  if (rc != 0)
    return error(invalid(fmt::format("cannot resolve '{}': {}", addr, ::gai_strerror(rc))));
  std::vector<int> fds;
  int last_err = 0;
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      last_err = errno;
      continue;
    }
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ai->ai_family == AF_INET6) ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || ::listen(fd, 128) < 0) {
      last_err = errno;
      ::close(fd);
      continue;
    }
    fds.push_back(fd);
    if (port == 0) break;  // an ephemeral port differs per socket; keep one
  }
  ::freeaddrinfo(res);
  if (fds.empty())
    return error(io_error(last_err ? last_err : EADDRNOTAVAIL,
                          fmt::format("cannot listen on {}:{}", addr, port)));
  return fds;
}

uint16_t bound_port(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) < 0) return 0;
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  return 0;
}

std::vector<int> activation_sockets() {
  std::vector<int> fds;
  const char* pid = std::getenv("LISTEN_PID");
  const char* count = std::getenv("LISTEN_FDS");
  if (pid && count) {
    char* end = nullptr;
    long want_pid = std::strtol(pid, &end, 10);
    long n = std::strtol(count, nullptr, 10);
    constexpr int kFirstFd = 3;
    constexpr long kMaxActivationFds = 16;
    if (end != pid && want_pid == ::getpid() && n > 0 && n <= kMaxActivationFds) {
      for (int fd = kFirstFd; fd < kFirstFd + n; ++fd) {
        ::fcntl(fd, F_SETFD, FD_CLOEXEC);
        fds.push_back(fd);
      }
    }
  }
  ::unsetenv("LISTEN_PID");
  ::unsetenv("LISTEN_FDS");
  ::unsetenv("LISTEN_FDNAMES");
  return fds;
}

std::string peer_name(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) < 0) return "peer";
  char host[INET6_ADDRSTRLEN] = "?";
  if (ss.ss_family == AF_INET) {
    auto* in = reinterpret_cast<sockaddr_in*>(&ss);
    ::inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    return fmt::format("{}:{}", host, ntohs(in->sin_port));
  }
  if (ss.ss_family == AF_INET6) {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&ss);
    ::inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
    return fmt::format("[{}]:{}", host, ntohs(in6->sin6_port));
  }
  return "unix";
}

}  // namespace keel::nbd
