// Which crash states the explorer checks at each crash point.
//
// At crash point c (ops [0, c) issued) the newest op is c-1. Every state that leaves it out was
// already a state of an earlier crash point, where the model is at least as strict (fewer writes
// issued, the same flushes completed), so the states of crash point c are those that contain op
// c-1: {c-1} plus a subset T of the other open ops. Every subset while the epoch has at most
// `all_subsets_max_ops` open ops; beyond that every prefix, every "all but one", and a seeded
// random sample. Torn variants: when op c-1 is a write of several sectors, it persists only in
// part (first sector only, all but the last, all but the first, random masks), and a few random
// states tear every persisted write. When op c-1 is a sync, the one state is the synced one
// (plus, for other files, everything issued). Crash point 0 is the base state.
#pragma once

#include <cstdint>
#include <vector>

#include "io/recording_file.h"

namespace keel::proof {

struct EnumerationConfig {
  uint32_t all_subsets_max_ops = 10;  // epochs with at most this many open ops: every subset
  uint32_t random_subsets = 16;       // beyond that: random subsets per crash point
  uint32_t torn_variants = 6;         // partial persistence of the newest write, per crash point
  uint32_t random_torn = 2;           // random subsets with every write randomly torn
};

// The states of the cursor's crash point, without duplicates, deterministic in (seed, crash point).
std::vector<CrashState> enumerate_states(const CrashCursor& cursor, const Recording& rec,
                                         const EnumerationConfig& config, uint64_t seed);

}  // namespace keel::proof
