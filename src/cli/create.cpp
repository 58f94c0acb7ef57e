// keel create: qemu-img create's syntax, checks, "Formatting ..." line and exit codes.
//   keel create [-f fmt] [-b backing [-F backing_fmt]] [-u] [-o opts] [-q] FILE [SIZE]
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "cli/command.h"
#include "cli/image_name.h"
#include "cli/image_options.h"
#include "cli/util.h"

namespace keel::cli {
namespace {

struct CreateArgs {
  std::string format = "raw";
  std::string backing;
  std::string backing_format;
  bool unsafe = false;
  std::vector<std::string> options;
  std::vector<std::string> objects;  // --object secret,... (encrypt.key-secret)
  bool quiet = false;
  std::string filename;
  std::string size;
  CLI::Option* size_option = nullptr;  // to tell "" from no SIZE argument
  CLI::Option* backing_option = nullptr;  // to tell -b '' from no -b
};

int run_create(const CreateArgs& a) {
  std::string merged = merge_option_args(a.options);
  if (!is_known_format(a.format)) {
    if (a.filename.empty()) print_error(fmt::format("Unknown file format '{}'", a.format));
    else print_error(fmt::format("{}: Unknown file format '{}'", a.filename, a.format));
    return 1;
  }
  if (!merged.empty() && is_help_option(merged)) {
    print_option_help(a.format);
    return 0;
  }
  if (a.filename.empty()) {
    report_usage_error("Expecting image file name");
    return 1;
  }
  std::optional<uint64_t> size;
  if (a.size_option && a.size_option->count() > 0) {
    size = parse_size_arg("image size", a.size);
    if (!size) return 1;
  }
  auto fail = [&](const std::string& msg) {
    print_error(fmt::format("{}: {}", a.filename, msg));
    return 1;
  };
  auto list = parse_options(merged);
  if (!list) return fail(list.error().message());
  auto checked = check_option_types(a.format, *list);
  if (!checked) return fail(checked.error().message());
  if (size) {
    if (checked->raw("size")) return fail("The image size must be specified only once");
    checked->set("size", std::to_string(*size));
  }
  if (a.backing_option && a.backing_option->count() > 0) {
    if (a.format != "qcow2")
      return fail(fmt::format("Backing file not supported for file format '{}'", a.format));
    checked->set("backing_file", a.backing);
  }
  if (!a.backing_format.empty()) {
    if (a.format != "qcow2")
      return fail(fmt::format("Backing file format not supported for file format '{}'", a.format));
    checked->set("backing_fmt", a.backing_format);
  }

  auto backing_file = checked->raw("backing_file");
  auto backing_fmt = checked->raw("backing_fmt");
  if (backing_file) {
    if (*backing_file == a.filename)
      return fail("Error: Trying to create an image with the same filename as the backing file");
    if (backing_file->empty()) return fail("Expected backing file name, got empty string");
  }
  if (backing_file && !a.unsafe) {
    // Open the backing image (shared, read-only) to check it and to take its size.
    OpenFlags f;
    f.format = backing_fmt.value_or("");
    f.force_share = true;
    f.objects = a.objects;
    auto resolved = resolve_image_name(path_combine(a.filename, *backing_file), &f);  // json:, file:, null-co://
    if (!resolved) {
      print_error(fmt::format("{}: {}", a.filename, resolved.error().message()));
      std::fprintf(stderr, "Could not open backing image.\n");
      return 1;
    }
    const std::string full = *resolved;
    if (!f.format.empty() && !is_known_format(f.format)) {
      print_error(fmt::format("{}: Unknown driver '{}'", a.filename, f.format));
      std::fprintf(stderr, "Could not open backing image.\n");
      return 1;
    }
    auto opts = make_open_options(f, CacheMode::kWriteback);
    auto img = opts ? Image::open(full, *opts) : Result<std::unique_ptr<Image>>(error(opts.error()));
    if (!img) {
      print_error(fmt::format("{}: {}", a.filename, open_error_message(full, img.error(), f.display_name)));
      std::fprintf(stderr, "Could not open backing image.\n");
      return 1;
    }
    if (!backing_fmt) {
      print_error(fmt::format("{}: Backing file specified without backing format", a.filename));
      std::fprintf(stderr, "Detected format of %s.\n", (*img)->format().c_str());
      return 1;
    }
    if (!checked->raw("size")) checked->set("size", std::to_string((*img)->size()));
    (void)(*img)->close();
  } else if (backing_file && !backing_fmt) {
    return fail("Backing file specified without backing format");
  }
  if (!checked->raw("size")) return fail("Image creation needs a size parameter");

  if (!a.quiet) {
    std::printf("Formatting '%s', fmt=%s %s\n", a.filename.c_str(), a.format.c_str(),
                formatting_options(*checked).c_str());
    std::fflush(stdout);
  }
  auto create_opts = to_create_options(*checked, a.objects);
  if (!create_opts) return fail(create_opts.error().message());
  Status st = create_image(a.filename, *create_opts);
  if (!st.is_ok()) return fail(st.message());
  return 0;
}

std::function<int()> setup_create(CLI::App* sub) {
  auto a = std::make_shared<CreateArgs>();
  sub->add_option("-f", a->format, "Image format: qcow2 or raw (default raw)");
  a->backing_option = sub->add_option("-b", a->backing,
                  "Backing file (qcow2 only); a relative name is relative to FILE's directory");
  sub->add_option("-F", a->backing_format, "Format of the backing file: qcow2 or raw");
  sub->add_flag("-u", a->unsafe, "Do not open the backing file (its size and format are not checked)");
  sub->add_option("-o", a->options,
                  "Format options as key=value[,key=value...]; ',,' is a literal comma; repeat "
                  "to merge; '-o help' lists them. qcow2: compat, cluster_size, refcount_bits, "
                  "lazy_refcounts, extended_l2, preallocation (off|metadata|falloc|full), "
                  "compression_type (zlib|zstd), data_file, data_file_raw, backing_file, "
                  "backing_fmt, size")
      ->allow_extra_args(false);
  sub->add_flag("-q", a->quiet, "Quiet: do not print the 'Formatting ...' line");
  sub->add_option("--object", a->objects,
                  "secret,id=ID,data=TEXT|file=PATH[,format=raw|base64]: the passphrase for "
                  "-o encrypt.format=luks,encrypt.key-secret=ID");
  sub->add_option("FILE", a->filename, "Image file to create (overwritten if it exists)");
  a->size_option = sub->add_option("SIZE", a->size,
                  "Virtual size in bytes; suffixes k, M, G, T, P, E (powers of 1024), fractions "
                  "allowed with a suffix (1.5G). Optional with -b: taken from the backing file");
  sub->footer("Exit status: 0 on success, 1 on any error (message on stderr as 'keel: ...').");
  return [a] { return run_create(*a); };
}

}  // namespace

KEEL_COMMAND(create, "create", "Create a new disk image (qemu-img create)", setup_create);

}  // namespace keel::cli
