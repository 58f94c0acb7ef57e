// qemu-img amend -o encrypt.*: adding and erasing key slots of a LUKS-encrypted qcow2 image.
// The rules, the new entries and the write order are crypto/luks_keyslot.h's; this file does the
// I/O on the LUKS region (header_.crypto_offset, in the image file, never in a data file) under
// the exclusive gates, each step synced before the next:
//   activate: [force over an active slot: erase its entry first] key material; header sectors.
//   erase:    header sectors (the active word first); random bytes over the key material.
// Nothing else of the image changes: the qcow2 header, tables and data are untouched.
#include <fmt/format.h>

#include <cstring>
#include <mutex>

#include "crypto/luks_keyslot.h"
#include "engine/qcow2_image.h"

namespace keel {

using namespace format;

Status Qcow2Image::amend_encryption(const EncryptAmendOptions& o) {
  if (!luks_) {
    if (encrypted()) return unsupported("Only LUKS encryption options can be amended");
    return unsupported("Can't amend encryption options - encryption not present");
  }
  if (read_only_) return Status(Code::kReadOnly, "image is opened read-only", EPERM);
  KEEL_TRY(flush());
  std::lock_guard<std::mutex> fl(flush_mu_);
  ExclusiveGate g(gate_);
  ExclusiveGate dg(data_gate_);
  MutexLock lk(mu_);
  if (latched_) return latched_error();

  std::vector<uint8_t> region(header_.crypto_length);
  KEEL_TRY(file_->read_at(header_.crypto_offset, region));
  KEEL_ASSIGN(LuksHeader h, decode_luks_header(region));
  crypto::LuksAmendRequest r;
  r.activate = o.activate;
  r.key_passphrase = o.key_passphrase.bytes();
  if (o.new_passphrase) r.new_passphrase = o.new_passphrase->bytes();
  if (o.old_passphrase) r.old_passphrase = o.old_passphrase->bytes();
  r.keyslot = o.keyslot;
  r.iter_time_ms = o.iter_time_ms;
  r.force = o.force;
  KEEL_ASSIGN(auto plan, crypto::luks_plan_amend(h, region, r));

  // Moves slot `slot` to `entry` in the header, sector by sector in the crash-safe order.
  auto switch_entry = [&](uint32_t slot, const LuksSlot& entry) -> Status {
    mu_.assert_held();
    LuksHeader after = h;
    after.slots[slot] = entry;
    for (const auto& w : crypto::luks_header_writes(region, after, slot)) {
      KEEL_TRY(latch(file_->write_at(header_.crypto_offset + w.offset, w.bytes)));
      KEEL_TRY(latch(file_->sync()));
      std::memcpy(region.data() + w.offset, w.bytes.data(), w.bytes.size());
    }
    h = after;
    luks_->slots[slot] = entry;
    return Status::ok();
  };
  auto write_material = [&](const crypto::LuksSlotChange& c) -> Status {
    mu_.assert_held();
    const uint64_t off = uint64_t(c.entry.key_offset_sectors) * kLuksSectorSize;
    if (off > region.size() || c.material.size() > region.size() - off)
      return corrupt(fmt::format("LUKS key slot {} material at {:#x}+{} lies outside the region of {} bytes", c.slot,
                                 off, c.material.size(), region.size()));
    KEEL_TRY(latch(file_->write_at(header_.crypto_offset + off, c.material.span())));
    return latch(file_->sync());
  };
  for (const auto& c : plan) {
    if (c.entry.active) {
      if (h.slots[c.slot].active) KEEL_TRY(switch_entry(c.slot, crypto::luks_erased_entry(h.slots[c.slot])));
      KEEL_TRY(write_material(c));
      KEEL_TRY(switch_entry(c.slot, c.entry));
    } else {
      KEEL_TRY(switch_entry(c.slot, c.entry));
      KEEL_TRY(write_material(c));
    }
  }
  return Status::ok();
}

}  // namespace keel
