// qemu-img commit's copy into the base (keel/chain_ops.h).
//
// Crash safety: the base only receives bytes the top already shows, so an interruption during
// the copy changes nothing the top shows (the top stores those ranges itself). The base is
// flushed before this returns OK; the caller empties the top only after that, so every cluster
// it gives up is one whose bytes the base holds durably.
#include <fmt/format.h>

#include <algorithm>
#include <vector>

#include "keel/chain_ops.h"

namespace keel {
namespace {
constexpr uint64_t kChunkBytes = 2u << 20;  // ours: the copy buffer, as qemu-img's
}  // namespace

Status commit_into_base(Image& chain, Image& base, const CommitOptions& opts) {
  // The top must be durable in its own right first: where it stores a cluster itself, that
  // cluster keeps shadowing the base, so a top write that was never flushed (its flush failed,
  // the image latched) would be committed into the base yet lost from the top at a power cut.
  // Found by the fault sweep (commit, seed 584981, I/O op 53). A read-only chain: a no-op.
  KEEL_TRY(chain.flush());
  const uint64_t size = chain.size();
  if (base.size() < size)
    KEEL_TRY(base.resize(size, false).with_context(fmt::format("Could not resize '{}'", opts.base_name)));
  std::vector<uint8_t> buf(kChunkBytes);
  for (uint64_t off = 0; off < size;) {
    auto ext = chain.block_status(off, size - off);
    if (!ext) return ext.error().with_context("error while reading image metadata");
    const uint64_t len = std::min(std::max<uint64_t>(ext->length, 1), size - off);
    const bool above_base = ext->depth >= 1 && ext->depth < opts.base_depth;
    if (above_base && ext->zero && !ext->data) {
      // As qemu-img commit (its mirror job zeroes with BDRV_REQ_MAY_UNMAP): a qcow2 base gives
      // up the clusters it had there instead of keeping them allocated as zeros (an L2 change,
      // no I/O of its own). A raw base keeps writing zeros: its unmap is a hole punch whose
      // failure falls back to writing zeros, which would hide the I/O error from the caller
      // (the fault sweep's commit workload, seed 1000, I/O op 24, caught that).
      ZeroFlags unmap;
      unmap.may_unmap = base.format() == "qcow2";
      KEEL_TRY(base.write_zeroes(off, len, unmap).with_context(fmt::format("error while writing at byte {}", off)));
    } else if (above_base) {
      for (uint64_t pos = off; pos < off + len;) {
        const uint64_t n = std::min<uint64_t>(off + len - pos, kChunkBytes);
        KEEL_TRY(chain.read(pos, {buf.data(), n}).with_context(fmt::format("error while reading at byte {}", pos)));
        KEEL_TRY(base.write(pos, {buf.data(), n}).with_context(fmt::format("error while writing at byte {}", pos)));
        pos += n;
      }
    }
    off += len;
    if (opts.progress) opts.progress(static_cast<double>(off) * 100.0 / static_cast<double>(size));
  }
  // The base must hold everything durably before the top gives anything up.
  return base.flush().with_context(fmt::format("error while writing '{}'", opts.base_name));
}

}  // namespace keel
