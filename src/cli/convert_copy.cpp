// The copy loop of `keel convert` (see convert_copy.h): block status first, then a list of
// tasks in guest order (zero ranges, data chunks of at most 2 MiB), run by up to -m threads.
// Without -W a task's write waits for every earlier task's write, as in qemu-img.
#include "cli/convert_copy.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <fmt/format.h>

#include "cli/command.h"
#include "cli/util.h"
#include "keel/zero_scan.h"

namespace keel::cli {
namespace {

constexpr uint64_t kChunkBytes = 2u << 20;    // one request (qemu-img's buffer is 2 MiB too)
constexpr uint64_t kStatusBytes = 1u << 30;   // ours: one block-status query, bounded
constexpr uint64_t kSectorBytes = 512;        // --salvage retries reads in sectors, as qemu-img

// A range of the concatenated sources (= of the target): to be read and written, known zeros,
// or left to the target's backing file (-B: not allocated in the source's top layer).
enum class Kind { kData, kZero, kSkip };
struct Span {
  uint64_t offset = 0;
  uint64_t length = 0;
  Kind kind = Kind::kData;
};

class Copier {
 public:
  Copier(const std::vector<CopySource>& sources, Image& target, const CopyOptions& o)
      : sources_(sources), target_(target), opts_(o), progress_(o.progress) {
    for (const auto& s : sources_) total_ += s.size;
  }

  int run() {
    if (!map_sources()) return report();
    plan();
    for (const auto& s : spans_)
      if (s.kind == Kind::kSkip) done_ += s.length;  // only for the progress line
    size_t n = std::min<size_t>(static_cast<size_t>(std::max(opts_.requests, 1)), tasks_.size());
    if (n <= 1) {
      worker();
    } else {
      std::vector<std::thread> threads;
      for (size_t i = 0; i < n; ++i) threads.emplace_back([this] { worker(); });
      for (auto& t : threads) t.join();
    }
    if (failed_) return report();
    Status st = target_.flush();
    if (!st.is_ok()) {
      fail(total_, st, true);
      return report();
    }
    progress_.finish();
    return 0;
  }

 private:
  // ---- Planning ------------------------------------------------------------------------------

  void add_span(uint64_t off, uint64_t len, Kind kind) {
    if (!spans_.empty() && spans_.back().kind == kind &&
        spans_.back().offset + spans_.back().length == off) {
      spans_.back().length += len;
      return;
    }
    spans_.push_back({off, len, kind});
  }

  bool map_sources() {
    uint64_t base = 0;
    for (const auto& s : sources_) {
      uint64_t off = 0;
      while (off < s.size) {
        uint64_t want = std::min(s.size - off, kStatusBytes);
        auto ext = s.image->block_status(off, want);
        if (!ext && opts_.salvage) {
          // qemu-img: warn, then copy the sector as data (its read may still succeed).
          warn_now(fmt::format("error while reading block status at offset {}: {}", off,
                               std::strerror(ext.error().err())));
          const uint64_t n = std::min<uint64_t>(kSectorBytes, s.size - off);
          add_span(base + off, n, Kind::kData);
          off += n;
          continue;
        }
        if (!ext) {
          fail(base + off, ext.error(), false);
          return false;
        }
        uint64_t len = std::min(std::max<uint64_t>(ext->length, 1), want);
        // -S 0 fully allocates the target: zero ranges are copied like data.
        Kind kind = Kind::kData;
        if (opts_.target_has_backing && ext->depth != 1) kind = Kind::kSkip;
        else if (!ext->data && ext->zero && opts_.min_sparse != 0) kind = Kind::kZero;
        add_span(base + off, len, kind);
        off += len;
      }
      base += s.size;
    }
    return true;
  }

  // Data range [a, b) as tasks that do not cross a 2 MiB boundary.
  void add_data_tasks(uint64_t a, uint64_t b) {
    while (a < b) {
      uint64_t n = std::min(b - a, kChunkBytes - a % kChunkBytes);
      tasks_.push_back({a, n, Kind::kData});
      a += n;
    }
  }

  void plan() {
    if (!opts_.compress) {
      for (const auto& s : spans_) {
        if (s.kind == Kind::kZero) tasks_.push_back(s);
        else if (s.kind == Kind::kData) add_data_tasks(s.offset, s.offset + s.length);
      }
      return;
    }
    // Compressed: whole target clusters that overlap data, then the zero ranges outside them.
    uint64_t cs = target_.cluster_size();
    std::vector<std::pair<uint64_t, uint64_t>> clusters;  // merged [begin, end) of data clusters
    for (const auto& s : spans_) {
      if (s.kind != Kind::kData) continue;
      uint64_t a = s.offset / cs * cs;
      uint64_t b = std::min((s.offset + s.length + cs - 1) / cs * cs, total_);
      if (!clusters.empty() && a <= clusters.back().second) clusters.back().second = std::max(clusters.back().second, b);
      else clusters.emplace_back(a, b);
    }
    for (const auto& r : clusters) add_data_tasks(r.first, r.second);
    size_t j = 0;
    for (const auto& s : spans_) {
      if (s.kind != Kind::kZero) continue;
      uint64_t pos = s.offset, end = s.offset + s.length;
      while (j < clusters.size() && clusters[j].second <= pos) ++j;
      for (size_t k = j; pos < end;) {
        if (k < clusters.size() && clusters[k].first < end) {
          if (clusters[k].first > pos) tasks_.push_back({pos, clusters[k].first - pos, Kind::kZero});
          pos = std::max(pos, clusters[k].second);
          ++k;
        } else {
          tasks_.push_back({pos, end - pos, Kind::kZero});
          pos = end;
        }
      }
    }
    std::sort(tasks_.begin(), tasks_.end(),
              [](const Span& x, const Span& y) { return x.offset < y.offset; });
  }

  // ---- Running -------------------------------------------------------------------------------

  void worker() {
    // Page-aligned and not zero-filled: the kernel copies from the page cache into this buffer
    // at full speed only when the destination is aligned (a std::vector's data sits 16 bytes
    // into its page; perf showed _copy_to_iter at 45% of convert's samples with one).
    std::unique_ptr<uint8_t, decltype(&std::free)> buf(
        static_cast<uint8_t*>(std::aligned_alloc(4096, kChunkBytes)), &std::free);
    if (!buf) {
      fail(0, Status(Code::kIo, "out of memory", ENOMEM), false);
      return;
    }
    for (;;) {
      size_t i = next_task_.fetch_add(1);
      if (i >= tasks_.size() || stopped()) return;
      const Span& t = tasks_[i];
      const bool zero = t.kind == Kind::kZero;
      std::vector<std::string> warnings;  // --salvage: printed in guest order, at the write's turn
      if (!zero && !read_concat(t.offset, buf.get(), t.length, &warnings)) return;
      if (!wait_turn(i)) return;
      for (const auto& w : warnings) warn_now(w);
      bool ok = zero ? zero_range(t.offset, t.length)
                : opts_.compress ? write_compressed(t.offset, buf.get(), t.length)
                : write_sparse(t.offset, buf.get(), t.length);
      end_turn(i);
      if (!ok) return;
      advance(t.length);
    }
  }

  bool stopped() {
    std::lock_guard<std::mutex> l(mu_);
    return failed_;
  }

  bool wait_turn(size_t i) {
    std::unique_lock<std::mutex> l(mu_);
    if (!opts_.out_of_order) cv_.wait(l, [&] { return failed_ || next_write_ == i; });
    return !failed_;
  }

  void end_turn(size_t i) {
    if (opts_.out_of_order) return;
    {
      std::lock_guard<std::mutex> l(mu_);
      next_write_ = i + 1;
    }
    cv_.notify_all();
  }

  void advance(uint64_t bytes) {
    std::lock_guard<std::mutex> l(mu_);
    done_ += bytes;
    if (total_) progress_.update(static_cast<double>(done_) * 100.0 / static_cast<double>(total_));
  }

  // Records an error (the one at the lowest offset is reported) and stops every worker.
  void fail(uint64_t at, const Status& st, bool writing) {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (!failed_ || at < err_at_) {
        err_at_ = at;
        err_errno_ = st.err();
        err_write_ = writing;
      }
      failed_ = true;
    }
    cv_.notify_all();
  }

  int report() {
    std::fflush(stdout);
    print_error(fmt::format("error while {} at byte {}: {}", err_write_ ? "writing" : "reading",
                            err_at_, std::strerror(err_errno_)));
    return 1;
  }

  // qemu-img's warn_report line (stderr, "keel: warning: ...").
  void warn_now(const std::string& what) {
    if (opts_.quiet) return;
    std::lock_guard<std::mutex> l(mu_);
    std::fflush(stdout);
    print_error("warning: " + what);
  }

  // --salvage after a failed read of [in, in+n) of `image`: sector by sector; a sector that
  // still fails reads as zeros and adds qemu-img's warning (the offset is the source's).
  void salvage_read(Image& image, uint64_t in, uint8_t* buf, uint64_t n, std::vector<std::string>* warnings) {
    for (uint64_t pos = 0; pos < n; pos += kSectorBytes) {
      const uint64_t len = std::min(kSectorBytes, n - pos);
      Status st = image.read(in + pos, {buf + pos, len});
      if (st.is_ok()) continue;
      std::memset(buf + pos, 0, len);
      warnings->push_back(fmt::format("error while reading offset {}: {}", in + pos, std::strerror(st.err())));
    }
  }

  // Reads bytes [off, off+len) of the concatenated sources.
  bool read_concat(uint64_t off, uint8_t* buf, uint64_t len, std::vector<std::string>* warnings) {
    uint64_t base = 0;
    for (const auto& s : sources_) {
      if (len == 0) break;
      if (off < base + s.size) {
        uint64_t in = off - base;
        uint64_t n = std::min(len, s.size - in);
        Status st = s.image->read(in, {buf, n});
        if (!st.is_ok() && opts_.salvage) {
          salvage_read(*s.image, in, buf, n, warnings);
          st = Status::ok();
        }
        if (!st.is_ok()) {
          fail(off, st, false);
          return false;
        }
        buf += n;
        off += n;
        len -= n;
      }
      base += s.size;
    }
    if (len) std::memset(buf, 0, len);
    return true;
  }

  // Zeroes a range of the target unless it already reads as zeros there.
  bool zero_range(uint64_t dst, uint64_t len) {
    if (opts_.target_zero || len == 0) return true;
    ZeroFlags z;
    z.may_unmap = true;
    Status st = target_.write_zeroes(dst, len, z);
    if (!st.is_ok()) fail(dst, st, true);
    return st.is_ok();
  }

  // Writes buf at dst, leaving out (or zeroing) aligned chunks of min_sparse bytes of zeros.
  bool write_sparse(uint64_t dst, const uint8_t* buf, uint64_t len) {
    uint64_t ms = opts_.min_sparse;
    if (ms == 0) {
      Status st = target_.write(dst, {buf, len});
      if (!st.is_ok()) fail(dst, st, true);
      return st.is_ok();
    }
    uint64_t pos = 0;
    while (pos < len) {
      // Runs of equal kind (zero / data), each piece ending on a min_sparse boundary.
      uint64_t piece = std::min(len - pos, ms - (dst + pos) % ms);
      bool zero = is_zero(buf + pos, piece);
      uint64_t run = piece;
      while (pos + run < len) {
        uint64_t p = std::min(len - pos - run, ms);
        if (is_zero(buf + pos + run, p) != zero) break;
        run += p;
      }
      if (zero) {
        if (!zero_range(dst + pos, run)) return false;
      } else {
        Status st = target_.write(dst + pos, {buf + pos, run});
        if (!st.is_ok()) {
          fail(dst + pos, st, true);
          return false;
        }
      }
      pos += run;
    }
    return true;
  }

  // Writes the cluster-aligned range [dst, dst+len) cluster by cluster, compressed; the last
  // cluster of the image is padded with zeros to the target's size.
  bool write_compressed(uint64_t dst, const uint8_t* buf, uint64_t len) {
    uint64_t cs = target_.cluster_size();
    uint64_t size = target_.size();
    std::vector<uint8_t> cluster(cs);
    for (uint64_t pos = 0; pos < len; pos += cs) {
      uint64_t off = dst + pos;
      uint64_t n = std::min(cs, len - pos);
      if (is_zero(buf + pos, n)) {
        if (!zero_range(off, n)) return false;
        continue;
      }
      uint64_t span = std::min(cs, size - off);
      std::memcpy(cluster.data(), buf + pos, n);
      if (span > n) std::memset(cluster.data() + n, 0, span - n);
      Status st = target_.write_compressed(off, {cluster.data(), span});
      if (!st.is_ok()) {
        fail(off, st, true);
        return false;
      }
    }
    return true;
  }

  const std::vector<CopySource>& sources_;
  Image& target_;
  const CopyOptions& opts_;
  Progress progress_;
  uint64_t total_ = 0;
  std::vector<Span> spans_;
  std::vector<Span> tasks_;
  std::atomic<size_t> next_task_{0};

  std::mutex mu_;  // guards everything below
  std::condition_variable cv_;
  size_t next_write_ = 0;
  uint64_t done_ = 0;
  bool failed_ = false;
  uint64_t err_at_ = 0;
  int err_errno_ = 0;
  bool err_write_ = false;
};

}  // namespace

int copy_images(const std::vector<CopySource>& sources, Image& target, const CopyOptions& opts) {
  Copier c(sources, target, opts);
  return c.run();
}

}  // namespace keel::cli
