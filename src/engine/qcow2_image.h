// Qcow2Image: the qcow2 driver. Internal to libkeel; users see keel::Image.
//
// Concurrency: `mu_` guards all metadata (L1, L2 cache, refcounts, allocator). Guest data I/O
// runs outside it. Every write-side operation holds `gate_` shared; flush() holds it exclusive,
// so the flush protocol sees a quiet metadata state.
//
// The metadata write-back path (the only way metadata reaches the file, see flush_metadata()):
//   phase 1: dirty refcount blocks + L2 tables not yet linked ("fresh"); the cut: the dirty
//            links (linked L2 tables, L1 entries) copied                  -> sync
//   phase 2: the cut's copies of the dirty linked L2 tables + L1 entries  -> sync
//   phase 3: refcount decrements for clusters unlinked in phase 2 (written by the next phase 1);
//            only then are those clusters reusable.
// Guest data is always written before the L2 entry that points at it is set in memory, so
// phase 1's sync also makes the data durable before any link to it. Refcount-structure growth
// (new refcount block, larger refcount table) is rare and synced on the spot.
#pragma once

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "crypto/sector_cipher.h"
#include "engine/alloc_gate.h"
#include "engine/metadata_map.h"
#include "engine/table_cache.h"
#include "engine/thread_annotations.h"
#include "format/bitmap.h"
#include "format/header.h"
#include "format/luks_header.h"
#include "format/snapshot_table.h"
#include "format/tables.h"
#include "keel/image.h"
#include "keel/limits.h"

namespace keel {

FileOptions file_options_for(const OpenOptions& opts);
Result<std::unique_ptr<BlockFile>> open_block_file(const std::string& path, const OpenOptions& opts,
                                                   const FileOptions& f);
Status lock_image_file(BlockFile& file, const OpenOptions& opts);
// The images being opened, from the top image down to the parent of the one being opened
// (canonical paths): a backing file already on it is a loop. Passed down the open explicitly.
using OpenChain = std::vector<std::string>;
// Opens a qcow2 image below the images on `chain` (empty for the top image). `chain` is
// restored before returning.
Result<std::unique_ptr<Image>> open_qcow2_image(std::unique_ptr<BlockFile> file, const std::string& path,
                                                const OpenOptions& opts, OpenChain& chain);
Status create_qcow2_image(const std::string& path, const CreateOptions& opts);
// Links every guest cluster of a freshly created qcow2 image to a host cluster.
Status preallocate_qcow2(Image& image, Preallocation mode);
// Resolves a backing/data file name relative to the directory of `image_path`, as QEMU does.
std::string resolve_relative(const std::string& image_path, const std::string& name);
// Reads an L1 table of n entries at off (host-endian).
Result<std::vector<uint64_t>> read_l1_table(BlockFile& f, uint64_t off, uint32_t n);

// What the L2 entry of one guest cluster says.
struct Mapping {
  format::ClusterType type = format::ClusterType::kUnallocated;
  uint64_t entry = 0;
  uint64_t bitmap = 0;  // extended L2 only
  uint64_t host() const { return entry & format::kOffsetMask; }
  bool copied() const { return entry & format::kCopied; }
};

// A cached L2 table. `fresh`: allocated since the last flush, so phase 1 writes it (whole)
// before its L1 link; `dirty` and the dirty sectors are kept by TableCache.
struct L2Table : CachedTableState {
  using Payload = std::vector<uint64_t>;
  Payload words;  // host-endian; 2 words per entry with extended L2
  Payload& payload() { return words; }
};
using L2Ref = std::shared_ptr<L2Table>;

// A cached refcount block, as on disk (big-endian entries of refcount_bits each).
struct RefBlock : CachedTableState {
  using Payload = std::vector<uint8_t>;
  Payload bytes;
  Payload& payload() { return bytes; }
};
using RefBlockRef = std::shared_ptr<RefBlock>;

class Qcow2Image final : public Image {
 public:
  Qcow2Image() = default;
  ~Qcow2Image() override;

  std::string format() const override { return "qcow2"; }
  uint64_t size() const override { return size_; }
  bool read_only() const override { return read_only_; }
  uint32_t cluster_size() const override { return static_cast<uint32_t>(cs_); }

  Status read(uint64_t offset, std::span<uint8_t> buf) override;
  Status write(uint64_t offset, std::span<const uint8_t> buf, bool fua) override;
  Status write_zeroes(uint64_t offset, uint64_t length, ZeroFlags flags) override;
  Status discard(uint64_t offset, uint64_t length) override;
  Status flush() override;
  Status write_compressed(uint64_t offset, std::span<const uint8_t> cluster) override;
  Result<Extent> block_status(uint64_t offset, uint64_t max_length) override;
  Status read_vmstate(uint64_t pos, std::span<uint8_t> buf) override;           // qcow2_vmstate.cpp
  Status write_vmstate(uint64_t pos, std::span<const uint8_t> buf) override;    // qcow2_vmstate.cpp
  Result<bool> sparse_allocation() override;  // qcow2_sparse_detect.cpp
  std::optional<DirectIo> map_direct(uint64_t offset, uint64_t length, bool write) override;  // qcow2_direct.cpp
  bool zero_read_ok(bool write, format::ClusterType type) const KEEL_REQUIRES(mu_);  // qcow2_direct.cpp
  ImageInfo info() override;
  Image* backing() override { return backing_.get(); }
  Status close() override;

  Status preallocate(Preallocation mode);
  Status snapshot_create(const std::string& name) override;
  Status snapshot_delete(const std::string& id_or_name) override;
  Status snapshot_apply(const std::string& id_or_name) override;
  Status resize(uint64_t new_size, bool shrink) override;
  Status make_empty() override;
  Status amend(const AmendOptions& opts) override;
  Status amend_encryption(const EncryptAmendOptions& opts) override;  // qcow2_luks_amend.cpp

  // Persistent dirty bitmaps (qcow2_bitmap.cpp).
  Status bitmap_add(const std::string& name, uint32_t granularity, bool disabled) override;
  Status bitmap_remove(const std::string& name) override;
  Status bitmap_clear(const std::string& name) override;
  Status bitmap_enable(const std::string& name) override;
  Status bitmap_disable(const std::string& name) override;
  Result<BitmapData> bitmap_read(const std::string& name) override;
  Status bitmap_merge(const std::string& target, const BitmapData& source) override;

 private:
  friend Result<std::unique_ptr<Image>> open_qcow2_image(std::unique_ptr<BlockFile>, const std::string&,
                                                         const OpenOptions&, OpenChain&);
  Status open_tables(const OpenOptions& opts, OpenChain& chain) KEEL_REQUIRES(mu_);
  Status load_snapshot_table() KEEL_REQUIRES(mu_);
  Status load_bitmap_directory(bool check_mode) KEEL_REQUIRES(mu_);
  Status open_backing(const OpenOptions& opts, OpenChain& chain) KEEL_REQUIRES(mu_);
  Status open_data_file(const OpenOptions& opts) KEEL_REQUIRES(mu_);

  // --- the mapping (qcow2_mapping.cpp), the allocator (qcow2_allocator.cpp), the metadata
  // writer (qcow2_writeback.cpp); all REQUIRE mu_ held ---
  Result<L2Ref> load_l2(uint64_t l2_offset) KEEL_REQUIRES(mu_);
  // Makes sure the L2 table that maps guest cluster gc is cached, reading it from the file with
  // mu_ released so that other requests are not held up by the miss; returns with mu_ held. A read that raced with a change of that table is dropped (lookup
  // then loads it under the lock); a failed read is returned (never retried as if it had worked).
  Status prefetch_l2(uint64_t gc) KEEL_REQUIRES(mu_);
  Result<Mapping> lookup(uint64_t guest_cluster) KEEL_REQUIRES(mu_);
  // Returns the L2 table for guest_cluster ready for modification (allocating or copying it).
  Result<L2Ref> writable_l2(uint64_t guest_cluster) KEEL_REQUIRES(mu_);
  void set_l2(L2Table* t, uint64_t guest_cluster, uint64_t entry, uint64_t bitmap) KEEL_REQUIRES(mu_);
  Result<RefBlockRef> load_refblock(uint64_t rt_index, bool create) KEEL_REQUIRES(mu_);
  Result<uint64_t> get_refcount(uint64_t cluster_index) KEEL_REQUIRES(mu_);
  Status change_refcount(uint64_t cluster_index, int64_t delta) KEEL_REQUIRES(mu_);
  // Takes `count` contiguous free clusters (refcount 0 -> 1); returns the host offset. A free
  // cluster the metadata map knows is damage: the image is marked corrupt (`what` names the
  // structure being allocated in QEMU's message for offset 0, e.g. "L2 table").
  Result<uint64_t> alloc_clusters(uint64_t count, const char* what = nullptr) KEEL_REQUIRES(mu_);
  // Takes `bytes` (<= cluster) for compressed data, packing clusters; returns the host offset.
  Result<uint64_t> alloc_bytes(uint64_t bytes) KEEL_REQUIRES(mu_);
  Status create_refblock(uint64_t rt_index) KEEL_REQUIRES(mu_);
  // The lowest free cluster at or above free_hint_ that an existing refcount block covers.
  Result<std::optional<uint64_t>> free_covered_cluster() KEEL_REQUIRES(mu_);
  Status grow_reftable(uint64_t needed_rt_index) KEEL_REQUIRES(mu_);
  // Frees the host clusters an entry references once its unlink is durable.
  void defer_free(uint64_t entry) KEEL_REQUIRES(mu_);
  // REQUIRES gate_ exclusive, flush_mu_, mu_. With `hold` (the guest flush, holding gate_
  // through it): mu_ is released around each sync, so reads and in-place overwrites go on while
  // it syncs; the hold is downgraded to shared at the cut (phase 1 written, the links copied),
  // so allocating writes go on during both syncs, phase 2's writes and phase 3 (a flush with
  // more than a quarter of the dirty bound to link downgrades once its links are written,
  // before the last sync); data_gate_ is
  // taken exclusive for phase 3 (the frees). Without it, the caller holds data_gate_ too and
  // mu_ throughout.
  Status flush_metadata(DowngradableGate* hold = nullptr) KEEL_REQUIRES(mu_);
  // What one flush makes durable, fixed at its cut (after phase 1's writes): copies of the dirty
  // linked L2 tables and L1 sectors phase 2 writes, the tables phase 1 wrote whole (linked in
  // phase 2), and the frees of phase 3. The tables are pinned (held) until phase 2 has written
  // them: the cache marks them clean at the cut, and a clean table evicted and read back from
  // the file before then would lack the cut's entries.
  struct LinkCut {
    struct Table {
      L2Ref table;
      CachedTableState sectors;  // the dirty sectors at the cut
    };
    struct Run {  // a dirty run of a table, widened to the file's alignment, encoded at the cut
      uint64_t offset = 0;
      std::vector<uint8_t> bytes;
    };
    std::vector<Table> tables;
    std::vector<Run> runs;
    std::vector<L2Ref> fresh;
    std::vector<uint64_t> l1_indices;
    std::vector<std::pair<uint64_t, std::vector<uint8_t>>> l1_sectors;  // file offset, bytes
    std::vector<uint64_t> frees;
  };
  LinkCut take_link_cut() KEEL_REQUIRES(mu_);
  // Phase 1's sync, then phase 2: the cut's links written and synced.
  Status write_link_cut(LinkCut& cut, DowngradableGate* hold) KEEL_REQUIRES(mu_);
  // After a failure: the cut's links are dirty again, so the cache keeps them (the image is
  // latched; nothing is written after the failure).
  void restore_link_cut(LinkCut& cut) KEEL_REQUIRES(mu_);
  // Syncs f; with `unlocked`, mu_ is released meanwhile.
  Status sync_file(BlockFile& f, bool unlocked) KEEL_REQUIRES(mu_);
  Status write_dirty_refblocks() KEEL_REQUIRES(mu_);
  Status write_l2_table(uint64_t offset, const L2Table& t) KEEL_REQUIRES(mu_);
  Status write_header_field(uint64_t offset, std::span<const uint8_t> bytes) KEEL_REQUIRES(mu_);
  Status mark_corrupt(const std::string& why) KEEL_REQUIRES(mu_);
  // Bytes of dirty L2 tables and refcount blocks, and of the tables a flush's cut still pins
  // (running atomic counters; no lock needed). Counting the cut's tables keeps the memory that
  // cannot be evicted within kMaxDirtyMetadataBytes while writers run beside a flush.
  size_t dirty_bytes() const KEEL_NO_THREAD_SAFETY_ANALYSIS {
    return l2_cache_.dirty_bytes() + rb_cache_.dirty_bytes() + cut_bytes_.load(std::memory_order_relaxed);
  }
  // Writes the changed sectors of a table (all of it when fresh), widened to the file's
  // alignment, through metadata_write.
  Status write_table_sectors(uint64_t offset, const CachedTableState& t, std::span<const uint8_t> bytes,
                             const char* what) KEEL_REQUIRES(mu_);
  Status metadata_write(uint64_t offset, std::span<const uint8_t> bytes, const char* what) KEEL_REQUIRES(mu_);
  Status latch(Status s) KEEL_REQUIRES(mu_);
  // The error a write (or, with kIo, close) returns once the image is latched: "image is
  // read-only after an error: <first error>", with the first error's errno. REQUIRES latched_.
  Status latched_error(Code code = Code::kReadOnly) const KEEL_REQUIRES(mu_);

  // --- overlap protection (qcow2_overlap.cpp); REQUIRE mu_ ---
  // Rebuilds meta_map_ from the in-memory tables (and the snapshots' L1 tables on disk).
  Status rebuild_metadata_map() KEEL_REQUIRES(mu_);
  // Marks the image corrupt, as QEMU does, if [offset, offset + length) of the image file
  // overlaps metadata of a checked kind outside `ignore` (a mask of kind_bit()s).
  Status overlap_guard(uint64_t offset, uint64_t length, uint32_t ignore) KEEL_REQUIRES(mu_);
  // The same for a guest data write to the data file (no-op with an external data file).
  Status data_guard(uint64_t host_offset, uint64_t length) KEEL_REQUIRES(mu_) {
    if (data_ != file_.get()) return Status::ok();
    return overlap_guard(host_offset, length, 0);
  }
  // The clusters [first, first + count) about to be handed out (refcount 0): refuses known metadata.
  Status alloc_guard(uint64_t first, uint64_t count, const char* what) KEEL_REQUIRES(mu_);

  // --- snapshots and resize (qcow2_snapshot.cpp); REQUIRE mu_, gate_ exclusive ---
  Status tree_refcounts(const std::vector<uint64_t>& l1, int64_t delta) KEEL_REQUIRES(mu_);
  Status recompute_copied() KEEL_REQUIRES(mu_);
  Status set_dirty_bit(bool dirty) KEEL_REQUIRES(mu_);
  Status write_snapshot_table(const std::vector<format::SnapshotEntry>& entries) KEEL_REQUIRES(mu_);
  Status write_new_l1(const std::vector<uint64_t>& l1) KEEL_REQUIRES(mu_);
  const format::SnapshotEntry* find_snapshot(const std::string& id_or_name) const KEEL_REQUIRES(mu_);
  Status rewrite_header(const format::Header& h) KEEL_REQUIRES(mu_);

  // --- resize and emptying (qcow2_resize.cpp); REQUIRE mu_, gate_ exclusive, flush_mu_ ---
  // Unmaps every guest cluster from first_gc on (L2 entries and whole L2 tables); the frees
  // are deferred to the flush path.
  Status unmap_from(uint64_t first_gc) KEEL_REQUIRES(mu_);
  // Truncates the file after its last cluster with a nonzero refcount. REQUIRES: every
  // refcount decrement durable.
  Status trim_file_tail() KEEL_REQUIRES(mu_);

  // --- amend (qcow2_amend.cpp, qcow2_refcount_order.cpp); REQUIRE mu_, gate_ exclusive ---
  // Downgrade to v2: rewrites every zero cluster of the active and snapshot trees.
  Status expand_zero_clusters() KEEL_REQUIRES(mu_);
  // The offsets of the L2 tables of the active tree (and the snapshots' trees), each once.
  Result<std::vector<uint64_t>> distinct_l2_tables(bool snapshots_too) KEEL_REQUIRES(mu_);
  // True if a tree (the active one, or any snapshot's too) has a compressed cluster.
  Result<bool> has_compressed_clusters(bool snapshots_too) KEEL_REQUIRES(mu_);
  // Rebuilds the refcount structures at new_bits per entry and switches to them.
  Status change_refcount_order(uint32_t new_bits) KEEL_REQUIRES(mu_);

  // --- persistent bitmaps (qcow2_bitmap.cpp) ---
  // A bitmap whose bits are tracked in memory while the image is written.
  struct TrackedBitmap {
    size_t index = 0;            // in bitmap_dir_
    uint32_t granularity_bits = 0;
    uint32_t flags = 0;          // the entry's flags before in_use was set
    std::vector<uint8_t> bits;
  };
  // Called by every guest write (write, write_zeroes, discard, compressed) with gate_ shared and
  // no lock held: starts tracking on the first write (auto bitmaps marked in-use on disk, synced)
  // and marks the range dirty in memory.
  Status note_guest_write(uint64_t offset, uint64_t length);
  // Stores tracked bitmaps and clears their in-use flag (close, before any bitmap change).
  // REQUIRE mu_, gate_ exclusive.
  Status stop_tracking() KEEL_REQUIRES(mu_);
  Status store_bitmaps_at_close();
  // resize and snapshot apply: REQUIRE mu_, gate_ exclusive.
  Status bitmaps_before_resize() KEEL_REQUIRES(mu_);
  Status bitmaps_after_resize(uint64_t new_size) KEEL_REQUIRES(mu_);
  Status bitmaps_before_apply() KEEL_REQUIRES(mu_);
  // REQUIRE mu_ (and gate_ exclusive for the rest).
  Status start_tracking() KEEL_REQUIRES(mu_);                  // the auto bitmaps
  Status start_tracking_bitmaps(bool all) KEEL_REQUIRES(mu_);  // all consistent bitmaps (resize)
  format::BitmapGeometry bitmap_geometry() KEEL_REQUIRES(mu_);
  Result<std::vector<uint8_t>> read_bitmap_bits(const format::BitmapDirEntry& e) KEEL_REQUIRES(mu_);
  Status publish_bitmaps(std::vector<format::BitmapDirEntry> next,
                         const std::vector<const std::vector<uint8_t>*>& new_bits) KEEL_REQUIRES(mu_);
  Status write_and_switch_bitmaps(std::vector<format::BitmapDirEntry> next,
                                  const std::vector<const std::vector<uint8_t>*>& new_bits) KEEL_REQUIRES(mu_);
  Status free_bitmap_clusters(const format::BitmapDirEntry& e) KEEL_REQUIRES(mu_);
  Status write_bitmap_flags(const std::vector<format::BitmapDirEntry>& next) KEEL_REQUIRES(mu_);
  // qcow2_header_switch.cpp: REQUIRE mu_.
  Status switch_bitmaps_extension(const std::optional<format::BitmapsExtension>& next) KEEL_REQUIRES(mu_);
  Status rewrite_header_layout(std::span<const uint8_t> old_c0, std::span<const uint8_t> new_c0) KEEL_REQUIRES(mu_);
  Status write_cluster0(std::span<const uint8_t> old_c0, std::span<const uint8_t> new_c0) KEEL_REQUIRES(mu_);
  Status drop_stale_bitmaps_extension() KEEL_REQUIRES(mu_);
  Result<size_t> find_bitmap(const std::string& name, bool need_consistent) KEEL_REQUIRES(mu_);
  Status begin_bitmap_change() KEEL_REQUIRES(mu_);
  void refresh_bitmap_state() KEEL_REQUIRES(mu_);

  // --- encryption (qcow2_crypt.cpp): LUKS below the cluster mapping ---
  Status open_encryption(const OpenOptions& opts) KEEL_REQUIRES(mu_);
  // Guest data at a host offset of the data file: read (and decrypted; an unaligned range is
  // widened to whole sectors), or written (an encrypted copy; REQUIRES 512-aligned when
  // encrypted). The IV sector is the host offset / 512 for LUKS (QEMU's crypt_physical_offset)
  // and the guest offset / 512 for legacy AES.
  Status read_data(uint64_t host_offset, uint64_t guest_offset, std::span<uint8_t> buf);
  Status write_data(uint64_t host_offset, uint64_t guest_offset, std::span<const uint8_t> buf);
  // A write that is not sector-aligned on an encrypted image: read-modify-write of the sectors.
  Status write_unaligned_encrypted(uint64_t offset, std::span<const uint8_t> buf, bool fua);
  bool encrypted() const { return encrypted_; }  // set at open: the header's crypt_method is not none

  // --- guest I/O (qcow2_io.cpp) ---
  Status read_mapped(const Mapping& m, uint64_t guest_cluster, uint64_t in_cluster, std::span<uint8_t> buf);
  Status read_unallocated(uint64_t guest_offset, std::span<uint8_t> buf);
  Status read_compressed(uint64_t entry, uint64_t in_cluster, std::span<uint8_t> buf);
  Status write_chunk(uint64_t guest_offset, std::span<const uint8_t> buf);
  // qcow2_vmstate.cpp: where the VM state area starts, the range [pos, pos + length) of it as
  // guest-space offsets (kInvalidArgument past QEMU's limits), and an L1 table grown to map it.
  uint64_t vmstate_offset() const;
  Result<uint64_t> vmstate_range(uint64_t pos, uint64_t length) const;
  Status grow_l1_for(uint64_t end);
  // The whole request overwrites clusters the image owns: writes it (contiguous host ranges
  // merged) with no metadata change and returns true; false when any part needs the metadata
  // path. REQUIRES data_gate_ shared (not gate_).
  Result<bool> write_in_place(uint64_t offset, std::span<const uint8_t> buf);
  // Releases mu_ while the data is written; returns with it held.
  Status allocating_write(uint64_t guest_cluster, uint64_t in_cluster, std::span<const uint8_t> buf)
      KEEL_REQUIRES(mu_);
  // cache=none: makes the data file at least `end` bytes long, growing it ahead in steps
  // (QEMU's preallocate filter does the same), so that O_DIRECT writes into new clusters land
  // inside the file and do not serialize on its size. close() trims what was not used.
  Status grow_ahead(uint64_t end);
  // Whole clusters from guest cluster gc on that all need a new host cluster: one allocation of
  // a contiguous run, one data write, then the L2 entries. Returns the bytes written (0 when
  // fewer than two leading clusters qualify; the caller then writes cluster by cluster).
  Result<uint64_t> allocating_run(uint64_t gc, std::span<const uint8_t> buf);
  // `only_if`: for a request that covers part of the cluster, change it only while it is of
  // that kind (kUnsupported otherwise), as the caller checked it before (qcow2_zero_partial.cpp).
  enum class ZeroIf { kAny, kZeroOrUnallocated, kZero };
  Status zero_or_discard_cluster(uint64_t guest_cluster, bool discard, bool may_unmap, ZeroIf only_if = ZeroIf::kAny);
  // QEMU's write-zeroes of part of a cluster: a zero cluster when the rest of it reads as zeros
  // too; kUnsupported when not (the caller then writes zeros). qcow2_zero_partial.cpp.
  Status zero_partial_cluster(uint64_t offset, uint64_t length, bool may_unmap);
  // The same with extended L2 entries, as QEMU does it subcluster by subcluster (never
  // kUnsupported: what cannot be zeroed by the bitmap is written as zeros here).
  Status zero_partial_subclusters(uint64_t offset, uint64_t length);
  // Whether [offset, offset + length) (clamped to the disk) reads as zeros by block status.
  Result<bool> reads_as_zeros(uint64_t offset, uint64_t length);
  // Sets the zero bits (and clears the allocation bits) of subclusters [first, first + count)
  // of guest cluster gc. `unless_allocated`: only while none of them is allocated (the caller
  // found the rest of a subcluster zero before). kUnsupported for a compressed cluster.
  Status zero_subcluster_bits(uint64_t gc, uint64_t first, uint64_t count, bool unless_allocated);
  Status check_request(uint64_t offset, uint64_t length, bool write) const;
  Status before_write();
  bool in_place_ok(const Mapping& m, uint64_t in_cluster, uint64_t length) const;
  void notify(Event e) const {
    if (observer_) observer_->on_event(e);
  }
  bool has_external_data() const { return external_data_; }
  // The header's version (amend may change it, under the exclusive gates).
  uint32_t version() const KEEL_EXCLUDES(mu_) {
    MutexLock lk(mu_);
    return header_.version;
  }

  // Immutable after open.
  std::string path_;
  std::unique_ptr<BlockFile> file_;
  std::unique_ptr<BlockFile> data_file_owned_;
  BlockFile* data_ = nullptr;  // where guest clusters live (file_ or the external data file)
  std::optional<format::LuksHeader> luks_;         // crypt_method 2; amend_encryption changes its slots
                                                   // (exclusive gates and mu_ held)
  std::unique_ptr<crypto::SectorCipher> crypt_;    // null: not encrypted, or opened without the key
  std::unique_ptr<Image> backing_;
  EventObserver* observer_ = nullptr;
  uint64_t cs_ = 0;
  uint32_t cbits_ = 0;
  uint64_t l2_entries_ = 0;
  uint32_t l2_words_ = 1;  // 2 with extended L2
  bool ext_l2_ = false;
  uint64_t sc_size_ = 0;   // subcluster size (extended L2)
  uint32_t rc_bits_ = 16;
  uint64_t rb_entries_ = 0;
  uint64_t size_ = 0;
  bool writethrough_ = false;
  bool direct_io_ = false;  // cache=none/directsync: the file is opened O_DIRECT
  bool external_data_ = false;  // the header names an external data file
  bool encrypted_ = false;      // crypt_method is not none
  bool guest_iv_ = false;       // legacy AES: IVs from guest offsets (LUKS: host offsets)
  CompressionType compression_ = CompressionType::kZlib;
  std::string snapshot_name_;

  // Guarded by mu_.
  mutable Mutex mu_;
  format::Header header_ KEEL_GUARDED_BY(mu_);
  std::vector<format::SnapshotEntry> snapshots_ KEEL_GUARDED_BY(mu_);
  // The persistent bitmaps as the on-disk directory has them (empty when the autoclear bit says
  // they are stale); flags include in-use while tracking.
  std::vector<format::BitmapDirEntry> bitmap_dir_ KEEL_GUARDED_BY(mu_);
  bool stale_bitmaps_ext_ KEEL_GUARDED_BY(mu_) = false;  // an extension without autoclear bit 0: dropped on first write
  bool tracking_ KEEL_GUARDED_BY(mu_) = false;           // auto bitmaps are in-use on disk and tracked in tracked_
  std::atomic<uint64_t> cut_bytes_{0};  // tables pinned by the running flush's cut (LinkCut)
  std::atomic<bool> track_writes_{false};  // some consistent auto bitmap exists (RW images)
  Mutex bm_mu_;                            // guards tracked_ bits (lock order: mu_ then bm_mu_)
  std::vector<TrackedBitmap> tracked_ KEEL_GUARDED_BY(bm_mu_);
  uint64_t snapshot_table_bytes_ KEEL_GUARDED_BY(mu_) = 0;  // on-disk length of the current snapshot table
  std::vector<uint64_t> l1_ KEEL_GUARDED_BY(mu_);
  uint64_t l1_offset_ KEEL_GUARDED_BY(mu_) = 0;
  std::set<uint64_t> l1_dirty_ KEEL_GUARDED_BY(mu_);  // indices
  std::vector<uint64_t> reftable_ KEEL_GUARDED_BY(mu_);
  TableCache<L2Table> l2_cache_ KEEL_GUARDED_BY(mu_){64 * 1024, limits::kDefaultL2CacheBytes};        // key: host offset
  TableCache<RefBlock> rb_cache_ KEEL_GUARDED_BY(mu_){64 * 1024, limits::kDefaultRefcountCacheBytes};  // key: reftable index
  uint64_t free_hint_ KEEL_GUARDED_BY(mu_) = 0;         // no free cluster below this index
  // Every byte of the image file at or past zero_from_ reads as zeros and has not been written
  // since open: a cluster allocated there needs no zeroing of what the guest does not write.
  // alloc_clusters and metadata_write move it up; last_alloc_fresh_ says whether the last
  // allocation lay wholly past it.
  uint64_t zero_from_ KEEL_GUARDED_BY(mu_) = 0;
  bool last_alloc_fresh_ KEEL_GUARDED_BY(mu_) = false;
  uint64_t compressed_cursor_ KEEL_GUARDED_BY(mu_) = 0; // next free byte in the current compressed-data cluster
  std::vector<uint64_t> pending_free_ KEEL_GUARDED_BY(mu_);  // L2/L1 entries whose clusters lose a reference
                                        // once the unlink is durable
  // L2 tables being read by prefetch_l2 without mu_; true once the cache got that table by
  // another way (the read may be stale and is dropped).
  std::unordered_map<uint64_t, bool> l2_loading_ KEEL_GUARDED_BY(mu_);
  std::condition_variable_any l2_loading_cv_;  // waits on mu_
  std::unordered_set<uint64_t> inflight_ KEEL_GUARDED_BY(mu_);  // guest clusters with an allocating write under way
  std::condition_variable_any inflight_cv_;  // waits on mu_
  bool read_only_ = false;
  std::atomic<bool> latched_{false};  // a metadata write failed: no more writes (read without mu_
                                     // by before_write's fast path)
  Status latch_cause_ KEEL_GUARDED_BY(mu_);  // the first error, with its code and errno (set once, when latched_ is)
  std::atomic<bool> autoclear_pending_{false};  // unknown autoclear bits to clear before the first write
  bool closed_ = true;  // until open succeeds
  bool repaired_once_ KEEL_GUARDED_BY(mu_) = false;
  bool freed_unsynced_ KEEL_GUARDED_BY(mu_) = false;  // phase 3 wrote refcount decrements not yet synced

  // Overlap protection: every known metadata cluster, and the kinds checked. Guarded by mu_.
  MetadataMap meta_map_ KEEL_GUARDED_BY(mu_);
  uint32_t overlap_mask_ KEEL_GUARDED_BY(mu_) = OverlapCheck::defaults().mask;
  std::function<void(const std::string&)> on_corruption_;

  AllocGate gate_;
  // In-place overwrites hold data_gate_ shared (and not gate_), so they go on while a flush
  // syncs; whatever frees clusters or changes who owns them (flush phase 3, snapshots, resize,
  // amend, bitmaps) holds it exclusive. Lock order: flush_mu_, gate_, data_gate_, mu_.
  AllocGate data_gate_;
  std::mutex flush_mu_;
  // cache-clean-interval: a thread that drops cache entries unused for an interval.
  uint64_t clean_interval_s_ = 0;  // set at open
  std::thread cleaner_;
  // The cleaner sleeps on its own mutex and takes mu_ only to clean, so it never contends with
  // requests (map_direct only tries mu_) while it waits.
  std::mutex cleaner_mu_;
  std::condition_variable cleaner_cv_;
  bool cleaner_stop_ = false;  // guarded by cleaner_mu_
  void start_cleaner();
  void stop_cleaner();
  Mutex grow_mu_;
  uint64_t open_size_ KEEL_GUARDED_BY(grow_mu_) = 0;  // the file's size at open
  uint64_t grown_to_ KEEL_GUARDED_BY(grow_mu_) = 0;   // how far grow_ahead has extended the file
};

}  // namespace keel
