// The guest-to-host mapping: the L1 table and the cached L2 tables (TableCache), lookups that
// validate every entry, L2 misses read without the metadata mutex (prefetch_l2), and L2 tables
// made writable (allocated, or copied when shared with a snapshot).
#include <fmt/format.h>

#include <algorithm>
#include <optional>

#include "engine/qcow2_image.h"
#include "format/endian.h"
#include "keel/limits.h"

namespace keel {

using namespace format;

Result<L2Ref> Qcow2Image::load_l2(uint64_t l2_offset) {
  if (L2Ref t = l2_cache_.find(l2_offset)) return t;
  notify(Event::kL2Load);
  auto t = std::make_shared<L2Table>();
  l2_cache_.recycle_into(t->words);
  t->words.resize(cs_ / 8);
  KEEL_TRY_R(file_->read_at(l2_offset, {reinterpret_cast<uint8_t*>(t->words.data()), cs_}));
  for (auto& w : t->words) w = get_be64(reinterpret_cast<const uint8_t*>(&w));
  if (auto it = l2_loading_.find(l2_offset); it != l2_loading_.end()) it->second = true;
  return l2_cache_.insert(l2_offset, std::move(t));
}

Status Qcow2Image::prefetch_l2(uint64_t gc) {
  const uint64_t l1i = gc / l2_entries_;
  if (l1i >= l1_.size()) return Status::ok();
  const uint64_t l2off = l1_[l1i] & kOffsetMask;
  if (l2off == 0 || l2off % cs_ != 0 || l2_cache_.contains(l2off)) return Status::ok();
  if (l2_loading_.count(l2off)) {
    l2_loading_cv_.wait(mu_, [&] {
      mu_.assert_held();
      return !l2_loading_.count(l2off);
    });
    return Status::ok();
  }
  l2_loading_[l2off] = false;
  auto t = std::make_shared<L2Table>();
  l2_cache_.recycle_into(t->words);
  mu_.unlock();
  t->words.resize(cs_ / 8);
  notify(Event::kL2Load);
  Status st = file_->read_at(l2off, {reinterpret_cast<uint8_t*>(t->words.data()), cs_});
  for (auto& w : t->words) w = get_be64(reinterpret_cast<const uint8_t*>(&w));
  mu_.lock();
  const bool raced = l2_loading_[l2off];
  l2_loading_.erase(l2off);
  l2_loading_cv_.notify_all();
  if (!st.is_ok()) return st;
  if (raced || l2_cache_.contains(l2off)) return Status::ok();
  if (l1i >= l1_.size() || (l1_[l1i] & kOffsetMask) != l2off) return Status::ok();
  l2_cache_.insert(l2off, std::move(t));
  return Status::ok();
}

Result<Mapping> Qcow2Image::lookup(uint64_t gc) {
  Mapping m;
  uint64_t l1i = gc / l2_entries_, l2i = gc % l2_entries_;
  if (l1i >= l1_.size()) return m;
  uint64_t l2off = l1_[l1i] & kOffsetMask;
  if (l2off == 0) return m;
  if (l2off % cs_ != 0)
    return error(mark_corrupt(fmt::format("L2 table offset {:#x} in L1 entry {} is not cluster aligned", l2off, l1i)));
  KEEL_ASSIGN(L2Ref t, load_l2(l2off));
  m.entry = t->words[l2i * l2_words_];
  if (ext_l2_) m.bitmap = t->words[l2i * 2 + 1];
  m.type = classify_l2(m.entry, ext_l2_);
  const uint64_t guest = gc * cs_;
  switch (m.type) {
    case ClusterType::kNormal:
    case ClusterType::kZeroAlloc:
      if (m.host() % cs_ != 0)
        return error(mark_corrupt(fmt::format("L2 entry {:#x} for guest offset {:#x} has a misaligned host offset",
                                              m.entry, guest)));
      if (m.type == ClusterType::kNormal && m.host() == 0 && !has_external_data())
        return error(mark_corrupt(fmt::format("L2 entry {:#x} for guest offset {:#x} points at the header",
                                              m.entry, guest)));
      if (has_external_data() && m.host() != guest && header_.data_file_raw())
        return error(mark_corrupt(fmt::format("L2 entry {:#x} for guest offset {:#x} does not match the raw data file",
                                              m.entry, guest)));
      break;
    case ClusterType::kCompressed:
      if (has_external_data())
        return error(mark_corrupt(fmt::format("compressed cluster at guest offset {:#x} in an image with a data file", guest)));
      if (ext_l2_ && m.bitmap != 0)
        return error(mark_corrupt(fmt::format("compressed cluster at guest offset {:#x} has a subcluster bitmap {:#x}",
                                              guest, m.bitmap)));
      break;
    default:
      break;
  }
  if (header_.version < 3 && m.type != ClusterType::kCompressed && (m.entry & kZeroFlag))
    return error(mark_corrupt(fmt::format("zero cluster entry at guest offset {:#x} in a version 2 image", guest)));
  if (ext_l2_ && m.type != ClusterType::kCompressed) {
    uint64_t alloc = m.bitmap & kAllAllocated, zero = m.bitmap >> 32;
    if (alloc & zero)
      return error(mark_corrupt(fmt::format("subcluster bitmap {:#x} at guest offset {:#x} is both allocated and zero",
                                            m.bitmap, guest)));
    if (alloc && m.type == ClusterType::kUnallocated)
      return error(mark_corrupt(fmt::format("subcluster bitmap {:#x} at guest offset {:#x} has no host cluster",
                                            m.bitmap, guest)));
  }
  return m;
}

Result<L2Ref> Qcow2Image::writable_l2(uint64_t gc) {
  uint64_t l1i = gc / l2_entries_;
  if (l1i >= l1_.size()) return error(invalid(fmt::format("guest cluster {} is beyond the L1 table", gc)));
  uint64_t e = l1_[l1i];
  uint64_t off = e & kOffsetMask;
  if (off && (e & kCopied)) return load_l2(off);
  KEEL_ASSIGN(uint64_t noff, alloc_clusters(1, "L2 table"));
  auto t = std::make_shared<L2Table>();
  meta_map_.add(MetaKind::kActiveL2, noff, cs_);
  if (off) {
    meta_map_.remove(MetaKind::kActiveL2, off, cs_);
    KEEL_ASSIGN(L2Ref old, load_l2(off));
    t->words = old->words;  // copy-on-write of a shared table: references stay counted
    defer_free(off);
  } else {
    l2_cache_.recycle_into(t->words);
    t->words.assign(cs_ / 8, 0);
  }
  t->fresh = true;
  if (auto it = l2_loading_.find(noff); it != l2_loading_.end()) it->second = true;
  L2Ref p = l2_cache_.insert(noff, std::move(t));
  l2_cache_.mark_all_dirty(*p);
  p->fresh = true;
  l1_[l1i] = noff | kCopied;
  l1_dirty_.insert(l1i);
  return p;
}

void Qcow2Image::set_l2(L2Table* t, uint64_t gc, uint64_t entry, uint64_t bitmap) {
  uint64_t l2i = gc % l2_entries_;
  t->words[l2i * l2_words_] = entry;
  if (ext_l2_) t->words[l2i * 2 + 1] = bitmap;
  l2_cache_.mark_dirty(*t, l2i * l2_words_ * 8, l2_words_ * 8);
}

}  // namespace keel
