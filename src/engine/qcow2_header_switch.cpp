// Changing cluster 0 (the header, its extensions and the backing file name) without ever leaving
// a header that a power cut can tear into something QEMU or Keel cannot open, or that means
// something else: a whole new header (write_cluster0, for amend and rebase) and the
// persistent-bitmaps extension (see rewrite_header_layout).
#include <algorithm>
#include <cstring>
#include <optional>

#include "engine/qcow2_image.h"
#include "format/endian.h"
#include "format/header_layout.h"

namespace keel {

using namespace format;

namespace {
constexpr uint64_t kSector = 512;
uint64_t round8(uint64_t a) { return (a + 7) / 8 * 8; }
}  // namespace

// Replaces cluster 0, now `old_c0`, by `new_c0` so that every state a power cut can leave (any
// step's write torn at sectors) opens as the old header or as the new one:
//   - when the two differ inside one sector: that one write;
//   - else, (1) if the old header references bytes past sector 0 (with 64 KiB clusters the
//     feature-name table alone takes ~400 bytes, so the backing file name lies in sector 1),
//     sector 0 is rewritten as the same header without the feature-name table, which fits in
//     it; (2) the new cluster past sector 0, which nothing references now; (3) the new sector 0,
//     which switches to it.
// Each step is synced. A header whose compact form does not fit in one sector (very long backing
// or data file names) falls back to writing the cluster at once, as QEMU always does.
Status Qcow2Image::write_cluster0(std::span<const uint8_t> old_c0, std::span<const uint8_t> new_c0) {
  auto write = [&](uint64_t off, std::span<const uint8_t> bytes) -> Status {
    mu_.assert_held();
    KEEL_TRY(write_header_field(off, bytes));
    return latch(file_->sync());
  };
  uint64_t first = cs_, last = 0;
  for (uint64_t i = 0; i < cs_; ++i) {
    if (old_c0[i] == new_c0[i]) continue;
    first = std::min(first, i);
    last = i;
  }
  if (first == cs_) return Status::ok();
  if (first / kSector == last / kSector) return write(first, new_c0.subspan(first, last - first + 1));
  if (decode_header_layout(old_c0).used_end() > kSector) {
    std::vector<uint8_t> compact = header_without_feature_table(old_c0);
    if (compact.empty() || decode_header_layout(compact).used_end() > kSector) return write(0, new_c0);
    KEEL_TRY(write(0, std::span<const uint8_t>(compact).first(kSector)));
  }
  KEEL_TRY(write(kSector, new_c0.subspan(kSector)));
  return write(0, new_c0.first(kSector));
}

// Sets the bitmaps extension (and autoclear bit 0) to `next`, or removes both. When the new
// header differs from the old in one sector only — the usual case once the extension exists —
// that is one write. Otherwise rewrite_header_layout() moves through states QEMU and Keel both
// open. Synced.
Status Qcow2Image::switch_bitmaps_extension(const std::optional<BitmapsExtension>& next) {
  Header h = header_;
  h.bitmaps = next;
  h.autoclear &= kAutoclearKnown;
  if (next) h.autoclear |= kAutoclearBitmaps;
  else h.autoclear &= ~kAutoclearBitmaps;
  KEEL_ASSIGN(auto new_c0, encode_header(h));
  std::vector<uint8_t> old_c0(cs_);
  KEEL_TRY(file_->read_at(0, old_c0));
  uint64_t first = cs_, last = 0;
  for (uint64_t i = 0; i < cs_; ++i) {
    if (old_c0[i] == new_c0[i]) continue;
    first = std::min(first, i);
    last = i;
  }
  if (first < cs_ && first / kSector == last / kSector) {
    KEEL_TRY(write_header_field(first, std::span<const uint8_t>(new_c0).subspan(first, last - first + 1)));
    KEEL_TRY(latch(file_->sync()));
  } else if (first < cs_) {
    KEEL_TRY(rewrite_header_layout(old_c0, new_c0));
  }
  h.backing_file_offset = decode_header_layout(new_c0).backing_offset;
  header_ = h;
  return Status::ok();
}

// Turns cluster 0 from `old_c0` into `new_c0` (which differ in the header extensions, the position
// of the backing file name, the backing name offset and the autoclear bits) so that every state a
// power cut can leave — each step's writes partly done, torn at sectors — is a valid header:
//   1. autoclear bit 0 off (8 bytes): a torn bitmaps extension is then ignored, as QEMU does;
//   2. the backing file name copied past both layouts, then its offset switched (8 bytes);
//   3. the extension chain cut at E, the first slot that changes, with an end marker (8 bytes);
//   4. the new chain's tail written behind the cut (nothing reads it yet);
//   5. the new slot at E linked (8 bytes);
//   6. sector 0 with the final backing offset and autoclear bits (one sector).
// Each step is synced. A power cut between 1 and 6 loses the bitmaps (QEMU: "a program lacking
// bitmap support modified this file"; their clusters leak), never the image. Layouts this cannot
// handle (a changed header length, a changed backing or data file extension) fall back to
// write_cluster0.
Status Qcow2Image::rewrite_header_layout(std::span<const uint8_t> old_c0, std::span<const uint8_t> new_c0) {
  auto write = [&](uint64_t off, std::span<const uint8_t> bytes) -> Status {
    mu_.assert_held();
    KEEL_TRY(write_header_field(off, bytes));
    return latch(file_->sync());
  };
  auto whole = [&] {
    mu_.assert_held();
    return write_cluster0(old_c0, new_c0);
  };
  const bool v3 = header_.version >= 3;
  const HeaderLayout old_l = decode_header_layout(old_c0), new_l = decode_header_layout(new_c0);
  const uint64_t hlen = old_l.header_length;
  if (v3 && new_l.header_length != hlen) return whole();
  auto in = [](uint64_t i, uint64_t field, uint64_t bytes) { return i >= field && i < field + bytes; };
  for (uint64_t i = 0; i < hlen; ++i)
    if (old_c0[i] != new_c0[i] && !in(i, kOffsetBackingFile, kBackingFileFieldsBytes) &&
        !in(i, kOffsetAutoclear, 8))
      return whole();
  const uint64_t old_boff = old_l.backing_offset, new_boff = new_l.backing_offset;
  const uint32_t bsize = old_l.backing_size;
  if ((old_boff == 0) != (new_boff == 0) || new_l.backing_size != bsize) return whole();
  uint64_t d = hlen;
  while (d < cs_ && old_c0[d] == new_c0[d]) ++d;
  // E: the old slot holding the first changed byte (or the end marker before it).
  const ExtensionChain& chain = old_l.extensions;
  std::optional<uint64_t> slot_e;
  for (const ExtensionSlot& slot : chain.slots) {
    if (d >= slot.end()) continue;
    if (slot.type == kExtBackingFormat || slot.type == kExtDataFile || slot.type == kExtCrypto) return whole();
    slot_e = slot.offset;
    break;
  }
  if (!slot_e && !chain.terminated) return whole();
  const uint64_t e = slot_e ? *slot_e : chain.stop;
  // 1.
  if (v3) {
    const uint64_t ac = old_l.autoclear;
    if (ac & kAutoclearBitmaps) {
      uint8_t b[8];
      put_be64(b, ac & ~uint64_t(kAutoclearBitmaps));
      KEEL_TRY(write(kOffsetAutoclear, b));
    }
  }
  // 2.
  uint64_t limit = cs_;
  if (old_boff) {
    const uint64_t x = round8(std::max(old_boff, new_boff) + bsize);
    if (x + bsize > cs_) return whole();
    KEEL_TRY(write(x, old_c0.subspan(old_boff, bsize)));
    uint8_t b[8];
    put_be64(b, x);
    KEEL_TRY(write(kOffsetBackingFile, b));
    limit = x;
  }
  // 3.
  static constexpr uint8_t kEnd[8] = {};
  if (std::memcmp(&old_c0[e], kEnd, 8) != 0) KEEL_TRY(write(e, kEnd));
  // 4.
  if (e + 8 < limit) KEEL_TRY(write(e + 8, new_c0.subspan(e + 8, limit - e - 8)));
  // 5.
  KEEL_TRY(write(e, new_c0.subspan(e, 8)));
  // 6.
  KEEL_TRY(write(0, new_c0.first(kSector)));
  // The scratch copy of the name is not referenced any more; clear it like the rest of cluster 0.
  if (limit < cs_) KEEL_TRY(write_header_field(limit, new_c0.subspan(limit)));
  return Status::ok();
}

}  // namespace keel
