// keel rebase: change the backing file of a qcow2 image, like qemu-img rebase.
//   keel rebase [-f fmt] [-t cache] [-T src_cache] [-p] [-q] [-U] [-u] -b backing [-F fmt] FILE
// Safe mode (default): wherever FILE does not store a range itself and the old and the new
// backing chains read differently, the old chain's bytes are written into FILE first (compared
// in 512-byte sectors, as qemu-img does), so FILE's guest content does not change. Then the
// header is rewritten to name the new backing file. -u (unsafe) only rewrites the header.
// "-b ''" removes the backing file (in safe mode FILE then takes in everything it read from it).
//
// Crash safety: the copied data reads the same as what FILE showed before, so an interruption
// during the copy changes nothing visible; the header change is one engine amend.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <sys/stat.h>

#include "cli/command.h"
#include "cli/image_name.h"
#include "cli/util.h"
#include "keel/chain_ops.h"

namespace keel::cli {
namespace {

struct RebaseArgs {
  std::string format;
  std::string cache;
  std::string src_cache;
  bool progress = false;
  bool quiet = false;
  bool force_share = false;
  bool unsafe = false;
  std::string backing;
  CLI::Option* backing_opt = nullptr;
  std::string backing_format;
  std::vector<std::string> files;
  ImageNameArgs names;  // --image-opts, --object
};

bool same_file(const std::string& a, const std::string& b) {
  struct stat sa {}, sb {};
  return ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev &&
         sa.st_ino == sb.st_ino;
}

int run_rebase(const RebaseArgs& a) {
  if (a.files.size() != 1) {
    report_usage_error("Expecting one image file name");
    return 1;
  }
  const bool has_backing_arg = a.backing_opt->count() > 0;
  if (!a.unsafe && !has_backing_arg) {
    report_usage_error("Must specify backing file (-b) or use unsafe mode (-u)");
    return 1;
  }
  if (!a.src_cache.empty() && !parse_cache_mode(a.src_cache)) {
    print_error(fmt::format("Invalid source cache option: {}", a.src_cache));
    return 1;
  }

  OpenFlags tf;
  a.names.apply(&tf);
  tf.format = a.format;
  auto resolved = resolve_or_report(a.files.front(), &tf);
  if (!resolved) return 1;
  const std::string& file = *resolved;
  Progress progress(a.progress && !a.quiet);
  tf.cache = a.cache;
  tf.read_only = false;
  // Safe mode writes into FILE with its old backing chain attached, so that a write of part of
  // a cluster is completed (copy-on-write) from the old chain, as FILE showed it.
  tf.no_backing = a.unsafe;
  auto top = open_image_or_report(file, tf, CacheMode::kWriteback);
  if (!top) return 1;
  // The old and the new backing chain (safe mode; nullptr: none).
  std::unique_ptr<Image> old_image, new_image;
  auto close_chains = [&] {
    if (old_image) (void)old_image->close();
    if (new_image) (void)new_image->close();
  };
  auto fail = [&](const std::string& msg) {
    progress.finish();
    print_error(msg);
    close_chains();
    (void)top->close();
    return 1;
  };
  if (!a.backing_format.empty() && !is_known_format(a.backing_format))
    return fail(fmt::format("Invalid format name: '{}'", a.backing_format));
  const ImageInfo info = top->info();

  if (!a.unsafe) {
    // The old chain: FILE's current backing file with its own chain.
    if (!info.backing_filename.empty()) {
      OpenFlags of;
      of.format = info.backing_format;
      of.cache = a.src_cache;
      of.force_share = true;
      std::string old_path = path_combine(file, info.backing_filename);
      auto opts = make_open_options(of, CacheMode::kWriteback);
      auto img = opts ? Image::open(old_path, *opts) : Result<std::unique_ptr<Image>>(error(opts.error()));
      if (!img)
        return fail(fmt::format("Could not open '{}': Could not open backing file: {}", file,
                                open_error_message(old_path, img.error())));
      old_image = std::move(*img);
    }
    // The new chain, named relative to FILE's directory like every backing file.
    if (!a.backing.empty()) {
      OpenFlags nf;
      nf.format = a.backing_format;
      nf.cache = a.src_cache;
      nf.force_share = a.force_share;
      auto new_resolved = resolve_image_name(path_combine(file, a.backing), &nf);  // json:, file:, null-co://
      if (!new_resolved) return fail(new_resolved.error().message());
      const std::string new_path = *new_resolved;
      auto opts = make_open_options(nf, CacheMode::kWriteback);
      auto img = opts ? Image::open(new_path, *opts) : Result<std::unique_ptr<Image>>(error(opts.error()));
      if (!img) {
        // qemu-img shows a lock conflict as it is and other failures as "Could not open".
        const Status& e = img.error();
        return fail(fmt::format("Could not open new backing file '{}': {}", a.backing,
                                e.code() == Code::kBusy ? e.message() : open_error_message(new_path, e)));
      }
      if (same_file(new_path, file))  // possible with -U; qemu-img would write a loop
        return fail(fmt::format("Backing file '{}' creates an infinite loop.", a.backing));
      new_image = std::move(*img);
    }
  }
  // Refusals qemu-img reports when it changes the header, checked before any data is written.
  if (top->format() != "qcow2")
    return fail(fmt::format("Could not change the backing file to '{}': Operation not supported", a.backing));
  if (!a.backing.empty() && a.backing_format.empty())
    return fail(fmt::format("Could not change the backing file to '{}': backing format must be specified", a.backing));

  // The copy (safe mode) and the header switch (libkeel: keel/chain_ops.h, shared with the
  // crash proof's rebase workload).
  RebaseOptions ro;
  ro.backing_file = a.backing;
  ro.backing_format = a.backing_format;
  ro.unsafe = a.unsafe;
  ro.progress = [&](double percent) { progress.update(percent); };
  Status st = rebase_image(*top, old_image.get(), new_image.get(), ro);
  if (!st.is_ok()) return fail(st.message());
  close_chains();
  st = top->close();
  progress.finish();
  if (!st.is_ok()) {
    print_error(fmt::format("error while closing '{}': {}", file, st.message()));
    return 1;
  }
  return 0;
}

std::function<int()> setup_rebase(CLI::App* sub) {
  auto a = std::make_shared<RebaseArgs>();
  sub->add_option("-f", a->format, "Format of FILE (qcow2; default: probe)");
  sub->add_option("-t", a->cache,
                  "Cache mode for FILE: writeback (default), writethrough, none, directsync, unsafe");
  sub->add_option("-T", a->src_cache, "Cache mode for the old and new backing files (default writeback)");
  sub->add_flag("-p", a->progress, "Show progress as '    (NN.NN/100%)'");
  sub->add_flag("-q", a->quiet, "Quiet (no progress)");
  sub->add_flag("-U,--force-share", a->force_share, "Open the new backing file without taking image locks");
  sub->add_flag("-u", a->unsafe,
                "Unsafe: only rewrite the header; FILE's backing file is not opened and no data "
                "is copied (for renaming or moving a backing file). Without -b it removes the "
                "backing file");
  a->backing_opt = sub->add_option("-b", a->backing,
                                   "The new backing file, relative to FILE's directory unless "
                                   "absolute; '' removes the backing file");
  sub->add_option("-F", a->backing_format, "Format of the new backing file (required with a non-empty -b)");
  add_image_name_options(sub, &a->names);
  sub->add_option("FILE", a->files, "The qcow2 image to rebase");
  sub->footer("Exit status: 0 on success, 1 on any error (message on stderr as 'keel: ...').");
  return [a] { return run_rebase(*a); };
}

}  // namespace

KEEL_COMMAND(rebase, "rebase", "Change the backing file of an image (qemu-img rebase)", setup_rebase);

}  // namespace keel::cli
