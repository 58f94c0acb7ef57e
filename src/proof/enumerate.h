// Which crash states the explorer checks at each crash point.
//
// At crash point c (ops [0, c) issued) the newest op is c-1. Every state that leaves it out was
// already a state of an earlier crash point, where the model is at least as strict (fewer writes
// issued, the same flushes completed), so the states of crash point c are those that contain op
// c-1: {c-1} plus a subset T of the other open ops.
//  - While the epoch has at most `all_subsets_max_ops` open ops: every subset T.
//  - Beyond that: T = all (the kill state; over the epoch these are all its prefixes), seeded
//    random subsets, random prefixes, random "all but one"; and at the epoch's last crash point
//    (the next op is a sync, or there is none) every "all but one".
//  - Torn variants when op c-1 is a write of several 512-byte sectors: it persists only in part
//    (first sector only, all but the last, all but the first, random masks); and a few random
//    subsets in which every persisted write is torn at random.
// When op c-1 is a sync the one state is the synced one (plus, for other files, everything
// issued). Crash point 0 is the base state.
#pragma once

#include <cstdint>
#include <vector>

#include "io/recording_file.h"

namespace keel::proof {

struct EnumerationConfig {
  uint32_t all_subsets_max_ops = 10;  // epochs with at most this many open ops: every subset
  uint32_t random_subsets = 8;        // beyond that, per crash point
  uint32_t random_prefixes = 2;       // beyond that, per crash point
  uint32_t random_drop_one = 2;       // beyond that, per crash point (all of them at epoch end)
  uint32_t torn_variants = 6;         // partial persistence of the newest write, per crash point
  uint32_t random_torn = 2;           // random subsets with every write randomly torn
};

// The states of the cursor's crash point, without duplicates, deterministic in (seed, crash point).
std::vector<CrashState> enumerate_states(const CrashCursor& cursor, const Recording& rec,
                                         const EnumerationConfig& config, uint64_t seed);
// An upper bound of enumerate_states(...).size(), computed without building the states.
uint64_t count_states(const CrashCursor& cursor, const Recording& rec, const EnumerationConfig& config);

}  // namespace keel::proof
