// QEMU's qcow2 cache options, read as QEMU's read_cache_sizes() and
// qcow2_update_options_prepare() read them: cache-size, l2-cache-size, refcount-cache-size,
// l2-cache-entry-size and cache-clean-interval (--image-opts / OpenOptions::qcow2_options).
// Pure: no I/O, no image state.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "keel/status.h"

namespace keel {

struct CacheConfig {
  uint64_t l2_bytes = 0;        // L2 table cache budget
  uint64_t refcount_bytes = 0;  // refcount block cache budget
  uint64_t l2_entry_bytes = 0;  // validated as QEMU does; keel's L2 entries are whole tables
  uint64_t clean_interval_s = 0;  // 0: never drop unused entries on a timer
};

struct CacheDefaults {
  uint64_t l2_max_bytes;        // l2-cache-size when not given (capped at what covers the disk)
  uint64_t refcount_bytes;      // refcount-cache-size when not given
  uint64_t clean_interval_s;    // cache-clean-interval when not given
};

// True for the keys read_cache_options() consumes.
bool is_cache_option(const std::string& key);

// `options` in order (a key given twice: the last wins); keys other than the cache ones are
// ignored. Errors carry QEMU's messages (kInvalidArgument).
Result<CacheConfig> read_cache_options(const std::vector<std::pair<std::string, std::string>>& options,
                                       uint64_t cluster_size, uint64_t virtual_size, uint64_t l2_entry_width,
                                       const CacheDefaults& defaults);

}  // namespace keel
