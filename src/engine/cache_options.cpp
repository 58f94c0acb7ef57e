// QEMU's qcow2 cache options (see cache_options.h); the rules and messages are QEMU 7.2's
// (block/qcow2.c: read_cache_sizes, qcow2_update_options_prepare).
#include "engine/cache_options.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <optional>

#include "keel/limits.h"

namespace keel {

namespace {

constexpr uint64_t kMinL2CacheEntries = 2;        // QEMU's MIN_L2_CACHE_SIZE (entries)
constexpr uint64_t kMinRefcountCacheEntries = 4;  // QEMU's MIN_REFCOUNT_CACHE_SIZE (clusters)

// QEMU's size syntax: digits, an optional fraction, an optional suffix k/M/G/T/P/E (base 1024)
// or b/B.
std::optional<uint64_t> parse_size(const std::string& s) {
  if (s.empty() || s[0] == '-' || s[0] == ' ') return std::nullopt;
  errno = 0;
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (errno || end == s.c_str()) return std::nullopt;
  const std::string suffix(end);
  int shift = 0;
  if (suffix.empty() || suffix == "b" || suffix == "B") shift = 0;
  else if (suffix.size() != 1) return std::nullopt;
  else {
    switch (suffix[0]) {
      case 'k': case 'K': shift = 10; break;
      case 'M': case 'm': shift = 20; break;
      case 'G': case 'g': shift = 30; break;
      case 'T': case 't': shift = 40; break;
      case 'P': case 'p': shift = 50; break;
      case 'E': case 'e': shift = 60; break;
      default: return std::nullopt;
    }
  }
  const double bytes = v * static_cast<double>(1ull << shift);
  if (bytes < 0 || bytes >= 18446744073709551616.0) return std::nullopt;
  // A fraction only with a suffix, as QEMU.
  if (shift == 0 && v != static_cast<double>(static_cast<uint64_t>(v))) return std::nullopt;
  return static_cast<uint64_t>(bytes);
}

Status size_error(const std::string& key) {
  return invalid(fmt::format(
      "Parameter '{}' expects a non-negative number below 2^64\n"
      "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
      "and exabytes, respectively.",
      key));
}

}  // namespace

bool is_cache_option(const std::string& key) {
  return key == "cache-size" || key == "l2-cache-size" || key == "refcount-cache-size" ||
         key == "l2-cache-entry-size" || key == "cache-clean-interval";
}

Result<CacheConfig> read_cache_options(const std::vector<std::pair<std::string, std::string>>& options,
                                       uint64_t cluster_size, uint64_t virtual_size, uint64_t l2_entry_width,
                                       const CacheDefaults& defaults) {
  std::optional<uint64_t> combined, l2_set, rc_set, entry_set, interval_set;
  for (const auto& [key, value] : options) {
    if (!is_cache_option(key)) continue;
    if (key == "cache-clean-interval") {
      char* end = nullptr;
      errno = 0;
      const unsigned long long n = std::strtoull(value.c_str(), &end, 0);
      // As QEMU's qemu_opt_get_number (strtoull): "-1" wraps to a huge value, too big below.
      if (value.empty() || errno || *end)
        return error(invalid(fmt::format("Parameter '{}' expects a number", key)));
      interval_set = n;
      continue;
    }
    auto v = parse_size(value);
    if (!v) return error(size_error(key));
    if (key == "cache-size") combined = v;
    else if (key == "l2-cache-size") l2_set = v;
    else if (key == "refcount-cache-size") rc_set = v;
    else entry_set = v;
  }

  const uint64_t min_refcount_cache = kMinRefcountCacheEntries * cluster_size;
  const uint64_t max_l2_entries = (virtual_size + cluster_size - 1) / cluster_size;
  const uint64_t max_l2_cache = (max_l2_entries * l2_entry_width + cluster_size - 1) / cluster_size * cluster_size;
  const uint64_t l2_max_setting = l2_set.value_or(defaults.l2_max_bytes);
  CacheConfig c;
  c.refcount_bytes = rc_set.value_or(defaults.refcount_bytes);
  c.l2_entry_bytes = entry_set.value_or(cluster_size);
  c.l2_bytes = std::min(max_l2_cache, l2_max_setting);
  if (combined) {
    if (l2_set && rc_set)
      return error(invalid("cache-size, l2-cache-size and refcount-cache-size may not be set at the same time"));
    if (l2_set && l2_max_setting > *combined) return error(invalid("l2-cache-size may not exceed cache-size"));
    if (rc_set && *rc_set > *combined) return error(invalid("refcount-cache-size may not exceed cache-size"));
    if (l2_set) {
      c.refcount_bytes = *combined - c.l2_bytes;
    } else if (rc_set) {
      c.l2_bytes = *combined - c.refcount_bytes;
    } else if (*combined >= max_l2_cache + min_refcount_cache) {
      c.l2_bytes = max_l2_cache;
      c.refcount_bytes = *combined - c.l2_bytes;
    } else {
      c.refcount_bytes = std::min(*combined, min_refcount_cache);
      c.l2_bytes = *combined - c.refcount_bytes;
    }
  }
  if (c.l2_bytes < max_l2_cache && !entry_set) c.l2_entry_bytes = std::min<uint64_t>(cluster_size, 4096);
  const uint64_t min_entry = 1ull << limits::kMinClusterBits;
  if (c.l2_entry_bytes < min_entry || c.l2_entry_bytes > cluster_size || (c.l2_entry_bytes & (c.l2_entry_bytes - 1)))
    return error(invalid(fmt::format("L2 cache entry size must be a power of two between {} and the cluster size ({})",
                                     min_entry, cluster_size)));
  if (c.l2_bytes / c.l2_entry_bytes > INT_MAX) return error(invalid("L2 cache size too big"));
  if (c.refcount_bytes / cluster_size > INT_MAX) return error(invalid("Refcount cache size too big"));
  // QEMU's minimums: 2 L2 entries, 4 refcount blocks (keel's caches are whole tables, so the L2
  // minimum is 2 clusters).
  c.l2_bytes = std::max(c.l2_bytes, kMinL2CacheEntries * cluster_size);
  c.refcount_bytes = std::max(c.refcount_bytes, min_refcount_cache);
  c.clean_interval_s = interval_set.value_or(defaults.clean_interval_s);
  if (c.clean_interval_s > UINT_MAX) return error(invalid("Cache clean interval too big"));
  return c;
}

}  // namespace keel
