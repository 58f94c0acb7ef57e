// Opening a qcow2 image: header, L1 and refcount tables, snapshots, backing and data files;
// and the image's life cycle (info, close).
#include <fmt/format.h>
#include <stdlib.h>

#include "engine/cache_options.h"
#include "engine/qcow2_image.h"
#include "keel/check.h"
#include "format/endian.h"
#include "keel/limits.h"

namespace keel {

using namespace format;

std::string resolve_relative(const std::string& image_path, const std::string& name) {
  if (name.empty() || name[0] == '/' || name.find("://") != std::string::npos ||
      name.rfind("json:", 0) == 0)
    return name;
  auto slash = image_path.rfind('/');
  if (slash == std::string::npos) return name;
  return image_path.substr(0, slash + 1) + name;
}

namespace {

std::string canonical(const std::string& path) {
  char* real = ::realpath(path.c_str(), nullptr);
  std::string key = real ? real : path;
  std::free(real);
  return key;
}

Status check_backing_loop(const OpenChain& chain, const std::string& path) {
  std::string key = canonical(path);
  for (const auto& p : chain)
    if (p == key) return invalid(fmt::format("backing file loop: '{}' appears twice in its own backing chain", path));
  return Status::ok();
}
}  // namespace

Result<std::unique_ptr<Image>> open_qcow2_image(std::unique_ptr<BlockFile> file, const std::string& path,
                                                const OpenOptions& opts, OpenChain& chain) {
  int depth = static_cast<int>(chain.size()) + 1;  // 1 = the top image
  int max_depth = opts.max_backing_depth ? opts.max_backing_depth : limits::kMaxBackingDepth;
  if (depth > max_depth)
    return error(invalid(fmt::format("backing chain of '{}' is deeper than {} (a loop?)", path, max_depth)));
  KEEL_TRY_R(check_backing_loop(chain, path));
  chain.push_back(canonical(path));
  struct Pop {
    OpenChain& chain;
    ~Pop() { chain.pop_back(); }
  } pop{chain};
  auto img = std::make_unique<Qcow2Image>();
  img->path_ = path;
  img->file_ = std::move(file);
  img->observer_ = opts.observer;
  img->read_only_ = opts.read_only;
  img->writethrough_ = opts.cache == CacheMode::kWritethrough || opts.cache == CacheMode::kDirectsync;
  img->direct_io_ = opts.cache == CacheMode::kNone || opts.cache == CacheMode::kDirectsync;
  {
    // Nobody else sees the image yet; the lock is taken for the analysis' sake.
    MutexLock lk(img->mu_);
    if (depth == 1) {  // the top image (Image::open); backing files are only read
      OverlapCheck oc = OverlapCheck::defaults();
      for (const auto& kv : opts.qcow2_options)
        if (!is_cache_option(kv.first)) KEEL_TRY_R(oc.apply(kv.first, kv.second));
      img->overlap_mask_ = oc.mask;
      img->on_corruption_ = opts.on_corruption;
    }
    KEEL_TRY_R(img->open_tables(opts, chain).with_context(fmt::format("Could not open '{}'", path)));
    if (!img->read_only_) KEEL_TRY_R(img->rebuild_metadata_map());
  }
  img->closed_ = false;
  img->start_cleaner();
  return std::unique_ptr<Image>(std::move(img));
}

Status Qcow2Image::open_tables(const OpenOptions& opts, OpenChain& chain) {
  KEEL_ASSIGN(uint64_t file_size, file_->size());
  uint8_t start[512] = {};
  KEEL_TRY(file_->read_at(0, start));
  KEEL_ASSIGN(uint32_t bits, peek_cluster_bits(start));
  std::vector<uint8_t> c0(1ull << bits);
  KEEL_TRY(file_->read_at(0, c0));
  KEEL_ASSIGN(header_, decode_header(c0, file_size, opts.check_mode));
  // An image marked corrupt opens read-only only (QEMU's rule and words); keel check -r all
  // clears the bit.
  if ((header_.incompatible & kIncompatCorrupt) && !read_only_ && !opts.check_mode)
    return Status(Code::kCorrupt, "qcow2: Image is corrupt; cannot be opened read/write", EACCES);
  if ((header_.incompatible & kIncompatDirty) && !read_only_ && !opts.check_mode) {
    // Lazy refcounts (QEMU) or an interrupted snapshot operation left refcounts that may not
    // match: repair before anything is allocated, as QEMU does on a read-write open.
    if (repaired_once_) return corrupt("image is still dirty after a repair");
    repaired_once_ = true;
    notify(Event::kRepair);
    CheckOptions co;
    co.repair = RepairMode::kAll;
    auto r = check_qcow2(*file_, co);
    if (!r) return r.error().with_context("Could not repair dirty image");
    return open_tables(opts, chain);
  }
  cbits_ = header_.cluster_bits;
  external_data_ = header_.has_data_file();
  encrypted_ = header_.crypt_method != kCryptNone;
  guest_iv_ = header_.crypt_method == kCryptAes;
  cs_ = header_.cluster_size();
  zero_from_ = file_size;
  {
    MutexLock g(grow_mu_);
    open_size_ = grown_to_ = file_size;
  }
  {
    // QEMU's cache options apply to the image they are given for, not to its backing files.
    const CacheDefaults dflt{opts.l2_cache_size ? opts.l2_cache_size : limits::kDefaultL2CacheBytes,
                             opts.refcount_cache_size ? opts.refcount_cache_size : limits::kDefaultRefcountCacheBytes,
                             limits::kDefaultCacheCleanSeconds};
    static const std::vector<std::pair<std::string, std::string>> kNone;
    KEEL_ASSIGN(CacheConfig cc, read_cache_options(chain.size() == 1 ? opts.qcow2_options : kNone, cs_, header_.size,
                                                   header_.extended_l2() ? 16 : 8, dflt));
    l2_cache_.reset(cs_, cc.l2_bytes);
    rb_cache_.reset(cs_, cc.refcount_bytes);
    clean_interval_s_ = cc.clean_interval_s;
  }
  ext_l2_ = header_.extended_l2();
  l2_words_ = ext_l2_ ? 2 : 1;
  l2_entries_ = header_.l2_entries();
  sc_size_ = cs_ / kSubclusters;
  rc_bits_ = header_.refcount_bits();
  rb_entries_ = cs_ * 8 / rc_bits_;
  size_ = header_.size;
  compression_ = header_.compression_type == 1 ? CompressionType::kZstd : CompressionType::kZlib;
  l1_offset_ = header_.l1_table_offset;

  // Refcount table.
  uint64_t rt_entries = uint64_t(header_.refcount_table_clusters) * cs_ / 8;
  std::vector<uint8_t> buf(rt_entries * 8);
  if (!buf.empty()) KEEL_TRY(file_->read_at(header_.refcount_table_offset, buf));
  reftable_.resize(rt_entries);
  for (uint64_t i = 0; i < rt_entries; ++i) {
    reftable_[i] = get_be64(&buf[i * 8]);
    uint64_t off = reftable_[i] & ~kReftableReserved;
    if (reftable_[i] & kReftableReserved)
      return corrupt(fmt::format("refcount table entry {} = {:#x} has reserved bits set", i, reftable_[i]));
    // An unaligned refcount block offset is QEMU's corruption event at the block's load (the
    // allocator), not an open error: the image opens and reads (which need no refcount) work.
    if (off >= file_size && off != 0 && !opts.check_mode)
      return corrupt(fmt::format("refcount table entry {} = {:#x} points past the end of the file", i, off));
  }

  KEEL_TRY(load_snapshot_table());
  KEEL_TRY(load_bitmap_directory(opts.check_mode));

  // The L1 table: the active one, or a snapshot's (read-only).
  uint64_t l1_size = header_.l1_size;
  if (!opts.snapshot.empty()) {
    const SnapshotEntry* s = nullptr;
    for (const auto& e : snapshots_)
      if (e.id == opts.snapshot) s = &e;
    if (!s)
      for (const auto& e : snapshots_)
        if (e.name == opts.snapshot) s = &e;
    if (!s) return Status(Code::kNotFound, fmt::format("Can't find snapshot '{}'", opts.snapshot), ENOENT);
    l1_offset_ = s->l1_table_offset;
    l1_size = s->l1_size;  // at most 4 Mi entries (decode_snapshot_table)
    if (s->disk_size > limits::kMaxVirtualSize)
      return corrupt(fmt::format("snapshot '{}' disk_size = {} is too large", opts.snapshot, s->disk_size));
    if (s->disk_size) size_ = s->disk_size;
    if (l1_offset_ > file_size || l1_size * 8 > file_size - l1_offset_)
      return corrupt(fmt::format("snapshot '{}' L1 table at {:#x} runs past the end of the file", opts.snapshot,
                                 l1_offset_));
    snapshot_name_ = opts.snapshot;
    read_only_ = true;
  }
  buf.assign(l1_size * 8, 0);
  if (!buf.empty()) KEEL_TRY(file_->read_at(l1_offset_, buf));
  l1_.resize(l1_size);
  for (uint64_t i = 0; i < l1_size; ++i) {
    l1_[i] = get_be64(&buf[i * 8]);
    uint64_t off = l1_[i] & kOffsetMask;
    if (off % cs_ != 0 || (l1_[i] & kL1Reserved & ~kCopied) != 0) {
      if (!opts.check_mode)
        return corrupt(fmt::format("L1 entry {} = {:#x} is misaligned or has reserved bits set", i, l1_[i]));
    }
  }
  // Start the free-cluster search after the fixed structures.
  free_hint_ = 0;

  KEEL_TRY(open_encryption(opts));
  if (!opts.no_backing) KEEL_TRY(open_backing(opts, chain));
  KEEL_TRY(open_data_file(opts));

  if (!read_only_) {
    if (header_.autoclear & ~kAutoclearKnown) autoclear_pending_ = true;
    if (stale_bitmaps_ext_) autoclear_pending_ = true;  // drop the stale bitmaps extension
  }
  return Status::ok();
}

Status Qcow2Image::load_snapshot_table() {
  if (header_.nb_snapshots == 0) return Status::ok();
  // Entries are variable length: read up to the limit or the end of the file.
  KEEL_ASSIGN(uint64_t file_size, file_->size());
  uint64_t want = std::min<uint64_t>(limits::kMaxSnapshotTableBytes, file_size - header_.snapshots_offset);
  std::vector<uint8_t> t(want);
  KEEL_TRY(file_->read_at(header_.snapshots_offset, t));
  uint64_t table_bytes = 0;
  KEEL_ASSIGN(snapshots_, decode_snapshot_table(t, header_.nb_snapshots, cs_, &table_bytes));
  snapshot_table_bytes_ = table_bytes;
  return Status::ok();
}

Status Qcow2Image::open_backing(const OpenOptions& opts, OpenChain& chain) {
  if (header_.backing_file.empty()) return Status::ok();
  std::string bpath = resolve_relative(path_, header_.backing_file);
  KEEL_TRY(check_backing_loop(chain, bpath));
  OpenOptions bo = opts;
  bo.read_only = true;
  bo.snapshot.clear();
  bo.check_mode = false;
  // encrypt.key-secret names this image's key; backing.encrypt.key-secret the backing file's.
  // (emplace, not assignment: GCC 12 warns maybe-uninitialized on the optional's assignment)
  bo.encrypt_secret.reset();
  if (!bo.backing_encrypt_secrets.empty()) {
    if (bo.backing_encrypt_secrets.front()) bo.encrypt_secret.emplace(*bo.backing_encrypt_secrets.front());
    bo.backing_encrypt_secrets.erase(bo.backing_encrypt_secrets.begin());
  }
  bo.format = header_.backing_format;
  if (bo.format != "qcow2" && bo.format != "raw") bo.format.clear();
  bo.max_backing_depth = opts.max_backing_depth;
  KEEL_ASSIGN(auto bfile, open_block_file(bpath, bo, file_options_for(bo)));
  KEEL_TRY(lock_image_file(*bfile, bo));
  std::string f = bo.format;
  if (f.empty()) {
    uint8_t magic[4] = {};
    KEEL_TRY(bfile->read_at(0, magic));
    f = is_qcow2(magic) ? "qcow2" : "raw";
  }
  if (f == "raw") {
    OpenOptions ro = bo;
    ro.format = "raw";
    extern Result<std::unique_ptr<Image>> open_raw_image(std::unique_ptr<BlockFile>, const std::string&,
                                                         const OpenOptions&);
    KEEL_ASSIGN(backing_, open_raw_image(std::move(bfile), bpath, ro));
  } else {
    auto r = open_qcow2_image(std::move(bfile), bpath, bo, chain);
    if (!r) return r.error();
    backing_ = std::move(*r);
  }
  return Status::ok();
}

Status Qcow2Image::open_data_file(const OpenOptions& opts) {
  if (!has_external_data()) {
    data_ = file_.get();
    return Status::ok();
  }
  if (header_.data_file.empty())
    return invalid("image has an external data file but no data file name (use a data-file option)");
  // QEMU opens a relative data file name relative to the working directory; if it is not
  // there, we also try next to the image.
  OpenOptions d = opts;
  d.snapshot.clear();
  auto df = open_block_file(header_.data_file, d, file_options_for(d));
  if (!df && df.error().code() == Code::kNotFound && header_.data_file[0] != '/')
    df = open_block_file(resolve_relative(path_, header_.data_file), d, file_options_for(d));
  if (!df) return df.error();
  data_file_owned_ = std::move(*df);
  data_ = data_file_owned_.get();
  return Status::ok();
}

ImageInfo Qcow2Image::info() {
  MutexLock lk(mu_);
  ImageInfo i;
  i.filename = path_;
  i.format = "qcow2";
  i.virtual_size = size_;
  i.actual_size = file_->allocated_bytes();  // the qcow2 file only, as qemu-img reports
  i.cluster_size = static_cast<uint32_t>(cs_);
  i.backing_filename = header_.backing_file;
  if (!header_.backing_file.empty()) i.full_backing_filename = resolve_relative(path_, header_.backing_file);
  i.backing_format = header_.backing_format;
  for (const auto& s : snapshots_) {
    SnapshotInfo si;
    si.id = s.id;
    si.name = s.name;
    si.vm_state_size = s.vm_state_size;
    si.date_sec = s.date_sec;
    si.date_nsec = s.date_nsec;
    si.vm_clock_nsec = s.vm_clock_nsec;
    si.icount = s.icount;
    si.disk_size = s.disk_size;
    i.snapshots.push_back(si);
  }
  i.dirty = header_.incompatible & kIncompatDirty;
  i.compat = header_.version >= 3 ? "1.1" : "0.10";
  i.compression_type = compression_ == CompressionType::kZstd ? "zstd" : "zlib";
  i.lazy_refcounts = header_.compatible & kCompatLazyRefcounts;
  i.refcount_bits = rc_bits_;
  i.corrupt = header_.incompatible & kIncompatCorrupt;
  i.extended_l2 = ext_l2_;
  i.data_file = header_.data_file;
  i.data_file_raw = header_.data_file_raw();
  for (const auto& e : bitmap_dir_) {
    BitmapInfo b;
    b.name = e.name;
    b.granularity = static_cast<uint32_t>(e.granularity());
    if (e.in_use()) b.flags.push_back("in-use");
    if (e.is_auto()) b.flags.push_back("auto");
    i.bitmaps.push_back(std::move(b));
  }
  i.encrypted = encrypted();
  if (header_.crypt_method == kCryptAes) {
    i.encrypt = ImageInfo::EncryptInfo{};
    i.encrypt->format = "aes";
  }
  if (luks_) {
    ImageInfo::EncryptInfo e;
    e.format = "luks";
    e.cipher_alg = luks_cipher_name(luks_->cipher);
    e.cipher_mode = luks_mode_name(luks_->mode);
    e.ivgen_alg = luks_ivgen_name(luks_->ivgen);
    if (luks_->ivgen == LuksIvgen::kEssiv) e.ivgen_hash_alg = luks_hash_name(luks_->ivgen_hash);
    e.hash_alg = luks_hash_name(luks_->hash);
    e.uuid = luks_->uuid;
    for (const auto& s : luks_->slots)
      e.slots.push_back({s.active, s.iterations, s.stripes, uint64_t(s.key_offset_sectors) * kLuksSectorSize});
    e.payload_offset = uint64_t(luks_->payload_offset_sectors) * kLuksSectorSize;
    e.master_key_iters = luks_->mk_digest_iterations;
    i.encrypt = std::move(e);
  }
  return i;
}

void Qcow2Image::start_cleaner() {
  if (clean_interval_s_ == 0) return;
  cleaner_ = std::thread([this] {
    std::unique_lock<std::mutex> l(cleaner_mu_);
    while (!cleaner_cv_.wait_for(l, std::chrono::seconds(clean_interval_s_), [&] { return cleaner_stop_; })) {
      l.unlock();
      {
        MutexLock lk(mu_);
        l2_cache_.drop_unused();
        rb_cache_.drop_unused();
      }
      l.lock();
    }
  });
}

void Qcow2Image::stop_cleaner() {
  if (!cleaner_.joinable()) return;
  {
    std::lock_guard<std::mutex> l(cleaner_mu_);
    cleaner_stop_ = true;
  }
  cleaner_cv_.notify_all();
  cleaner_.join();
}

Status Qcow2Image::close() {
  if (closed_) return Status::ok();
  stop_cleaner();
  Status s = Status::ok();
  if (!read_only_ && latched_) {
    // Nothing since the failure is durable: say so rather than report a clean close.
    MutexLock lk(mu_);
    s = latched_error(Code::kIo);
  } else if (!read_only_) {
    s = flush();
    if (s.is_ok()) s = store_bitmaps_at_close();  // tracked bitmaps: stored, in_use cleared
    MutexLock lk(mu_);
    if (s.is_ok() && freed_unsynced_) s = latch(file_->sync());
    freed_unsynced_ = false;
    // What grow_ahead added past the last cluster written is given back.
    MutexLock g(grow_mu_);
    const uint64_t used = std::max(open_size_, zero_from_);
    if (s.is_ok() && grown_to_ > used) {
      auto size = file_->size();
      if (size && *size > used) s = latch(file_->truncate(used));
    }
  }
  closed_ = true;
  if (backing_) {
    Status b = backing_->close();
    if (s.is_ok()) s = b;
  }
  return s;
}

Qcow2Image::~Qcow2Image() {
  if (!closed_) (void)close();
}

}  // namespace keel
