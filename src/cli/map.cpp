// keel map: qemu-img map's allocation listing, human or --output=json.
//   keel map [-f fmt] [--output=human|json] [-U] [--start-offset=OFF] [--max-length=LEN] FILE
// Entries are built like qemu-img's get_block_status (depth counts from 0 at the top image;
// an area no layer allocates has the depth of the layer where the search stopped) and adjacent
// equal entries are merged with qemu-img's rule (same flags, depth, file, contiguous offsets).
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <fmt/printf.h>

#include "cli/command.h"
#include "cli/image_name.h"
#include "cli/util.h"
#include "keel/block_file.h"

namespace keel::cli {
namespace {

struct MapArgs {
  std::string format;
  std::string output = "human";
  bool force_share = false;
  std::string start_offset;
  std::string max_length;
  ImageNameArgs names;  // --image-opts, --object
  std::string filename;
};

struct MapEntry {
  uint64_t start = 0;
  uint64_t length = 0;
  bool data = false;
  bool zero = false;
  bool present = false;
  int depth = 0;
  std::optional<uint64_t> offset;
  std::string file;  // the file the offset refers to (when offset is set)
};

// One image of the chain as map needs it.
struct Layer {
  Image* image;
  uint64_t size;
  std::string file;  // where its data lives (the image, or its external data file)
  bool encrypted;    // QEMU gives no host offset for encrypted data (it is not the guest's bytes)
  // Image::sparse_allocation(), asked once: then the file system is asked about the host range
  // of each data extent, as QEMU does (BDRV_BLOCK_RECURSE), through `host` (the data file).
  std::optional<bool> sparse = std::nullopt;
  std::shared_ptr<BlockFile> host = nullptr;
};

// QEMU's bdrv_co_block_status for a data extent of a sparsely allocated image (see Layer): a
// hole in the host file (or a range past its end) reads as zeros, so the extent is "zero":
// true; the extent ends where the file's hole or data run ends.
void refine_by_host(Layer& l, MapEntry& m) {
  if (!l.sparse) {
    auto s = l.image->sparse_allocation();
    l.sparse = s && *s;
    if (*l.sparse) {
      FileOptions fo;
      fo.read_only = true;
      auto f = open_posix_file(l.file, fo);
      if (f) l.host = std::move(*f);
    }
  }
  if (!*l.sparse || !l.host) return;
  auto probe = l.host->probe_data(*m.offset, m.length);
  if (!probe) return;  // as QEMU: only extra information, errors are ignored
  if (!probe->first) m.zero = true;
  if (probe->second > 0) m.length = std::min(m.length, probe->second);
}

std::vector<Layer> chain_of(Image* top, const std::string& path) {
  std::vector<Layer> layers;
  std::string name = path;
  for (Image* img = top; img; img = img->backing()) {
    ImageInfo info = img->info();
    std::string file = name;
    if (!info.data_file.empty()) file = path_combine(name, info.data_file);
    layers.push_back({img, img->size(), file, info.encrypted});
    name = path_combine(name, info.backing_filename);
  }
  return layers;
}

Result<MapEntry> block_status(std::vector<Layer>& layers, uint64_t offset, uint64_t bytes) {
  KEEL_ASSIGN(Extent e, layers[0].image->block_status(offset, bytes));
  MapEntry m;
  m.start = offset;
  m.length = std::min<uint64_t>(e.length, bytes);
  if (m.length == 0) return error(io_error(EIO, "block status returned an empty extent"));
  m.data = e.data;
  m.zero = e.zero;
  if (e.depth > 0) {
    m.present = true;
    m.depth = e.depth - 1;
    if (e.host_offset && !e.compressed && static_cast<size_t>(m.depth) < layers.size() &&
        !layers[static_cast<size_t>(m.depth)].encrypted) {
      m.offset = *e.host_offset;
      m.file = layers[static_cast<size_t>(m.depth)].file;
      if (m.data && !m.zero) refine_by_host(layers[static_cast<size_t>(m.depth)], m);
    }
    return m;
  }
  // Nothing allocates it: QEMU descends while a backing file exists and covers the offset.
  m.data = false;
  m.zero = true;
  size_t k = 0;
  while (k + 1 < layers.size() && offset < layers[k + 1].size) {
    m.length = std::min(m.length, layers[k + 1].size - offset);
    ++k;
  }
  m.depth = static_cast<int>(k);
  // An unallocated subcluster of an allocated cluster still has a host offset (QEMU shows it).
  if (k == 0 && e.host_offset && !e.compressed && !layers[0].encrypted) {
    m.offset = *e.host_offset;
    m.file = layers[0].file;
  }
  return m;
}

bool mergeable(const MapEntry& curr, const MapEntry& next) {
  if (curr.length == 0) return false;
  if (curr.zero != next.zero || curr.data != next.data || curr.depth != next.depth ||
      curr.present != next.present || curr.offset.has_value() != next.offset.has_value() ||
      curr.file != next.file)
    return false;
  if (curr.offset && *curr.offset + curr.length != *next.offset) return false;
  return true;
}

// Prints one entry; false (after an error message) if human output cannot describe it.
bool dump_entry(bool json, const MapEntry& e, MapEntry* next) {
  if (json) {
    std::printf("{ \"start\": %llu, \"length\": %llu, \"depth\": %d, \"present\": %s, \"zero\": %s, \"data\": %s",
                static_cast<unsigned long long>(e.start), static_cast<unsigned long long>(e.length),
                e.depth, e.present ? "true" : "false", e.zero ? "true" : "false",
                e.data ? "true" : "false");
    if (e.offset) std::printf(", \"offset\": %llu", static_cast<unsigned long long>(*e.offset));
    std::putchar('}');
    if (next) std::puts(",");
    return true;
  }
  if (e.data && !e.offset) {
    print_error("File contains external, encrypted or compressed clusters.");
    return false;
  }
  if (e.data && !e.zero) {
    std::string line = fmt::sprintf("%#-16llx%#-16llx%#-16llx%s\n", static_cast<unsigned long long>(e.start),
                                    static_cast<unsigned long long>(e.length),
                                    static_cast<unsigned long long>(e.offset.value_or(0)), e.file);
    std::fputs(line.c_str(), stdout);
  }
  // Human output does not tell zero from unallocated: treat them alike so they merge.
  if (next && (!next->data || next->zero) && (!e.data || e.zero)) {
    next->data = false;
    next->zero = true;
  }
  return true;
}

int run_map(const MapArgs& a) {
  auto json = parse_output_format(a.output);
  if (!json) return 1;
  uint64_t start = 0;
  std::optional<uint64_t> max_length;
  if (!a.start_offset.empty()) {
    auto v = parse_size_arg("start offset", a.start_offset);
    if (!v) return 1;
    start = *v;
  }
  if (!a.max_length.empty()) {
    auto v = parse_size_arg("max length", a.max_length);
    if (!v) return 1;
    max_length = *v;
  }
  if (a.filename.empty()) {
    report_usage_error("Expecting one image file name");
    return 1;
  }
  OpenFlags f;
  a.names.apply(&f);
  f.format = a.format;
  f.force_share = a.force_share;
  auto path = resolve_or_report(a.filename, &f);
  if (!path) return 1;
  auto img = open_image_or_report(*path, f, CacheMode::kWriteback);
  if (!img) return 1;
  auto layers = chain_of(img.get(), *path);
  uint64_t end = img->size();
  if (max_length && start + *max_length < end) end = start + *max_length;

  if (*json) std::putchar('[');
  else std::printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
  MapEntry curr;
  curr.start = start;
  int rc = 0;
  while (curr.start + curr.length < end) {
    uint64_t offset = curr.start + curr.length;
    auto next = block_status(layers, offset, end - offset);
    if (!next) {
      std::fflush(stdout);
      print_error(fmt::format("Could not read file metadata: {}", std::strerror(next.error().err())));
      rc = 1;
      break;
    }
    if (mergeable(curr, *next)) {
      curr.length += next->length;
      continue;
    }
    if (curr.length > 0 && !dump_entry(*json, curr, &*next)) {
      rc = 1;
      break;
    }
    curr = *next;
  }
  if (rc == 0 && !dump_entry(*json, curr, nullptr)) rc = 1;
  if (*json && rc == 0) std::puts("]");
  std::fflush(stdout);
  (void)img->close();
  return rc;
}

std::function<int()> setup_map(CLI::App* sub) {
  auto a = std::make_shared<MapArgs>();
  sub->add_option("-f", a->format, "Image format: qcow2 or raw (default: probe)");
  sub->add_option("--output", a->output,
                  "Output format: human (default; data extents with their file offsets) or json "
                  "(every extent: start, length, depth, present, zero, data, offset)");
  sub->add_flag("-U,--force-share", a->force_share, "Open without taking image locks");
  sub->add_option("-s,--start-offset", a->start_offset, "Start at this guest offset (size syntax)");
  sub->add_option("-l,--max-length", a->max_length, "Map at most this many bytes (size syntax)");
  add_image_name_options(sub, &a->names);
  sub->add_option("FILE", a->filename, "Image file (or json:{...}, file:PATH, null-co://; see --image-opts)");
  sub->footer(
      "Exit status: 0 on success; 1 on errors, and for human output of an image with compressed "
      "clusters (which have no file offset).");
  return [a] { return run_map(*a); };
}

}  // namespace

KEEL_COMMAND(map, "map", "Show the allocation map of a disk image (qemu-img map)", setup_map);

}  // namespace keel::cli
