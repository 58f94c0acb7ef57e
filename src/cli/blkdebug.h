// QEMU's fault-injection driver, blkdebug, mapped onto keel's own fault rules (io/fault_file.h),
// so fault-injection scripts written for qemu-img/qemu-io run unchanged:
//   blkdebug:CONFIG:IMAGE, blkdebug::IMAGE
//   json:{"driver":"qcow2","file":{"driver":"blkdebug","image":{"driver":"file","filename":F},
//         "inject-error":[{"event":"l2_update","errno":5,"once":true,"state":1}],
//         "set-state":[{"event":"l2_alloc_write","state":1,"new_state":2}]}}
// CONFIG is QEMU's config file ([inject-error] / [set-state] groups of key = "value" lines).
//
// The mapping: a QEMU event name becomes the keel engine event that marks the same step
// (l2_update -> l2_update, l2_alloc_write -> l2_alloc, write_aio -> data_write, ...; an event
// keel has no step for is refused, naming it); errno, once (default off, as QEMU) keep their
// meaning; an inject-error rule is armed when its event happens while the blkdebug state is its
// `state` (0: any), and then fails the following I/O operations on the image file, once or
// forever; set-state rules move the state (it starts at 1) after the event's rules ran.
// `sector` and `iotype` are refused (keel's rules fail whole operations of every type).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "cli/util.h"

namespace keel::cli {

// The blkdebug options as flattened keys ("inject-error.0.event", "config", ...); `image` is the
// file under it.
struct BlkdebugSpec {
  std::string config;  // QEMU config file with the rules; empty = none
  std::vector<std::pair<std::string, std::string>> keys;
  std::string image;
};

// Parses "blkdebug:CONFIG:IMAGE" into a spec (QEMU: "blkdebug requires both config file and
// image path" without the second colon).
Result<BlkdebugSpec> parse_blkdebug_name(const std::string& name);

// Reads the rules (config file first, then the keys) and sets flags->file_opener and
// flags->observer so that `spec.image`, opened by the engine, fails as the rules say.
Status apply_blkdebug(const BlkdebugSpec& spec, OpenFlags* flags);

}  // namespace keel::cli
