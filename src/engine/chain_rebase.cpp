// qemu-img rebase (keel/chain_ops.h).
//
// Crash safety: every byte copied into the top is the byte the top showed there before (read
// from the old chain), so a crash during the copy changes nothing visible; the copy is flushed
// before the header names the new backing file (one engine amend, synced), so no state has the
// new name without the data that makes the top read as before over it.
#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "keel/chain_ops.h"

namespace keel {
namespace {

constexpr uint64_t kChunkBytes = 2u << 20;  // ours: the copy buffer, as qemu-img's
constexpr uint64_t kCompareBytes = 512;     // qemu-img compares the chains in sectors

// A read-only view of a backing chain that may be absent (reads as zeros) or shorter than the
// top (zeros past its end).
class ChainReader {
 public:
  explicit ChainReader(Image* image) : image_(image) {}
  uint64_t size() const { return image_ ? image_->size() : 0; }
  // Fills buf with the chain's bytes at off; `zero` is set when all of it is past the end.
  Status read(uint64_t off, std::span<uint8_t> buf, bool* zero) const {
    *zero = off >= size();
    const uint64_t n = *zero ? 0 : std::min<uint64_t>(buf.size(), size() - off);
    if (n) KEEL_TRY(image_->read(off, buf.first(n)));
    std::memset(buf.data() + n, 0, buf.size() - n);
    return Status::ok();
  }

 private:
  Image* image_;
};

// Writes the old chain's bytes into `top` wherever top does not store the range and the chains
// differ, in runs of differing sectors; then flushes top.
Status copy_differences(Image& top, const ChainReader& old_chain, const ChainReader& new_chain,
                        const ProgressFn& progress) {
  const uint64_t size = top.size();
  std::vector<uint8_t> old_buf(kChunkBytes), new_buf(kChunkBytes);
  auto report = [&](uint64_t done) {
    if (progress) progress(static_cast<double>(done) * 100.0 / static_cast<double>(size));
  };
  for (uint64_t off = 0; off < size;) {
    auto ext = top.block_status(off, std::min<uint64_t>(size - off, kChunkBytes));
    if (!ext) return ext.error().with_context("error while reading image metadata");
    const uint64_t n = std::min(std::max<uint64_t>(ext->length, 1), size - off);
    if (ext->depth == 1) {  // the top stores this range itself
      off += n;
      report(off);
      continue;
    }
    bool old_zero = false, new_zero = false;
    KEEL_TRY(old_chain.read(off, {old_buf.data(), n}, &old_zero).with_context("error while reading from old backing file"));
    KEEL_TRY(new_chain.read(off, {new_buf.data(), n}, &new_zero).with_context("error while reading from new backing file"));
    auto sector_differs = [&](uint64_t p) {
      const uint64_t len = std::min(kCompareBytes, n - p);
      return std::memcmp(old_buf.data() + p, new_buf.data() + p, len) != 0;
    };
    for (uint64_t pos = 0; pos < n;) {
      const bool differs = sector_differs(pos);
      uint64_t end = pos + std::min(kCompareBytes, n - pos);
      while (end < n && sector_differs(end) == differs) end += std::min(kCompareBytes, n - end);
      if (differs) {
        Status st = old_zero ? top.write_zeroes(off + pos, end - pos, ZeroFlags{})
                             : top.write(off + pos, {old_buf.data() + pos, end - pos});
        KEEL_TRY(st.with_context("Error while writing to COW image"));
      }
      pos = end;
    }
    off += n;
    report(off);
  }
  // Durable before the header may name the new backing file.
  return top.flush();
}

}  // namespace

Status rebase_image(Image& top, Image* old_chain, Image* new_chain, const RebaseOptions& opts) {
  if (!opts.unsafe) KEEL_TRY(copy_differences(top, ChainReader(old_chain), ChainReader(new_chain), opts.progress));
  AmendOptions o;
  o.backing_file = opts.backing_file;
  o.backing_format = opts.backing_file.empty() ? std::string() : opts.backing_format;
  return top.amend(o).with_context("Could not change the backing file to '" + opts.backing_file + "'");
}

}  // namespace keel
