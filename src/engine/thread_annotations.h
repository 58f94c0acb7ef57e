// Lock rules the compiler checks: clang's thread-safety analysis (-Wthread-safety, on in the
// clang builds, see CMakeLists.txt). A field marked KEEL_GUARDED_BY(mu_) may only be touched
// with mu_ held, a function marked KEEL_REQUIRES(mu_) only called with it held; a function that
// drops the lock for I/O in the middle does so with mu_.unlock() / mu_.lock() and must hold it
// again on every path out. With other compilers the macros expand to nothing.
//
// Mutex and MutexLock are std::mutex and std::unique_lock with the annotations libstdc++ lacks.
// A condition variable waits on the Mutex itself (std::condition_variable_any), with
// `mu_.assert_held()` first in the predicate (lambdas are analysed as functions of their own).
#pragma once

#include <mutex>

#if defined(__clang__)
#define KEEL_TSA(x) __attribute__((x))
#else
#define KEEL_TSA(x)
#endif

#define KEEL_CAPABILITY(x) KEEL_TSA(capability(x))
#define KEEL_SCOPED_CAPABILITY KEEL_TSA(scoped_lockable)
#define KEEL_GUARDED_BY(x) KEEL_TSA(guarded_by(x))
#define KEEL_REQUIRES(...) KEEL_TSA(requires_capability(__VA_ARGS__))
#define KEEL_ACQUIRE(...) KEEL_TSA(acquire_capability(__VA_ARGS__))
#define KEEL_RELEASE(...) KEEL_TSA(release_capability(__VA_ARGS__))
#define KEEL_TRY_ACQUIRE(...) KEEL_TSA(try_acquire_capability(__VA_ARGS__))
#define KEEL_EXCLUDES(...) KEEL_TSA(locks_excluded(__VA_ARGS__))
#define KEEL_ASSERT_HELD(x) KEEL_TSA(assert_capability(x))
// For the few reads that are safe without the lock for a reason the analysis cannot see (an
// atomic counter inside a guarded object); the reason is written beside each use.
#define KEEL_NO_THREAD_SAFETY_ANALYSIS KEEL_TSA(no_thread_safety_analysis)

namespace keel {

class KEEL_CAPABILITY("mutex") Mutex {
 public:
  void lock() KEEL_ACQUIRE() { mu_.lock(); }
  void unlock() KEEL_RELEASE() { mu_.unlock(); }
  bool try_lock() KEEL_TRY_ACQUIRE(true) { return mu_.try_lock(); }
  // Tells the analysis the caller holds this mutex (where it cannot follow, e.g. a predicate).
  void assert_held() const KEEL_ASSERT_HELD(this) {}

 private:
  std::mutex mu_;
};

// Holds a Mutex for a scope; unlock() and lock() in between are tracked.
class KEEL_SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex& mu) KEEL_ACQUIRE(mu) : mu_(mu) { mu_.lock(); }
  // Takes over a mutex the caller already holds (after a successful try_lock).
  MutexLock(Mutex& mu, std::adopt_lock_t) KEEL_REQUIRES(mu) : mu_(mu) {}
  ~MutexLock() KEEL_RELEASE() {
    if (held_) mu_.unlock();
  }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;
  void lock() KEEL_ACQUIRE() {
    mu_.lock();
    held_ = true;
  }
  void unlock() KEEL_RELEASE() {
    mu_.unlock();
    held_ = false;
  }

 private:
  Mutex& mu_;
  bool held_ = true;
};

}  // namespace keel
