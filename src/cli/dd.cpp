// keel dd: copy part of an image into a new image, dd style, like qemu-img dd.
//   keel dd [-f fmt] [-O fmt] [-U] [bs=BLOCK_SIZE] [count=BLOCKS] [skip=BLOCKS] if=INPUT of=OUTPUT
// The output is created (overwritten) with the copied length and written block by block (every
// block, zeros too, as qemu-img does). bs defaults to 512; count and skip count bs-sized blocks.
// As in qemu-img 7.2, count is applied before skip: when skip*bs lies beyond count*bs (or beyond
// the input) the output is empty and "cannot skip to specified offset" is printed, exit 0.
#include <algorithm>
#include <cstdio>
#include <cstring>
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

struct DdArgs {
  std::string format;
  std::string out_format = "raw";
  bool force_share = false;
  std::vector<std::string> operands;
  ImageNameArgs names;  // --image-opts, --object
};

struct DdOperands {
  uint64_t bs = 512;
  std::optional<uint64_t> count, skip;
  std::optional<std::string> in, out;
};

std::optional<DdOperands> parse_operands(const std::vector<std::string>& operands) {
  DdOperands d;
  for (const auto& op : operands) {
    auto eq = op.find('=');
    std::string key = eq == std::string::npos ? op : op.substr(0, eq);
    if (eq == std::string::npos ||
        (key != "bs" && key != "count" && key != "skip" && key != "if" && key != "of")) {
      print_error(fmt::format("unrecognized operand {}", key));
      return std::nullopt;
    }
    std::string value = op.substr(eq + 1);
    if (key == "bs") {
      auto v = parse_size_arg("bs", value, 1, INT32_MAX);
      if (!v) return std::nullopt;
      d.bs = *v;
    } else if (key == "count") {
      d.count = parse_size_arg("count", value);
      if (!d.count) return std::nullopt;
    } else if (key == "skip") {
      d.skip = parse_size_arg("skip", value);
      if (!d.skip) return std::nullopt;
    } else if (key == "if") {
      d.in = value;
    } else {
      d.out = value;
    }
  }
  return d;
}

int run_dd(const DdArgs& a) {
  auto d = parse_operands(a.operands);
  if (!d) return 1;
  if (!d->in || !d->out) {
    print_error("Must specify both input and output files");
    return 1;
  }
  OpenFlags f;
  a.names.apply(&f);
  f.format = a.format;
  f.force_share = a.force_share;
  auto in = open_image_or_report(*d->in, f, CacheMode::kWriteback);
  if (!in) return 1;
  auto fail = [&](const std::string& msg) {
    print_error(msg);
    (void)in->close();
    return 1;
  };
  if (!is_known_format(a.out_format)) return fail("Unknown file format");

  // The copied range [in_pos, size), with qemu-img's order of count and skip.
  uint64_t size = in->size();
  const uint64_t bs = d->bs;
  if (d->count && *d->count <= INT64_MAX / bs && *d->count * bs < size) size = *d->count * bs;
  const bool skip_beyond = d->skip && (*d->skip > INT64_MAX / bs || size < *d->skip * bs);
  const uint64_t in_pos = !d->skip || skip_beyond ? (skip_beyond ? size : 0) : *d->skip * bs;
  const uint64_t out_size = size - in_pos;

  CreateOptions create;
  {
    OptionList none;
    auto checked = check_option_types(a.out_format, none);
    if (checked) {
      checked->set("size", std::to_string(out_size));
      auto c = to_create_options(*checked);
      if (!c) return fail(fmt::format("{}: error while creating output image: {}", *d->out, c.error().message()));
      create = *c;
    }
  }
  Status st = create_image(*d->out, create);
  if (!st.is_ok())
    return fail(fmt::format("{}: error while creating output image: {}", *d->out, st.message()));
  OpenFlags of;
  of.format = a.out_format;
  of.read_only = false;
  auto out = open_image_or_report(*d->out, of, CacheMode::kWriteback);
  if (!out) {
    (void)in->close();
    return 1;
  }
  if (skip_beyond) print_error(fmt::format("{}: cannot skip to specified offset", *d->in));

  std::vector<uint8_t> buf(bs);
  int rc = 0;
  for (uint64_t pos = in_pos, out_pos = 0; pos < size;) {
    uint64_t n = std::min(bs, size - pos);
    st = in->read(pos, {buf.data(), n});
    if (!st.is_ok()) {
      print_error(fmt::format("error while reading from input image file: {}", st.message()));
      rc = 1;
      break;
    }
    st = out->write(out_pos, {buf.data(), n});
    if (!st.is_ok()) {
      print_error(fmt::format("error while writing to output image file: {}", st.message()));
      rc = 1;
      break;
    }
    pos += n;
    out_pos += n;
  }
  st = out->close();
  if (rc == 0 && !st.is_ok()) {
    print_error(fmt::format("error while closing '{}': {}", *d->out, st.message()));
    rc = 1;
  }
  (void)in->close();
  return rc;
}

std::function<int()> setup_dd(CLI::App* sub) {
  auto a = std::make_shared<DdArgs>();
  sub->add_option("-f", a->format, "Input format: qcow2 or raw (default: probe)");
  sub->add_option("-O", a->out_format, "Output format: qcow2 or raw (default raw)");
  sub->add_flag("-U,--force-share", a->force_share, "Open the input without taking image locks");
  add_image_name_options(sub, &a->names);
  sub->add_option("OPERANDS", a->operands,
                  "bs=BYTES block size (default 512, suffixes k, M, G...), count=N copy at most "
                  "N blocks, skip=N start N blocks into the input, if=INPUT, of=OUTPUT (created)");
  sub->footer("Exit status: 0 on success (also when skip is past the end: the output is empty), "
              "1 on any error.");
  return [a] { return run_dd(*a); };
}

}  // namespace

KEEL_COMMAND(dd, "dd", "Copy part of an image into a new image, dd style (qemu-img dd)", setup_dd);

}  // namespace keel::cli
