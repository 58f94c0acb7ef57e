// AllocGate: many metadata mutators (writes, discards) run at once; a flush runs alone.
// Waiting flushes get priority so a stream of writes cannot starve them.
#pragma once

#include <condition_variable>
#include <mutex>

namespace keel {

class AllocGate {
 public:
  void enter_shared() {
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait(lk, [&] { return !exclusive_ && exclusive_waiting_ == 0; });
    ++shared_;
  }
  // Enters shared only if that needs no wait (for an event loop that must never block).
  bool try_enter_shared() {
    std::unique_lock<std::mutex> lk(mu_, std::try_to_lock);
    if (!lk.owns_lock() || exclusive_ || exclusive_waiting_ != 0) return false;
    ++shared_;
    return true;
  }
  void exit_shared() {
    std::lock_guard<std::mutex> lk(mu_);
    if (--shared_ == 0) cv_.notify_all();
  }
  void enter_exclusive() {
    std::unique_lock<std::mutex> lk(mu_);
    ++exclusive_waiting_;
    cv_.wait(lk, [&] { return !exclusive_ && shared_ == 0; });
    --exclusive_waiting_;
    exclusive_ = true;
  }
  void exit_exclusive() {
    std::lock_guard<std::mutex> lk(mu_);
    exclusive_ = false;
    cv_.notify_all();
  }
  // Turns the caller's exclusive hold into a shared one, letting shared entrants in while
  // other exclusive entrants still wait (never blocks).
  void downgrade() {
    std::lock_guard<std::mutex> lk(mu_);
    exclusive_ = false;
    ++shared_;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int shared_ = 0;
  int exclusive_waiting_ = 0;
  bool exclusive_ = false;
};

struct SharedGate {
  explicit SharedGate(AllocGate& g) : gate(g) { gate.enter_shared(); }
  ~SharedGate() { gate.exit_shared(); }
  AllocGate& gate;
};

struct ExclusiveGate {
  explicit ExclusiveGate(AllocGate& g) : gate(g) { gate.enter_exclusive(); }
  ~ExclusiveGate() { gate.exit_exclusive(); }
  AllocGate& gate;
};

// An exclusive hold that its owner may downgrade to shared: the guest flush lets writers in
// while its last sync runs.
class DowngradableGate {
 public:
  explicit DowngradableGate(AllocGate& g) : gate_(g) { gate_.enter_exclusive(); }
  ~DowngradableGate() { exclusive_ ? gate_.exit_exclusive() : gate_.exit_shared(); }
  DowngradableGate(const DowngradableGate&) = delete;
  DowngradableGate& operator=(const DowngradableGate&) = delete;
  void downgrade() {
    if (!exclusive_) return;
    gate_.downgrade();
    exclusive_ = false;
  }

 private:
  AllocGate& gate_;
  bool exclusive_ = true;
};

}  // namespace keel
