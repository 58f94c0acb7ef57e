// TableCache: the metadata cache of one kind of cluster-sized table (L2 tables, refcount
// blocks). One part with one job: keep tables in memory within a byte budget, know which are
// dirty and which 512-byte sectors of them changed, and never free a table a caller still holds.
//
// - Handles pin: an entry is a shared_ptr; eviction skips any entry whose handle is held outside
//   the cache, so a pointer a caller keeps can never dangle and no second copy of the same table
//   can be loaded while the first is being changed.
// - One budget counts clean *and* dirty entries (QEMU's l2-cache-size / refcount-cache-size).
//   Only clean, unpinned entries can be evicted; dirty ones leave through the write-back path,
//   which the owner starts when dirty_bytes() passes its limit (a running counter, O(1)).
// - Dirty sectors: each entry records which 512-byte sectors changed since it was last written,
//   so the write-back path writes only those (a table never written, "fresh", is written whole).
// - Buffers of evicted entries are kept for reuse (at most the budget's worth), so a stream of
//   misses does not fragment the heap across allocator arenas.
//
// Not thread-safe: the owner's metadata mutex guards every call (Qcow2Image::mu_); dirty_bytes()
// alone may be read without it.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <unordered_map>
#include <utility>
#include <vector>

namespace keel {

// What every cached table carries besides its payload.
struct CachedTableState {
  bool dirty = false;
  bool fresh = false;  // never written to the file: the write-back path writes it whole
  uint64_t last_use = 0;
  std::vector<uint64_t> dirty_sectors;  // bit per 512-byte sector
};

template <class T>  // T: CachedTableState + payload
class TableCache {
 public:
  using Handle = std::shared_ptr<T>;

  TableCache(uint64_t entry_bytes, uint64_t budget_bytes) { reset(entry_bytes, budget_bytes); }

  // Empties the cache and sets the entry size (the cluster size) and the budget.
  void reset(uint64_t entry_bytes, uint64_t budget_bytes) {
    clear();
    spare_.clear();
    entry_bytes_ = entry_bytes;
    set_budget(budget_bytes);
  }

  // The budget never goes below four entries (a request may hold a few tables at once).
  void set_budget(uint64_t bytes) { budget_ = std::max<uint64_t>(bytes, 4 * entry_bytes_); }
  uint64_t budget() const { return budget_; }
  uint64_t entry_bytes() const { return entry_bytes_; }

  Handle find(uint64_t key) {
    auto it = map_.find(key);
    if (it == map_.end()) return nullptr;
    it->second->last_use = ++tick_;
    return it->second;
  }
  bool contains(uint64_t key) const { return map_.count(key) != 0; }

  // Makes room (evicting clean, unpinned entries), then adds `t` under `key`.
  Handle insert(uint64_t key, Handle t) {
    evict_to(budget_ - entry_bytes_);
    t->last_use = ++tick_;
    t->dirty_sectors.assign(sectors_words(), 0);
    if (t->dirty) dirty_count_.fetch_add(1, std::memory_order_relaxed);
    auto [it, inserted] = map_.insert_or_assign(key, std::move(t));
    (void)inserted;
    return it->second;
  }

  // Drops an entry whatever its state (the caller knows the table is gone or rewritten).
  void erase(uint64_t key) {
    auto it = map_.find(key);
    if (it == map_.end()) return;
    if (it->second->dirty) dirty_count_.fetch_sub(1, std::memory_order_relaxed);
    map_.erase(it);
  }
  void clear() {
    map_.clear();
    dirty_count_.store(0, std::memory_order_relaxed);
  }

  // Records that bytes [offset, offset + length) of the entry changed.
  void mark_dirty(T& t, uint64_t offset, uint64_t length) {
    if (!t.dirty) {
      t.dirty = true;
      dirty_count_.fetch_add(1, std::memory_order_relaxed);
    }
    if (t.dirty_sectors.empty()) t.dirty_sectors.assign(sectors_words(), 0);
    for (uint64_t s = offset / 512; s <= (offset + length - 1) / 512; ++s) t.dirty_sectors[s / 64] |= 1ull << (s % 64);
  }
  void mark_all_dirty(T& t) { mark_dirty(t, 0, entry_bytes_); }
  void mark_clean(T& t) {
    if (t.dirty) dirty_count_.fetch_sub(1, std::memory_order_relaxed);
    t.dirty = false;
    t.fresh = false;
    std::fill(t.dirty_sectors.begin(), t.dirty_sectors.end(), 0);
  }

  // Bytes of dirty entries: a running count, safe to read without the owner's lock.
  uint64_t dirty_bytes() const { return dirty_count_.load(std::memory_order_relaxed) * entry_bytes_; }
  uint64_t cached_bytes() const { return map_.size() * entry_bytes_; }

  // Drops the clean entries nobody holds that were not used since the previous call, and the
  // spare buffers (QEMU's cache-clean-interval timer: memory goes back when the guest is idle).
  void drop_unused() {
    for (auto it = map_.begin(); it != map_.end();) {
      if (!it->second->dirty && it->second.use_count() == 1 && it->second->last_use <= clean_mark_)
        it = map_.erase(it);
      else
        ++it;
    }
    clean_mark_ = tick_;
    spare_.clear();
    spare_.shrink_to_fit();
  }

  // Calls f(key, T&) for every entry (the write-back path; f must not insert or erase).
  template <class F>
  void for_each(F&& f) {
    for (auto& kv : map_) f(kv.first, *kv.second);
  }

  // A buffer for a new entry's payload: recycled from evicted entries when there is one.
  template <class V>
  void recycle_into(V& v) {
    if (!spare_.empty()) {
      v = std::move(spare_.back());
      spare_.pop_back();
    }
  }

  // The byte runs [first, end) of dirty sectors of an entry, in order.
  static std::vector<std::pair<uint64_t, uint64_t>> dirty_runs(const CachedTableState& t, uint64_t entry_bytes) {
    std::vector<std::pair<uint64_t, uint64_t>> runs;
    const uint64_t n = entry_bytes / 512;
    for (uint64_t s = 0; s < n;) {
      if (t.dirty_sectors.empty() || !(t.dirty_sectors[s / 64] >> (s % 64) & 1)) {
        ++s;
        continue;
      }
      uint64_t e = s;
      while (e < n && (t.dirty_sectors[e / 64] >> (e % 64) & 1)) ++e;
      runs.emplace_back(s * 512, e * 512);
      s = e;
    }
    return runs;
  }

 private:
  uint64_t sectors_words() const { return (entry_bytes_ / 512 + 63) / 64; }

  // Evicts clean entries nobody holds, least recently used first, until the cache is at most
  // `limit` bytes (or nothing more can go). Evicts down to 3/4 of the limit so that misses do
  // not pay for a scan each.
  void evict_to(uint64_t limit) {
    if (cached_bytes() <= limit) return;
    const uint64_t target = limit / 4 * 3;
    std::vector<std::pair<uint64_t, uint64_t>> clean;  // last_use, key
    for (auto& [k, v] : map_)
      if (!v->dirty && v.use_count() == 1) clean.emplace_back(v->last_use, k);
    std::sort(clean.begin(), clean.end());
    for (auto& [use, k] : clean) {
      if (cached_bytes() <= target) break;
      auto it = map_.find(k);
      keep_spare(*it->second);
      map_.erase(it);
    }
  }
  void keep_spare(T& t);

  uint64_t entry_bytes_;
  uint64_t budget_ = 0;
  uint64_t tick_ = 0;
  uint64_t clean_mark_ = 0;  // tick_ at the last drop_unused()
  std::atomic<uint64_t> dirty_count_{0};
  std::unordered_map<uint64_t, Handle> map_;
  std::vector<typename T::Payload> spare_;
};

template <class T>
void TableCache<T>::keep_spare(T& t) {
  if ((spare_.size() + 1) * entry_bytes_ <= budget_ / 8) spare_.push_back(std::move(t.payload()));
}

}  // namespace keel
