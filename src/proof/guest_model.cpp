// GuestModel (see guest_model.h).
#include "proof/guest_model.h"

#include <algorithm>
#include <sstream>

#include "proof/pattern.h"

namespace keel::proof {
namespace {
void add_unique(std::vector<uint32_t>& v, uint32_t x) {
  if (std::find(v.begin(), v.end(), x) == v.end()) v.push_back(x);
}
bool contains(const std::vector<uint32_t>& v, uint32_t x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}
}  // namespace

GuestModel::GuestModel(uint64_t capacity_bytes, uint64_t backing_sectors, uint64_t size_bytes)
    : sectors_(capacity_bytes / kGuestSector),
      backing_sectors_(backing_sectors),
      durable_size_(size_bytes ? size_bytes : capacity_bytes),
      outcome_size_(durable_size_) {
  for (uint64_t s = 0; s < sectors_.size(); ++s) {
    uint32_t v = s < backing_sectors_ ? kBackingVersion : kZeroVersion;
    sectors_[s].durable = {v};
    sectors_[s].outcome = {v};
  }
}

void GuestModel::issue(uint64_t first, uint64_t count, const std::vector<uint32_t>& outcome,
                       bool certain) {
  uint64_t end = std::min<uint64_t>(first + count, sectors_.size());
  for (uint64_t s = first; s < end; ++s) {
    Sector& sec = sectors_[s];
    for (uint32_t v : outcome) add_unique(sec.pending, v);
    if (certain) {
      sec.outcome = outcome;
    } else {
      for (uint32_t v : outcome) add_unique(sec.outcome, v);
    }
  }
}

void GuestModel::write(uint64_t first, uint64_t count, uint32_t version, bool certain) {
  issue(first, count, {version}, certain);
}

void GuestModel::discard(uint64_t first, uint64_t count, bool certain) {
  uint64_t end = std::min<uint64_t>(first + count, sectors_.size());
  for (uint64_t s = first; s < end; ++s) {
    std::vector<uint32_t> outcome = {kZeroVersion};
    if (s < backing_sectors_) outcome.push_back(kBackingVersion);
    issue(s, 1, outcome, certain);
  }
}

void GuestModel::flush() {
  durable_size_ = outcome_size_;
  pending_sizes_.clear();
  for (Sector& sec : sectors_) {
    if (sec.pending.empty() && sec.outcome == sec.durable) continue;
    sec.durable = sec.outcome;
    sec.pending.clear();
  }
}

void GuestModel::make_durable(uint64_t first, uint64_t count) {
  uint64_t end = std::min<uint64_t>(first + count, sectors_.size());
  for (uint64_t s = first; s < end; ++s) {
    sectors_[s].durable = sectors_[s].outcome;
    sectors_[s].pending.clear();
  }
}

void GuestModel::settle(uint64_t sector, uint32_t version) {
  Sector& sec = sectors_.at(sector);
  sec.durable = {version};
  sec.outcome = {version};
  sec.pending.clear();
}

bool GuestModel::allows(uint64_t sector, uint32_t version) const {
  const Sector& sec = sectors_.at(sector);
  return contains(sec.durable, version) || contains(sec.pending, version);
}

std::string GuestModel::describe(uint64_t sector) const {
  auto list = [](const std::vector<uint32_t>& v) {
    std::ostringstream o;
    o << "{";
    for (size_t i = 0; i < v.size(); ++i) {
      o << (i ? "," : "");
      if (v[i] == kZeroVersion) o << "zeros";
      else if (v[i] == kBackingVersion) o << "backing";
      else o << "v" << v[i];
    }
    o << "}";
    return o.str();
  };
  const Sector& sec = sectors_.at(sector);
  return "durable " + list(sec.durable) + " pending " + list(sec.pending);
}

uint64_t GuestModel::touched_sectors() const {
  uint64_t n = 0;
  for (uint64_t s = 0; s < sectors_.size(); ++s) {
    uint32_t start = s < backing_sectors_ ? kBackingVersion : kZeroVersion;
    n += !(sectors_[s].durable.size() == 1 && sectors_[s].durable[0] == start &&
           sectors_[s].pending.empty());
  }
  return n;
}

void GuestModel::resize(uint64_t bytes, bool certain) {
  if (bytes < outcome_size_) issue(bytes / kGuestSector, (outcome_size_ - bytes) / kGuestSector, {kZeroVersion}, certain);
  if (std::find(pending_sizes_.begin(), pending_sizes_.end(), bytes) == pending_sizes_.end()) pending_sizes_.push_back(bytes);
  if (certain) outcome_size_ = bytes;
}

bool GuestModel::size_allowed(uint64_t bytes) const {
  return bytes == durable_size_ || std::find(pending_sizes_.begin(), pending_sizes_.end(), bytes) != pending_sizes_.end();
}

std::string GuestModel::describe_sizes() const {
  std::ostringstream o;
  o << "durable " << durable_size_ << " pending {";
  for (size_t i = 0; i < pending_sizes_.size(); ++i) o << (i ? "," : "") << pending_sizes_[i];
  o << "}";
  return o.str();
}

void GuestModel::snapshot_create(const std::string& name, bool certain) {
  if (!certain) {
    // The snapshot captures what the operations before it left (they completed: the create
    // flushes first), so each sector's outcome.
    auto content = std::make_shared<GuestModel>(*this);
    content->snapshots_.clear();
    content->flush();
    snapshots_[name] = Snapshot{std::move(content), outcome_size_, false};
  } else if (auto it = snapshots_.find(name); it != snapshots_.end()) {
    it->second.must_exist = true;
  }
}

void GuestModel::snapshot_delete(const std::string& name, bool certain) {
  auto it = snapshots_.find(name);
  if (it == snapshots_.end()) return;
  if (certain) snapshots_.erase(it);
  else it->second.must_exist = false;
}

void GuestModel::snapshot_apply(const std::string& name, bool certain) {
  auto it = snapshots_.find(name);
  if (it == snapshots_.end()) return;
  const Snapshot& snap = it->second;
  resize(snap.size_bytes, certain);
  uint64_t n = std::min<uint64_t>(snap.size_bytes / kGuestSector, sectors_.size());
  for (uint64_t s = 0; s < n; ++s) issue(s, 1, snap.content->sectors_[s].durable, certain);
}

void GuestModel::commit(bool certain) {
  auto base = base_ ? std::make_shared<GuestModel>(*base_)
                    : std::make_shared<GuestModel>(backing_sectors_ * kGuestSector, backing_sectors_);
  // The commit writes what the disk shows; the workload flushes before it, so each sector's
  // outcome is its one content.
  for (uint64_t s = 0; s < base->sector_count() && s < sectors_.size(); ++s)
    base->issue(s, 1, sectors_[s].outcome, certain);
  if (certain) base->flush();
  base_ = std::move(base);
}

}  // namespace keel::proof
