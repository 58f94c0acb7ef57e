// keel convert: copy one or more images (concatenated) into a new qcow2 or raw image, like
// qemu-img convert.
//   keel convert [-f fmt] [-O fmt] [-o opts] [-c] [-p] [-q] [-S size] [-l snapshot] [-n]
//                [-U] [-t cache] [-T src_cache] [--target-is-zero] SRC... DST
//                [-m N] [-W] [-B backing -F backing_fmt]
// The target is sparse: ranges the source reports as zero (block status), and data chunks of -S
// bytes that are all zeros, are not written (a new image reads as zeros). With -n the target
// already exists and zero ranges are written as zeroes unless --target-is-zero. -c writes the
// target clusters that hold data with Image::write_compressed. The copy loop is convert_copy.cpp.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "cli/command.h"
#include "cli/convert_bitmaps.h"
#include "cli/convert_copy.h"
#include "cli/image_options.h"
#include "cli/util.h"

namespace keel::cli {
namespace {

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
  std::string backing;         // -B
  std::string backing_format;  // -F
  bool out_of_order = false;
  bool salvage = false;        // --salvage
  bool bitmaps = false;        // --bitmaps
  bool skip_broken = false;    // --skip-broken-bitmaps
  std::string coroutines;
  std::vector<std::string> objects;  // --object secret,... (encrypted images)
  bool image_opts = false;           // the sources are --image-opts strings
  bool target_image_opts = false;    // the target (-n only) is an --image-opts string
  std::vector<std::string> files;
};

// The snapshot named by -l: "snapshot.name=N", "snapshot.id=I", or a bare id-or-name.
Result<std::string> parse_snapshot_arg(const std::string& arg) {
  if (arg.rfind("snapshot.", 0) != 0) return arg;
  auto list = parse_options(arg);
  if (!list) return error(list.error());
  std::string id, name;
  for (const auto& [k, v] : list->items()) {
    if (k == "snapshot.id") id = v;
    else if (k == "snapshot.name") name = v;
    else return error(invalid(fmt::format("Invalid parameter '{}'\n{}: Failed in parsing snapshot param '{}'", k,
                                          program_name(), arg)));
  }
  return name.empty() ? id : name;
}

struct Source {
  std::unique_ptr<Image> image;
  uint64_t size = 0;
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
  if (a.skip_broken && !a.bitmaps) {
    print_error("Use of --skip-broken-bitmaps requires --bitmaps");
    return 1;
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
  int requests = 8;  // qemu-img's default
  if (!a.coroutines.empty()) {
    auto m = parse_size(a.coroutines);
    if (!m || *m < 1 || *m > 16) {
      print_error("Invalid number of coroutines. Allowed number of coroutines is between 1 and 16");
      return 1;
    }
    requests = static_cast<int>(*m);
  }
  if (a.target_image_opts && !a.skip_create) {
    print_error("--target-image-opts requires use of -n flag");
    return 1;
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
  for (const auto& src : srcs) {
    OpenFlags f;
    std::string path = src;
    if (a.image_opts) {
      if (Status st = parse_image_opts(src, &f, &path); !st.is_ok()) {
        print_error(st.message());
        return 1;
      }
    }
    f.objects = a.objects;
    if (!a.image_opts) f.format = a.src_format;
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

  if (a.bitmaps) {
    std::vector<Image*> images;
    for (auto& s : sources) images.push_back(s.image.get());
    if (!check_bitmap_source(images, a.skip_broken)) return 1;
  }

  // Target.
  bool target_zero = a.target_is_zero;
  bool has_backing = !a.backing.empty();
  std::string target_secret;  // -o encrypt.key-secret: the new target is encrypted
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
    // -B / -F (or -o backing_file, backing_fmt): the target gets a backing file, and what the
    // sources' top layers do not allocate is left to it.
    if (!a.backing.empty()) {
      if (a.dst_format != "qcow2") {
        print_error(fmt::format("Backing file not supported for file format '{}'", a.dst_format));
        return 1;
      }
      checked->set("backing_file", a.backing);
    }
    if (!a.backing_format.empty()) {
      if (a.dst_format != "qcow2") {
        print_error(fmt::format("Backing file format not supported for file format '{}'", a.dst_format));
        return 1;
      }
      checked->set("backing_fmt", a.backing_format);
    }
    has_backing = checked->raw("backing_file").has_value();
    if (has_backing && !checked->raw("backing_fmt")) {
      print_error("Use of backing file requires explicit backing format");
      return 1;
    }
    checked->set("size", std::to_string((total + 511) & ~uint64_t{511}));
    if (checked->raw("encrypt.format") || checked->boolean("encryption").value_or(false)) {
      if (a.compress) {  // qemu-img checks this before creating the target
        print_error("Compression and encryption not supported at the same time");
        return 1;
      }
      target_secret = checked->raw("encrypt.key-secret").value_or("");
    }
    auto create = to_create_options(*checked, a.objects);
    if (!create) {
      print_error(fmt::format("{}: error while converting {}: {}", dst, a.dst_format,
                              create.error().message()));
      return 1;
    }
    create->durable = a.dst_cache != "unsafe";
    Status st = create_image(dst, *create);
    if (!st.is_ok()) {
      print_error(fmt::format("{}: error while converting {}: {}", dst, a.dst_format, st.message()));
      return 1;
    }
    target_zero = !has_backing;
  }
  OpenFlags tf;
  tf.format = a.target_image_opts ? "" : a.dst_format;  // the option string names the driver
  tf.image_opts = a.target_image_opts;
  tf.read_only = false;
  tf.cache = a.dst_cache;
  tf.objects = a.objects;
  tf.key_secret = target_secret;
  auto target = open_image_or_report(dst, tf, CacheMode::kUnsafe);
  if (!target) return 1;
  if (a.skip_create && target->size() < total) {
    print_error("output file is smaller than input file");
    return 1;
  }
  if (a.bitmaps && !check_bitmap_target(*target)) return 1;
  std::vector<CopySource> copy_sources;
  for (auto& s : sources) copy_sources.push_back({s.image.get(), s.size});
  CopyOptions co;
  co.min_sparse = *min_sparse;
  co.target_zero = target_zero;
  co.target_has_backing = has_backing;
  co.compress = a.compress;
  co.progress = a.progress && !a.quiet;
  co.out_of_order = a.out_of_order;
  co.requests = requests;
  co.salvage = a.salvage;
  co.quiet = a.quiet;
  int rc = copy_images(copy_sources, *target, co);
  if (rc == 0 && a.bitmaps && !copy_bitmaps(*sources[0].image, *target, a.skip_broken)) rc = 1;
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
  sub->add_option("-B", a->backing,
                  "Backing file of the target (qcow2): ranges the sources' top layers do not "
                  "allocate are left to it (requires -F)");
  sub->add_option("-F", a->backing_format, "Format of the target's backing file (-B)");
  sub->add_flag("-W", a->out_of_order, "Allow out-of-order writes (default: writes in guest order)");
  sub->add_option("-m", a->coroutines, "Parallel requests, 1-16 (default 8)");
  sub->add_flag("--bitmaps", a->bitmaps, "Copy the source's persistent bitmaps to the (qcow2 v3) target");
  sub->add_flag("--skip-broken-bitmaps", a->skip_broken,
                "With --bitmaps: leave out inconsistent (in-use) bitmaps, with a warning");
  sub->add_flag("--salvage", a->salvage,
                "Read errors of the sources become zeros (per 512-byte sector, with a warning) "
                "instead of ending the convert");
  sub->add_option("--object", a->objects,
                  "secret,id=ID,data=TEXT|file=PATH[,format=raw|base64]: a secret for "
                  "encrypt.key-secret=ID (encrypted qcow2 sources, --image-opts)");
  sub->add_flag("--image-opts", a->image_opts,
                "The sources are option strings: driver=qcow2,file.filename=F[,encrypt.key-secret=ID]");
  sub->add_flag("--target-image-opts", a->target_image_opts,
                "The target (with -n) is an option string: driver=qcow2,file.filename=F[,encrypt.key-secret=ID]");
  sub->add_option("FILES", a->files, "One or more source images, then the target");
  sub->footer("Exit status: 0 on success, 1 on any error.");
  return [a] { return run_convert(*a); };
}

}  // namespace

KEEL_COMMAND(convert, "convert", "Convert or copy a disk image, qcow2 and raw (qemu-img convert)",
             setup_convert);

}  // namespace keel::cli
