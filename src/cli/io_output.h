// Output and argument helpers shared by keel io's commands: qemu-io's report lines, hex dump,
// usage line, and the length lists of the vectored commands.
#pragma once

#include <cstdint>
#include <ctime>
#include <string>
#include <vector>

#include "cli/io_session.h"
#include "keel/status.h"

namespace keel::cli {

inline constexpr int64_t kIoMaxRequestBytes = 2147483136;  // QEMU's BDRV_REQUEST_MAX_BYTES

timespec io_now();
timespec io_elapsed_since(const timespec& start);

// qemu-io's print_report: "<op> N/N bytes at offset O" and the timing line (or -C's terse line).
void io_print_report(const char* op, const timespec& t, int64_t offset, int64_t count,
                     int64_t total, int ops, bool terse);
// qemu-io's dump_buffer (read -v).
void io_dump_buffer(const uint8_t* buf, int64_t offset, int64_t len);
// Prints the command's usage line; returns -EINVAL.
int io_usage(const IoSession::Args& argv);
// The errno qemu-io would print for a failed request (with KEEL_DEBUG set, the engine's message
// also goes to stderr).
int io_errno_of(const Status& st);
// Parses "len [len...]" of the vectored commands; false after printing qemu-io's message.
bool io_parse_lengths(const std::vector<std::string>& args, size_t first,
                      std::vector<int64_t>* lens, int64_t* total);

}  // namespace keel::cli
