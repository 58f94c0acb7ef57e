// keel io's data-command options (see io_data_options.h).
#include "cli/io_data_options.h"

#include <cerrno>
#include <cstdio>

#include "cli/io_output.h"

namespace keel::cli {
namespace {

// qemu-io 7.2's getopt strings.
const char* letters_of(DataCommand cmd) {
  switch (cmd) {
    case DataCommand::kRead: return "abCl:pqP:s:v";
    case DataCommand::kReadv: return "CiP:qv";
    case DataCommand::kWrite: return "bcCfnpP:quzs:";
    case DataCommand::kWritev: return "CfqP:";
    case DataCommand::kAioRead: return "CiP:qv";
    case DataCommand::kAioWrite: return "CfiqP:uz";
  }
  return "";
}

bool is_write(DataCommand cmd) {
  return cmd == DataCommand::kWrite || cmd == DataCommand::kWritev || cmd == DataCommand::kAioWrite;
}

}  // namespace

int io_parse_data_options(DataCommand cmd, const IoSession::Args& argv, DataOptions* out,
                          std::vector<std::string>* operands) {
  std::vector<ParsedOption> opts;
  if (!io_getopt(argv, letters_of(cmd), &opts, operands)) return io_usage(argv);
  DataOptions& o = *out;
  o = DataOptions{};
  if (is_write(cmd)) o.pattern = 0xcd;
  for (const auto& opt : opts) {
    switch (opt.letter) {
      case 'C': o.terse = true; break;
      case 'q': o.quiet = true; break;
      case 'v': o.verbose = true; break;
      case 'f': o.fua = true; break;
      case 'u': o.unmap = true; break;
      case 'z': o.zero = true; break;
      case 'c': o.compressed = true; break;
      case 'n': o.no_fallback = true; break;
      case 'a': case 'i': case 'p': break;  // accepted, no effect here
      case 'b': o.vmstate = true; break;
      case 'P':
        o.pflag = true;
        o.pattern = io_parse_pattern(opt.arg);
        if (o.pattern < 0) return -EINVAL;
        break;
      case 'l':
        o.lflag = true;
        o.pattern_count = io_cvtnum(opt.arg);
        if (o.pattern_count < 0) return static_cast<int>(o.pattern_count);
        break;
      case 's':
        o.sflag = true;
        if (cmd == DataCommand::kWrite) {
          o.source_file = opt.arg;
        } else {
          o.pattern_offset = io_cvtnum(opt.arg);
          if (o.pattern_offset < 0) return static_cast<int>(o.pattern_offset);
        }
        break;
      default: return io_usage(argv);
    }
  }
  return 0;
}

}  // namespace keel::cli
