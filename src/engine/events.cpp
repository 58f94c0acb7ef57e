// Names of engine events (used in test rules and `keel io` output).
#include "keel/events.h"

#include <array>

namespace keel {
namespace {
constexpr std::array<std::string_view, static_cast<size_t>(Event::kCount)> kNames = {
    "data_read",      "data_write",     "cow_read",         "cow_write",       "cluster_alloc",
    "cluster_free",   "l2_load",        "l2_alloc",         "l2_update",       "l1_update",
    "refblock_load",  "refblock_alloc", "refblock_update",  "reftable_update", "reftable_grow",
    "header_update",  "flush_data",     "flush_meta",       "compressed_write", "repair",
    "bitmap_write",   "bitmap_flags",
};
}  // namespace

std::string_view event_name(Event e) {
  auto i = static_cast<size_t>(e);
  return i < kNames.size() ? kNames[i] : "unknown";
}

Event event_from_name(std::string_view name) {
  for (size_t i = 0; i < kNames.size(); ++i)
    if (kNames[i] == name) return static_cast<Event>(i);
  return Event::kCount;
}

}  // namespace keel
