// keel resize: change an image's virtual size, like qemu-img resize.
//   keel resize [-f fmt] [--shrink] [--preallocation=off|metadata|falloc|full] [-q] FILE [+|-]SIZE
// A leading '+' or '-' makes the size relative to the current one; a negative size may be given
// with or without "--" before it. Shrinking needs --shrink, as in qemu-img 7.2. Preallocation of
// the new area is done by writing zeros into it (every mode ends with the new clusters allocated
// and reading as zeros).
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <unistd.h>

#include "cli/command.h"
#include "cli/image_name.h"
#include "cli/util.h"

namespace keel::cli {
namespace {

struct ResizeArgs {
  std::string format;
  bool shrink = false;
  std::string preallocation;
  bool quiet = false;
  std::string file;
  std::string size;
  CLI::Option* size_opt = nullptr;
  std::vector<std::string> extra;
  ImageNameArgs names;  // --image-opts, --object
};

// qemu's QEMU_OPT_SIZE parser messages for the "size" parameter.
std::optional<uint64_t> parse_size_param(const std::string& text) {
  auto v = parse_size(text);
  if (v) return *v;
  if (v.error().err() == ERANGE) {
    print_error(fmt::format("Value '{}' is out of range for parameter 'size'", text));
  } else {
    print_error("Parameter 'size' expects a non-negative number below 2^64");
    std::fprintf(stderr,
                 "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
                 "and exabytes, respectively.\n");
  }
  return std::nullopt;
}

// Writes zeros over [from, to) so the new area is allocated.
Status preallocate_range(Image& image, uint64_t from, uint64_t to) {
  constexpr uint64_t kChunk = 1u << 20;
  std::vector<uint8_t> zeros(kChunk, 0);
  for (uint64_t off = from; off < to;) {
    uint64_t n = std::min(kChunk, to - off);
    KEEL_TRY(image.write(off, {zeros.data(), n}));
    off += n;
  }
  return image.flush();
}

int run_resize(const ResizeArgs& a) {
  if (a.size_opt->count() == 0) {
    report_usage_error("Not enough arguments");
    return 1;
  }
  if (!a.extra.empty()) {
    report_usage_error("Expecting image file name and size");
    return 1;
  }
  const std::string& file = a.file;
  std::string size_text = a.size;
  int relative = 0;
  if (!size_text.empty() && size_text[0] == '+') relative = 1, size_text.erase(0, 1);
  else if (!size_text.empty() && size_text[0] == '-') relative = -1, size_text.erase(0, 1);

  std::string prealloc = a.preallocation.empty() ? "off" : a.preallocation;
  if (prealloc != "off" && prealloc != "metadata" && prealloc != "falloc" && prealloc != "full") {
    print_error(fmt::format("Invalid preallocation mode '{}'", a.preallocation));
    return 1;
  }
  auto n = parse_size_param(size_text);
  if (!n) return 1;

  OpenFlags f;
  a.names.apply(&f);
  f.format = a.format;
  f.read_only = false;
  auto image = open_image_or_report(file, f, CacheMode::kWriteback);
  if (!image) return 1;

  // qemu-img computes in int64_t: sizes of 8 EiB and more come out as "not positive".
  const uint64_t current = image->size();
  uint64_t total_u = relative == 0 ? *n : relative > 0 ? current + *n : current - *n;
  const auto total = static_cast<int64_t>(total_u);
  auto fail = [&](const std::string& msg) {
    print_error(msg);
    (void)image->close();
    return 1;
  };
  auto fail_closed = [&](const std::string& msg) {
    print_error(msg);
    return 1;
  };
  if (total <= 0) return fail("New image size must be positive");
  if (total_u <= current && prealloc != "off")
    return fail("Preallocation can only be used for growing images");
  if (total_u < current && !a.shrink) {
    print_error("Use the --shrink option to perform a shrink operation.");
    print_error("warning: Shrinking an image will delete all data beyond the shrunken image's end. "
                "Before performing such an operation, make sure there is no important data there.");
    (void)image->close();
    return 1;
  }
  if (image->format() == "qcow2") {
    if (total_u % 512 != 0) return fail("The new size must be a multiple of 512");
    ImageInfo info = image->info();
    if (!info.snapshots.empty() && info.compat == "0.10")
      return fail("Can't resize a v2 image which has snapshots");
    if (prealloc == "metadata" || prealloc == "falloc") {
      // Accepted like qemu-img; keel allocates the new clusters by writing zeros.
    }
  } else if (prealloc == "metadata") {
    return fail("Unsupported preallocation mode: metadata");
  }
  Status st = image->resize(total_u, a.shrink);
  if (st.code() == Code::kUnsupported && image->format() == "raw") {
    // The raw driver has no resize yet: a raw image is its file, so the file is truncated
    // while the image (and its lock) is held, and reopened for preallocation.
    st = Status::ok();
    if (::truncate(file.c_str(), static_cast<off_t>(total_u)) != 0)
      st = io_error(errno, fmt::format("Could not resize file: {}", std::strerror(errno)));
    Status cs = image->close();
    if (st.is_ok()) st = cs;
    if (!st.is_ok()) return fail_closed(st.message());
    image.reset();  // releases the file and its locks before the reopen
    if (prealloc != "off") {
      image = open_image_or_report(file, f, CacheMode::kWriteback);
      if (!image) return 1;
      st = preallocate_range(*image, current, total_u);
      if (!st.is_ok()) return fail(st.message());
      st = image->close();
    }
  } else {
    if (st.is_ok() && prealloc != "off") st = preallocate_range(*image, current, total_u);
    if (!st.is_ok()) return fail(st.message());
    st = image->close();
  }
  if (!st.is_ok()) {
    print_error(fmt::format("error while closing '{}': {}", file, st.message()));
    return 1;
  }
  if (!a.quiet) std::printf("Image resized.\n");
  return 0;
}

std::function<int()> setup_resize(CLI::App* sub) {
  auto a = std::make_shared<ResizeArgs>();
  sub->add_option("-f", a->format, "Image format: qcow2 or raw (default: probe)");
  sub->add_flag("--shrink", a->shrink,
                "Allow the size to go down; the data past the new end is discarded");
  sub->add_option("--preallocation", a->preallocation,
                  "How to allocate the added area: off (default), metadata, falloc or full "
                  "(keel writes zeros for metadata, falloc and full; raw images take no metadata)");
  sub->add_flag("-q", a->quiet, "Quiet: do not print 'Image resized.'");
  add_image_name_options(sub, &a->names);
  sub->add_option("FILE", a->file, "The image to resize");
  a->size_opt = sub->add_option("SIZE", a->size,
                                "The new size in bytes (suffixes k, M, G, T, P, E), or +SIZE / -SIZE "
                                "relative to the current size (\"--\" before a negative size is optional)");
  sub->add_option("EXTRA", a->extra, "(nothing more is accepted)");
  sub->footer("qcow2 sizes must be multiples of 512.\n"
              "Exit status: 0 on success, 1 on any error (message on stderr as 'keel: ...').");
  return [a] { return run_resize(*a); };
}

}  // namespace

KEEL_COMMAND(resize, "resize", "Change the virtual size of a disk image (qemu-img resize)", setup_resize);

}  // namespace keel::cli
