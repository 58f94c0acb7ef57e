// keel commit: copy the changes of an overlay into its backing image, like qemu-img commit.
//   keel commit [-f fmt] [-t cache] [-b base] [-d] [-p] [-q] [-r rate] FILE
// Every range that FILE (or an image between FILE and the base) stores itself is written into
// the base: data as data, zero clusters as zeroes. The base is opened on its own, read-write,
// and grown first if it is smaller than FILE.
//
// Then, without -b and -d, FILE is emptied as qemu-img empties it: every cluster of FILE is
// deallocated (Image::make_empty), so FILE reads through to the base again, and the file's
// free tail is cut off.
//
// Crash safety: the base only receives bytes FILE already shows, and it is flushed and closed
// before FILE is touched. Emptying then only unmaps clusters whose bytes the base holds
// durably, through the engine's ordered write-back, so FILE's guest content never changes.
#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "cli/command.h"
#include "cli/image_name.h"
#include "cli/util.h"
#include "keel/chain_ops.h"

namespace keel::cli {
namespace {

struct CommitArgs {
  std::string format;
  std::string cache;
  std::string base;
  bool drop = false;
  bool progress = false;
  bool quiet = false;
  std::string rate;
  std::vector<std::string> files;
  ImageNameArgs names;  // --image-opts, --object
};

std::string real_path(const std::string& path) {
  char buf[PATH_MAX];
  return realpath(path.c_str(), buf) ? std::string(buf) : std::string();
}

// One image below FILE in its chain: where it lives and its format as its overlay names it.
struct Layer {
  std::string path;
  std::string format;
  std::string stored_name;  // the backing name as its overlay stores it
};

// The images below `top`, immediate backing first (each opened briefly to read its header).
Result<std::vector<Layer>> backing_layers(Image& top, const std::string& top_path) {
  std::vector<Layer> out;
  std::string parent = top_path;
  ImageInfo info = top.info();
  for (int depth = 0; !info.backing_filename.empty(); ++depth) {
    if (depth > 64) return error(invalid("Backing chain is too deep"));
    Layer l{path_combine(parent, info.backing_filename), info.backing_format, info.backing_filename};
    OpenOptions o;
    o.format = l.format;
    o.read_only = true;
    o.force_share = true;
    o.no_backing = true;
    auto img = Image::open(l.path, o);
    if (!img) return error(img.error());
    info = (*img)->info();
    (void)(*img)->close();
    parent = l.path;
    out.push_back(std::move(l));
  }
  return out;
}

// qemu's bdrv_find_backing_image: `name` names layer i if, taken relative to the directory of
// the image above it, it is the same file as that image's backing file.
int find_base(const std::vector<Layer>& layers, const std::string& top_path, const std::string& name) {
  std::string above = top_path;
  for (size_t i = 0; i < layers.size(); ++i) {
    if (name == layers[i].stored_name) return static_cast<int>(i);
    std::string want = real_path(path_combine(above, name));
    if (!want.empty() && want == real_path(layers[i].path)) return static_cast<int>(i);
    above = layers[i].path;
  }
  return -1;
}

int run_commit(const CommitArgs& a) {
  if (a.files.size() != 1) {
    report_usage_error("Expecting one image file name");
    return 1;
  }
  if (!a.rate.empty()) {
    auto r = parse_size_arg("rate limit", a.rate);
    if (!r) return 1;
  }
  // FILE itself, read-write and without its chain: this takes its locks (nothing else may
  // write FILE during the commit) and is the handle that empties it.
  OpenFlags tf;
  a.names.apply(&tf);
  tf.format = a.format;
  auto resolved = resolve_or_report(a.files.front(), &tf);
  if (!resolved) return 1;
  const std::string& file = *resolved;
  Progress progress(a.progress && !a.quiet);
  tf.cache = a.cache;
  tf.read_only = false;
  tf.no_backing = true;
  auto top = open_image_or_report(file, tf, CacheMode::kWriteback);
  if (!top) return 1;
  auto fail = [&](const std::string& msg) {
    progress.finish();
    print_error(msg);
    (void)top->close();
    return 1;
  };
  if (top->info().backing_filename.empty()) return fail("Image does not have a backing file");
  auto layers = backing_layers(*top, file);
  if (!layers) return fail(open_error_message(file, layers.error()));
  int base_index = 0;
  if (!a.base.empty()) {
    base_index = find_base(*layers, file, a.base);
    if (base_index < 0) return fail(fmt::format("Did not find '{}' in the backing chain of '{}'", a.base, file));
  }
  const Layer& base_layer = (*layers)[static_cast<size_t>(base_index)];
  // Extent depth counts FILE as 1, so the base is at depth base_index + 2.
  const int base_depth = base_index + 2;

  // The whole chain, to read from (shared: FILE is already locked by `top`).
  OpenFlags cf = tf;  // the same name options, read-only with its chain
  cf.read_only = true;
  cf.no_backing = false;
  cf.force_share = true;
  auto chain = open_image_or_report(file, cf, CacheMode::kWriteback);
  if (!chain) {
    (void)top->close();
    return 1;
  }
  OpenFlags bf;
  bf.format = base_layer.format;
  bf.cache = a.cache;
  bf.read_only = false;
  auto base = open_image_or_report(base_layer.path, bf, CacheMode::kWriteback);
  if (!base) {
    (void)chain->close();
    (void)top->close();
    return 1;
  }
  auto fail_all = [&](const std::string& msg) {
    (void)base->close();
    (void)chain->close();
    return fail(msg);
  };

  // The copy into the base, flushed there (libkeel: keel/chain_ops.h, shared with the crash
  // proof's commit workload).
  CommitOptions co;
  co.base_depth = base_depth;
  co.base_name = base_layer.path;
  co.progress = [&](double percent) { progress.update(percent); };
  Status st = commit_into_base(*chain, *base, co);
  if (!st.is_ok()) return fail_all(st.message());
  st = base->close();
  (void)chain->close();
  if (!st.is_ok()) return fail(fmt::format("error while writing '{}': {}", base_layer.path, st.message()));

  // Without -b and -d, FILE is emptied (qemu-img's bdrv_make_empty): it then reads as the base.
  if (!a.drop && a.base.empty()) {
    st = top->make_empty();
    if (!st.is_ok() && st.code() != Code::kUnsupported) {
      progress.finish();
      print_error(fmt::format("Failed to empty {}: {}", file, st.message()));
      (void)top->close();
      return 1;
    }
  }
  st = top->close();
  progress.finish();
  if (!st.is_ok()) {
    print_error(fmt::format("error while closing '{}': {}", file, st.message()));
    return 1;
  }
  if (!a.quiet) std::printf("Image committed.\n");
  return 0;
}

std::function<int()> setup_commit(CLI::App* sub) {
  auto a = std::make_shared<CommitArgs>();
  sub->add_option("-f", a->format, "Format of FILE: qcow2 or raw (default: probe)");
  sub->add_option("-t", a->cache,
                  "Cache mode for FILE and the base: writeback (default), writethrough, none, "
                  "directsync, unsafe");
  sub->add_option("-b", a->base,
                  "Commit into this image of FILE's backing chain (default: FILE's backing file); "
                  "the images in between are committed too. Implies -d");
  sub->add_flag("-d", a->drop,
                "Do not empty FILE after the commit (without it, FILE's clusters are "
                "deallocated so it reads as the base)");
  sub->add_flag("-p", a->progress, "Show progress as '    (NN.NN/100%)'");
  sub->add_flag("-q", a->quiet, "Quiet: no progress and no 'Image committed.'");
  sub->add_option("-r", a->rate, "Rate limit in bytes per second (accepted; keel does not throttle)");
  add_image_name_options(sub, &a->names);
  sub->add_option("FILE", a->files, "The overlay whose changes are committed");
  sub->footer("Exit status: 0 on success, 1 on any error (message on stderr as 'keel: ...').");
  return [a] { return run_commit(*a); };
}

}  // namespace

KEEL_COMMAND(commit, "commit", "Commit an overlay's changes into its backing image (qemu-img commit)",
             setup_commit);

}  // namespace keel::cli
