// Results as the text qemu-img 7.2 prints for them, from the one renderer libkeel and the keel
// command share: `check --output=json`, `measure --output=json`, and the lines under "Format
// specific information:" of `qemu-img info` and qemu-io's `info`. Scripts written against
// qemu-img parse this text, so it matches byte for byte (QEMU's key order, indent and escapes).
// info's JSON is in keel/info_json.h. Pure functions of their arguments (no I/O); thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "keel/check.h"
#include "keel/image.h"

namespace keel {

// `qemu-img check --output=json` of a qcow2 image named `filename`, without the trailing
// newline: the counters of `result` that are non-zero (check-errors always).
std::string check_json(const CheckResult& result, const std::string& filename);

// `qemu-img measure --output=json`, without the trailing newline; "bitmaps" only when given.
std::string measure_json(uint64_t required_bytes, uint64_t fully_allocated_bytes,
                         std::optional<uint64_t> bitmaps_bytes);

// The "Format specific information" block of `info` (its lines, each indented by 4 *
// indent_level spaces, dashes in keys shown as spaces, nested entries 4 more), or "" for a
// format that has none (raw).
std::string format_specific_text(const ImageInfo& info, int indent_level = 1);

}  // namespace keel
