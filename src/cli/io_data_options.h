// The options of keel io's data commands (qemu-io's read, readv, write, writev, aio_read,
// aio_write), parsed one way for all six: each command's getopt letters as qemu-io 7.2 has them,
// taken in the order given, with qemu-io's message for a bad value. What the options mean
// together (-z with -P, -u without -z, ...) stays with the command.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cli/io_session.h"

namespace keel::cli {

enum class DataCommand { kRead, kReadv, kWrite, kWritev, kAioRead, kAioWrite };

struct DataOptions {
  bool terse = false;        // -C
  bool quiet = false;        // -q
  bool verbose = false;      // -v (reads: dump the data)
  bool pflag = false;        // -P given
  int pattern = 0;           // -P's byte; 0xcd by default for writes, as qemu-io
  bool fua = false;          // -f
  bool unmap = false;        // -u (with -z)
  bool zero = false;         // -z
  bool compressed = false;   // -c (write)
  bool no_fallback = false;  // -n (write -z)
  bool vmstate = false;      // -b (write; read refuses it at once)
  bool lflag = false, sflag = false;
  int64_t pattern_count = 0;   // read -l
  int64_t pattern_offset = 0;  // read -s
  std::string source_file;     // write -s
};

// Parses argv's options for `cmd` into *out and its operands into *operands. Returns 0, or what
// the command must return after the message was printed (usage: -EINVAL; read -b: -ENOTSUP; a
// bad -P/-l/-s value: qemu-io's error).
int io_parse_data_options(DataCommand cmd, const IoSession::Args& argv, DataOptions* out,
                          std::vector<std::string>* operands);

}  // namespace keel::cli
