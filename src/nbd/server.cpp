// The NBD accept loop and connection bookkeeping (see server.h).
#include "nbd/server.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "nbd/log.h"

namespace keel::nbd {

Server::Server(Image& image, ServerConfig cfg)
    : image_(image), cfg_(std::move(cfg)), pool_(cfg_.worker_threads) {
  if (!cfg_.connection.policy.flushes) cfg_.connection.policy.flushes = std::make_shared<FlushGeneration>();
  if (::pipe2(wake_pipe_, O_CLOEXEC | O_NONBLOCK) < 0) wake_pipe_[0] = wake_pipe_[1] = -1;
}

Server::~Server() {
  stop();
  for (int fd : listeners_) ::close(fd);
  for (auto& c : clients_) {
    c.conn->interrupt(true);
    if (c.thread.joinable()) c.thread.join();
  }
  for (int fd : wake_pipe_)
    if (fd >= 0) ::close(fd);
}

void Server::add_listener(int fd) {
  int fl = ::fcntl(fd, F_GETFL);
  if (fl >= 0) ::fcntl(fd, F_SETFL, fl | O_NONBLOCK);
  listeners_.push_back(fd);
}

uint32_t Server::connections_active() const {
  std::lock_guard lock(mu_);
  return static_cast<uint32_t>(clients_.size());
}

void Server::wake() {
  if (wake_pipe_[1] < 0) return;
  char b = 1;
  [[maybe_unused]] ssize_t rc = ::write(wake_pipe_[1], &b, 1);
}

void Server::stop() {
  stopping_ = true;
  wake();
}

void Server::reap_finished() {
  std::lock_guard lock(mu_);
  for (auto it = clients_.begin(); it != clients_.end();) {
    if (it->done) {
      it->thread.join();
      it = clients_.erase(it);
    } else {
      ++it;
    }
  }
}

void Server::accept_one(int listen_fd) {
  int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
  if (fd < 0) {
    if (errno == EMFILE || errno == ENFILE) {
      cfg_.connection.log.line("out of file descriptors; not accepting for a moment");
      ::usleep(100 * 1000);
    }
    return;
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // fails harmlessly on unix
  uint64_t id = ++accepted_;
  std::lock_guard lock(mu_);
  clients_.push_back(Client{});
  Client* c = &clients_.back();
  c->conn = std::make_unique<Connection>(fd, id, image_, cfg_.connection, pool_);
  c->thread = std::thread([this, c] {
    try {
      c->conn->serve();
    } catch (const std::exception& e) {
      cfg_.connection.log.line(fmt::format("{}: connection failed: {}", c->conn->peer(), e.what()));
    }
    {
      std::lock_guard done_lock(mu_);
      c->done = true;
    }
    wake();
  });
}

void Server::run(int stop_fd) {
  for (;;) {
    reap_finished();
    uint32_t active = connections_active();
    if (stopping_) break;
    if (!cfg_.persistent && accepted_ > 0 && active == 0) break;
    std::vector<pollfd> fds;
    fds.push_back(pollfd{wake_pipe_[0], POLLIN, 0});
    if (stop_fd >= 0) fds.push_back(pollfd{stop_fd, POLLIN, 0});
    size_t first_listener = fds.size();
    if (active < cfg_.max_connections)
      for (int l : listeners_) fds.push_back(pollfd{l, POLLIN, 0});
    int rc = ::poll(fds.data(), fds.size(), -1);
    if (rc < 0) {
      if (errno == EINTR) continue;
      cfg_.connection.log.line(fmt::format("poll failed: {}", std::strerror(errno)));
      break;
    }
    if (fds[0].revents) {
      char buf[64];
      while (::read(wake_pipe_[0], buf, sizeof buf) > 0) {
      }
    }
    if (stop_fd >= 0 && fds[1].revents) break;
    for (size_t i = first_listener; i < fds.size(); ++i)
      if (fds[i].revents & POLLIN) accept_one(fds[i].fd);
  }

  // Stop accepting, let connections finish what they have read, then cut the stragglers.
  stopping_ = true;
  for (int fd : listeners_) ::close(fd);
  listeners_.clear();
  {
    std::lock_guard lock(mu_);
    for (auto& c : clients_) c.conn->interrupt(false);
  }
  auto deadline = std::chrono::steady_clock::now() + cfg_.stop_grace;
  bool hard = false;
  for (;;) {
    reap_finished();
    if (connections_active() == 0) break;
    if (!hard && std::chrono::steady_clock::now() >= deadline) {
      cfg_.connection.log.line("clients still connected after the grace period; disconnecting them");
      std::lock_guard lock(mu_);
      for (auto& c : clients_) c.conn->interrupt(true);
      hard = true;
    }
    pollfd p{wake_pipe_[0], POLLIN, 0};
    ::poll(&p, 1, 100);
    char buf[64];
    while (::read(wake_pipe_[0], buf, sizeof buf) > 0) {
    }
  }
}

}  // namespace keel::nbd
