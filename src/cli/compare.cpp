// keel compare: compare the guest content of two images, like qemu-img compare.
//   keel compare [-f fmt] [-F fmt] [-T src_cache] [-p] [-q] [-s] [-U] A B
// Exit status: 0 identical, 1 different, 2 an image could not be opened, 3 a block status
// query failed, 4 a read failed. Images of different sizes are identical if the longer one reads
// as zeros past the end of the shorter ("Warning: Image size mismatch!"); -s (strict) fails on a
// size difference and on any difference in allocation status, as qemu-img 7.2 does.
// Mismatch offsets have qemu-img's 512-byte granularity (the first differing sector).
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "cli/command.h"
#include "cli/image_name.h"
#include "cli/util.h"

namespace keel::cli {
namespace {

constexpr uint64_t kChunkBytes = 2u << 20;
constexpr uint64_t kSector = 512;

struct CompareArgs {
  std::string format1, format2;
  std::string cache;
  bool progress = false;
  bool quiet = false;
  bool strict = false;
  bool force_share = false;
  std::vector<std::string> files;
  ImageNameArgs names;  // --image-opts, --object
};

// The parts of QEMU's block status word that strict mode compares.
struct BlockState {
  bool allocated, data, zero, offset_valid, eof;
  bool operator==(const BlockState&) const = default;
};

BlockState state_of(const Extent& e, uint64_t image_size) {
  return BlockState{e.depth != 0, e.data, e.zero,
                    (e.data && !e.compressed) || e.host_offset.has_value(),
                    e.offset + e.length >= image_size};
}

class Comparer {
 public:
  Comparer(const CompareArgs& a, Image& one, Image& two)
      : a_(a), img_{&one, &two}, progress_(a.progress && !a.quiet), buf1_(kChunkBytes), buf2_(kChunkBytes) {}

  int run() {
    const uint64_t size1 = img_[0]->size(), size2 = img_[1]->size();
    const uint64_t common = std::min(size1, size2);
    total_ = std::max(size1, size2);
    if (size1 != size2 && a_.strict) {
      say("Strict mode: Image size mismatch!\n");
      return 1;
    }
    uint64_t off = 0;
    while (off < common) {
      auto e1 = img_[0]->block_status(off, size1 - off);
      if (!e1) return allocation_error(0);
      auto e2 = img_[1]->block_status(off, size2 - off);
      if (!e2) return allocation_error(1);
      uint64_t chunk = std::min({std::max<uint64_t>(e1->length, 1), std::max<uint64_t>(e2->length, 1), common - off});
      BlockState s1 = state_of(*e1, size1), s2 = state_of(*e2, size2);
      if (a_.strict && !(s1 == s2)) {
        say(fmt::format("Strict mode: Offset {} block status mismatch!\n", off));
        return 1;
      }
      if (s1.zero && s2.zero) {
        // both read as zeros
      } else if (s1.allocated == s2.allocated) {
        if (s1.allocated) {
          chunk = std::min(chunk, kChunkBytes);
          if (int rc = read_both(off, chunk)) return rc;
          uint64_t diff = first_difference(chunk);
          if (diff < chunk) return mismatch(off + diff);
        }
      } else {
        chunk = std::min(chunk, kChunkBytes);
        if (int rc = check_zero(s1.allocated ? 0 : 1, off, chunk)) return rc;
      }
      off += chunk;
      advance(chunk);
    }
    if (size1 != size2) {
      say("Warning: Image size mismatch!\n");
      const int over = size1 > size2 ? 0 : 1;
      while (off < total_) {
        auto e = img_[over]->block_status(off, total_ - off);
        if (!e) return allocation_error(over);
        uint64_t chunk = std::min(std::max<uint64_t>(e->length, 1), total_ - off);
        if (e->depth != 0 && !e->zero) {
          chunk = std::min(chunk, kChunkBytes);
          if (int rc = check_zero(over, off, chunk)) return rc;
        }
        off += chunk;
        advance(chunk);
      }
    }
    say("Images are identical.\n");
    return 0;
  }

  void end_progress() {
    if (a_.progress && !a_.quiet) {
      std::printf("\n");
      std::fflush(stdout);
    }
  }

 private:
  void say(const std::string& text) {
    if (!a_.quiet) std::fputs(text.c_str(), stdout);
  }
  void advance(uint64_t n) {
    done_ += n;
    if (total_) progress_.update(static_cast<double>(done_) * 100.0 / static_cast<double>(total_));
  }
  int allocation_error(int which) {
    print_error(fmt::format("Sector allocation test failed for {}", a_.files[which]));
    return 3;
  }
  int read_error(int which, uint64_t off, const Status& st) {
    print_error(fmt::format("Error while reading offset {} of {}: {}", off, a_.files[which],
                            st.err() ? std::strerror(st.err()) : st.message()));
    return 4;
  }
  int mismatch(uint64_t at) {
    say(fmt::format("Content mismatch at offset {}!\n", at));
    return 1;
  }
  int read_both(uint64_t off, uint64_t n) {
    Status st = img_[0]->read(off, {buf1_.data(), n});
    if (!st.is_ok()) return read_error(0, off, st);
    st = img_[1]->read(off, {buf2_.data(), n});
    if (!st.is_ok()) return read_error(1, off, st);
    return 0;
  }
  // Offset (a sector start) of the first differing sector in the buffers, or n.
  uint64_t first_difference(uint64_t n) const {
    for (uint64_t p = 0; p < n; p += kSector)
      if (std::memcmp(buf1_.data() + p, buf2_.data() + p, std::min(kSector, n - p)) != 0) return p;
    return n;
  }
  // The range of image `which` must read as zeros.
  int check_zero(int which, uint64_t off, uint64_t n) {
    Status st = img_[which]->read(off, {buf1_.data(), n});
    if (!st.is_ok()) return read_error(which, off, st);
    for (uint64_t p = 0; p < n; p += kSector) {
      uint64_t len = std::min(kSector, n - p);
      if (std::any_of(buf1_.data() + p, buf1_.data() + p + len, [](uint8_t b) { return b != 0; }))
        return mismatch(off + p);
    }
    return 0;
  }

  const CompareArgs& a_;
  Image* img_[2];
  Progress progress_;
  std::vector<uint8_t> buf1_, buf2_;
  uint64_t total_ = 0;
  uint64_t done_ = 0;
};

int run_compare(const CompareArgs& a) {
  if (a.files.size() != 2) {
    report_usage_error("Expecting two image file names");
    return 1;
  }
  std::unique_ptr<Image> images[2];
  for (int i = 0; i < 2; ++i) {
    OpenFlags f;
    a.names.apply(&f);
    f.format = i == 0 ? a.format1 : a.format2;
    f.force_share = a.force_share;
    f.cache = a.cache;
    images[i] = open_image_or_report(a.files[static_cast<size_t>(i)], f, CacheMode::kWriteback);
    if (!images[i]) {
      if (images[0]) (void)images[0]->close();
      return 2;
    }
  }
  Comparer c(a, *images[0], *images[1]);
  int rc = c.run();
  c.end_progress();
  for (auto& img : images) (void)img->close();
  return rc;
}

std::function<int()> setup_compare(CLI::App* sub) {
  auto a = std::make_shared<CompareArgs>();
  sub->add_option("-f", a->format1, "Format of the first image: qcow2 or raw (default: probe)");
  sub->add_option("-F", a->format2, "Format of the second image: qcow2 or raw (default: probe)");
  sub->add_option("-T", a->cache,
                  "Cache mode for both images: writeback (default), writethrough, none, "
                  "directsync, unsafe");
  sub->add_flag("-p", a->progress, "Show progress as '    (NN.NN/100%)'");
  sub->add_flag("-q", a->quiet, "Quiet: print nothing, only the exit status tells the result");
  sub->add_flag("-s", a->strict,
                "Strict: images of different sizes, or with a different allocation status "
                "anywhere (data / zero / unallocated), are reported as different");
  sub->add_flag("-U,--force-share", a->force_share, "Open without taking image locks");
  add_image_name_options(sub, &a->names);
  sub->add_option("FILES", a->files, "The two images A and B (or json:{...}, file:PATH, null-co://)");
  sub->footer("Exit status: 0 identical, 1 different (or usage error), 2 an image could not be "
              "opened, 3 a block status query failed, 4 a read failed.");
  return [a] { return run_compare(*a); };
}

}  // namespace

KEEL_COMMAND(compare, "compare", "Check whether two images have the same content (qemu-img compare)",
             setup_compare);

}  // namespace keel::cli
