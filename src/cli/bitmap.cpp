// keel bitmap: add, remove, clear, enable, disable and merge persistent dirty bitmaps, like
// qemu-img 7.2's bitmap command:
//   keel bitmap (--merge SOURCE | --add | --remove | --clear | --enable | --disable)...
//               [-b source_file [-F source_fmt]] [-g granularity] [-f fmt] filename bitmap
// The actions run in the order given, each one durable before the next (qemu-img applies them
// in memory and stores the bitmaps when it closes the image: the result is the same, and an
// action that fails leaves the earlier ones done, as with qemu-img). Messages and exit codes
// are qemu-img's, except that where qemu-img names its internal node ("#block123", with random
// digits) keel names the file.
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "cli/command.h"
#include "cli/image_name.h"
#include "cli/util.h"

namespace keel::cli {
namespace {

enum class Act { kAdd, kRemove, kClear, kEnable, kDisable, kMerge };

struct BitmapArgs {
  CLI::Option* add = nullptr;
  CLI::Option* remove = nullptr;
  CLI::Option* clear = nullptr;
  CLI::Option* enable = nullptr;
  CLI::Option* disable = nullptr;
  CLI::Option* merge = nullptr;
  int n_add = 0, n_remove = 0, n_clear = 0, n_enable = 0, n_disable = 0;
  CLI::Option* granularity_opt = nullptr;
  std::vector<std::string> merge_sources;
  std::string granularity, source_file, source_format, format;
  ImageNameArgs names;  // --image-opts, --object
  std::vector<std::string> positional;
  CLI::App* app = nullptr;
};

struct Action {
  Act act;
  std::string source;  // --merge only
};

const char* op_name(Act a) {
  switch (a) {
    case Act::kAdd: return "add";
    case Act::kRemove: return "remove";
    case Act::kClear: return "clear";
    case Act::kEnable: return "enable";
    case Act::kDisable: return "disable";
    case Act::kMerge: return "merge";
  }
  return "?";
}

// The actions in command-line order.
std::vector<Action> collect_actions(const BitmapArgs& a) {
  std::vector<Action> out;
  size_t merges = 0;
  for (const CLI::Option* o : a.app->parse_order()) {
    if (o == a.add) out.push_back({Act::kAdd, {}});
    else if (o == a.remove) out.push_back({Act::kRemove, {}});
    else if (o == a.clear) out.push_back({Act::kClear, {}});
    else if (o == a.enable) out.push_back({Act::kEnable, {}});
    else if (o == a.disable) out.push_back({Act::kDisable, {}});
    else if (o == a.merge && merges < a.merge_sources.size()) out.push_back({Act::kMerge, a.merge_sources[merges++]});
  }
  return out;
}

bool has(const std::vector<Action>& acts, Act a) {
  for (const auto& x : acts)
    if (x.act == a) return true;
  return false;
}

Status run_action(Image& image, Image& source, const std::string& file, const Action& act,
                  const std::string& bitmap, int64_t granularity) {
  const bool qcow2 = image.format() == "qcow2";
  switch (act.act) {
    case Act::kAdd: {
      if (granularity != 0 && static_cast<uint32_t>(granularity) == 0)  // qemu passes it as uint32
        return invalid("Granularity must be power of 2 and at least 512");
      Status st = image.bitmap_add(bitmap, static_cast<uint32_t>(granularity), false);
      if (!st.is_ok() && !qcow2 && st.code() == Code::kUnsupported)
        return Status(Code::kUnsupported, fmt::format("Can't store persistent bitmaps to {}: Operation not supported", file));
      return st;
    }
    case Act::kRemove: return image.bitmap_remove(bitmap);
    case Act::kClear: return image.bitmap_clear(bitmap);
    case Act::kEnable: return image.bitmap_enable(bitmap);
    case Act::kDisable: return image.bitmap_disable(bitmap);
    case Act::kMerge: {
      // qemu-img looks at the target first, then the source.
      bool found = false;
      for (const auto& b : image.info().bitmaps) {
        if (b.name != bitmap) continue;
        found = true;
        for (const auto& f : b.flags)
          if (f == "in-use")
            return invalid(fmt::format("Bitmap '{}' is inconsistent and cannot be used", bitmap));
      }
      if (!found) return Status(Code::kNotFound, fmt::format("Dirty bitmap '{}' not found", bitmap), ENOENT);
      return image.bitmap_merge_from(bitmap, source, act.source);
    }
  }
  return invalid("unknown action");
}

int run_bitmap(const BitmapArgs& a) {
  int64_t granularity = 0;
  if (a.granularity_opt->count()) {
    auto g = parse_size_arg("granularity", a.granularity);
    if (!g) return 1;
    granularity = static_cast<int64_t>(*g);
  }
  const std::vector<Action> actions = collect_actions(a);
  if (actions.empty()) {
    print_error("Need at least one of --add, --remove, --clear, --enable, --disable, or --merge");
    return 1;
  }
  if (granularity != 0 && !has(actions, Act::kAdd)) {
    print_error("granularity only supported with --add");
    return 1;
  }
  if (!a.source_format.empty() && a.source_file.empty()) {
    print_error("-F only supported with -b");
    return 1;
  }
  if (!a.source_file.empty() && !has(actions, Act::kMerge)) {
    print_error("Merge bitmap source file only supported with --merge");
    return 1;
  }
  if (a.positional.size() != 2) {
    print_error("Expecting filename and bitmap name");
    return 1;
  }
  const std::string& file = a.positional[0];
  const std::string& bitmap = a.positional[1];

  // Bitmaps live in this image alone: no backing chain is needed.
  OpenFlags f;
  a.names.apply(&f);
  f.format = a.format;
  f.read_only = false;
  f.no_backing = true;
  auto image = open_image_or_report(file, f, CacheMode::kWriteback);
  if (!image) return 1;
  std::unique_ptr<Image> source;
  if (!a.source_file.empty()) {
    OpenFlags sf;
    a.names.apply(&sf);  // qemu-img bitmap opens -b with the same --image-opts rule
    sf.format = a.source_format;
    sf.no_backing = true;
    source = open_image_or_report(a.source_file, sf, CacheMode::kWriteback);
    if (!source) {
      (void)image->close();
      return 1;
    }
  }

  int rc = 0;
  for (const Action& act : actions) {
    Status st = run_action(*image, source ? *source : *image, file, act, bitmap, granularity);
    if (st.is_ok()) continue;
    print_error(fmt::format("Operation {} on bitmap {} failed: {}", op_name(act.act), bitmap, st.message()));
    if (st.message().find("is inconsistent and cannot be used") != std::string::npos)
      std::fprintf(stderr, "Try block-dirty-bitmap-remove to delete this bitmap from disk\n");
    rc = 1;
    break;
  }
  if (source) (void)source->close();
  Status st = image->close();
  if (!st.is_ok()) {
    print_error(fmt::format("Error while closing the image: {}", st.message()));
    rc = 1;
  }
  return rc;
}

std::function<int()> setup_bitmap(CLI::App* sub) {
  auto a = std::make_shared<BitmapArgs>();
  a->app = sub;
  a->add = sub->add_flag("--add", a->n_add, "Add the bitmap (enabled; add --disable for a disabled one)")
               ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  a->remove = sub->add_flag("--remove", a->n_remove, "Remove the bitmap (also one that is inconsistent)")
                  ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  a->clear = sub->add_flag("--clear", a->n_clear, "Mark every bit of the bitmap clean")
                 ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  a->enable = sub->add_flag("--enable", a->n_enable, "Enable the bitmap: it tracks later writes ('auto' flag)")
                  ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  a->disable = sub->add_flag("--disable", a->n_disable, "Disable the bitmap: it stops tracking writes")
                   ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  a->merge = sub->add_option("--merge", a->merge_sources,
                             "Merge the bitmap SOURCE (of this image, or of -b source_file) into the bitmap")
                 ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
                 ->allow_extra_args(false);
  a->granularity_opt = sub->add_option("-g,--granularity", a->granularity,
                                       "Granularity for --add: bytes per bit, a power of two >= 512 "
                                       "(default: the cluster size, clamped to 4k..64k)");
  sub->add_option("-b,--source-file", a->source_file, "Image holding the --merge source bitmaps");
  sub->add_option("-F,--source-format", a->source_format, "Format of the -b image");
  sub->add_option("-f", a->format, "Image format (qcow2; raw images have no bitmaps)");
  add_image_name_options(sub, &a->names);
  sub->add_option("filename_and_bitmap", a->positional, "The image and the bitmap name")->allow_extra_args(true);
  sub->footer("Actions run in the order given. Exit status: 0 on success, 1 on any error "
              "(message on stderr as 'keel: ...').");
  return [a] { return run_bitmap(*a); };
}

}  // namespace

KEEL_COMMAND(bitmap, "bitmap", "Add, remove, clear, enable, disable or merge persistent dirty bitmaps "
                               "(qemu-img bitmap)", setup_bitmap);

}  // namespace keel::cli
