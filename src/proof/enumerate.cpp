// Crash-state enumeration (see enumerate.h).
#include "proof/enumerate.h"

#include <algorithm>
#include <random>
#include <set>

namespace keel::proof {
namespace {

class Collector {
 public:
  explicit Collector(uint64_t crash_point) : cp_(crash_point) {}
  void add(std::vector<uint32_t> persisted, std::vector<std::pair<uint32_t, std::vector<bool>>> torn = {}) {
    std::sort(persisted.begin(), persisted.end());
    CrashState s{cp_, std::move(persisted), std::move(torn)};
    if (seen_.insert(key(s)).second) out_.push_back(std::move(s));
  }
  std::vector<CrashState> take() { return std::move(out_); }

 private:
  static std::vector<uint64_t> key(const CrashState& s) {
    std::vector<uint64_t> k(s.persisted.begin(), s.persisted.end());
    for (const auto& [op, mask] : s.torn) {
      k.push_back(UINT64_MAX);
      k.push_back(op);
      for (bool b : mask) k.push_back(b);
    }
    return k;
  }
  uint64_t cp_;
  std::set<std::vector<uint64_t>> seen_;
  std::vector<CrashState> out_;
};

std::vector<bool> random_mask(std::mt19937_64& rng, size_t n) {
  std::vector<bool> m(n);
  for (size_t i = 0; i < n; ++i) m[i] = rng() & 1;
  return m;
}

bool epoch_ends_here(const Recording& rec, uint64_t cp) {
  const auto& ops = rec.ops();
  return cp >= ops.size() || ops[cp].kind == FileOpKind::kSync;
}

uint64_t torn_count(const FileOp& newest, const EnumerationConfig& config) {
  uint64_t n = newest.kind == FileOpKind::kWrite ? newest.sector_count() : 0;
  return n > 1 ? config.torn_variants : 0;
}

}  // namespace

uint64_t count_states(const CrashCursor& cursor, const Recording& rec, const EnumerationConfig& config) {
  const uint64_t cp = cursor.crash_point();
  if (cp == 0) return 1;
  const FileOp& newest = rec.ops()[cp - 1];
  if (newest.kind == FileOpKind::kSync) return 1;
  uint64_t others = cursor.open_ops().size() - 1;
  uint64_t n;
  if (others + 1 <= config.all_subsets_max_ops) {
    n = 1ull << others;
  } else {
    n = 1 + config.random_subsets + config.random_prefixes + config.random_drop_one;
    if (epoch_ends_here(rec, cp)) n += others;
  }
  return n + torn_count(newest, config) + config.random_torn;
}

std::vector<CrashState> enumerate_states(const CrashCursor& cursor, const Recording& rec,
                                         const EnumerationConfig& config, uint64_t seed) {
  const uint64_t cp = cursor.crash_point();
  Collector out(cp);
  const auto& open = cursor.open_ops();
  if (cp == 0) {
    out.add({});
    return out.take();
  }
  const FileOp& newest = rec.ops()[cp - 1];
  if (newest.kind == FileOpKind::kSync) {
    out.add(open);
    return out.take();
  }
  const uint32_t last = static_cast<uint32_t>(cp - 1);
  std::vector<uint32_t> others(open.begin(), open.end());
  others.erase(std::remove(others.begin(), others.end(), last), others.end());
  std::mt19937_64 rng(seed * 0x9e3779b97f4a7c15ull + cp);
  auto with_last = [&](std::vector<uint32_t> t) {
    t.push_back(last);
    return t;
  };
  auto random_subset = [&] {
    std::vector<uint32_t> t;
    for (uint32_t op : others)
      if (rng() & 1) t.push_back(op);
    return t;
  };
  auto drop = [&](size_t i) {
    std::vector<uint32_t> t = others;
    t.erase(t.begin() + static_cast<long>(i));
    return with_last(std::move(t));
  };

  if (others.size() + 1 <= config.all_subsets_max_ops) {
    for (uint64_t bits = 0; bits < (1ull << others.size()); ++bits) {
      std::vector<uint32_t> t;
      for (size_t i = 0; i < others.size(); ++i)
        if (bits & (1ull << i)) t.push_back(others[i]);
      out.add(with_last(std::move(t)));
    }
  } else {
    out.add(with_last(others));
    for (uint32_t k = 0; k < config.random_subsets; ++k) out.add(with_last(random_subset()));
    for (uint32_t k = 0; k < config.random_prefixes; ++k) {
      size_t len = rng() % others.size();
      out.add(with_last(std::vector<uint32_t>(others.begin(), others.begin() + static_cast<long>(len))));
    }
    if (epoch_ends_here(rec, cp)) {
      for (size_t i = 0; i < others.size(); ++i) out.add(drop(i));
    } else {
      for (uint32_t k = 0; k < config.random_drop_one; ++k) out.add(drop(rng() % others.size()));
    }
  }

  // Torn variants of the newest write.
  uint64_t n = newest.kind == FileOpKind::kWrite ? newest.sector_count() : 0;
  if (n > 1 && config.torn_variants > 0) {
    std::vector<std::vector<bool>> masks;
    std::vector<bool> m(n, false);
    m[0] = true;
    masks.push_back(m);  // the first sector only
    masks.push_back(std::vector<bool>(n, true));
    masks.back()[n - 1] = false;  // all but the last
    masks.push_back(std::vector<bool>(n, true));
    masks.back()[0] = false;  // all but the first
    while (masks.size() < config.torn_variants) masks.push_back(random_mask(rng, n));
    masks.resize(std::min<size_t>(masks.size(), config.torn_variants));
    for (size_t i = 0; i < masks.size(); ++i) {
      std::vector<uint32_t> t = i % 3 == 0 ? others : i % 3 == 1 ? std::vector<uint32_t>{} : random_subset();
      out.add(with_last(std::move(t)), {{last, masks[i]}});
    }
  }
  // Random states with every persisted multi-sector write torn.
  for (uint32_t k = 0; k < config.random_torn; ++k) {
    std::vector<uint32_t> t = with_last(random_subset());
    std::vector<std::pair<uint32_t, std::vector<bool>>> torn;
    for (uint32_t op : t) {
      const FileOp& o = rec.ops()[op];
      if (o.kind == FileOpKind::kWrite && o.sector_count() > 1) torn.push_back({op, random_mask(rng, o.sector_count())});
    }
    if (!torn.empty()) out.add(std::move(t), std::move(torn));
  }
  return out.take();
}

}  // namespace keel::proof
