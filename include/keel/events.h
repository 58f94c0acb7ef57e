// Named engine events, in the spirit of QEMU's blkdebug: the engine announces each step of its
// write path to an optional observer, so a test can fail I/O or crash "after l2_update".
#pragma once

#include <string_view>

namespace keel {

enum class Event {
  kDataRead,          // guest data read from a host cluster
  kDataWrite,         // guest data written to a host cluster (in place or newly allocated)
  kCowRead,           // reading the untouched part of a cluster for copy-on-write
  kCowWrite,          // writing a copied-on-write cluster
  kClusterAlloc,      // host clusters taken from the free pool (in memory)
  kClusterFree,       // refcount decrements applied after an unlink became durable
  kL2Load,            // an L2 table read into the cache
  kL2Alloc,           // a new L2 table written (before it is linked)
  kL2Update,          // dirty L2 tables written back
  kL1Update,          // L1 entries written back
  kRefblockLoad,      // a refcount block read into the cache
  kRefblockAlloc,     // a new refcount block written
  kRefblockUpdate,    // dirty refcount blocks written back
  kReftableUpdate,    // refcount table entries written
  kReftableGrow,      // a larger refcount table written and switched in the header
  kHeaderUpdate,      // header fields rewritten
  kFlushData,         // first sync of a flush: data, new tables and refcounts durable
  kFlushMeta,         // second sync of a flush: links (L2 entries, L1, reftable) durable
  kCompressedWrite,   // a compressed cluster written
  kRepair,            // open-time repair of a dirty (lazy refcounts) image
  kBitmapWrite,       // persistent bitmap data, tables or directory written to fresh clusters
  kBitmapFlags,       // bitmap directory flags (in_use, auto) rewritten in place
  kCount
};

std::string_view event_name(Event e);
// Returns kCount when the name is unknown.
Event event_from_name(std::string_view name);

class EventObserver {
 public:
  virtual ~EventObserver() = default;
  // Called before the step's I/O is issued. Must be thread-safe.
  virtual void on_event(Event e) = 0;
};

}  // namespace keel
