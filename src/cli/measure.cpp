// keel measure: how large a new image file would be, like qemu-img measure.
//   keel measure [--output=human|json] [-O fmt] [-o opts] [--size SIZE | [-f fmt] [-l snap] [-U] FILE]
// "required" is the file size for the given content (or an empty image of --size), "fully
// allocated" the size once every cluster is written. For a qcow2 target both count the header,
// the refcount structures, the L1 and L2 tables and the data clusters, the way QEMU 7.2's
// qcow2_measure does (so the numbers are the same); "bitmaps" adds the space to copy the source's
// persistent bitmaps (qcow2 v3 source and target). For raw both are the virtual size.
#include <algorithm>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "cli/command.h"
#include "cli/image_name.h"
#include "cli/image_options.h"
#include "cli/util.h"
#include "keel/limits.h"
#include "keel/report.h"

namespace keel::cli {
namespace {

struct MeasureArgs {
  std::string output = "human";
  std::string out_format = "raw";
  std::vector<std::string> options;
  std::string size;
  CLI::Option* size_opt = nullptr;
  std::string format;
  std::string snapshot;
  bool force_share = false;
  std::vector<std::string> files;
  ImageNameArgs names;  // --image-opts, --object
};

uint64_t round_up(uint64_t v, uint64_t to) { return (v + to - 1) / to * to; }
uint64_t div_up(uint64_t v, uint64_t by) { return (v + by - 1) / by; }

// Clusters of refcount blocks and refcount table needed to count `clusters` clusters plus
// themselves: iterate until adding the refcount structures needs no further cluster.
uint64_t refcount_metadata_bytes(uint64_t clusters, uint64_t cluster_size, uint64_t refcount_bits) {
  const uint64_t per_block = cluster_size * 8 / refcount_bits;
  const uint64_t per_table_cluster = cluster_size / 8;
  uint64_t blocks = 0, table = 0, total = clusters, previous = 0;
  do {
    previous = total;
    blocks = div_up(clusters + blocks + table, per_block);
    table = div_up(blocks, per_table_cluster);
    total = clusters + blocks + table;
  } while (total != previous);
  return (blocks + table) * cluster_size;
}

// Size of a qcow2 file with every cluster of `virtual_size` allocated.
uint64_t qcow2_full_size(uint64_t virtual_size, uint64_t cluster_size, uint64_t refcount_bits,
                         bool extended_l2) {
  const uint64_t aligned = round_up(virtual_size, cluster_size);
  const uint64_t l2_entry = extended_l2 ? 16 : 8;
  uint64_t meta = cluster_size;  // header
  uint64_t l2_entries = round_up(aligned / cluster_size, cluster_size / l2_entry);
  meta += l2_entries * l2_entry;
  uint64_t l1_entries = round_up(l2_entries * l2_entry / cluster_size, cluster_size / 8);
  meta += l1_entries * 8;
  meta += refcount_metadata_bytes((meta + aligned) / cluster_size, cluster_size, refcount_bits);
  return meta + aligned;
}

struct Measurement {
  uint64_t required = 0;
  uint64_t fully_allocated = 0;
  std::optional<uint64_t> bitmaps;
};

// Bytes of the clusters (of the target's size) that hold data in the source.
Result<uint64_t> data_bytes(Image& src, uint64_t cluster_size) {
  uint64_t bytes = 0;
  const uint64_t size = src.size();
  for (uint64_t off = 0; off < size;) {
    KEEL_ASSIGN(Extent e, src.block_status(off, size - off));
    uint64_t n = std::min(std::max<uint64_t>(e.length, 1), size - off);
    if (!e.zero && e.data && e.depth != 0) {
      uint64_t end = round_up(off + n, cluster_size);
      bytes += off % cluster_size + (end - off);
      n = end - off;
    }
    off += n;
  }
  return bytes;
}

// The space QEMU reserves for copying the source's persistent bitmaps into the target.
uint64_t bitmaps_bytes(const ImageInfo& info, uint64_t virtual_size, uint64_t cluster_size) {
  uint64_t total = 0, directory = 0;
  for (const auto& b : info.bitmaps) {
    uint64_t granularity = std::max<uint32_t>(b.granularity, 1);
    uint64_t bitmap_bytes = div_up(div_up(virtual_size, granularity), 8);
    uint64_t clusters = div_up(bitmap_bytes, cluster_size);
    total += clusters * cluster_size + round_up(clusters * 8, cluster_size);
    directory += round_up(24 + b.name.size(), 8);
  }
  return total + round_up(directory, cluster_size);
}

// The qcow2 options' checks, in qcow2_measure's order and with its messages.
Result<Measurement> measure_qcow2(const CheckedOptions& opts, std::optional<uint64_t> size, Image* src) {
  const bool extended_l2 = opts.boolean("extended_l2").value_or(false);
  const uint64_t cluster = opts.number("cluster_size").value_or(65536);
  if (cluster < 512 || cluster > (2u << 20) || (cluster & (cluster - 1)) != 0)
    return error(invalid("Cluster size must be a power of two between 512 and 2048k"));
  if (extended_l2 && cluster < 16384)
    return error(invalid("Extended L2 entries are only supported with cluster sizes of at least 16384 bytes"));
  int version = 3;
  if (auto compat = opts.raw("compat")) {
    if (*compat == "0.10" || *compat == "v2") version = 2;
    else if (*compat == "1.1" || *compat == "v3") version = 3;
    else return error(invalid(fmt::format("Invalid compatibility level: '{}'", *compat)));
  }
  const uint64_t refcount_bits = opts.number("refcount_bits").value_or(16);
  if (refcount_bits == 0 || refcount_bits > 64 || (refcount_bits & (refcount_bits - 1)) != 0)
    return error(invalid("Refcount width must be a power of two and may not exceed 64 bits"));
  if (version < 3 && refcount_bits != 16)
    return error(invalid("Different refcount widths than 16 bits require compatibility level 1.1 or "
                         "above (use compat=1.1 or greater)"));
  const std::string prealloc = opts.raw("preallocation").value_or("off");
  if (prealloc != "off" && prealloc != "metadata" && prealloc != "falloc" && prealloc != "full")
    return error(invalid(fmt::format("invalid parameter value: {}", prealloc)));
  const bool has_backing = opts.raw("backing_file").has_value();

  uint64_t virtual_size = round_up(size.value_or(0), cluster);
  const uint64_t l2_entry = extended_l2 ? 16 : 8;
  const unsigned __int128 l2_tables = div_up(virtual_size / cluster, cluster / l2_entry);
  if (l2_tables * 8 > limits::kMaxL1Bytes)
    return error(invalid("The image size is too large (try using a larger cluster size)"));

  uint64_t required = 0;
  if (src) {
    virtual_size = round_up(src->size(), cluster);
    if (has_backing) {
      // Nothing is known about what the new backing file shares with the source.
      required = virtual_size;
    } else {
      auto bytes = data_bytes(*src, cluster);
      if (!bytes) return error(Status(bytes.error().code(), "Unable to get block status: " + bytes.error().message()));
      required = *bytes;
    }
  }
  if (prealloc == "full" || prealloc == "falloc") required = virtual_size;
  Measurement m;
  m.fully_allocated = qcow2_full_size(virtual_size, cluster, refcount_bits, extended_l2);
  m.required = m.fully_allocated - virtual_size + required;
  if (version >= 3 && src && src->format() == "qcow2") {
    ImageInfo info = src->info();
    if (info.compat != "0.10") m.bitmaps = bitmaps_bytes(info, src->size(), cluster);
  }
  return m;
}

Measurement measure_raw(std::optional<uint64_t> size, Image* src) {
  Measurement m;
  m.required = src ? src->size() : round_up(size.value_or(0), 512);
  m.fully_allocated = m.required;
  return m;
}

int run_measure(const MeasureArgs& a) {
  auto json = parse_output_format(a.output);
  if (!json) return 1;
  std::optional<uint64_t> size;
  if (a.size_opt->count()) {
    size = parse_size_arg("image size", a.size);
    if (!size) return 1;
  }
  if (a.files.size() > 1) {
    print_error("At most one filename argument is allowed.");
    return 1;
  }
  const bool has_file = a.files.size() == 1;
  if (!has_file && (!a.format.empty() || !a.snapshot.empty() || a.names.image_opts)) {
    print_error("--image-opts, -f, and -l require a filename argument.");
    return 1;
  }
  if (has_file && size) {
    print_error("--size N cannot be used together with a filename.");
    return 1;
  }
  if (!has_file && !size) {
    print_error("Either --size N or one filename must be specified.");
    return 1;
  }
  std::unique_ptr<Image> src;
  if (has_file) {
    OpenFlags f;
    a.names.apply(&f);
    f.format = a.format;
    f.force_share = a.force_share;
    f.snapshot = a.snapshot;
    auto path = resolve_or_report(a.files[0], &f);
    if (!path) return 1;
    const std::string& name = f.display_name.empty() ? *path : f.display_name;
    if (!f.format.empty() && !is_known_format(f.format)) {
      print_error(fmt::format("Could not open '{}': Unknown driver '{}'", name, f.format));
      return 1;
    }
    auto opts = make_open_options(f, CacheMode::kWriteback);
    if (!opts) {
      print_error(opts.error().message());
      return 1;
    }
    auto img = Image::open(*path, *opts);
    if (!img) {
      if (!a.snapshot.empty() && img.error().code() == Code::kNotFound)
        print_error("Failed to load snapshot: Can't find snapshot");
      else
        print_error(open_error_message(*path, img.error(), name));
      return 1;
    }
    src = std::move(*img);
  }
  auto close_src = [&] {
    if (src) (void)src->close();
  };
  if (!is_known_format(a.out_format)) {
    close_src();
    print_error(fmt::format("Unknown file format '{}'", a.out_format));
    return 1;
  }
  auto list = parse_options(merge_option_args(a.options));
  std::optional<CheckedOptions> checked;
  if (list) {
    auto c = check_option_types(a.out_format, *list);
    if (c) checked = std::move(*c);
    else list = error(c.error());
  }
  if (!list) {
    close_src();
    print_error(list.error().message());
    print_error(fmt::format("Invalid options for file format '{}'", a.out_format));
    return 1;
  }
  Measurement m;
  if (a.out_format == "qcow2") {
    auto r = measure_qcow2(*checked, size, src.get());
    if (!r) {
      close_src();
      print_error(r.error().message());
      return 1;
    }
    m = *r;
  } else {
    m = measure_raw(size, src.get());
  }
  close_src();
  if (*json) {
    std::printf("%s\n", measure_json(m.required, m.fully_allocated, m.bitmaps).c_str());
  } else {
    std::printf("required size: %llu\n", static_cast<unsigned long long>(m.required));
    std::printf("fully allocated size: %llu\n", static_cast<unsigned long long>(m.fully_allocated));
    if (m.bitmaps) std::printf("bitmaps size: %llu\n", static_cast<unsigned long long>(*m.bitmaps));
  }
  return 0;
}

std::function<int()> setup_measure(CLI::App* sub) {
  auto a = std::make_shared<MeasureArgs>();
  // Like getopt in qemu-img: a repeated option takes its last value (-o accumulates).
  sub->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  sub->add_option("--output", a->output, "Output format: human (default) or json");
  sub->add_option("-O", a->out_format, "Target format: qcow2 or raw (default raw)");
  sub->add_option("-o", a->options,
                  "Target creation options as for 'keel create' (cluster_size, refcount_bits, "
                  "extended_l2, compat, preallocation, backing_file...); repeat to merge")
      ->allow_extra_args(false)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  a->size_opt = sub->add_option("--size", a->size,
                                "Measure a new empty image of this virtual size (suffixes k, M, G, "
                                "T, P, E) instead of FILE");
  sub->add_option("-f", a->format, "Format of FILE: qcow2 or raw (default: probe)");
  sub->add_option("-l", a->snapshot, "Measure this internal snapshot of FILE (ID or name)");
  sub->add_flag("-U,--force-share", a->force_share, "Open FILE without taking image locks");
  add_image_name_options(sub, &a->names);
  sub->add_option("FILE", a->files, "The image whose content would be copied (as by convert)")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  sub->footer("Output: 'required size: N', 'fully allocated size: N' and, for a qcow2 source and "
              "v3 target, 'bitmaps size: N'; JSON keys required, fully-allocated, bitmaps.\n"
              "Exit status: 0 on success, 1 on any error.");
  return [a] { return run_measure(*a); };
}

}  // namespace

KEEL_COMMAND(measure, "measure", "Measure the file size an image would need (qemu-img measure)",
             setup_measure);

}  // namespace keel::cli
