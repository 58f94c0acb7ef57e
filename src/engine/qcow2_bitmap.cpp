// Persistent dirty bitmaps of a qcow2 image: the directory at open, the bitmap operations (add,
// remove, clear, enable, disable, merge, read), tracking guest writes in auto bitmaps, storing
// them at close, and keeping them right across resize and snapshot apply.
//
// Crash safety. A change never overwrites live bitmap data: data clusters, tables and the
// directory go to freshly allocated clusters, the refcounts are written, everything is synced,
// and then the header's bitmaps extension switches to the new directory (qcow2_header_switch.cpp:
// normally one write inside one sector), synced; only then are the old clusters freed. A power
// cut before the switch leaks the new clusters, after it the old ones; the bitmaps read back are
// the old set or the new one. Enable and disable only flip the auto bit:
// a 4-byte write inside one sector of the directory.
// Tracking follows QEMU's in_use protocol: before the first guest write the auto bitmaps' in_use
// flags are set in place and synced; the bits then live in memory; close() stores them as above
// with in_use cleared. A power cut in between leaves them in_use: inconsistent, reported as
// "in-use", never trusted, only removable. So once in_use is clear the bits cover every write.
#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "engine/qcow2_image.h"
#include "format/endian.h"
#include "keel/limits.h"

namespace keel {

using namespace format;

namespace {

uint64_t div_up(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

void set_bit_range(std::vector<uint8_t>& bits, uint64_t first, uint64_t last) {
  for (uint64_t i = first; i <= last;) {
    if (i % 8 == 0 && last - i >= 7) {
      bits[i / 8] = 0xff;
      i += 8;
    } else {
      bits[i / 8] |= static_cast<uint8_t>(1u << (i % 8));
      ++i;
    }
  }
}

// Clears the bits past `bit_count` (the spec requires the tail of the data to be zero).
void clear_tail(std::vector<uint8_t>& bits, uint64_t bit_count) {
  for (uint64_t i = bit_count; i < bits.size() * 8; ++i) bits[i / 8] &= static_cast<uint8_t>(~(1u << (i % 8)));
}

Status inconsistent(const std::string& name) {
  return Status(Code::kInvalidArgument, fmt::format("Bitmap '{}' is inconsistent and cannot be used", name), EINVAL);
}

}  // namespace

BitmapGeometry Qcow2Image::bitmap_geometry() {
  auto fs = file_->size();
  return BitmapGeometry{cs_, size_, fs ? *fs : 0};
}

// --- open --------------------------------------------------------------------------------

Status Qcow2Image::load_bitmap_directory(bool check_mode) {
  bitmap_dir_.clear();
  if (!header_.bitmaps) return Status::ok();
  if (!(header_.autoclear & kAutoclearBitmaps)) {
    // A program without bitmap support wrote the image since: the bitmaps are stale (QEMU warns,
    // ignores them and drops the extension when it writes; their clusters are leaks).
    stale_bitmaps_ext_ = true;
    return Status::ok();
  }
  const BitmapsExtension& ext = *header_.bitmaps;
  const BitmapGeometry g = bitmap_geometry();
  if (ext.directory_offset == 0 || ext.directory_offset + ext.directory_size > g.file_size) {
    if (check_mode) return Status::ok();
    return corrupt(fmt::format("bitmaps extension: bitmap_directory_offset = {:#x} (directory of {} bytes not inside "
                               "the file)", ext.directory_offset, ext.directory_size));
  }
  std::vector<uint8_t> dir(ext.directory_size);
  KEEL_TRY(file_->read_at(ext.directory_offset, dir));
  auto entries = decode_bitmap_directory(dir, ext.nb_bitmaps, g);
  if (!entries) return check_mode ? Status::ok() : entries.error();
  // Like QEMU, which loads every bitmap not in use when it opens an image, refuse bad tables now.
  for (const auto& e : *entries) {
    if (e.in_use() || check_mode) continue;
    std::vector<uint8_t> t(uint64_t(e.table_size) * 8);
    KEEL_TRY(file_->read_at(e.table_offset, t));
    auto table = decode_bitmap_table(t, e, g);
    if (!table) return table.error();
  }
  bitmap_dir_ = std::move(*entries);
  refresh_bitmap_state();
  return Status::ok();
}

void Qcow2Image::refresh_bitmap_state() {
  bool any = tracking_;
  for (const auto& e : bitmap_dir_) any |= e.is_auto() && !e.in_use();
  track_writes_.store(any, std::memory_order_release);
}

Result<std::vector<uint8_t>> Qcow2Image::read_bitmap_bits(const BitmapDirEntry& e) {
  const BitmapGeometry g = bitmap_geometry();
  std::vector<uint8_t> raw(uint64_t(e.table_size) * 8);
  KEEL_TRY_R(file_->read_at(e.table_offset, raw));
  KEEL_ASSIGN(auto table, decode_bitmap_table(raw, e, g));
  const uint64_t nbytes = bitmap_data_bytes(size_, e.granularity_bits);
  if (table.size() != div_up(nbytes, cs_))
    return error(corrupt(fmt::format("bitmap '{}': bitmap_table_size = {} but the data needs {} clusters", e.name,
                                     table.size(), div_up(nbytes, cs_))));
  std::vector<uint8_t> bits(nbytes, 0);
  for (uint64_t k = 0; k < table.size(); ++k) {
    const uint64_t start = k * cs_, n = std::min(cs_, nbytes - start);
    const uint64_t off = table[k] & kBitmapTableOffsetMask;
    if (off) KEEL_TRY_R(file_->read_at(off, std::span<uint8_t>(bits).subspan(start, n)));
    else if (table[k] & kBitmapTableAllOnes) std::memset(bits.data() + start, 0xff, n);
  }
  clear_tail(bits, bitmap_bit_count(size_, e.granularity_bits));
  return bits;
}

// --- publishing ----------------------------------------------------------------------------

// Writes the changed bitmaps' data and tables and a new directory to fresh clusters, switches the
// header to them and frees what the old directory referenced and the new one does not.
// new_bits[i] (when not null) replaces the data of next[i]; the other entries keep their tables.
Status Qcow2Image::publish_bitmaps(std::vector<BitmapDirEntry> next,
                                   const std::vector<const std::vector<uint8_t>*>& new_bits) {
  if (latched_) return latched_error();
  if (header_.version < 3) return unsupported("Cannot store dirty bitmaps in qcow2 v2 files");
  // Check that the new directory and header fit before allocating anything.
  std::vector<uint8_t> dir = encode_bitmap_directory(next);
  if (dir.size() > limits::kMaxBitmapDirectoryBytes) return invalid("Not enough space in the bitmap directory");
  {
    Header probe = header_;
    probe.bitmaps.reset();
    if (!next.empty()) probe.bitmaps = BitmapsExtension{static_cast<uint32_t>(next.size()), dir.size(), cs_};
    auto fits = encode_header(probe);
    if (!fits) return fits.error();
  }
  // From the first allocation on, a failure (a read error included) leaves clusters counted in
  // memory that no directory references, or after the switch old ones not yet freed. Latch:
  // later writes would make that leak permanent, past the epoch a power cut here would leave it
  // in (integrity contract G2, G6).
  Status s = write_and_switch_bitmaps(std::move(next), new_bits);
  if (!s.is_ok()) (void)latch(s);
  return s;
}

Status Qcow2Image::write_and_switch_bitmaps(std::vector<BitmapDirEntry> next,
                                            const std::vector<const std::vector<uint8_t>*>& new_bits) {
  bool announced = false;
  auto announce = [&] {
    if (!announced) notify(Event::kBitmapWrite);
    announced = true;
  };
  for (size_t i = 0; i < next.size(); ++i) {
    if (!new_bits[i]) continue;
    BitmapDirEntry& e = next[i];
    const std::vector<uint8_t>& bits = *new_bits[i];
    const uint64_t entries = bitmap_table_entries(size_, e.granularity_bits, cs_);
    if (bits.size() != bitmap_data_bytes(size_, e.granularity_bits))
      return invalid(fmt::format("bitmap '{}': {} bytes of data for a bitmap of {}", e.name, bits.size(),
                                 bitmap_data_bytes(size_, e.granularity_bits)));
    std::vector<uint64_t> table(entries, 0);
    std::vector<uint8_t> cluster(cs_);
    for (uint64_t k = 0; k < entries; ++k) {
      const uint64_t start = k * cs_, n = std::min(cs_, bits.size() - start);
      const uint8_t* p = bits.data() + start;
      if (std::all_of(p, p + n, [](uint8_t b) { return b == 0; })) continue;  // reads as zeros
      std::memset(cluster.data(), 0, cs_);
      std::memcpy(cluster.data(), p, n);
      KEEL_ASSIGN(table[k], alloc_clusters(1));
      announce();
      KEEL_TRY(metadata_write(table[k], cluster, "bitmap_data"));
    }
    std::vector<uint8_t> tb = encode_bitmap_table(table);
    tb.resize(div_up(tb.size(), cs_) * cs_, 0);
    KEEL_ASSIGN(e.table_offset, alloc_clusters(tb.size() / cs_));
    e.table_size = static_cast<uint32_t>(entries);
    announce();
    KEEL_TRY(metadata_write(e.table_offset, tb, "bitmap_table"));
  }
  std::optional<BitmapsExtension> ext;
  if (!next.empty()) {
    std::vector<uint8_t> dir = encode_bitmap_directory(next);
    const uint64_t dir_bytes = dir.size();
    dir.resize(div_up(dir.size(), cs_) * cs_, 0);
    KEEL_ASSIGN(uint64_t dir_off, alloc_clusters(dir.size() / cs_));
    announce();
    KEEL_TRY(metadata_write(dir_off, dir, "bitmap_directory"));
    ext = BitmapsExtension{static_cast<uint32_t>(next.size()), dir_bytes, dir_off};
  }
  // The new structures and their refcounts are durable before anything points at them.
  KEEL_TRY(write_dirty_refblocks());
  KEEL_TRY(latch(file_->sync()));
  const std::optional<BitmapsExtension> old_ext = header_.bitmaps;
  const bool old_trusted = !stale_bitmaps_ext_;
  std::vector<BitmapDirEntry> old = bitmap_dir_;
  KEEL_TRY(switch_bitmaps_extension(ext));
  bitmap_dir_ = std::move(next);
  stale_bitmaps_ext_ = false;
  refresh_bitmap_state();
  // The switch is durable: what only the old directory referenced can go.
  if (old_ext && old_trusted) {
    for (uint64_t c = 0; c < div_up(old_ext->directory_size, cs_); ++c)
      KEEL_TRY(change_refcount(old_ext->directory_offset / cs_ + c, -1));
    for (const auto& e : old) {
      bool kept = std::any_of(bitmap_dir_.begin(), bitmap_dir_.end(),
                              [&](const BitmapDirEntry& n) { return n.table_offset == e.table_offset; });
      if (!kept) KEEL_TRY(free_bitmap_clusters(e));
    }
  }
  return rebuild_metadata_map();  // the bitmap directory and tables moved
}

// Drops the references of a bitmap no directory points at any more. A table that does not
// validate is left alone: its clusters leak (keel check -r reclaims them) rather than risk
// decrementing clusters that belong to something else.
Status Qcow2Image::free_bitmap_clusters(const BitmapDirEntry& e) {
  std::vector<uint8_t> raw(uint64_t(e.table_size) * 8);
  KEEL_TRY(file_->read_at(e.table_offset, raw));
  auto table = decode_bitmap_table(raw, e, bitmap_geometry());
  if (!table) return Status::ok();
  for (uint64_t v : *table)
    if (v & kBitmapTableOffsetMask) KEEL_TRY(change_refcount((v & kBitmapTableOffsetMask) / cs_, -1));
  for (uint64_t c = 0; c < div_up(raw.size(), cs_); ++c) KEEL_TRY(change_refcount(e.table_offset / cs_ + c, -1));
  return Status::ok();
}

// Rewrites only the flags words that differ between the on-disk directory and `next` (same
// entries otherwise), in place: each is 4 bytes inside one sector, so a power cut leaves every
// entry with its old or its new flags. Synced.
Status Qcow2Image::write_bitmap_flags(const std::vector<BitmapDirEntry>& next) {
  if (latched_) return latched_error();
  uint64_t pos = header_.bitmaps->directory_offset;
  bool any = false;
  for (size_t i = 0; i < next.size(); ++i) {
    if (next[i].flags != bitmap_dir_[i].flags) {
      if (!any) notify(Event::kBitmapFlags);
      any = true;
      uint8_t b[4];
      put_be32(b, next[i].flags);
      KEEL_TRY(metadata_write(pos + 12, b, "bitmap_directory"));
    }
    pos += bitmap_entry_bytes(bitmap_dir_[i].name.size());
  }
  if (any) KEEL_TRY(latch(file_->sync()));
  bitmap_dir_ = next;
  refresh_bitmap_state();
  return Status::ok();
}

Status Qcow2Image::drop_stale_bitmaps_extension() {
  // REQUIRES mu_. The stale directory's clusters are leaks (QEMU leaves them too).
  KEEL_TRY(switch_bitmaps_extension(std::nullopt));
  stale_bitmaps_ext_ = false;
  return Status::ok();
}

// --- tracking guest writes ---------------------------------------------------------------------

Status Qcow2Image::start_tracking() {
  return start_tracking_bitmaps(false);
}

Status Qcow2Image::start_tracking_bitmaps(bool all) {
  if (latched_) return latched_error();
  std::vector<TrackedBitmap> t;
  std::vector<BitmapDirEntry> next = bitmap_dir_;
  for (size_t i = 0; i < next.size(); ++i) {
    BitmapDirEntry& e = next[i];
    if (e.in_use() || !(all || e.is_auto())) continue;
    KEEL_ASSIGN(auto bits, read_bitmap_bits(e));
    t.push_back(TrackedBitmap{i, e.granularity_bits, e.flags, std::move(bits)});
    e.flags |= kBitmapInUse;
  }
  if (t.empty()) {
    refresh_bitmap_state();
    return Status::ok();
  }
  KEEL_TRY(write_bitmap_flags(next));
  {
    MutexLock b(bm_mu_);
    tracked_ = std::move(t);
  }
  tracking_ = true;
  refresh_bitmap_state();
  return Status::ok();
}

Status Qcow2Image::note_guest_write(uint64_t offset, uint64_t length) {
  if (length == 0 || !track_writes_.load(std::memory_order_acquire)) return Status::ok();
  {
    MutexLock lk(mu_);
    if (!tracking_) KEEL_TRY(start_tracking());
    if (!tracking_) return Status::ok();
  }
  MutexLock b(bm_mu_);
  for (auto& t : tracked_) set_bit_range(t.bits, offset >> t.granularity_bits, (offset + length - 1) >> t.granularity_bits);
  return Status::ok();
}

Status Qcow2Image::stop_tracking() {
  if (!tracking_) return Status::ok();
  std::vector<TrackedBitmap> t;
  {
    MutexLock b(bm_mu_);
    t.swap(tracked_);
  }
  tracking_ = false;
  refresh_bitmap_state();
  if (latched_) return latched_error();
  if (header_.version < 3) {  // amended to v2 meanwhile: v2 images cannot keep bitmaps
    bitmap_dir_.clear();
    refresh_bitmap_state();
    return Status::ok();
  }
  std::vector<BitmapDirEntry> next = bitmap_dir_;
  std::vector<const std::vector<uint8_t>*> bits(next.size(), nullptr);
  for (auto& x : t) {
    next[x.index].flags = x.flags;  // as before tracking: in_use clear
    bits[x.index] = &x.bits;
  }
  return publish_bitmaps(std::move(next), bits);
}

Status Qcow2Image::store_bitmaps_at_close() {
  std::lock_guard<std::mutex> fl(flush_mu_);
  ExclusiveGate g(gate_);
  ExclusiveGate dg(data_gate_);
  MutexLock lk(mu_);
  if (!tracking_) return Status::ok();
  KEEL_TRY(stop_tracking());
  return flush_metadata();
}

// Resize: every consistent bitmap is marked in use for the duration (QEMU accepts an in-use
// bitmap whose table does not match the size), then stored at the new size: bits past the old
// end are clean, bits past the new end dropped.
Status Qcow2Image::bitmaps_before_resize() {
  KEEL_TRY(stop_tracking());
  return start_tracking_bitmaps(true);
}

Status Qcow2Image::bitmaps_after_resize(uint64_t new_size) {
  if (!tracking_) return Status::ok();
  {
    MutexLock b(bm_mu_);
    for (auto& t : tracked_) {
      t.bits.resize(bitmap_data_bytes(new_size, t.granularity_bits), 0);
      clear_tail(t.bits, bitmap_bit_count(new_size, t.granularity_bits));
    }
  }
  return stop_tracking();
}

// Snapshot apply replaces the whole disk: every enabled bitmap becomes all dirty, stored before
// the disk changes.
Status Qcow2Image::bitmaps_before_apply() {
  KEEL_TRY(stop_tracking());
  std::vector<std::vector<uint8_t>> all;
  std::vector<const std::vector<uint8_t>*> bits(bitmap_dir_.size(), nullptr);
  all.reserve(bitmap_dir_.size());
  for (size_t i = 0; i < bitmap_dir_.size(); ++i) {
    const BitmapDirEntry& e = bitmap_dir_[i];
    if (e.in_use() || !e.is_auto()) continue;
    all.emplace_back(bitmap_data_bytes(size_, e.granularity_bits), 0xff);
    clear_tail(all.back(), bitmap_bit_count(size_, e.granularity_bits));
    bits[i] = &all.back();
  }
  if (all.empty()) return Status::ok();
  return publish_bitmaps(bitmap_dir_, bits);
}

// --- the operations ----------------------------------------------------------------------------

Result<size_t> Qcow2Image::find_bitmap(const std::string& name, bool need_consistent) {
  for (size_t i = 0; i < bitmap_dir_.size(); ++i) {
    if (bitmap_dir_[i].name != name) continue;
    if (need_consistent && bitmap_dir_[i].in_use()) return error(inconsistent(name));
    return i;
  }
  return error(Status(Code::kNotFound, fmt::format("Dirty bitmap '{}' not found", name), ENOENT));
}

// The start of every change: written metadata flushed, tracked bitmaps stored.
// REQUIRES flush_mu_, gate_ exclusive, mu_.
Status Qcow2Image::begin_bitmap_change() {
  if (read_only_) return Status(Code::kReadOnly, "image is opened read-only", EPERM);
  KEEL_TRY(flush_metadata());
  return stop_tracking();
}

#define KEEL_BITMAP_LOCKS                       \
  std::lock_guard<std::mutex> fl(flush_mu_);    \
  ExclusiveGate gate_lock(gate_);               \
  ExclusiveGate data_gate_lock(data_gate_);     \
  MutexLock lk(mu_);          \
  KEEL_TRY(begin_bitmap_change())

Status Qcow2Image::bitmap_add(const std::string& name, uint32_t granularity, bool disabled) {
  if (read_only_) return Status(Code::kReadOnly, "image is opened read-only", EPERM);
  if (name.empty()) return invalid("Bitmap name cannot be empty");
  if (granularity == 0) {
    granularity = static_cast<uint32_t>(std::clamp<uint64_t>(cs_, limits::kMinDefaultBitmapGranularity,
                                                             limits::kMaxDefaultBitmapGranularity));
  } else if (granularity < (1u << limits::kMinBitmapGranularityBits) || (granularity & (granularity - 1)) != 0) {
    return invalid("Granularity must be power of 2 and at least 512");
  }
  KEEL_BITMAP_LOCKS;
  auto refuse = [&](Code code, const std::string& why) {
    return Status(code, fmt::format("Can't make bitmap '{}' persistent in '{}': {}", name, path_, why),
                  code == Code::kUnsupported ? ENOTSUP : EINVAL);
  };
  if (header_.version < 3) return refuse(Code::kUnsupported, "Cannot store dirty bitmaps in qcow2 v2 files");
  const uint32_t gbits = static_cast<uint32_t>(__builtin_ctz(granularity));
  const uint64_t bytes = div_up(div_up(size_, granularity), 8);
  if (bytes > limits::kMaxBitmapPhysBytes || bytes > limits::kMaxBitmapTableEntries * cs_)
    return refuse(Code::kInvalidArgument, "Too much space will be occupied by the bitmap. Use larger granularity");
  if (name.size() > limits::kMaxBitmapNameSize)
    return refuse(Code::kInvalidArgument,
                  fmt::format("Name length exceeds maximum ({} characters)", limits::kMaxBitmapNameSize));
  if (bitmap_dir_.size() + 1 > limits::kMaxBitmaps)
    return refuse(Code::kInvalidArgument, "Maximum number of persistent bitmaps is already reached");
  uint64_t dir_bytes = bitmap_entry_bytes(name.size());
  for (const auto& e : bitmap_dir_) dir_bytes += bitmap_entry_bytes(e.name.size());
  if (dir_bytes > limits::kMaxBitmapDirectoryBytes)
    return refuse(Code::kInvalidArgument, "Not enough space in the bitmap directory");
  for (const auto& e : bitmap_dir_)
    if (e.name == name) return invalid("Bitmap already exists: " + name);
  std::vector<BitmapDirEntry> next = bitmap_dir_;
  BitmapDirEntry e;
  e.name = name;
  e.granularity_bits = static_cast<uint8_t>(gbits);
  e.flags = disabled ? 0 : kBitmapAuto;
  next.push_back(e);
  std::vector<uint8_t> zeros(bitmap_data_bytes(size_, gbits), 0);
  std::vector<const std::vector<uint8_t>*> bits(next.size(), nullptr);
  bits.back() = &zeros;
  KEEL_TRY(publish_bitmaps(std::move(next), bits));
  return flush_metadata();
}

Status Qcow2Image::bitmap_remove(const std::string& name) {
  KEEL_BITMAP_LOCKS;
  KEEL_ASSIGN(size_t i, find_bitmap(name, false));
  std::vector<BitmapDirEntry> next = bitmap_dir_;
  next.erase(next.begin() + static_cast<std::ptrdiff_t>(i));
  KEEL_TRY(publish_bitmaps(std::move(next), std::vector<const std::vector<uint8_t>*>(bitmap_dir_.size() - 1, nullptr)));
  return flush_metadata();
}

Status Qcow2Image::bitmap_clear(const std::string& name) {
  KEEL_BITMAP_LOCKS;
  KEEL_ASSIGN(size_t i, find_bitmap(name, true));
  std::vector<uint8_t> zeros(bitmap_data_bytes(size_, bitmap_dir_[i].granularity_bits), 0);
  std::vector<const std::vector<uint8_t>*> bits(bitmap_dir_.size(), nullptr);
  bits[i] = &zeros;
  KEEL_TRY(publish_bitmaps(bitmap_dir_, bits));
  return flush_metadata();
}

Status Qcow2Image::bitmap_enable(const std::string& name) {
  KEEL_BITMAP_LOCKS;
  KEEL_ASSIGN(size_t i, find_bitmap(name, true));
  std::vector<BitmapDirEntry> next = bitmap_dir_;
  next[i].flags |= kBitmapAuto;
  return write_bitmap_flags(next);
}

Status Qcow2Image::bitmap_disable(const std::string& name) {
  KEEL_BITMAP_LOCKS;
  KEEL_ASSIGN(size_t i, find_bitmap(name, true));
  std::vector<BitmapDirEntry> next = bitmap_dir_;
  next[i].flags &= ~kBitmapAuto;
  return write_bitmap_flags(next);
}

Status Qcow2Image::bitmap_merge(const std::string& target, const BitmapData& src) {
  KEEL_BITMAP_LOCKS;
  KEEL_ASSIGN(size_t i, find_bitmap(target, true));
  if (src.virtual_size != size_)
    return invalid(fmt::format("Bitmaps are of different sizes (destination size is {}, source size is {}) and "
                               "can't be merged", size_, src.virtual_size));
  if (src.granularity == 0 || (src.granularity & (src.granularity - 1)) != 0 ||
      src.bits.size() < div_up(src.bit_count(), 8))
    return invalid(fmt::format("source bitmap of granularity {} with {} bytes is malformed", src.granularity,
                               src.bits.size()));
  const BitmapDirEntry& e = bitmap_dir_[i];
  KEEL_ASSIGN(auto bits, read_bitmap_bits(e));
  if (src.granularity == e.granularity()) {
    for (size_t k = 0; k < bits.size() && k < src.bits.size(); ++k) bits[k] |= src.bits[k];
  } else {
    // Each dirty source bit dirties every target bit its byte range touches.
    for (uint64_t s = 0; s < src.bit_count(); ++s) {
      if (src.bits[s / 8] == 0) {
        s |= 7;
        continue;
      }
      if (!src.test(s)) continue;
      const uint64_t start = s * src.granularity, end = std::min<uint64_t>(start + src.granularity, size_);
      set_bit_range(bits, start >> e.granularity_bits, (end - 1) >> e.granularity_bits);
    }
  }
  clear_tail(bits, bitmap_bit_count(size_, e.granularity_bits));
  std::vector<const std::vector<uint8_t>*> ptrs(bitmap_dir_.size(), nullptr);
  ptrs[i] = &bits;
  KEEL_TRY(publish_bitmaps(bitmap_dir_, ptrs));
  return flush_metadata();
}

Result<BitmapData> Qcow2Image::bitmap_read(const std::string& name) {
  MutexLock lk(mu_);
  BitmapData d;
  d.virtual_size = size_;
  for (size_t i = 0; i < bitmap_dir_.size(); ++i) {
    if (bitmap_dir_[i].name != name) continue;
    d.granularity = static_cast<uint32_t>(bitmap_dir_[i].granularity());
    MutexLock b(bm_mu_);
    for (const auto& t : tracked_) {
      if (t.index != i) continue;
      d.bits = t.bits;
      return d;
    }
  }
  KEEL_ASSIGN(size_t i, find_bitmap(name, true));
  KEEL_ASSIGN(d.bits, read_bitmap_bits(bitmap_dir_[i]));
  return d;
}

#undef KEEL_BITMAP_LOCKS

}  // namespace keel
