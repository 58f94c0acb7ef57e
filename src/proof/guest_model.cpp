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

GuestModel::GuestModel(uint64_t size_bytes, uint64_t backing_sectors)
    : sectors_(size_bytes / kGuestSector), backing_sectors_(backing_sectors) {
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

}  // namespace keel::proof
