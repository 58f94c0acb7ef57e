// LUKS1 key-slot changes (see luks_keyslot.h). The checks follow QEMU 7.2's crypto/block-luks.c
// in order, with its messages (including the trailing space of "already erased (inactive) ").
#include "crypto/luks_keyslot.h"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "crypto/luks_create.h"
#include "crypto/luks_unlock.h"

namespace keel::crypto {

using namespace format;

namespace {

constexpr uint64_t kDefaultIterTimeMs = 2000;  // qemu: QCRYPTO_BLOCK_LUKS_DEFAULT_ITER_TIME_MS
constexpr uint32_t kSlotEntryStart = 208;      // spec: the first key slot entry in the header
constexpr uint32_t kSlotEntryBytes = 48;       // spec

Status fail(const std::string& msg) { return Status(Code::kInvalidArgument, msg, EINVAL); }

uint32_t active_count(const LuksHeader& h) {
  return static_cast<uint32_t>(std::count_if(h.slots.begin(), h.slots.end(), [](const LuksSlot& s) { return s.active; }));
}

Result<SecretBytes> garbage(const LuksHeader& h) {
  SecretBytes g((h.split_key_bytes() + kLuksSectorSize - 1) / kLuksSectorSize * kLuksSectorSize);
  KEEL_TRY_R(random_bytes(g.span()));
  return g;
}

Result<std::vector<LuksSlotChange>> plan_activate(const LuksHeader& h, std::span<const uint8_t> region,
                                                  const LuksAmendRequest& r) {
  if (!r.new_passphrase) return error(fail("'new-secret' is required to activate a keyslot"));
  if (r.old_passphrase) return error(fail("'old-secret' must not be given when activating keyslots"));
  uint32_t slot = 0;
  if (r.keyslot) {
    if (*r.keyslot < 0 || *r.keyslot >= kLuksSlots)
      return error(fail(fmt::format("Invalid keyslot {} specified, must be between 0 and {}",
                                    static_cast<uint32_t>(static_cast<int32_t>(*r.keyslot)), kLuksSlots - 1)));
    slot = static_cast<uint32_t>(*r.keyslot);
  } else {
    while (slot < kLuksSlots && h.slots[slot].active) ++slot;
    if (slot == kLuksSlots) return error(fail("Can't add a keyslot - all keyslots are in use"));
  }
  if (!r.force && h.slots[slot].active)
    return error(fail(fmt::format("Refusing to overwrite active keyslot {} - please erase it first", slot)));
  KEEL_ASSIGN(SecretBytes master, luks_master_key(h, region, r.key_passphrase));
  KEEL_ASSIGN(SealedSlot sealed, luks_seal_slot(h, slot, master.span(), *r.new_passphrase,
                                                r.iter_time_ms.value_or(kDefaultIterTimeMs)));
  std::vector<LuksSlotChange> out;
  out.push_back(LuksSlotChange{slot, sealed.entry, std::move(sealed.material)});
  return out;
}

Result<std::vector<LuksSlotChange>> plan_erase(const LuksHeader& h, std::span<const uint8_t> region,
                                               const LuksAmendRequest& r) {
  if (r.new_passphrase) return error(fail("'new-secret' must not be given when erasing keyslots"));
  if (r.iter_time_ms) return error(fail("'iter-time' must not be given when erasing keyslots"));
  std::vector<uint32_t> slots;
  if (r.keyslot) {
    if (*r.keyslot < 0 || *r.keyslot >= kLuksSlots)
      return error(fail(fmt::format("Invalid keyslot {} specified, must be between 0 and {}",
                                    static_cast<int32_t>(*r.keyslot), kLuksSlots - 1)));
    const auto slot = static_cast<uint32_t>(*r.keyslot);
    if (r.old_passphrase) {
      KEEL_ASSIGN(SecretBytes key, luks_slot_master_key(h, slot, region, *r.old_passphrase));
      if (!key.size())
        return error(fail(fmt::format("Given keyslot {} doesn't contain the given old password for erase operation", slot)));
    }
    if (!r.force && !h.slots[slot].active)
      return error(fail(fmt::format("Given keyslot {} is already erased (inactive) ", slot)));
    if (!r.force && active_count(h) == 1)
      return error(fail(fmt::format("Attempt to erase the only active keyslot {} which will erase all the data in "
                                    "the image irreversibly - refusing operation", slot)));
    slots.push_back(slot);
  } else if (r.old_passphrase) {
    for (uint32_t i = 0; i < kLuksSlots; ++i) {
      KEEL_ASSIGN(SecretBytes key, luks_slot_master_key(h, i, region, *r.old_passphrase));
      if (key.size()) slots.push_back(i);
    }
    if (slots.empty()) return error(fail("No keyslots match given (old) password for erase operation"));
    if (!r.force && slots.size() == active_count(h))
      return error(fail("All the active keyslots match the (old) password that was given and erasing them will "
                        "erase all the data in the image irreversibly - refusing operation"));
  } else {
    return error(fail("To erase keyslot(s), either explicit keyslot index or the password currently contained in "
                      "them must be given"));
  }
  std::vector<LuksSlotChange> out;
  for (uint32_t s : slots) {
    KEEL_ASSIGN(SecretBytes g, garbage(h));
    out.push_back(LuksSlotChange{s, luks_erased_entry(h.slots[s]), std::move(g)});
  }
  return out;
}

}  // namespace

LuksSlot luks_erased_entry(const LuksSlot& s) {
  LuksSlot e = s;
  e.active = false;
  e.iterations = 0;
  e.salt.fill(0);
  return e;
}

Result<std::vector<LuksSlotChange>> luks_plan_amend(const LuksHeader& h, std::span<const uint8_t> region,
                                                    const LuksAmendRequest& r) {
  return r.activate ? plan_activate(h, region, r) : plan_erase(h, region, r);
}

std::vector<LuksSectorWrite> luks_header_writes(std::span<const uint8_t> region, const LuksHeader& after,
                                                uint32_t slot) {
  const std::vector<uint8_t> enc = encode_luks_header(after);
  std::vector<LuksSectorWrite> changed;
  uint64_t active_sector = (kSlotEntryStart + uint64_t(slot) * kSlotEntryBytes) / kLuksSectorSize;
  for (uint64_t off = 0; off < enc.size(); off += kLuksSectorSize) {
    LuksSectorWrite w{off, std::vector<uint8_t>(region.begin() + off, region.begin() + off + kLuksSectorSize)};
    std::memcpy(w.bytes.data(), enc.data() + off, std::min<uint64_t>(kLuksSectorSize, enc.size() - off));
    if (!std::equal(w.bytes.begin(), w.bytes.end(), region.begin() + off)) changed.push_back(std::move(w));
  }
  // The sector with the active word last when activating, first when erasing.
  const bool activating = after.slots[slot].active;
  std::stable_partition(changed.begin(), changed.end(), [&](const LuksSectorWrite& w) {
    return (w.offset / kLuksSectorSize == active_sector) != activating;
  });
  return changed;
}

}  // namespace keel::crypto
