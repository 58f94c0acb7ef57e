// Changing the key slots of a LUKS1 volume, as `qemu-img amend -o encrypt.state=...` does
// (QEMU's qcrypto_block_luks_amend_add_keyslot / _erase_keyslots): the rules and QEMU's
// messages, the new slot entries with their key material, and the order in which the header's
// sectors are written so that no power cut leaves a slot marked active over key material that
// does not belong to its entry. Pure: bytes in, bytes out; the engine does the I/O
// (src/engine/qcow2_luks_amend.cpp).
//
// Crash safety, with the power-loss model's torn writes (any subset of a write's 512-byte
// sectors): a slot's 48-byte entry lies at 208 + 48 * i in the 592-byte header, so every entry
// but slot 6's (496..543) is inside one sector. A slot is switched by the sector holding its
// `active` word, written and synced on its own:
//   activate: key material, sync; the entry's other sector (slot 6), sync; the active sector, sync.
//   erase:    the active sector, sync; the entry's other sector, sync; garbage over the material, sync.
// Overwriting an active slot (force) erases its entry first. Every state a crash leaves has each
// slot either as before or as after, or (only mid-activation of slot 6) inactive.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "crypto/secret_bytes.h"
#include "format/luks_header.h"
#include "keel/status.h"

namespace keel::crypto {

struct LuksAmendRequest {
  bool activate = true;                                     // encrypt.state=active|inactive
  std::span<const uint8_t> key_passphrase;                  // the image's encrypt.key-secret
  std::optional<std::span<const uint8_t>> new_passphrase;   // encrypt.new-secret
  std::optional<std::span<const uint8_t>> old_passphrase;   // encrypt.old-secret
  std::optional<int64_t> keyslot;                           // encrypt.keyslot
  std::optional<uint64_t> iter_time_ms;                     // encrypt.iter-time (default 2000)
  bool force = false;                                       // qemu-img amend --force
};

// One slot's change: its new entry, and the bytes for its key material area (the sealed master
// key when activating, random bytes when erasing; whole sectors).
struct LuksSlotChange {
  uint32_t slot = 0;
  format::LuksSlot entry;
  SecretBytes material;
};

// The slot changes the request asks for, in QEMU's order of checks and with its messages
// (kInvalidArgument, exit 1): e.g. "'new-secret' is required to activate a keyslot",
// "Refusing to overwrite active keyslot 1 - please erase it first", "Attempt to erase the only
// active keyslot 0 which will erase all the data in the image irreversibly - refusing operation".
// `region` is the whole LUKS region as on disk. Runs PBKDF2 (seconds with QEMU's iteration counts).
Result<std::vector<LuksSlotChange>> luks_plan_amend(const format::LuksHeader& h, std::span<const uint8_t> region,
                                                    const LuksAmendRequest& r);

// A write of one 512-byte sector at `offset` bytes into the LUKS region.
struct LuksSectorWrite {
  uint64_t offset = 0;
  std::vector<uint8_t> bytes;
};

// The sector writes that turn the header at the start of `region` into `after` (which differs
// from it in slot `slot` only), ordered as above for a slot that becomes active
// (`after.slots[slot].active`) or inactive. Sectors that do not change are left out.
std::vector<LuksSectorWrite> luks_header_writes(std::span<const uint8_t> region, const format::LuksHeader& after,
                                                uint32_t slot);

// The entry of an erased slot, as QEMU leaves it: disabled, salt and iterations zero, offset
// and stripes kept.
format::LuksSlot luks_erased_entry(const format::LuksSlot& s);

}  // namespace keel::crypto
