// A fixed set of threads running jobs in FIFO order; the NBD connections share one pool, so the
// number of engine calls in progress stays bounded however many requests clients pipeline.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace keel::nbd {

class WorkerPool {
 public:
  explicit WorkerPool(size_t threads);
  // Runs every job already submitted, then joins the threads.
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  void submit(std::function<void()> job);

 private:
  void loop();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace keel::nbd
