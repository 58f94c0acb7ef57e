// keel io's other commands (flush, map, alloc, info, length, abort, sigraise, sleep, help,
// quit) and the command table. Each returns 0 or a negative errno.
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include <fmt/format.h>

#include "cli/command.h"
#include "cli/info_format.h"
#include "cli/io_output.h"
#include "cli/io_session.h"
#include "cli/util.h"
#include "keel/report.h"

namespace keel::cli {

// ---- flush -------------------------------------------------------------------------------

int IoSession::cmd_flush(const Args&) {
  Status st = image_->flush();
  return st.is_ok() ? 0 : -io_errno_of(st);
}

// ---- map / alloc / info / length -------------------------------------------------------------

int IoSession::cmd_map(const Args&) {
  uint64_t offset = 0;
  uint64_t bytes = image_->size();
  while (bytes) {
    auto first = is_allocated(offset, bytes);
    if (!first) {
      print_error(fmt::format("Failed to get allocation status: {}", std::strerror(io_errno_of(first.error()))));
      return -io_errno_of(first.error());
    }
    bool allocated = first->first;
    uint64_t num = first->second;
    while (num < bytes) {
      auto more = is_allocated(offset + num, bytes - num);
      if (!more) {
        print_error(fmt::format("Failed to get allocation status: {}", std::strerror(io_errno_of(more.error()))));
        return -io_errno_of(more.error());
      }
      if (more->first != allocated) break;
      num += more->second;
    }
    std::printf("%s (0x%llx) bytes %s at offset %s (0x%llx)\n", cvtstr(static_cast<double>(num)).c_str(),
                static_cast<unsigned long long>(num), allocated ? "    allocated" : "not allocated",
                cvtstr(static_cast<double>(offset)).c_str(), static_cast<unsigned long long>(offset));
    offset += num;
    bytes -= num;
  }
  return 0;
}

int IoSession::cmd_alloc(const Args& argv) {
  int64_t offset = io_cvtnum(argv[1]);
  if (offset < 0) return static_cast<int>(offset);
  if (offset % 512 != 0) {
    std::printf("%lld is not a sector-aligned value for 'offset'\n", static_cast<long long>(offset));
    return -EINVAL;
  }
  int64_t count = 512;
  if (argv.size() == 3) {
    count = io_cvtnum(argv[2]);
    if (count < 0) return static_cast<int>(count);
    if (count > kIoMaxRequestBytes) {
      std::printf("length cannot exceed %lld, given %s\n",
                  static_cast<long long>(kIoMaxRequestBytes), argv[2].c_str());
      return -EINVAL;
    }
  }
  // Past the end of the image the status has length 0 and qemu-io clamps the count there
  // ("0/0 bytes allocated at offset 1 MiB").
  uint64_t pos = static_cast<uint64_t>(offset);
  uint64_t remaining = static_cast<uint64_t>(count);
  uint64_t allocated = 0;
  uint64_t size = image_->size();
  while (remaining) {
    if (pos >= size) {
      count -= static_cast<int64_t>(remaining);
      break;
    }
    auto r = is_allocated(pos, std::min(remaining, size - pos));
    if (!r) {
      std::printf("is_allocated failed: %s\n", std::strerror(io_errno_of(r.error())));
      return -io_errno_of(r.error());
    }
    if (r->first) allocated += r->second;
    pos += r->second;
    remaining -= r->second;
  }
  std::printf("%lld/%lld bytes allocated at offset %s\n", static_cast<long long>(allocated),
              static_cast<long long>(count), cvtstr(static_cast<double>(offset)).c_str());
  return 0;
}

int IoSession::cmd_info(const Args&) {
  ImageInfo info = image_->info();
  uint64_t cs = info.cluster_size;
  uint64_t vm_state_offset = 0;
  if (info.format == "qcow2" && cs) {
    // Where QEMU keeps VM state: after the guest area, rounded up to what one L2 table maps.
    uint64_t l2_span = cs * (cs / (info.extended_l2 ? 16 : 8));
    vm_state_offset = (info.virtual_size + l2_span - 1) / l2_span * l2_span;
  }
  std::printf("format name: %s\n", info.format.c_str());
  std::printf("cluster size: %s\n", cvtstr(static_cast<double>(cs)).c_str());
  std::printf("vm state offset: %s\n", cvtstr(static_cast<double>(vm_state_offset)).c_str());
  if (std::string spec = format_specific_text(info, 1); !spec.empty()) {
    std::printf("Format specific information:\n");
    std::fputs(spec.c_str(), stdout);
  }
  return 0;
}

int IoSession::cmd_length(const Args&) {
  std::printf("%s\n", cvtstr(static_cast<double>(image_->size())).c_str());
  return 0;
}

// ---- abort / sigraise / sleep / help / quit --------------------------------------------------

int IoSession::cmd_abort(const Args&) {
  std::fflush(stdout);
  std::fflush(stderr);
  std::abort();
}

int IoSession::cmd_sigraise(const Args& argv) {
  int64_t sig = io_cvtnum(argv[1]);
  if (sig < 0) return static_cast<int>(sig);
  if (sig > NSIG) {
    std::printf("signal argument '%s' is too large to be a valid signal\n", argv[1].c_str());
    return -EINVAL;
  }
  std::fflush(stdout);
  std::fflush(stderr);
  std::raise(static_cast<int>(sig));
  return 0;
}

int IoSession::cmd_sleep(const Args& argv) {
  char* end = nullptr;
  long ms = std::strtol(argv[1].c_str(), &end, 0);
  if (ms < 0 || *end != '\0' || argv[1].empty()) {
    std::printf("%s is not a valid number\n", argv[1].c_str());
    return -EINVAL;
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return 0;
}

int IoSession::cmd_help(const Args& argv) {
  if (argv.size() == 1) {
    for (const auto& c : commands()) std::printf("%s\n", c.usage_line().c_str());
    std::printf("\nUse 'help commandname' for extended help.\n");
    return 0;
  }
  for (const auto& c : commands()) {
    if (argv[1] == c.name || (c.altname && argv[1] == c.altname)) {
      std::printf("%s\n", c.usage_line().c_str());
      if (c.help[0]) std::printf("%s", c.help);
      return 0;
    }
  }
  std::printf("command %s not found\n", argv[1].c_str());
  return 0;
}

int IoSession::cmd_quit(const Args&) {
  quit_ = true;
  return 0;
}

const std::vector<IoSession::Command>& IoSession::commands() {
  static const std::vector<Command> table = {
      {"abort", nullptr, 0, 0, false, nullptr, "simulate a program crash using abort(3)", "",
       &IoSession::cmd_abort},
      {"aio_flush", nullptr, 0, 0, false, nullptr, "completes all outstanding aio requests", "",
       &IoSession::cmd_aio_flush},
      {"aio_read", nullptr, 2, -1, false, "[-Ciqv] [-P pattern] off len [len..]",
       "asynchronously reads a number of bytes", "", &IoSession::cmd_aio_read},
      {"aio_write", nullptr, 2, -1, true, "[-Cfiquz] [-P pattern] off len [len..]",
       "asynchronously writes a number of bytes", "", &IoSession::cmd_aio_write},
      {"alloc", nullptr, 1, 2, false, "offset [count]",
       "checks if offset is allocated in the file", "", &IoSession::cmd_alloc},
      {"close", "c", 0, 0, false, nullptr, "close the current open file", "", &IoSession::cmd_close},
      {"discard", "d", 2, -1, true, "[-Cq] off len", "discards a number of bytes at a specified offset",
       "\n discards a range of bytes from the given offset\n\n"
       " -C, -- report statistics in a machine parsable format\n"
       " -q, -- quiet mode, do not show I/O statistics\n\n",
       &IoSession::cmd_discard},
      {"flush", "f", 0, 0, false, nullptr, "flush all in-core file state to disk", "",
       &IoSession::cmd_flush},
      {"help", "?", 0, 1, false, "[command]", "help for one or all commands", "",
       &IoSession::cmd_help},
      {"info", "i", 0, 0, false, nullptr, "prints information about the current file", "",
       &IoSession::cmd_info},
      {"length", "l", 0, 0, false, nullptr, "gets the length of the current file", "",
       &IoSession::cmd_length},
      {"map", nullptr, 0, 0, false, "", "prints the allocated areas of a file", "",
       &IoSession::cmd_map},
      {"open", "o", 1, -1, false, "[-rsCnkU] [-t cache] [-d discard] [-o options] [path]",
       "open the file specified by path",
       "\n opens a new file in the requested mode\n\n"
       " Example:\n 'open -n -o driver=raw /tmp/data' - opens raw data file read-write, uncached\n\n"
       " Opens a file for subsequent use by all of the other qemu-io commands.\n"
       " -r, -- open file read-only\n"
       " -s, -- use snapshot file\n"
       " -C, -- use copy-on-read\n"
       " -n, -- disable host cache, short for -t none\n"
       " -U, -- force shared permissions\n"
       " -k, -- use kernel AIO implementation (Linux only, prefer use of -i)\n"
       " -i, -- use AIO mode (threads, native or io_uring)\n"
       " -t, -- use the given cache mode for the image\n"
       " -d, -- use the given discard mode for the image\n"
       " -o, -- options to be given to the block driver\n",
       &IoSession::cmd_open},
      {"quit", "q", 0, 0, false, nullptr, "exit the program", "", &IoSession::cmd_quit},
      {"read", "r", 2, -1, false, "[-abCqv] [-P pattern [-s off] [-l len]] off len",
       "reads a number of bytes at a specified offset",
       "\n reads a range of bytes from the given offset\n\n"
       " Example:\n 'read -v 512 1k' - dumps 1 kilobyte read from 512 bytes into the file\n\n"
       " Reads a segment of the currently open file, optionally dumping it to the\n"
       " standard output stream (with -v option) for subsequent inspection.\n"
       " -C, -- report statistics in a machine parsable format\n"
       " -l, -- length for pattern verification (only with -P)\n"
       " -p, -- ignored for backwards compatibility\n"
       " -P, -- use a pattern to verify read data\n"
       " -q, -- quiet mode, do not show I/O statistics\n"
       " -s, -- start offset for pattern verification (only with -P)\n"
       " -v, -- dump buffer to standard output\n\n",
       &IoSession::cmd_read},
      {"readv", nullptr, 2, -1, false, "[-Cqv] [-P pattern] off len [len..]",
       "reads a number of bytes at a specified offset", "", &IoSession::cmd_readv},
      {"reopen", nullptr, 0, -1, false, "[(-r|-w)] [-c cache] [-o options]",
       "reopens an image with new options",
       "\n Changes the open options of an already opened image\n\n"
       " Example:\n 'reopen -o lazy-refcounts=on' - activates lazy refcount writeback on a qcow2 image\n\n"
       " -r, -- Reopen the image read-only\n"
       " -w, -- Reopen the image read-write\n"
       " -c, -- Change the cache mode to the given value\n"
       " -o, -- Changes block driver options (cf. 'open' command)\n\n",
       &IoSession::cmd_reopen},
      {"sigraise", nullptr, 1, 1, false, "signal", "raises a signal", "",
       &IoSession::cmd_sigraise},
      {"sleep", nullptr, 1, 1, false, nullptr, "waits for the given value in milliseconds", "",
       &IoSession::cmd_sleep},
      {"truncate", "t", 1, 3, true, "[-m prealloc_mode] off",
       "truncates the current file at the given offset", "", &IoSession::cmd_truncate},
      {"write", "w", 2, -1, true, "[-bcCfnquz] [-P pattern | -s source_file] off len",
       "writes a number of bytes at a specified offset",
       "\n writes a range of bytes from the given offset\n\n"
       " Example:\n 'write 512 1k' - writes 1 kilobyte at 512 bytes into the open file\n\n"
       " Writes into a segment of the currently open file, using a buffer\n"
       " filled with a set pattern (0xcdcdcdcd).\n"
       " -c, -- write compressed data with blk_write_compressed\n"
       " -C, -- report statistics in a machine parsable format\n"
       " -f, -- use Force Unit Access semantics\n"
       " -n, -- with -z, don't allow slow fallback\n"
       " -p, -- ignored for backwards compatibility\n"
       " -P, -- use different pattern to fill file\n"
       " -s, -- use a pattern file to fill the write buffer\n"
       " -q, -- quiet mode, do not show I/O statistics\n"
       " -u, -- with -z, allow unmapping\n"
       " -z, -- write zeroes using blk_co_pwrite_zeroes\n\n",
       &IoSession::cmd_write},
      {"writev", nullptr, 2, -1, true, "[-Cfq] [-P pattern] off len [len..]",
       "writes a number of bytes at a specified offset", "", &IoSession::cmd_writev},
  };
  return table;
}

}  // namespace keel::cli
