// keel convert: copy one or more images (concatenated) into a new qcow2 or raw image, like
// qemu-img convert.
//   keel convert [-f fmt] [-O fmt] [-o opts] [-c] [-p] [-q] [-S size] [-l snapshot] [-n]
//                [-U] [-t cache] [-T src_cache] [--target-is-zero] SRC... DST
// The target is sparse: ranges the source reports as zero, and data chunks of -S bytes that are
// all zeros, are not written (a new image reads as zeros). With -n the target already exists and
// zero ranges are written as zeroes unless --target-is-zero. -c writes whole target clusters
// with Image::write_compressed (all-zero clusters are skipped).
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "cli/command.h"
#include "cli/image_options.h"
#include "cli/util.h"

namespace keel::cli {
namespace {

constexpr uint64_t kChunkBytes = 2u << 20;  // one read/write request (qemu-img uses 2 MiB too)

struct ConvertArgs {
  std::string src_format;
  std::string dst_format = "raw";
  std::vector<std::string> options;
  bool compress = false;
  bool progress = false;
  bool quiet = false;
  std::string sparse_size = "4k";
  std::string snapshot;
  bool skip_create = false;
  bool force_share = false;
  std::string dst_cache = "unsafe";
  std::string src_cache = "writeback";
  bool target_is_zero = false;
  bool out_of_order = false;
  std::string coroutines;
  std::vector<std::string> files;
};

bool all_zero(const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (p[i]) return false;
  return true;
}

// The snapshot named by -l: "snapshot.name=N", "snapshot.id=I", or a bare id-or-name.
Result<std::string> parse_snapshot_arg(const std::string& arg) {
  if (arg.rfind("snapshot.", 0) != 0) return arg;
  auto list = parse_options(arg);
  if (!list) return error(list.error());
  std::string id, name;
  for (const auto& [k, v] : list->items()) {
    if (k == "snapshot.id") id = v;
    else if (k == "snapshot.name") name = v;
    else return error(invalid(fmt::format("Invalid parameter '{}'\nkeel: Failed in parsing snapshot param '{}'", k, arg)));
  }
  return name.empty() ? id : name;
}

struct Source {
  std::unique_ptr<Image> image;
  uint64_t size = 0;
};

class Converter {
 public:
  Converter(std::vector<Source>& sources, Image& target, const ConvertArgs& a, uint64_t min_sparse,
            bool target_zero)
      : sources_(sources), target_(target), args_(a), min_sparse_(min_sparse),
        target_zero_(target_zero), progress_(a.progress && !a.quiet) {
    for (auto& s : sources_) total_ += s.size;
  }

  // Returns the exit code; messages are printed here.
  int run() {
    uint64_t base = 0;
    for (auto& s : sources_) {
      int rc = args_.compress ? copy_compressed(s, base) : copy_sparse(s, base);
      if (rc) return rc;
      base += s.size;
    }
    Status st = target_.flush();
    if (!st.is_ok()) return write_error(total_, st);
    progress_.finish();
    return 0;
  }

 private:
  int read_error(uint64_t at, const Status& st) {
    std::fflush(stdout);
    print_error(fmt::format("error while reading at byte {}: {}", at, std::strerror(st.err())));
    return 1;
  }
  int write_error(uint64_t at, const Status& st) {
    std::fflush(stdout);
    print_error(fmt::format("error while writing at byte {}: {}", at, std::strerror(st.err())));
    return 1;
  }
  void advance(uint64_t bytes) {
    done_ += bytes;
    if (total_) progress_.update(static_cast<double>(done_) * 100.0 / static_cast<double>(total_));
  }

  // Writes a zero range of the target unless the target already reads as zeros there.
  int zero_range(uint64_t dst, uint64_t len) {
    if (target_zero_ || len == 0) return 0;
    ZeroFlags z;
    z.may_unmap = true;
    Status st = target_.write_zeroes(dst, len, z);
    return st.is_ok() ? 0 : write_error(dst, st);
  }

  // Writes buf at dst, leaving out (or zeroing) aligned chunks of min_sparse bytes of zeros.
  int write_sparse(uint64_t dst, const uint8_t* buf, uint64_t len) {
    if (min_sparse_ == 0) {
      Status st = target_.write(dst, {buf, len});
      return st.is_ok() ? 0 : write_error(dst, st);
    }
    uint64_t pos = 0;
    while (pos < len) {
      // Runs of equal kind (zero / data), each piece ending on a min_sparse boundary.
      uint64_t piece = std::min(len - pos, min_sparse_ - (dst + pos) % min_sparse_);
      bool zero = all_zero(buf + pos, piece);
      uint64_t run = piece;
      while (pos + run < len) {
        uint64_t p = std::min(len - pos - run, min_sparse_);
        if (all_zero(buf + pos + run, p) != zero) break;
        run += p;
      }
      if (zero) {
        if (int rc = zero_range(dst + pos, run)) return rc;
      } else {
        Status st = target_.write(dst + pos, {buf + pos, run});
        if (!st.is_ok()) return write_error(dst + pos, st);
      }
      pos += run;
    }
    return 0;
  }

  int copy_sparse(Source& s, uint64_t base) {
    std::vector<uint8_t> buf(kChunkBytes);
    uint64_t off = 0;
    while (off < s.size) {
      uint64_t want = std::min<uint64_t>(s.size - off, 1u << 30);
      auto ext = s.image->block_status(off, want);
      if (!ext) return read_error(base + off, ext.error());
      uint64_t len = std::min(std::max<uint64_t>(ext->length, 1), want);
      if (!ext->data && ext->zero && min_sparse_ != 0) {
        if (int rc = zero_range(base + off, len)) return rc;
        advance(len);
        off += len;
        continue;
      }
      uint64_t end = off + len;
      while (off < end) {
        uint64_t n = std::min<uint64_t>(end - off, kChunkBytes - (off % kChunkBytes));
        Status st = s.image->read(off, {buf.data(), n});
        if (!st.is_ok()) return read_error(base + off, st);
        if (int rc = write_sparse(base + off, buf.data(), n)) return rc;
        advance(n);
        off += n;
      }
    }
    return 0;
  }

  // Reads guest bytes [off, off+len) of the concatenated sources into buf.
  int read_concat(uint64_t off, uint8_t* buf, uint64_t len) {
    uint64_t base = 0;
    for (auto& s : sources_) {
      if (len == 0) break;
      if (off < base + s.size) {
        uint64_t in = off - base;
        uint64_t n = std::min(len, s.size - in);
        Status st = s.image->read(in, {buf, n});
        if (!st.is_ok()) return read_error(off, st);
        buf += n;
        off += n;
        len -= n;
      }
      base += s.size;
    }
    if (len) std::memset(buf, 0, len);
    return 0;
  }

  int copy_compressed(Source& s, uint64_t base) {
    // Cluster by cluster of the target, across source boundaries; done once for all sources.
    if (&s != &sources_.front()) return 0;
    (void)base;
    uint64_t cs = target_.cluster_size();
    std::vector<uint8_t> cluster(cs);
    uint64_t size = target_.size();
    for (uint64_t off = 0; off < total_; off += cs) {
      uint64_t n = std::min<uint64_t>(cs, total_ - off);
      if (int rc = read_concat(off, cluster.data(), n)) return rc;
      if (all_zero(cluster.data(), n)) {
        if (int rc = zero_range(off, n)) return rc;
      } else {
        uint64_t span = std::min<uint64_t>(cs, size - off);
        if (span > n) std::memset(cluster.data() + n, 0, span - n);
        Status st = target_.write_compressed(off, {cluster.data(), span});
        if (!st.is_ok()) return write_error(off, st);
      }
      advance(n);
    }
    return 0;
  }

  std::vector<Source>& sources_;
  Image& target_;
  const ConvertArgs& args_;
  uint64_t min_sparse_;
  bool target_zero_;
  Progress progress_;
  uint64_t total_ = 0;
  uint64_t done_ = 0;
};

int run_convert(const ConvertArgs& a) {
  std::string merged = merge_option_args(a.options);
  if (!is_known_format(a.dst_format)) {
    print_error(fmt::format("Unknown file format '{}'", a.dst_format));
    return 1;
  }
  if (!merged.empty() && is_help_option(merged)) {
    print_option_help(a.dst_format);
    return 0;
  }
  if (a.files.size() < 2) {
    print_error("Must specify image file name");
    return 1;
  }
  auto min_sparse = parse_size_arg("buffer size for sparse output", a.sparse_size);
  if (!min_sparse) return 1;
  if (*min_sparse % 512 != 0 || *min_sparse > 16777216) {
    print_error("Invalid buffer size for sparse output specified. Valid sizes are multiples of "
                "512 up to 16777216. Select 0 to disable sparse detection (fully allocates output).");
    return 1;
  }
  if (!a.coroutines.empty()) {
    auto m = parse_size(a.coroutines);
    if (!m || *m < 1 || *m > 16) {
      print_error("Invalid number of coroutines. Allowed number of coroutines is between 1 and 16");
      return 1;
    }
  }
  if (a.skip_create && !merged.empty()) {
    print_error("-o has no effect when skipping image creation");
    return 1;
  }
  if (a.compress && a.dst_format != "qcow2") {
    print_error("Compression not supported for this file format");
    return 1;
  }
  if (a.target_is_zero && !a.skip_create) {
    print_error("--target-is-zero requires use of -n flag");
    return 1;
  }
  std::vector<std::string> srcs(a.files.begin(), a.files.end() - 1);
  const std::string& dst = a.files.back();
  std::string snapshot;
  if (!a.snapshot.empty()) {
    if (srcs.size() > 1) {
      print_error("No support for concatenating multiple snapshot");
      return 1;
    }
    auto sn = parse_snapshot_arg(a.snapshot);
    if (!sn) {
      print_error(sn.error().message());
      return 1;
    }
    snapshot = *sn;
  }

  // Sources.
  std::vector<Source> sources;
  uint64_t total = 0;
  for (const auto& path : srcs) {
    OpenFlags f;
    f.format = a.src_format;
    f.force_share = a.force_share;
    f.cache = a.src_cache;
    f.snapshot = snapshot;
    if (!snapshot.empty()) {
      auto o = make_open_options(f, CacheMode::kWriteback);
      if (!o) {
        print_error(o.error().message());
        return 1;
      }
      auto img = Image::open(path, *o);
      if (!img) {
        if (img.error().code() == Code::kNotFound)
          print_error("Failed to load snapshot: Can't find snapshot");
        else
          print_error(open_error_message(path, img.error()));
        return 1;
      }
      sources.push_back({std::move(*img), 0});
    } else {
      auto img = open_image_or_report(path, f, CacheMode::kWriteback);
      if (!img) return 1;
      sources.push_back({std::move(img), 0});
    }
    sources.back().size = sources.back().image->size();
    total += sources.back().size;
  }

  // Target.
  bool target_zero = a.target_is_zero;
  if (!a.skip_create) {
    auto list = parse_options(merged);
    if (!list) {
      print_error(list.error().message());
      return 1;
    }
    auto checked = check_option_types(a.dst_format, *list);
    if (!checked) {
      print_error(checked.error().message());
      return 1;
    }
    if (checked->raw("backing_file")) {
      print_error("keel convert does not support a target backing file (-B / backing_file)");
      return 1;
    }
    checked->set("size", std::to_string((total + 511) & ~uint64_t{511}));
    auto create = to_create_options(*checked);
    if (!create) {
      print_error(fmt::format("{}: error while converting {}: {}", dst, a.dst_format,
                              create.error().message()));
      return 1;
    }
    Status st = create_image(dst, *create);
    if (!st.is_ok()) {
      print_error(fmt::format("{}: error while converting {}: {}", dst, a.dst_format, st.message()));
      return 1;
    }
    target_zero = true;
  }
  OpenFlags tf;
  tf.format = a.dst_format;
  tf.read_only = false;
  tf.cache = a.dst_cache;
  auto target = open_image_or_report(dst, tf, CacheMode::kUnsafe);
  if (!target) return 1;
  if (a.skip_create && target->size() < total) {
    print_error("output file is smaller than input file");
    return 1;
  }
  Converter conv(sources, *target, a, *min_sparse, target_zero);
  int rc = conv.run();
  Status st = target->close();
  if (rc == 0 && !st.is_ok()) {
    print_error(fmt::format("error while closing '{}': {}", dst, st.message()));
    rc = 1;
  }
  for (auto& s : sources) (void)s.image->close();
  return rc;
}

std::function<int()> setup_convert(CLI::App* sub) {
  auto a = std::make_shared<ConvertArgs>();
  sub->add_option("-f", a->src_format, "Source format: qcow2 or raw (default: probe)");
  sub->add_option("-O", a->dst_format, "Target format: qcow2 or raw (default raw)");
  sub->add_option("-o", a->options,
                  "Target creation options key=value[,...] as for 'keel create' ('-o help' lists "
                  "them); repeat to merge")
      ->allow_extra_args(false);
  sub->add_flag("-c", a->compress, "Write compressed clusters (qcow2 target; compression_type "
                                   "from -o, zlib by default)");
  sub->add_flag("-p", a->progress, "Show progress as '    (NN.NN/100%)'");
  sub->add_flag("-q", a->quiet, "Quiet (no progress)");
  sub->add_option("-S", a->sparse_size,
                  "Sparse detection granularity: aligned all-zero chunks of this size are not "
                  "written (default 4k; 0 writes everything, fully allocating the target)");
  sub->add_option("-l", a->snapshot,
                  "Convert an internal snapshot: snapshot.name=NAME, snapshot.id=ID or NAME");
  sub->add_flag("-n", a->skip_create, "Do not create the target; write into an existing image "
                                      "(of format -O) at least as large as the source");
  sub->add_flag("-U,--force-share", a->force_share, "Open the sources without taking image locks");
  sub->add_option("-t", a->dst_cache,
                  "Target cache mode: writeback, writethrough, none, directsync, unsafe (default)");
  sub->add_option("-T", a->src_cache, "Source cache mode (default writeback)");
  sub->add_flag("--target-is-zero", a->target_is_zero,
                "With -n: the existing target already reads as zeros, skip writing zeros");
  sub->add_flag("-W", a->out_of_order, "Allow out-of-order writes (accepted; keel writes in order)");
  sub->add_option("-m", a->coroutines, "Parallel requests, 1-16 (accepted; keel copies sequentially)");
  sub->add_option("FILES", a->files, "One or more source images, then the target");
  sub->footer("Exit status: 0 on success, 1 on any error.");
  return [a] { return run_convert(*a); };
}

}  // namespace

KEEL_COMMAND(convert, "convert", "Convert or copy a disk image, qcow2 and raw (qemu-img convert)",
             setup_convert);

}  // namespace keel::cli
