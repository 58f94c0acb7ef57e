// The NBD server: accepts clients on listening sockets and serves one keel::Image to each of
// them (a thread per connection, a shared WorkerPool for the engine calls).
//
// Like qemu-nbd: at most `max_connections` clients at once (others wait in the listen
// backlog); without `persistent`, run() returns once the last client has left. stop() (or the
// stop fd becoming readable, e.g. a signalfd for SIGTERM) stops accepting, lets every connection
// finish the requests it has read, and returns from run(). The caller then flushes and closes
// the image.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "keel/image.h"
#include "nbd/connection.h"
#include "nbd/worker_pool.h"

namespace keel::nbd {

struct ServerConfig {
  ConnectionConfig connection;
  uint32_t max_connections = 1;  // qemu-nbd -e/--shared
  bool persistent = false;       // qemu-nbd -t: keep serving after the last client leaves
  size_t worker_threads = 16;
  // After stop(), connections that have not finished within this time are cut hard (a client
  // that neither sends nor reads replies must not block the shutdown).
  std::chrono::milliseconds stop_grace{10000};
};

class Server {
 public:
  Server(Image& image, ServerConfig cfg);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Takes ownership of a listening socket.
  void add_listener(int fd);
  // Serves until stop(), stop_fd readable, or (not persistent) the last client leaving.
  // Returns after every connection has ended.
  void run(int stop_fd = -1);
  // Thread-safe (not async-signal-safe: use a stop fd from signal handlers).
  void stop();

  // Number of clients served so far / connected now (for tests and logs).
  uint64_t connections_accepted() const { return accepted_; }
  uint32_t connections_active() const;

 private:
  struct Client {
    std::unique_ptr<Connection> conn;
    std::thread thread;
    bool done = false;
  };

  void accept_one(int listen_fd);
  void reap_finished();
  void wake();

  Image& image_;
  ServerConfig cfg_;
  WorkerPool pool_;
  std::vector<int> listeners_;
  int wake_pipe_[2] = {-1, -1};
  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> accepted_{0};
  mutable std::mutex mu_;
  std::list<Client> clients_;
};

}  // namespace keel::nbd
