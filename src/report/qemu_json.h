// JSON and nested "key: value" text in the layouts QEMU 7.2's tools print, for everything libkeel
// and the keel command render as qemu-img does (info, check, measure). Scripts written against
// qemu-img parse this text, so it must match byte for byte. Internal to libkeel and the command:
// the public API returns the text (keel/info_json.h), never nlohmann types.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace keel::report {

// Serializes like QEMU's qobject_to_json_pretty: 4-space indent, "key": value, empty
// containers as "[\n<indent>]", non-ASCII and control characters as \uXXXX. Object keys come
// out in QEMU's QDict iteration order (hash buckets), not in insertion order, so the text
// matches what qemu-img prints for the same fields.
std::string qemu_json(const nlohmann::ordered_json& value);
// The key order QEMU's QDict iterates in for this set of keys (given in insertion order).
std::vector<std::string> qdict_order(const std::vector<std::string>& keys_in_insertion_order);

// Prints a format-specific dict like QEMU's bdrv_image_info_specific_dump: one "key: value"
// line per entry, dashes in keys shown as spaces, nested entries indented 4 more.
std::string qemu_human_dump(const nlohmann::ordered_json& dict, int indent_level);

}  // namespace keel::report
