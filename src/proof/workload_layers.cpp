// The workloads of the image-mutating qemu-img operations that reach beyond the active layer's
// clusters: the refcount width (amend refcount_bits), persistent dirty bitmaps, commit into the
// backing file and rebase onto another one. Each is a pure function of the seed (workload.h).
#include "proof/workload_gen.h"

namespace keel::proof::gen {

// Amend refcount_bits 16 -> 1 -> 64 -> 16 between writes and discards. Every width change builds
// a whole new refcount table and blocks and switches the header to them
// (qcow2_refcount_order.cpp); 1 KiB clusters make the structures span several clusters (a 64-bit
// refcount block covers 128 clusters).
WorkloadSpec refcount_bits(uint64_t seed) {
  WorkloadSpec s = base("refcount-bits", "amend refcount_bits 16 -> 1 -> 64 -> 16 between writes", 1 * MiB, 1 * KiB);
  Gen g(s, seed);
  const uint64_t c = s.create.cluster_size, n = s.create.size / c;
  auto some_writes = [&](int count) {
    for (int i = 0; i < count; ++i) {
      uint64_t k = g.pick(n - 8);
      if (g.chance(15)) {
        g.discard(k * c, c * (1 + g.pick(4)));
      } else if (g.chance(50)) {
        auto [off, len] = g.partial(k, c);
        g.write(off, len);
      } else {
        g.write(k * c, c * (1 + g.pick(8)));
      }
      g.maybe_flush(2);
    }
  };
  g.phase("write");
  some_writes(5);
  for (uint32_t bits : {1u, 64u, 16u}) {
    AmendOptions o;
    o.refcount_bits = bits;
    g.phase("amend");
    g.amend(o);
    g.phase("write");
    some_writes(3);
  }
  g.flush();
  return s;
}

// Persistent dirty bitmaps: b1 added (enabled) and tracking writes, a reopen that stores it, b2
// added, writes, b1 merged into b2, writes, a reopen, then b1 disabled or b2 removed, writes. The
// checker (proof/bitmap_check.h) holds every consistent bitmap to the writes it must have seen.
WorkloadSpec bitmaps(uint64_t seed) {
  WorkloadSpec s = base("bitmaps", "bitmap add, tracked writes, merge, disable or remove, reopens", 1 * MiB, 64 * KiB);
  Gen g(s, seed);
  const uint64_t c = s.create.cluster_size, n = s.create.size / c;
  auto some_writes = [&](int count) {
    for (int i = 0; i < count; ++i) {
      uint64_t k = g.pick(n);
      auto [off, len] = g.partial(k, c);
      switch (g.pick(8)) {
        case 0: g.discard(k * c, c); break;
        case 1: g.zeroes(off, len, g.chance(50)); break;
        case 2: g.write(k * c, c); break;
        default: g.write(off, len);
      }
      g.maybe_flush(2);
    }
  };
  g.phase("write");
  some_writes(3);
  g.phase("bitmap");
  g.bitmap(GuestOpKind::kBitmapAdd, "b1", 4096);
  g.phase("tracked");
  some_writes(4);
  g.reopen();  // close stores b1 (in-use cleared), open finds it consistent
  g.phase("bitmap");
  g.bitmap(GuestOpKind::kBitmapAdd, "b2", 64 * KiB);
  g.phase("tracked");
  some_writes(3);
  g.phase("bitmap");
  g.bitmap(GuestOpKind::kBitmapMerge, "b2", 0, "b1");
  g.phase("tracked");
  some_writes(2);
  g.reopen();
  g.phase("bitmap");
  if (g.chance(50)) g.bitmap(GuestOpKind::kBitmapDisable, "b1");
  else g.bitmap(GuestOpKind::kBitmapRemove, "b2");
  g.phase("tracked");
  some_writes(3);
  g.flush();
  return s;
}

// Commit: the top over a raw backing file of its size; writes and write-zeroes; commit into the
// base (written through the recording, so its writes are part of every crash state) and the
// top emptied; more writes; a second commit (sometimes -d: the top kept); more writes. The top
// must read the same at every crash point whatever the base holds then, and after a completed
// commit the base alone must read the committed content. No discards: the model's "backing"
// content (version 1) would no longer be what the base holds after a commit.
WorkloadSpec commit(uint64_t seed) {
  WorkloadSpec s = base("commit", "commit into the backing file (top emptied) between writes", 1 * MiB, 64 * KiB);
  s.backing_bytes = 1 * MiB;
  s.base_writable = true;
  Gen g(s, seed);
  const uint64_t c = s.create.cluster_size, n = s.create.size / c;
  auto some_writes = [&](int count) {
    for (int i = 0; i < count; ++i) {
      uint64_t k = g.pick(n - 1);
      auto [off, len] = g.partial(k, c);
      switch (g.pick(6)) {
        case 0: g.zeroes(k * c, c, g.chance(50)); break;
        case 1: g.zeroes(off, len, false); break;
        case 2: g.write(k * c, c * (1 + g.pick(2))); break;
        default: g.write(off, len);
      }
      g.maybe_flush(2);
    }
  };
  g.phase("write");
  some_writes(5);
  g.flush();  // qemu-img commit runs on a quiesced top: what it copies is durable in the top
  g.phase("commit");
  g.commit(false);
  g.phase("write");
  some_writes(4);
  g.flush();
  g.phase("commit");
  g.commit(g.chance(30));
  g.phase("write");
  some_writes(3);
  g.flush();
  return s;
}

// Rebase: the top over base A (768 KiB) with writes, then a safe rebase onto base B (1 MiB),
// whose content differs from A's in runs of sectors that start inside clusters and past A's end
// (new_backing_content): every such sector the top does not store is copied into it (partial
// clusters completed from A; zeros past A's end as write-zeroes), then the header names B. The
// top must read the same at every crash point over whichever file its header names. Writes
// after it copy on write from B.
WorkloadSpec rebase(uint64_t seed) {
  WorkloadSpec s = base("rebase", "safe rebase onto a backing file of other content", 1 * MiB, 64 * KiB);
  s.backing_bytes = 768 * KiB;
  s.new_backing_bytes = 1 * MiB;
  Gen g(s, seed);
  const uint64_t c = s.create.cluster_size, n = s.create.size / c;
  auto some_writes = [&](int count) {
    for (int i = 0; i < count; ++i) {
      uint64_t k = g.pick(n);
      if (g.chance(20)) {
        g.write(k * c, c);
      } else {
        auto [off, len] = g.partial(k, c);
        g.write(off, len);
      }
      g.maybe_flush(2);
    }
  };
  g.phase("write");
  some_writes(5);
  g.flush();
  g.phase("rebase");
  g.rebase(kNewBackingName);
  g.phase("write");
  some_writes(4);
  g.flush();
  return s;
}

}  // namespace keel::proof::gen
