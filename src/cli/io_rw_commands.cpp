// keel io's data commands (qemu-io's read, readv, write, writev, discard; aio_* in io_aio.cpp):
// argument checks, messages and reports as qemu-io 7.2 prints them. Each returns 0 or -errno.
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include <fmt/format.h>

#include "cli/command.h"
#include "cli/io_data_options.h"
#include "cli/io_output.h"
#include "cli/io_session.h"

namespace keel::cli {

// ---- Helpers ---------------------------------------------------------------------------------

namespace {
// qemu-io's check of -b (and write -c) requests: offset, then count, in whole 512-byte sectors.
bool io_sector_aligned(int64_t offset, int64_t count) {
  if (offset % 512 != 0) {
    std::printf("%lld is not a sector-aligned value for 'offset'\n", static_cast<long long>(offset));
    return false;
  }
  if (count % 512 != 0) {
    std::printf("%lld is not a sector-aligned value for 'count'\n", static_cast<long long>(count));
    return false;
  }
  return true;
}

// qemu-io's qemu_io_alloc_from_file: the buffer filled with the file's first bytes, repeated
// when the file is shorter; errors as perror ("FILE: No such file or directory") or "FILE: file
// is empty" on stderr, without the program's name.
bool io_fill_from_file(const std::string& path, std::vector<uint8_t>& buf) {
  std::FILE* f = std::fopen(path.c_str(), "r");
  if (!f) {
    std::perror(path.c_str());
    return false;
  }
  const size_t got = std::fread(buf.data(), 1, buf.size(), f);
  const bool failed = std::ferror(f);
  if (failed) std::perror(path.c_str());
  std::fclose(f);
  if (failed) return false;
  if (got == 0) {
    std::fprintf(stderr, "%s: file is empty\n", path.c_str());
    return false;
  }
  for (size_t p = got; p < buf.size(); p += got) std::memcpy(buf.data() + p, buf.data(), std::min(got, buf.size() - p));
  return true;
}
}  // namespace

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
    if (!e) return -io_errno_of(e.error());
    if (e->depth == 1 && e->host_offset) return -EIO;
    Status st = image_->write_compressed(offset + done, {buf + done, n});
    if (!st.is_ok()) return -io_errno_of(st);
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
    return st.is_ok() ? 0 : -io_errno_of(st);
  }
  // qcow2: the engine leaves partial clusters alone (except a complete partial cluster at the
  // end of the image), like qcow2 under QEMU's block layer, and marks the whole range dirty in
  // enabled bitmaps, as QEMU does.
  Status st = image_->discard(start, end - start);
  return st.is_ok() ? 0 : -io_errno_of(st);
}

// ---- read / readv ----------------------------------------------------------------------------

int IoSession::cmd_read(const Args& argv) {
  DataOptions o;
  std::vector<std::string> ops;
  if (int rc = io_parse_data_options(DataCommand::kRead, argv, &o, &ops)) return rc;
  const int64_t pattern_offset = o.pattern_offset;
  int64_t pattern_count = o.pattern_count;
  if (ops.size() != 2) return io_usage(argv);
  int64_t offset = io_cvtnum(ops[0]);
  if (offset < 0) return static_cast<int>(offset);
  int64_t count = io_cvtnum(ops[1]);
  if (count < 0) return static_cast<int>(count);
  if (count > kIoMaxRequestBytes) {
    std::printf("length cannot exceed %lld, given %s\n", static_cast<long long>(kIoMaxRequestBytes),
                ops[1].c_str());
    return -EINVAL;
  }
  if (!o.pflag && (o.lflag || o.sflag)) return io_usage(argv);
  if (!o.lflag) pattern_count = count - pattern_offset;
  if (pattern_count < 0 || pattern_count + pattern_offset > count) {
    std::printf("pattern verification range exceeds end of read data\n");
    return -EINVAL;
  }
  if (o.vmstate && !io_sector_aligned(offset, count)) return -EINVAL;
  std::vector<uint8_t> buf(static_cast<size_t>(count), 0xab);
  timespec t0 = io_now();
  int rc = 0;
  if (o.vmstate) {  // qemu-io's do_load_vmstate: the VM state area, not the guest disk
    Status st = image_->read_vmstate(static_cast<uint64_t>(offset), buf);
    if (!st.is_ok()) rc = -io_errno_of(st);
  } else if ((rc = check_range(static_cast<uint64_t>(offset), static_cast<uint64_t>(count))) == 0) {
    Status st = image_->read(static_cast<uint64_t>(offset), buf);
    if (!st.is_ok()) rc = -io_errno_of(st);
  }
  timespec t = io_elapsed_since(t0);
  if (rc < 0) {
    std::printf("read failed: %s\n", std::strerror(-rc));
    return rc;
  }
  if (o.pflag) {
    const uint8_t* p = buf.data() + pattern_offset;
    bool ok = std::all_of(p, p + pattern_count, [&](uint8_t b) { return b == o.pattern; });
    if (!ok) {
      std::printf("Pattern verification failed at offset %lld, %lld bytes\n",
                  static_cast<long long>(offset + pattern_offset),
                  static_cast<long long>(pattern_count));
      rc = -EINVAL;
    }
  }
  if (o.quiet) return rc;
  if (o.verbose) io_dump_buffer(buf.data(), offset, count);
  io_print_report("read", t, offset, count, count, 1, o.terse);
  return rc;
}

int IoSession::cmd_readv(const Args& argv) {
  DataOptions o;
  std::vector<std::string> ops;
  if (int rc = io_parse_data_options(DataCommand::kReadv, argv, &o, &ops)) return rc;
  if (ops.size() < 2) return io_usage(argv);
  int64_t offset = io_cvtnum(ops[0]);
  if (offset < 0) return static_cast<int>(offset);
  std::vector<int64_t> lens;
  int64_t total = 0;
  if (!io_parse_lengths(ops, 1, &lens, &total)) return -EINVAL;
  std::vector<uint8_t> buf(static_cast<size_t>(total), 0xab);
  timespec t0 = io_now();
  int rc = check_range(static_cast<uint64_t>(offset), static_cast<uint64_t>(total));
  if (rc == 0) {
    Status st = image_->read(static_cast<uint64_t>(offset), buf);
    if (!st.is_ok()) rc = -io_errno_of(st);
  }
  timespec t = io_elapsed_since(t0);
  if (rc < 0) {
    std::printf("readv failed: %s\n", std::strerror(-rc));
    return rc;
  }
  if (o.pflag && !std::all_of(buf.begin(), buf.end(), [&](uint8_t b) { return b == o.pattern; })) {
    std::printf("Pattern verification failed at offset %lld, %lld bytes\n",
                static_cast<long long>(offset), static_cast<long long>(total));
    rc = -EINVAL;
  }
  if (o.quiet) return rc;
  if (o.verbose) io_dump_buffer(buf.data(), offset, total);
  io_print_report("read", t, offset, total, total, 1, o.terse);
  return rc;
}

// ---- write / writev ------------------------------------------------------------------------

int IoSession::cmd_write(const Args& argv) {
  DataOptions o;
  std::vector<std::string> ops;
  if (int rc = io_parse_data_options(DataCommand::kWrite, argv, &o, &ops)) return rc;
  const bool bflag = o.vmstate, compressed = o.compressed, fua = o.fua, no_fallback = o.no_fallback;
  const bool pflag = o.pflag, unmap = o.unmap, zflag = o.zero, sflag = o.sflag;
  if (ops.size() != 2) return io_usage(argv);
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
  if (count > kIoMaxRequestBytes && !no_fallback) {
    std::printf("length cannot exceed %lld, given %s\n", static_cast<long long>(kIoMaxRequestBytes),
                ops[1].c_str());
    return -EINVAL;
  }
  if ((bflag || compressed) && !io_sector_aligned(offset, count)) return -EINVAL;
  std::vector<uint8_t> buf;
  if (!zflag) {
    buf.assign(static_cast<size_t>(count), static_cast<uint8_t>(o.pattern));
    if (sflag && !io_fill_from_file(o.source_file, buf)) return -EINVAL;
  }
  timespec t0 = io_now();
  int rc = 0;
  if (bflag) {  // qemu-io's do_save_vmstate (-b wins over -c, as in qemu-io)
    Status st = image_->write_vmstate(static_cast<uint64_t>(offset), buf);
    if (!st.is_ok()) rc = -io_errno_of(st);
  } else if (compressed && !zflag) {
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
      if (!st.is_ok()) rc = -io_errno_of(st);
    }
  }
  timespec t = io_elapsed_since(t0);
  if (rc < 0) {
    std::printf("write failed: %s\n", std::strerror(-rc));
    return rc;
  }
  if (!o.quiet) io_print_report("wrote", t, offset, count, count, 1, o.terse);
  return 0;
}

int IoSession::cmd_writev(const Args& argv) {
  DataOptions o;
  std::vector<std::string> ops;
  if (int rc = io_parse_data_options(DataCommand::kWritev, argv, &o, &ops)) return rc;
  if (ops.size() < 2) return io_usage(argv);
  int64_t offset = io_cvtnum(ops[0]);
  if (offset < 0) return static_cast<int>(offset);
  std::vector<int64_t> lens;
  int64_t total = 0;
  if (!io_parse_lengths(ops, 1, &lens, &total)) return -EINVAL;
  std::vector<uint8_t> buf(static_cast<size_t>(total), static_cast<uint8_t>(o.pattern));
  timespec t0 = io_now();
  int rc = check_range(static_cast<uint64_t>(offset), static_cast<uint64_t>(total));
  if (rc == 0 && total > 0) {
    Status st = image_->write(static_cast<uint64_t>(offset), buf, o.fua);
    if (!st.is_ok()) rc = -io_errno_of(st);
  }
  timespec t = io_elapsed_since(t0);
  if (rc < 0) {
    std::printf("writev failed: %s\n", std::strerror(-rc));
    return rc;
  }
  if (!o.quiet) io_print_report("wrote", t, offset, total, total, 1, o.terse);
  return 0;
}

int IoSession::cmd_discard(const Args& argv) {
  std::vector<ParsedOption> opts;
  std::vector<std::string> ops;
  if (!io_getopt(argv, "Cq", &opts, &ops)) return io_usage(argv);
  bool terse = false, quiet = false;
  for (const auto& o : opts) {
    if (o.letter == 'C') terse = true;
    else if (o.letter == 'q') quiet = true;
  }
  if (ops.size() != 2) return io_usage(argv);
  int64_t offset = io_cvtnum(ops[0]);
  if (offset < 0) return static_cast<int>(offset);
  int64_t bytes = io_cvtnum(ops[1]);
  if (bytes < 0) return static_cast<int>(bytes);
  if (bytes > kIoMaxRequestBytes) {
    std::printf("length cannot exceed %lld, given %s\n", static_cast<long long>(kIoMaxRequestBytes),
                ops[1].c_str());
    return -EINVAL;
  }
  timespec t0 = io_now();
  int rc = discard_range(static_cast<uint64_t>(offset), static_cast<uint64_t>(bytes));
  timespec t = io_elapsed_since(t0);
  if (rc < 0) {
    std::printf("discard failed: %s\n", std::strerror(-rc));
    return rc;
  }
  if (!quiet) io_print_report("discard", t, offset, bytes, bytes, 1, terse);
  return 0;
}

}  // namespace keel::cli
