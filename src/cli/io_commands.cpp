// The commands of keel io (qemu-io's language): argument checks, messages and reports as
// qemu-io 7.2 prints them. Each returns 0 or a negative errno.
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <thread>

#include <fmt/format.h>

#include "cli/command.h"
#include "cli/info_format.h"
#include "cli/io_session.h"
#include "cli/util.h"

namespace keel::cli {
namespace {

constexpr int64_t kMaxRequestBytes = 2147483136;  // QEMU's BDRV_REQUEST_MAX_BYTES

timespec now() {
  timespec t{};
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t;
}

timespec elapsed_since(const timespec& start) {
  timespec end = now();
  timespec d{end.tv_sec - start.tv_sec, end.tv_nsec - start.tv_nsec};
  if (d.tv_nsec < 0) {
    d.tv_nsec += 1000000000;
    d.tv_sec -= 1;
  }
  return d;
}

double per_second(double value, const timespec& t) {
  return value / (static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) / 1e9);
}

// qemu-io's print_report: the result line and the timing line (or -C's terse line).
void print_report(const char* op, const timespec& t, int64_t offset, int64_t count, int64_t total,
                  int ops, bool terse) {
  if (!terse) {
    std::printf("%s %lld/%lld bytes at offset %lld\n", op, static_cast<long long>(total),
                static_cast<long long>(count), static_cast<long long>(offset));
    std::printf("%s, %d ops; %s (%s/sec and %.4f ops/sec)\n",
                cvtstr(static_cast<double>(total)).c_str(), ops, timestr(t).c_str(),
                cvtstr(per_second(static_cast<double>(total), t)).c_str(),
                per_second(ops, t));
  } else {
    auto secs = static_cast<unsigned long long>(t.tv_sec);
    std::string ts = fmt::format("{}:{:02}:{:05.2f}", secs / 3600, (secs / 60) % 60,
                                 static_cast<double>(secs % 60) + static_cast<double>(t.tv_nsec) / 1e9);
    std::printf("%lld,%d,%s,%.3f,%.3f\n", static_cast<long long>(total), ops, ts.c_str(),
                per_second(static_cast<double>(total), t), per_second(ops, t));
  }
}

void dump_buffer(const uint8_t* buf, int64_t offset, int64_t len) {
  for (int64_t i = 0; i < len; i += 16) {
    std::printf("%08llx:  ", static_cast<unsigned long long>(offset + i));
    for (int64_t j = 0; j < 16 && i + j < len; ++j) std::printf("%02x ", buf[i + j]);
    std::printf(" ");
    for (int64_t j = 0; j < 16 && i + j < len; ++j)
      std::putchar(std::isalnum(buf[i + j]) ? buf[i + j] : '.');
    std::printf("\n");
  }
}

int usage(const IoSession::Args& argv) {
  for (const auto& c : IoSession::commands())
    if (argv[0] == c.name || (c.altname && argv[0] == c.altname))
      std::printf("%s %s -- %s\n", c.name, c.args, c.oneline);
  return -EINVAL;
}

// The errno qemu-io would print for a failed request. With KEEL_DEBUG set in the environment
// the engine's own message goes to stderr too (qemu-io prints only strerror).
int errno_of(const Status& st) {
  if (std::getenv("KEEL_DEBUG")) std::fprintf(stderr, "keel: debug: %s\n", st.message().c_str());
  int e = st.err();
  return e > 0 ? e : EIO;
}

// Parses "len [len...]" of the vectored commands; false after printing qemu-io's message.
bool parse_lengths(const std::vector<std::string>& args, size_t first, std::vector<int64_t>* lens,
                   int64_t* total) {
  *total = 0;
  for (size_t i = first; i < args.size(); ++i) {
    int64_t len = io_cvtnum(args[i]);
    if (len < 0) return false;
    if (len > kMaxRequestBytes) {
      std::printf("Argument '%s' exceeds maximum size %lld\n", args[i].c_str(),
                  static_cast<long long>(kMaxRequestBytes));
      return false;
    }
    if (*total > kMaxRequestBytes - len) {
      std::printf("The total number of bytes exceed the maximum size %lld\n",
                  static_cast<long long>(kMaxRequestBytes));
      return false;
    }
    lens->push_back(len);
    *total += len;
  }
  return true;
}

}  // namespace

// ---- Helpers ---------------------------------------------------------------------------------

int IoSession::check_range(uint64_t offset, uint64_t count) const {
  uint64_t size = image_->size();
  if (offset > size || size - offset < count) return -EIO;
  return 0;
}

Result<std::pair<bool, uint64_t>> IoSession::is_allocated(uint64_t offset, uint64_t bytes) {
  KEEL_ASSIGN(Extent e, image_->block_status(offset, bytes));
  uint64_t n = std::min<uint64_t>(std::max<uint64_t>(e.length, 1), bytes);
  return std::make_pair(e.depth == 1, n);
}

int IoSession::write_compressed(uint64_t offset, const uint8_t* buf, uint64_t count) {
  if (image_->format() != "qcow2") return -ENOTSUP;
  if (!image_->info().data_file.empty()) return -ENOTSUP;
  uint64_t cs = image_->cluster_size();
  uint64_t size = image_->size();
  if (offset % cs != 0) return -EINVAL;
  if (count % cs != 0 && offset + count != size) return -EINVAL;
  if (int rc = check_range(offset, count)) return rc;
  for (uint64_t done = 0; done < count; done += cs) {
    uint64_t n = std::min(cs, count - done);
    // QEMU refuses to compress into a cluster that already has a host cluster.
    auto e = image_->block_status(offset + done, n);
    if (!e) return -errno_of(e.error());
    if (e->depth == 1 && e->host_offset) return -EIO;
    Status st = image_->write_compressed(offset + done, {buf + done, n});
    if (!st.is_ok()) return -errno_of(st);
  }
  return 0;
}

int IoSession::discard_range(uint64_t offset, uint64_t count) {
  if (int rc = check_range(offset, count)) return rc;
  if (!discard_enabled_ || count == 0) return 0;
  uint64_t start = offset;
  uint64_t end = offset + count;
  if (image_->format() == "raw") {
    // QEMU punches a hole in a raw file for any byte range: it then reads as zeros.
    ZeroFlags z;
    z.may_unmap = true;
    Status st = image_->write_zeroes(offset, count, z);
    return st.is_ok() ? 0 : -errno_of(st);
  }
  if (image_->format() == "qcow2") {
    // Like qcow2 under QEMU's block layer: partial clusters are left alone, except a complete
    // partial cluster at the end of the image.
    uint64_t cs = image_->cluster_size();
    uint64_t size = image_->size();
    uint64_t last_cluster = size / cs * cs;
    start = (offset + cs - 1) / cs * cs;
    bool covers_partial_tail = end == size && size % cs != 0 && offset <= last_cluster;
    end = covers_partial_tail ? size : end / cs * cs;
    if (end <= start) return 0;
  }
  Status st = image_->discard(start, end - start);
  return st.is_ok() ? 0 : -errno_of(st);
}

// ---- read / readv ----------------------------------------------------------------------------

int IoSession::cmd_read(const Args& argv) {
  std::vector<ParsedOption> opts;
  std::vector<std::string> ops;
  if (!io_getopt(argv, "abCl:pqP:s:v", &opts, &ops)) return usage(argv);
  bool terse = false, quiet = false, verbose = false, pflag = false, lflag = false, sflag = false;
  int pattern = 0;
  int64_t pattern_offset = 0, pattern_count = 0;
  for (const auto& o : opts) {
    switch (o.letter) {
      case 'C': terse = true; break;
      case 'q': quiet = true; break;
      case 'v': verbose = true; break;
      case 'a': case 'p': break;
      case 'b': std::printf("read: -b (VM state) is not supported by keel io\n"); return -ENOTSUP;
      case 'P':
        pflag = true;
        pattern = io_parse_pattern(o.arg);
        if (pattern < 0) return -EINVAL;
        break;
      case 'l':
        lflag = true;
        pattern_count = io_cvtnum(o.arg);
        if (pattern_count < 0) return static_cast<int>(pattern_count);
        break;
      case 's':
        sflag = true;
        pattern_offset = io_cvtnum(o.arg);
        if (pattern_offset < 0) return static_cast<int>(pattern_offset);
        break;
      default: return usage(argv);
    }
  }
  if (ops.size() != 2) return usage(argv);
  int64_t offset = io_cvtnum(ops[0]);
  if (offset < 0) return static_cast<int>(offset);
  int64_t count = io_cvtnum(ops[1]);
  if (count < 0) return static_cast<int>(count);
  if (count > kMaxRequestBytes) {
    std::printf("length cannot exceed %lld, given %s\n", static_cast<long long>(kMaxRequestBytes),
                ops[1].c_str());
    return -EINVAL;
  }
  if (!pflag && (lflag || sflag)) return usage(argv);
  if (!lflag) pattern_count = count - pattern_offset;
  if (pattern_count < 0 || pattern_count + pattern_offset > count) {
    std::printf("pattern verification range exceeds end of read data\n");
    return -EINVAL;
  }
  std::vector<uint8_t> buf(static_cast<size_t>(count), 0xab);
  timespec t0 = now();
  int rc = check_range(static_cast<uint64_t>(offset), static_cast<uint64_t>(count));
  if (rc == 0) {
    Status st = image_->read(static_cast<uint64_t>(offset), buf);
    if (!st.is_ok()) rc = -errno_of(st);
  }
  timespec t = elapsed_since(t0);
  if (rc < 0) {
    std::printf("read failed: %s\n", std::strerror(-rc));
    return rc;
  }
  if (pflag) {
    const uint8_t* p = buf.data() + pattern_offset;
    bool ok = std::all_of(p, p + pattern_count, [&](uint8_t b) { return b == pattern; });
    if (!ok) {
      std::printf("Pattern verification failed at offset %lld, %lld bytes\n",
                  static_cast<long long>(offset + pattern_offset),
                  static_cast<long long>(pattern_count));
      rc = -EINVAL;
    }
  }
  if (quiet) return rc;
  if (verbose) dump_buffer(buf.data(), offset, count);
  print_report("read", t, offset, count, count, 1, terse);
  return rc;
}

int IoSession::cmd_readv(const Args& argv) {
  std::vector<ParsedOption> opts;
  std::vector<std::string> ops;
  if (!io_getopt(argv, "CiP:qv", &opts, &ops)) return usage(argv);
  bool terse = false, quiet = false, verbose = false, pflag = false;
  int pattern = 0;
  for (const auto& o : opts) {
    switch (o.letter) {
      case 'C': terse = true; break;
      case 'q': quiet = true; break;
      case 'v': verbose = true; break;
      case 'i': break;
      case 'P':
        pflag = true;
        pattern = io_parse_pattern(o.arg);
        if (pattern < 0) return -EINVAL;
        break;
      default: return usage(argv);
    }
  }
  if (ops.size() < 2) return usage(argv);
  int64_t offset = io_cvtnum(ops[0]);
  if (offset < 0) return static_cast<int>(offset);
  std::vector<int64_t> lens;
  int64_t total = 0;
  if (!parse_lengths(ops, 1, &lens, &total)) return -EINVAL;
  std::vector<uint8_t> buf(static_cast<size_t>(total), 0xab);
  timespec t0 = now();
  int rc = check_range(static_cast<uint64_t>(offset), static_cast<uint64_t>(total));
  if (rc == 0) {
    Status st = image_->read(static_cast<uint64_t>(offset), buf);
    if (!st.is_ok()) rc = -errno_of(st);
  }
  timespec t = elapsed_since(t0);
  if (rc < 0) {
    std::printf("readv failed: %s\n", std::strerror(-rc));
    return rc;
  }
  if (pflag && !std::all_of(buf.begin(), buf.end(), [&](uint8_t b) { return b == pattern; })) {
    std::printf("Pattern verification failed at offset %lld, %lld bytes\n",
                static_cast<long long>(offset), static_cast<long long>(total));
    rc = -EINVAL;
  }
  if (quiet) return rc;
  if (verbose) dump_buffer(buf.data(), offset, total);
  print_report("read", t, offset, total, total, 1, terse);
  return rc;
}

// ---- write / writev / aio_write --------------------------------------------------------------

int IoSession::cmd_write(const Args& argv) {
  std::vector<ParsedOption> opts;
  std::vector<std::string> ops;
  if (!io_getopt(argv, "bcCfnpP:quzs:", &opts, &ops)) return usage(argv);
  bool bflag = false, compressed = false, terse = false, fua = false, no_fallback = false;
  bool pflag = false, quiet = false, unmap = false, zflag = false, sflag = false;
  int pattern = 0xcd;
  std::string source_file;
  for (const auto& o : opts) {
    switch (o.letter) {
      case 'b': bflag = true; break;
      case 'c': compressed = true; break;
      case 'C': terse = true; break;
      case 'f': fua = true; break;
      case 'n': no_fallback = true; break;
      case 'p': break;
      case 'P':
        pflag = true;
        pattern = io_parse_pattern(o.arg);
        if (pattern < 0) return -EINVAL;
        break;
      case 'q': quiet = true; break;
      case 's': sflag = true; source_file = o.arg; break;
      case 'u': unmap = true; break;
      case 'z': zflag = true; break;
      default: return usage(argv);
    }
  }
  if (ops.size() != 2) return usage(argv);
  if (bflag && zflag) {
    std::printf("-b and -z cannot be specified at the same time\n");
    return -EINVAL;
  }
  if (fua && (bflag || compressed)) {
    std::printf("-f and -b or -c cannot be specified at the same time\n");
    return -EINVAL;
  }
  if (no_fallback && !zflag) {
    std::printf("-n requires -z to be specified\n");
    return -EINVAL;
  }
  if (unmap && !zflag) {
    std::printf("-u requires -z to be specified\n");
    return -EINVAL;
  }
  if (int(zflag) + int(pflag) + int(sflag) > 1) {
    std::printf("Only one of -z, -P, and -s can be specified at the same time\n");
    return -EINVAL;
  }
  int64_t offset = io_cvtnum(ops[0]);
  if (offset < 0) return static_cast<int>(offset);
  int64_t count = io_cvtnum(ops[1]);
  if (count < 0) return static_cast<int>(count);
  if (count > kMaxRequestBytes && !no_fallback) {
    std::printf("length cannot exceed %lld, given %s\n", static_cast<long long>(kMaxRequestBytes),
                ops[1].c_str());
    return -EINVAL;
  }
  if (bflag || compressed) {
    if (offset % 512 != 0) {
      std::printf("%lld is not a sector-aligned value for 'offset'\n", static_cast<long long>(offset));
      return -EINVAL;
    }
    if (count % 512 != 0) {
      std::printf("%lld is not a sector-aligned value for 'count'\n", static_cast<long long>(count));
      return -EINVAL;
    }
  }
  if (bflag) {
    std::printf("write: -b (VM state) is not supported by keel io\n");
    return -ENOTSUP;
  }
  std::vector<uint8_t> buf;
  if (!zflag) {
    buf.assign(static_cast<size_t>(count), static_cast<uint8_t>(pattern));
    if (sflag) {
      std::ifstream in(source_file, std::ios::binary);
      if (!in) {
        print_error(fmt::format("Failed to open file {}: {}", source_file, std::strerror(errno)));
        return -EINVAL;
      }
      in.read(reinterpret_cast<char*>(buf.data()), count);
      if (in.gcount() != count) {
        print_error(fmt::format("Failed to read {} bytes from file {}", count, source_file));
        return -EINVAL;
      }
    }
  }
  timespec t0 = now();
  int rc = 0;
  if (compressed && !zflag) {
    rc = write_compressed(static_cast<uint64_t>(offset), buf.data(), static_cast<uint64_t>(count));
  } else {
    rc = check_range(static_cast<uint64_t>(offset), static_cast<uint64_t>(count));
    if (rc == 0 && count > 0) {
      Status st;
      if (zflag) {
        ZeroFlags z;
        z.may_unmap = unmap;
        z.fua = fua;
        z.fast_only = no_fallback;
        st = image_->write_zeroes(static_cast<uint64_t>(offset), static_cast<uint64_t>(count), z);
      } else {
        st = image_->write(static_cast<uint64_t>(offset), buf, fua);
      }
      if (!st.is_ok()) rc = -errno_of(st);
    }
  }
  timespec t = elapsed_since(t0);
  if (rc < 0) {
    std::printf("write failed: %s\n", std::strerror(-rc));
    return rc;
  }
  if (!quiet) print_report("wrote", t, offset, count, count, 1, terse);
  return 0;
}

int IoSession::cmd_writev(const Args& argv) {
  std::vector<ParsedOption> opts;
  std::vector<std::string> ops;
  if (!io_getopt(argv, "CfqP:", &opts, &ops)) return usage(argv);
  bool terse = false, fua = false, quiet = false;
  int pattern = 0xcd;
  for (const auto& o : opts) {
    switch (o.letter) {
      case 'C': terse = true; break;
      case 'f': fua = true; break;
      case 'q': quiet = true; break;
      case 'P':
        pattern = io_parse_pattern(o.arg);
        if (pattern < 0) return -EINVAL;
        break;
      default: return usage(argv);
    }
  }
  if (ops.size() < 2) return usage(argv);
  int64_t offset = io_cvtnum(ops[0]);
  if (offset < 0) return static_cast<int>(offset);
  std::vector<int64_t> lens;
  int64_t total = 0;
  if (!parse_lengths(ops, 1, &lens, &total)) return -EINVAL;
  std::vector<uint8_t> buf(static_cast<size_t>(total), static_cast<uint8_t>(pattern));
  timespec t0 = now();
  int rc = check_range(static_cast<uint64_t>(offset), static_cast<uint64_t>(total));
  if (rc == 0 && total > 0) {
    Status st = image_->write(static_cast<uint64_t>(offset), buf, fua);
    if (!st.is_ok()) rc = -errno_of(st);
  }
  timespec t = elapsed_since(t0);
  if (rc < 0) {
    std::printf("writev failed: %s\n", std::strerror(-rc));
    return rc;
  }
  if (!quiet) print_report("wrote", t, offset, total, total, 1, terse);
  return 0;
}

int IoSession::cmd_aio_write(const Args& argv) {
  // Runs synchronously: the request has completed when its report is printed.
  std::vector<ParsedOption> opts;
  std::vector<std::string> ops;
  if (!io_getopt(argv, "CfiqP:uz", &opts, &ops)) return usage(argv);
  bool terse = false, fua = false, quiet = false, pflag = false, unmap = false, zflag = false;
  int pattern = 0xcd;
  for (const auto& o : opts) {
    switch (o.letter) {
      case 'C': terse = true; break;
      case 'f': fua = true; break;
      case 'i': break;
      case 'q': quiet = true; break;
      case 'u': unmap = true; break;
      case 'z': zflag = true; break;
      case 'P':
        pflag = true;
        pattern = io_parse_pattern(o.arg);
        if (pattern < 0) return -EINVAL;
        break;
      default: return usage(argv);
    }
  }
  if (ops.size() < 2) return usage(argv);
  if (zflag && pflag) {
    std::printf("-z and -P cannot be specified at the same time\n");
    return -EINVAL;
  }
  if (unmap && !zflag) {
    std::printf("-u requires -z to be specified\n");
    return -EINVAL;
  }
  if (zflag && ops.size() != 2) {
    std::printf("-z supports only a single length parameter\n");
    return -EINVAL;
  }
  int64_t offset = io_cvtnum(ops[0]);
  if (offset < 0) return static_cast<int>(offset);
  std::vector<int64_t> lens;
  int64_t total = 0;
  if (!parse_lengths(ops, 1, &lens, &total)) return -EINVAL;
  timespec t0 = now();
  int rc = check_range(static_cast<uint64_t>(offset), static_cast<uint64_t>(total));
  if (rc == 0 && total > 0) {
    Status st;
    if (zflag) {
      ZeroFlags z;
      z.may_unmap = unmap;
      z.fua = fua;
      st = image_->write_zeroes(static_cast<uint64_t>(offset), static_cast<uint64_t>(total), z);
    } else {
      std::vector<uint8_t> buf(static_cast<size_t>(total), static_cast<uint8_t>(pattern));
      st = image_->write(static_cast<uint64_t>(offset), buf, fua);
    }
    if (!st.is_ok()) rc = -errno_of(st);
  }
  timespec t = elapsed_since(t0);
  if (rc < 0) {
    std::printf("aio_write failed: %s\n", std::strerror(-rc));
    return rc;
  }
  if (!quiet) print_report("wrote", t, offset, total, total, 1, terse);
  return 0;
}

// ---- flush / discard -------------------------------------------------------------------------

int IoSession::cmd_flush(const Args&) {
  Status st = image_->flush();
  return st.is_ok() ? 0 : -errno_of(st);
}

int IoSession::cmd_aio_flush(const Args&) { return 0; }  // requests are synchronous

int IoSession::cmd_discard(const Args& argv) {
  std::vector<ParsedOption> opts;
  std::vector<std::string> ops;
  if (!io_getopt(argv, "Cq", &opts, &ops)) return usage(argv);
  bool terse = false, quiet = false;
  for (const auto& o : opts) {
    if (o.letter == 'C') terse = true;
    else if (o.letter == 'q') quiet = true;
  }
  if (ops.size() != 2) return usage(argv);
  int64_t offset = io_cvtnum(ops[0]);
  if (offset < 0) return static_cast<int>(offset);
  int64_t bytes = io_cvtnum(ops[1]);
  if (bytes < 0) return static_cast<int>(bytes);
  if (bytes > kMaxRequestBytes) {
    std::printf("length cannot exceed %lld, given %s\n", static_cast<long long>(kMaxRequestBytes),
                ops[1].c_str());
    return -EINVAL;
  }
  timespec t0 = now();
  int rc = discard_range(static_cast<uint64_t>(offset), static_cast<uint64_t>(bytes));
  timespec t = elapsed_since(t0);
  if (rc < 0) {
    std::printf("discard failed: %s\n", std::strerror(-rc));
    return rc;
  }
  if (!quiet) print_report("discard", t, offset, bytes, bytes, 1, terse);
  return 0;
}

// ---- map / alloc / info / length -------------------------------------------------------------

int IoSession::cmd_map(const Args&) {
  uint64_t offset = 0;
  uint64_t bytes = image_->size();
  while (bytes) {
    auto first = is_allocated(offset, bytes);
    if (!first) {
      print_error(fmt::format("Failed to get allocation status: {}", std::strerror(errno_of(first.error()))));
      return -errno_of(first.error());
    }
    bool allocated = first->first;
    uint64_t num = first->second;
    while (num < bytes) {
      auto more = is_allocated(offset + num, bytes - num);
      if (!more) {
        print_error(fmt::format("Failed to get allocation status: {}", std::strerror(errno_of(more.error()))));
        return -errno_of(more.error());
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
    if (count > kMaxRequestBytes) {
      std::printf("length cannot exceed %lld, given %s\n",
                  static_cast<long long>(kMaxRequestBytes), argv[2].c_str());
      return -EINVAL;
    }
  }
  if (int rc = check_range(static_cast<uint64_t>(offset), static_cast<uint64_t>(count))) {
    std::printf("alloc failed: %s\n", std::strerror(-rc));
    return rc;
  }
  uint64_t pos = static_cast<uint64_t>(offset);
  uint64_t remaining = static_cast<uint64_t>(count);
  uint64_t allocated = 0;
  while (remaining) {
    auto r = is_allocated(pos, remaining);
    if (!r) {
      std::printf("is_allocated failed: %s\n", std::strerror(errno_of(r.error())));
      return -errno_of(r.error());
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
  if (auto spec = format_specific_json(info)) {
    std::printf("Format specific information:\n");
    std::fputs(qemu_human_dump((*spec)["data"], 1).c_str(), stdout);
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
    for (const auto& c : commands()) std::printf("%s %s -- %s\n", c.name, c.args, c.oneline);
    std::printf("\nUse 'help commandname' for extended help.\n");
    return 0;
  }
  for (const auto& c : commands()) {
    if (argv[1] == c.name || (c.altname && argv[1] == c.altname)) {
      std::printf("%s %s -- %s\n", c.name, c.args, c.oneline);
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
      {"abort", nullptr, 0, 0, false, "", "simulate a program crash using abort(3)", "",
       &IoSession::cmd_abort},
      {"aio_flush", nullptr, 0, 0, false, "", "completes all outstanding aio requests", "",
       &IoSession::cmd_aio_flush},
      {"aio_read", nullptr, 2, -1, false, "[-Ciqv] [-P pattern] off len [len..]",
       "asynchronously reads a number of bytes (keel: completes before the next command)", "",
       &IoSession::cmd_readv},
      {"aio_write", nullptr, 2, -1, true, "[-Cfiquz] [-P pattern] off len [len..]",
       "asynchronously writes a number of bytes (keel: completes before the next command)", "",
       &IoSession::cmd_aio_write},
      {"alloc", nullptr, 1, 2, false, "offset [count]",
       "checks if offset is allocated in the file", "", &IoSession::cmd_alloc},
      {"discard", "d", 2, -1, true, "[-Cq] off len", "discards a number of bytes at a specified offset",
       "\n discards a range of bytes from the given offset\n\n"
       " -C, -- report statistics in a machine parsable format\n"
       " -q, -- quiet mode, do not show I/O statistics\n\n",
       &IoSession::cmd_discard},
      {"flush", "f", 0, 0, false, "", "flush all in-core file state to disk", "",
       &IoSession::cmd_flush},
      {"help", "?", 0, 1, false, "[command]", "help for one or all commands", "",
       &IoSession::cmd_help},
      {"info", "i", 0, 0, false, "", "prints information about the current file", "",
       &IoSession::cmd_info},
      {"length", "l", 0, 0, false, "", "gets the length of the current file", "",
       &IoSession::cmd_length},
      {"map", nullptr, 0, 0, false, "", "prints the allocated areas of a file", "",
       &IoSession::cmd_map},
      {"quit", "q", 0, 0, false, "", "exit the program", "", &IoSession::cmd_quit},
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
      {"sigraise", nullptr, 1, 1, false, "signal", "raises a signal", "",
       &IoSession::cmd_sigraise},
      {"sleep", nullptr, 1, 1, false, "milliseconds", "waits for the given value in milliseconds", "",
       &IoSession::cmd_sleep},
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
