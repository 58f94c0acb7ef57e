// The public API of libkeel: open or create a disk image (qcow2 or raw) and do guest I/O on it.
//
// An Image is safe to use from many threads at once. Reads and writes of allocated data run in
// parallel; allocation and metadata write-back are serialized inside the engine.
// Durability: a write is durable once a later flush() returns OK, or when it was issued with
// fua=true and returned OK (docs/integrity.md, shared integrity contract G3).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "keel/block_file.h"
#include "keel/events.h"
#include "keel/passphrase.h"
#include "keel/status.h"

namespace keel {

// QEMU's -t cache modes.
enum class CacheMode { kWriteback, kWritethrough, kNone, kDirectsync, kUnsafe };
// QEMU's -i aio modes.
enum class AioMode { kThreads, kIoUring };

Result<CacheMode> parse_cache_mode(std::string_view name);
Result<AioMode> parse_aio_mode(std::string_view name);

using FileOpener =
    std::function<Result<std::unique_ptr<BlockFile>>(const std::string& path, const FileOptions&)>;

struct OpenOptions {
  std::string format;           // "qcow2", "raw"; empty = probe
  bool read_only = false;
  CacheMode cache = CacheMode::kWriteback;
  AioMode aio = AioMode::kThreads;
  bool force_share = false;     // qemu-img -U: take no image locks
  bool no_backing = false;      // do not open the backing file (reads of unallocated = zeros)
  std::string snapshot;         // open this internal snapshot (id or name), read-only
  bool check_mode = false;      // open for check/repair: allow a corrupt image, no auto-repair
  FileOpener file_opener;       // for tests: replaces open_posix_file for every file opened
  EventObserver* observer = nullptr;
  int max_backing_depth = 0;    // 0 = limits.h default
  // Metadata cache budgets in bytes, clean and dirty entries counted (QEMU's l2-cache-size and
  // refcount-cache-size); 0 = the defaults in limits.h.
  uint64_t l2_cache_size = 0;
  uint64_t refcount_cache_size = 0;
  // QEMU's qcow2 driver options "overlap-check" (none, constant, cached (default), all) and
  // "overlap-check.<kind>" (on/off; kinds main-header, active-l1, active-l2, refcount-table,
  // refcount-block, snapshot-table, inactive-l1, inactive-l2, bitmap-directory, and keel's
  // bitmap-table), applied in order. An unknown key or value fails the open (kInvalidArgument).
  std::vector<std::pair<std::string, std::string>> qcow2_options;
  // Called once, with QEMU's text, when the image is marked corrupt (the first corruption event;
  // QEMU prints "qcow2: Marking image as corrupt: <text>; further corruption events will be
  // suppressed"). Called with the metadata lock held: it must not call back into the image.
  std::function<void(const std::string&)> on_corruption;
  // QEMU's encrypt.key-secret: the passphrase of a LUKS-encrypted qcow2 image (the top image).
  // Without it an encrypted image fails to open with QEMU's "Parameter 'encrypt.key-secret' is
  // required for cipher", unless `no_io`. Held as key material (keel/passphrase.h).
  std::optional<Passphrase> encrypt_secret;
  // QEMU's backing.encrypt.key-secret, backing.backing.encrypt.key-secret, ...: the passphrases
  // of encrypted backing files, [0] for the backing file, [1] for its backing file... A backing
  // file without one here is opened without a key (an encrypted one then fails to open).
  std::vector<std::optional<Passphrase>> backing_encrypt_secrets;
  // Open for metadata only (qemu-img info, BDRV_O_NO_IO): an encrypted image opens without its
  // key, and guest reads and writes of it fail.
  bool no_io = false;
};

// Result of block_status: one extent starting at `offset`.
struct Extent {
  uint64_t offset = 0;
  uint64_t length = 0;
  bool data = false;        // reads come from stored data (not known zeros)
  bool zero = false;        // reads as zeros
  int depth = 0;            // layer that provides it: 1 = this image, 2 = its backing... 0 = none
  bool compressed = false;
  std::optional<uint64_t> host_offset;  // offset in the top layer's data file, when known
};

struct SnapshotInfo {
  std::string id;
  std::string name;
  uint64_t vm_state_size = 0;
  uint32_t date_sec = 0;
  uint32_t date_nsec = 0;
  uint64_t vm_clock_nsec = 0;
  uint64_t icount = UINT64_MAX;  // UINT64_MAX = not recorded
  uint64_t disk_size = 0;
};

struct BitmapInfo {
  std::string name;
  uint32_t granularity = 0;
  std::vector<std::string> flags;  // "in-use", "auto"
};

// The contents of a persistent dirty bitmap: bit i is set when guest bytes
// [i * granularity, (i + 1) * granularity) were written while the bitmap was enabled.
struct BitmapData {
  uint32_t granularity = 0;
  uint64_t virtual_size = 0;  // of the image the bitmap belongs to
  std::vector<uint8_t> bits;  // bit i is bits[i / 8] >> (i % 8) & 1; length a multiple of 8

  uint64_t bit_count() const { return (virtual_size + granularity - 1) / granularity; }
  bool test(uint64_t i) const { return bits[i / 8] >> (i % 8) & 1; }
  // Whether any byte of [offset, offset + length) is marked dirty.
  bool dirty(uint64_t offset, uint64_t length) const;
};

struct ImageInfo {
  std::string filename;
  std::string format;
  uint64_t virtual_size = 0;
  uint64_t actual_size = 0;
  uint32_t cluster_size = 0;          // 0 for raw
  std::string backing_filename;       // as stored in the image
  std::string full_backing_filename;  // resolved path
  std::string backing_format;
  std::vector<SnapshotInfo> snapshots;
  bool dirty = false;
  // qcow2 only
  std::string compat;                 // "0.10" or "1.1"
  std::string compression_type;       // "zlib" or "zstd"
  bool lazy_refcounts = false;
  uint32_t refcount_bits = 0;
  bool corrupt = false;
  bool extended_l2 = false;
  std::string data_file;
  bool data_file_raw = false;
  std::vector<BitmapInfo> bitmaps;
  bool encrypted = false;
  // crypt_method 2: QEMU's "encrypt" block (format "luks"), as qemu-img info prints it.
  struct LuksSlotInfo {
    bool active = false;
    uint32_t iters = 0;        // active slots only
    uint32_t stripes = 0;      // active slots only
    uint64_t key_offset = 0;   // bytes
  };
  struct EncryptInfo {
    std::string format;        // "luks" or "aes"
    std::string cipher_alg, cipher_mode, ivgen_alg, ivgen_hash_alg, hash_alg, uuid;
    std::vector<LuksSlotInfo> slots;
    uint64_t payload_offset = 0;  // bytes
    uint32_t master_key_iters = 0;
  };
  std::optional<EncryptInfo> encrypt;
};

struct ZeroFlags {
  bool may_unmap = false;    // the range may be deallocated (NBD: without NO_HOLE)
  bool fua = false;
  bool fast_only = false;    // fail with ENOTSUP unless zeroing is cheap (NBD FAST_ZERO)
};

class AllocGate;  // engine-internal (src/engine/alloc_gate.h)

// One host range of a direct I/O: `length` bytes at `host_offset` of file descriptor `fd`.
struct DirectSegment {
  int fd = -1;  // -1: no I/O, the range reads as zeros (reads only: unallocated or zero clusters)
  uint64_t host_offset = 0;
  uint64_t length = 0;
  bool zeros() const { return fd < 0; }
};

// A guest request that Image::map_direct() resolved to host file ranges: the caller reads or
// writes them itself (io_uring) instead of calling read()/write(). A read may also hold ranges
// that read as zeros (DirectSegment::zeros(): unallocated clusters of an image without a backing
// file, zero clusters); the caller fills those with zeros. While the ticket lives it
// holds the image's allocation gate shared, so no flush, freeing of a discarded cluster,
// snapshot or resize can re-map or reuse those clusters under the I/O in flight; destroy it (or
// call release()) once the I/O has completed. Move-only; no allocation.
class DirectIo {
 public:
  // ours, because: a request that needs more host ranges than this takes the engine path.
  static constexpr size_t kMaxSegments = 16;

  DirectIo() = default;
  DirectIo(DirectIo&& o) noexcept { *this = std::move(o); }
  DirectIo& operator=(DirectIo&& o) noexcept;
  DirectIo(const DirectIo&) = delete;
  DirectIo& operator=(const DirectIo&) = delete;
  ~DirectIo() { release(); }

  // Ends the ticket (idempotent): the gate is left; the segments must no longer be used.
  void release();
  std::span<const DirectSegment> segments() const { return {segs_, count_}; }
  // Offsets, lengths and buffer addresses must be multiples of this (O_DIRECT files).
  uint32_t alignment() const { return alignment_; }

  // --- for Image implementations ---
  // Appends a host range, merging it with the previous one when contiguous; false when full.
  bool add(int fd, uint64_t host_offset, uint64_t length);
  // Appends a range that reads as zeros (no I/O), merged likewise; false when full.
  bool add_zeros(uint64_t length) { return add(-1, 0, length); }
  void set_alignment(uint32_t a) { alignment_ = a; }
  // The ticket now holds `gate` shared (already entered) and leaves it on release().
  void hold(AllocGate* gate) { gate_ = gate; }

 private:
  DirectSegment segs_[kMaxSegments];
  size_t count_ = 0;
  uint32_t alignment_ = 1;
  AllocGate* gate_ = nullptr;
};

class Image {
 public:
  // Opens `path`; format probed unless opts.format is set. Takes QEMU-compatible locks.
  static Result<std::unique_ptr<Image>> open(const std::string& path, const OpenOptions& opts);

  virtual ~Image() = default;

  virtual std::string format() const = 0;
  virtual uint64_t size() const = 0;
  virtual bool read_only() const = 0;
  // The allocation granularity (cluster size for qcow2, 512 for raw).
  virtual uint32_t cluster_size() const = 0;

  virtual Status read(uint64_t offset, std::span<uint8_t> buf) = 0;
  virtual Status write(uint64_t offset, std::span<const uint8_t> buf, bool fua = false) = 0;
  virtual Status write_zeroes(uint64_t offset, uint64_t length, ZeroFlags flags) = 0;
  // Advisory, like QEMU's: whole clusters inside the range are deallocated (then they read as
  // zeros on v3 images); partial clusters keep their data.
  virtual Status discard(uint64_t offset, uint64_t length) = 0;
  virtual Status flush() = 0;
  // Writes one whole cluster compressed (qcow2 only; REQUIRES: offset cluster-aligned, the
  // cluster not yet allocated). Falls back to a normal write if compression does not help.
  virtual Status write_compressed(uint64_t offset, std::span<const uint8_t> cluster);

  // The direct-I/O seam (an event loop's fast path). When all of [offset, offset+length) maps to
  // host ranges that can be read as they are (allocated data) or, for `write`, overwritten in
  // place without any metadata change, returns a ticket naming them; otherwise nullopt, and the
  // caller uses read()/write() (on a thread that may block). Never blocks on disk or on a lock
  // held for I/O: a mapping not in memory, a busy lock or a waiting flush give nullopt. Writes
  // are refused (nullopt) whenever the engine's write path must see them: read-only or latched
  // images, pending header work, tracked dirty bitmaps, writethrough caching. Errors surface as
  // nullopt too (the engine path reports them). Default: never possible.
  virtual std::optional<DirectIo> map_direct(uint64_t /*offset*/, uint64_t /*length*/, bool /*write*/) {
    return std::nullopt;
  }

  // The VM state area (QEMU's savevm data, qemu-io's read/write -b): bytes kept in the image
  // beside the guest disk, addressed from 0. qcow2 keeps them in clusters past the virtual disk,
  // from the first L1 entry the disk does not use (QEMU's qcow2_vm_state_offset), growing the
  // L1 table as QEMU does; they are written, flushed and made durable like guest data, and
  // internal snapshots share them like guest clusters. Other formats: kUnsupported (ENOTSUP),
  // as QEMU's raw and file drivers.
  virtual Status read_vmstate(uint64_t pos, std::span<uint8_t> buf);
  virtual Status write_vmstate(uint64_t pos, std::span<const uint8_t> buf);

  // Describes the longest uniform extent starting at offset, at most max_length bytes.
  virtual Result<Extent> block_status(uint64_t offset, uint64_t max_length) = 0;

  // QEMU's qcow2_detect_metadata_preallocation: whether clearly more clusters are in use than
  // the image file has allocated on disk (preallocation=metadata leaves data clusters that are
  // holes in the file). QEMU then asks the file system about a data cluster's host range and
  // reports a hole there as "zero": true in qemu-img map. Formats without that: false.
  virtual Result<bool> sparse_allocation() { return false; }

  // Internal snapshots and resize (qcow2; other formats return kUnsupported). Each is
  // crash-safe: on v3 images the dirty bit marks the operation in progress and a read-write
  // open repairs whatever an interruption left.
  virtual Status snapshot_create(const std::string& name);
  virtual Status snapshot_delete(const std::string& id_or_name);
  virtual Status snapshot_apply(const std::string& id_or_name);
  // Changes the virtual size. Shrinking discards the data past the new end and needs `shrink`.
  virtual Status resize(uint64_t new_size, bool shrink);
  // Deallocates every cluster of this layer, so the image reads as its backing chain again
  // (qemu-img commit's last step), and gives the freed space back where it can.
  virtual Status make_empty() { return unsupported("Format does not support emptying the image"); }

  // qemu-img amend / rebase -u: header-level changes (qcow2). Fields left empty stay as they are.
  virtual Status amend(const struct AmendOptions& opts);
  // qemu-img amend -o encrypt.*: adds or erases key slots of a LUKS-encrypted qcow2 image that
  // was opened with its key (QEMU's rules and messages; crash-safe: see crypto/luks_keyslot.h).
  // kUnsupported "Can't amend encryption options - encryption not present" for other images.
  virtual Status amend_encryption(const struct EncryptAmendOptions& opts);

  // Persistent dirty bitmaps (qcow2 v3; other formats return kUnsupported). info().bitmaps lists
  // them. Each change below is durable and crash-safe when it returns: new tables and directory go
  // to fresh clusters, the header switches to them in one sector write, and only then are the old
  // clusters freed. An enabled ("auto") bitmap tracks guest writes: the first write after open
  // marks it in-use on disk, and close() stores it and clears in-use; a bitmap found in-use at open
  // is inconsistent (a crash while it was tracking) and can only be removed.
  // Errors carry QEMU's messages: kNotFound "Dirty bitmap 'x' not found"; kInvalidArgument for
  // a bad name or granularity, an existing name, or an inconsistent bitmap ("Bitmap 'x' is
  // inconsistent and cannot be used"); kUnsupported for v2 images and other formats.
  //   granularity: bytes per bit, a power of two >= 512; 0 = QEMU's default (cluster size clamped
  //   to 4 KiB..64 KiB). `disabled` adds it without the auto flag.
  virtual Status bitmap_add(const std::string& name, uint32_t granularity = 0, bool disabled = false);
  virtual Status bitmap_remove(const std::string& name);
  virtual Status bitmap_clear(const std::string& name);    // every bit clean
  virtual Status bitmap_enable(const std::string& name);   // sets the auto flag
  virtual Status bitmap_disable(const std::string& name);  // clears it
  // The bitmap's bits as they would be stored now (tracked writes included).
  virtual Result<BitmapData> bitmap_read(const std::string& name);
  // ORs `source` (any granularity, same virtual size) into bitmap `target`.
  virtual Status bitmap_merge(const std::string& target, const BitmapData& source);
  // Merges bitmap `source_name` of `source` (which may be this image) into `target`.
  Status bitmap_merge_from(const std::string& target, Image& source, const std::string& source_name);

  virtual ImageInfo info() = 0;
  // The backing image, or nullptr.
  virtual Image* backing() = 0;

  // Flushes, clears the dirty bit and releases the image. Destruction without close() is a
  // best-effort close that cannot report errors.
  virtual Status close() = 0;
};

struct AmendOptions {
  std::optional<int> version;             // 2 (compat=0.10) or 3 (compat=1.1)
  std::optional<bool> lazy_refcounts;
  std::optional<std::string> backing_file;    // "" removes the backing file
  std::optional<std::string> backing_format;
  std::optional<uint32_t> refcount_bits;      // 1..64, a power of two (compat=1.1 only)
};

// qemu-img amend's encrypt.* options (LUKS key slots). Passphrases, not secret ids.
struct EncryptAmendOptions {
  bool activate = true;                        // encrypt.state=active (true) or inactive
  Passphrase key_passphrase;                   // the image's encrypt.key-secret (finds the master key)
  std::optional<Passphrase> new_passphrase;    // encrypt.new-secret
  std::optional<Passphrase> old_passphrase;    // encrypt.old-secret
  std::optional<int64_t> keyslot;              // encrypt.keyslot
  std::optional<uint64_t> iter_time_ms;        // encrypt.iter-time (default 2000)
  bool force = false;                          // qemu-img amend --force
};

enum class Preallocation { kOff, kMetadata, kFalloc, kFull };
enum class CompressionType { kZlib = 0, kZstd = 1 };

// encrypt.format=luks: QEMU's names for the LUKS parameters and the passphrase itself.
struct EncryptCreateOptions {
  Passphrase passphrase;
  std::string cipher_alg = "aes-256";
  std::string cipher_mode = "xts";
  std::string ivgen_alg = "plain64";
  std::string ivgen_hash_alg;   // essiv only; empty = sha256
  std::string hash_alg = "sha256";
  uint64_t iter_time_ms = 2000;
};

struct CreateOptions {
  std::string format = "qcow2";
  uint64_t size = 0;
  int version = 3;                    // 2 = compat 0.10, 3 = compat 1.1
  uint32_t cluster_size = 65536;
  uint32_t refcount_bits = 16;
  bool lazy_refcounts = false;
  bool extended_l2 = false;
  Preallocation preallocation = Preallocation::kOff;
  CompressionType compression_type = CompressionType::kZlib;
  std::string backing_file;
  std::string backing_format;
  std::string data_file;
  bool data_file_raw = false;
  std::optional<EncryptCreateOptions> encrypt;  // a LUKS-encrypted qcow2 image
  // fdatasync the new file(s) before returning. False only where the caller then writes the image
  // with cache=unsafe, so nothing it writes is made durable either (convert's default, as in
  // qemu-img, which does not sync a raw target it creates).
  bool durable = true;
  FileOpener file_opener;  // for tests
};

// Creates a new image (overwriting any file at path). Validates the options first.
Status create_image(const std::string& path, const CreateOptions& opts);

}  // namespace keel
