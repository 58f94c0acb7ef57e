// keel info: qemu-img info's output (human or --output=json) for an image or its whole chain.
//   keel info [-f fmt] [--output=human|json] [--backing-chain] [-U] FILE
// Like qemu-img, each image of a chain is opened on its own without its backing file, so info
// works on images whose backing file is missing, and a chain that loops is reported, not followed.
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "cli/command.h"
#include "cli/image_name.h"
#include "cli/info_format.h"
#include "cli/util.h"
#include "keel/info_json.h"

namespace keel::cli {
namespace {

struct InfoArgs {
  std::string format;
  std::string output = "human";
  bool backing_chain = false;
  bool force_share = false;
  ImageNameArgs names;  // --image-opts, --object
  std::string filename;
};

int run_info(const InfoArgs& a) {
  auto json = parse_output_format(a.output);
  if (!json) return 1;
  if (a.filename.empty()) {
    report_usage_error("Expecting one image file name");
    return 1;
  }
  std::vector<ImageInfo> chain;
  std::set<std::string> seen;
  OpenFlags top;  // the named image: json:/--image-opts options apply to it, not to its backing files
  a.names.apply(&top);
  top.format = a.format;
  auto resolved = resolve_image_name(a.filename, &top);
  if (!resolved) {
    print_error(resolved.error().message());
    return 1;
  }
  std::string filename = *resolved;
  std::string format = top.format;
  while (!filename.empty()) {
    // Loops are found by the file itself, however its name is spelled ("./a", "dir/../a").
    char resolved[PATH_MAX];
    std::string key = realpath(filename.c_str(), resolved) ? std::string(resolved) : filename;
    if (!seen.insert(key).second) {
      print_error(fmt::format("Backing file '{}' creates an infinite loop.", filename));
      return 1;
    }
    OpenFlags f = chain.empty() ? top : OpenFlags{};
    f.format = format;
    f.force_share = a.force_share;
    f.no_backing = true;
    f.no_io = true;  // as qemu-img info: an encrypted image opens without its key
    auto img = open_image_or_report(filename, f, CacheMode::kWriteback);
    if (!img) return 1;
    ImageInfo info = img->info();
    info.filename = filename;
    if (chain.empty() && !top.shown_format.empty()) info.format = top.shown_format;
    (void)img->close();
    filename.clear();
    format.clear();
    if (a.backing_chain && !info.backing_filename.empty()) {
      filename = path_combine(info.filename, info.backing_filename);
      format = info.backing_format;
    }
    chain.push_back(std::move(info));
  }
  // An NBD export's disk size is not known (qemu-img: "unavailable"); its backing files are local.
  auto size_known = [&](const ImageInfo& i) { return &i != &chain.front() || top.protocol != "nbd"; };
  if (*json) {
    // The library's renderer (keel_info_json's too); an NBD export's entry leaves out its disk
    // size and dirty flag, as qemu-img does.
    if (a.backing_chain) std::printf("%s\n", info_json(chain, size_known(chain.front())).c_str());
    else std::printf("%s\n", info_json(chain.front(), size_known(chain.front())).c_str());
  } else {
    bool first = true;
    for (const auto& i : chain) {
      if (!first) std::printf("\n");
      first = false;
      std::fputs(image_info_human(i, size_known(i)).c_str(), stdout);
    }
  }
  return 0;
}

std::function<int()> setup_info(CLI::App* sub) {
  auto a = std::make_shared<InfoArgs>();
  sub->add_option("-f", a->format, "Image format: qcow2 or raw (default: probe)");
  sub->add_option("--output", a->output,
                  "Output format: human (default) or json (qemu-img's field names)");
  sub->add_flag("--backing-chain", a->backing_chain,
                "Show every image of the backing chain, top first (a JSON array with --output=json)");
  sub->add_flag("-U,--force-share", a->force_share,
                "Open without taking image locks (the image may be in use by a writer)");
  add_image_name_options(sub, &a->names);
  sub->add_option("FILE", a->filename, "Image file (or json:{...}, file:PATH, null-co://; see --image-opts)");
  sub->footer("Exit status: 0 on success, 1 if an image cannot be opened.");
  return [a] { return run_info(*a); };
}

}  // namespace

KEEL_COMMAND(info, "info", "Show information about a disk image (qemu-img info)", setup_info);

}  // namespace keel::cli
