// Proves the LUKS key-slot changes of qemu-img amend (crypto/luks_keyslot.h) on plain bytes: an
// added slot opens with its passphrase and yields the same master key; an erased one no longer
// opens; QEMU's refusals carry its messages; and the header sector writes come in the crash-safe
// order (slot 6's entry spans two sectors: activating writes the active word's sector last,
// erasing first), so that replaying any prefix of them never shows an active slot that fails.
#include <gtest/gtest.h>

#include <cstring>

#include "crypto/luks_create.h"
#include "crypto/luks_keyslot.h"
#include "crypto/luks_unlock.h"
#include "format/luks_header.h"

namespace keel::crypto {
namespace {

using format::LuksHeader;

std::span<const uint8_t> b(const char* s) { return {reinterpret_cast<const uint8_t*>(s), std::strlen(s)}; }

std::vector<uint8_t> region() {
  LuksCreateSpec spec;
  spec.iter_time_ms = 0;  // the minimum of 1000 iterations each
  auto r = luks_create(spec, b("zero"));
  EXPECT_TRUE(r.has_value()) << (r ? "" : r.error().message());
  return r ? *r : std::vector<uint8_t>();
}

// Applies `c` to `reg` in the engine's order; calls `seen` with the region after each write.
void apply_change(std::vector<uint8_t>& reg, const LuksSlotChange& c, const std::function<void()>& seen = {}) {
  auto h = format::decode_luks_header(reg);
  ASSERT_TRUE(h.has_value());
  auto put = [&](uint64_t off, std::span<const uint8_t> bytes) {
    std::memcpy(reg.data() + off, bytes.data(), bytes.size());
    if (seen) seen();
  };
  auto header = [&](const format::LuksSlot& e) {
    LuksHeader after = *h;
    after.slots[c.slot] = e;
    for (const auto& w : luks_header_writes(reg, after, c.slot)) put(w.offset, w.bytes);
    h = after;
  };
  const uint64_t material = uint64_t(c.entry.key_offset_sectors) * 512;
  if (c.entry.active) {
    if (h->slots[c.slot].active) header(luks_erased_entry(h->slots[c.slot]));
    put(material, c.material.span());
    header(c.entry);
  } else {
    header(c.entry);
    put(material, c.material.span());
  }
}

Result<std::vector<LuksSlotChange>> plan(const std::vector<uint8_t>& reg, LuksAmendRequest r) {
  auto h = format::decode_luks_header(reg);
  EXPECT_TRUE(h.has_value());
  r.key_passphrase = b("zero");
  if (r.activate && !r.iter_time_ms) r.iter_time_ms = 0;
  return luks_plan_amend(*h, reg, r);
}

bool opens(const std::vector<uint8_t>& reg, const char* pass) {
  auto h = format::decode_luks_header(reg);
  if (!h) return false;
  auto k = luks_master_key(*h, reg, b(pass));
  return k.has_value();
}

// Every active slot of the header opens with one of `passes`.
bool no_stray_active_slot(const std::vector<uint8_t>& reg, std::initializer_list<const char*> passes) {
  auto h = format::decode_luks_header(reg);
  if (!h) return false;
  for (uint32_t i = 0; i < format::kLuksSlots; ++i) {
    if (!h->slots[i].active) continue;
    bool ok = false;
    for (const char* p : passes) {
      auto k = luks_slot_master_key(*h, i, reg, b(p));
      ok |= k && k->size();
    }
    if (!ok) return false;
  }
  return true;
}

TEST(LuksKeyslot, AddEraseAndTheOrderOfSlot6sSectors) {
  auto reg = region();
  auto h0 = format::decode_luks_header(reg);
  auto master = luks_master_key(*h0, reg, b("zero"));
  ASSERT_TRUE(master.has_value());

  LuksAmendRequest add;
  add.new_passphrase = b("six");
  add.keyslot = 6;
  auto p = plan(reg, add);
  ASSERT_TRUE(p.has_value()) << p.error().message();
  ASSERT_EQ(p->size(), 1u);
  auto h = format::decode_luks_header(reg);
  LuksHeader after = *h;
  after.slots[6] = (*p)[0].entry;
  auto writes = luks_header_writes(reg, after, 6);
  ASSERT_EQ(writes.size(), 2u);  // 496..543 spans sectors 0 and 1
  EXPECT_EQ(writes[0].offset, 512u);
  EXPECT_EQ(writes[1].offset, 0u);  // the active word's sector last
  apply_change(reg, (*p)[0], [&] { EXPECT_TRUE(no_stray_active_slot(reg, {"zero", "six"})); });
  EXPECT_TRUE(opens(reg, "six"));
  EXPECT_TRUE(opens(reg, "zero"));
  auto h6 = format::decode_luks_header(reg);
  auto k6 = luks_slot_master_key(*h6, 6, reg, b("six"));
  ASSERT_TRUE(k6.has_value());
  ASSERT_EQ(k6->size(), master->size());
  EXPECT_EQ(0, std::memcmp(k6->data(), master->data(), master->size()));

  LuksAmendRequest erase;
  erase.activate = false;
  erase.old_passphrase = b("six");
  p = plan(reg, erase);
  ASSERT_TRUE(p.has_value()) << p.error().message();
  after = *h6;
  after.slots[6] = (*p)[0].entry;
  writes = luks_header_writes(reg, after, 6);
  ASSERT_EQ(writes.size(), 2u);
  EXPECT_EQ(writes[0].offset, 0u);  // the active word's sector first
  apply_change(reg, (*p)[0], [&] { EXPECT_TRUE(no_stray_active_slot(reg, {"zero", "six"})); });
  EXPECT_FALSE(opens(reg, "six"));
  EXPECT_TRUE(opens(reg, "zero"));
}

TEST(LuksKeyslot, ForcedOverwriteErasesTheEntryFirst) {
  auto reg = region();
  LuksAmendRequest add;
  add.new_passphrase = b("one");
  auto p = plan(reg, add);
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ((*p)[0].slot, 1u);
  apply_change(reg, (*p)[0]);
  add.new_passphrase = b("other");
  add.keyslot = 1;
  p = plan(reg, add);
  ASSERT_FALSE(p.has_value());
  EXPECT_EQ(p.error().message(), "Refusing to overwrite active keyslot 1 - please erase it first");
  add.force = true;
  p = plan(reg, add);
  ASSERT_TRUE(p.has_value());
  apply_change(reg, (*p)[0], [&] { EXPECT_TRUE(no_stray_active_slot(reg, {"zero", "one", "other"})); });
  EXPECT_TRUE(opens(reg, "other"));
  EXPECT_FALSE(opens(reg, "one"));
}

TEST(LuksKeyslot, QemuRefusals) {
  auto reg = region();
  auto msg = [&](LuksAmendRequest r) {
    auto p = plan(reg, r);
    return p ? std::string("ok") : p.error().message();
  };
  LuksAmendRequest r;
  EXPECT_EQ(msg(r), "'new-secret' is required to activate a keyslot");
  r.new_passphrase = b("x");
  r.keyslot = -1;
  EXPECT_EQ(msg(r), "Invalid keyslot 4294967295 specified, must be between 0 and 7");
  LuksAmendRequest e;
  e.activate = false;
  EXPECT_EQ(msg(e), "To erase keyslot(s), either explicit keyslot index or the password currently contained in them must be given");
  e.keyslot = -2;
  EXPECT_EQ(msg(e), "Invalid keyslot -2 specified, must be between 0 and 7");
  e.keyslot = 3;
  EXPECT_EQ(msg(e), "Given keyslot 3 is already erased (inactive) ");
  e.keyslot = 0;
  EXPECT_EQ(msg(e), "Attempt to erase the only active keyslot 0 which will erase all the data in the image "
                    "irreversibly - refusing operation");
  e.keyslot.reset();
  e.old_passphrase = b("zero");
  EXPECT_EQ(msg(e), "All the active keyslots match the (old) password that was given and erasing them will erase "
                    "all the data in the image irreversibly - refusing operation");
  e.old_passphrase = b("nope");
  EXPECT_EQ(msg(e), "No keyslots match given (old) password for erase operation");
}

}  // namespace
}  // namespace keel::crypto
