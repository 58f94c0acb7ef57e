// Damaged-image workloads (issue 13): the damage a workload's image gets right after creation,
// and the judgement of its crash states. A damaged image is refused by the engine (marked
// corrupt), so G1–G5 do not apply to it; what must hold in every state instead: the header still
// reads as qcow2 and no metadata cluster of the image holds a guest write's sector.
#pragma once

#include <cstdint>
#include <vector>

#include "proof/checker.h"
#include "proof/workload.h"

namespace keel::proof {

// spec.damage "refcount0": the refcounts of the header, refcount table, first refcount block and
// L1 table clusters set to 0 (16-bit refcounts, as the workload creates them).
void apply_damage(const WorkloadSpec& spec, std::vector<uint8_t>& image);
// Adds a G4 violation per metadata sector of `image` that decodes as a guest write (G1 if the
// header is gone).
void check_damaged_state(const std::vector<uint8_t>& image, StateVerdict& v, uint32_t max_details);

}  // namespace keel::proof
