// The guarantee checker (see checker.h).
#include "proof/checker.h"
#include "proof/damage.h"

#include <algorithm>
#include <optional>
#include <sstream>

#include "crypto/luks_unlock.h"
#include "format/header.h"
#include "format/luks_header.h"
#include "keel/check.h"
#include "proof/bitmap_check.h"
#include "proof/memory_fs.h"
#include "proof/pattern.h"
#include "proof/qemu_oracle.h"

namespace keel::proof {
namespace {

constexpr uint64_t kReadChunk = 256 * 1024;

std::string hex(uint64_t v) {
  std::ostringstream o;
  o << "0x" << std::hex << v;
  return o.str();
}

std::string describe_content(const Decoded& d) {
  switch (d.kind) {
    case Decoded::kZero: return "zeros";
    case Decoded::kGarbage: return "bytes no guest write produced (metadata or garbage)";
    case Decoded::kPattern:
      if (d.version == kBackingVersion) return "backing data of guest sector " + std::to_string(d.sector);
      return "v" + std::to_string(d.version) + " of guest sector " + std::to_string(d.sector);
  }
  return "?";
}

// nullopt when the sector's content is allowed; else the guarantee it breaks and why.
std::optional<std::pair<Guarantee, std::string>> judge(uint64_t s, std::span<const uint8_t> bytes,
                                                       const GuestModel& m, const char* who) {
  Decoded d = decode_sector(bytes);
  uint32_t version = d.kind == Decoded::kZero ? kZeroVersion : d.version;
  bool own = d.kind == Decoded::kZero || (d.kind == Decoded::kPattern && d.sector == s);
  if (d.kind != Decoded::kGarbage && own && m.allows(s, version)) return std::nullopt;
  std::string what = std::string(who) + ": guest sector " + std::to_string(s) + " (offset " +
                     hex(s * kGuestSector) + ") reads " + describe_content(d) + "; model: " + m.describe(s);
  // Zeros or an older content of this very sector: a durable write was lost (G3). Anything
  // else is data that does not belong here (G4).
  return std::make_pair(own ? Guarantee::kG3 : Guarantee::kG4, what);
}

void judge_range(uint64_t first, std::span<const uint8_t> bytes, const GuestModel& m, StateVerdict& v,
                 uint32_t max_details, const char* who, std::optional<Guarantee> as,
                 std::vector<uint32_t>* observed = nullptr) {
  for (size_t i = 0; i + kGuestSector <= bytes.size(); i += kGuestSector) {
    uint64_t s = first + i / kGuestSector;
    auto sector = bytes.subspan(i, kGuestSector);
    if (auto bad = judge(s, sector, m, who)) {
      v.add(as.value_or(bad->first), bad->second, max_details);
    } else if (observed) {
      Decoded d = decode_sector(sector);
      (*observed)[s] = d.kind == Decoded::kZero ? kZeroVersion : d.version;
    }
  }
}

std::string counts_text(uint64_t corruptions, uint64_t leaks, uint64_t errors) {
  return std::to_string(corruptions) + " corruptions, " + std::to_string(leaks) + " leaks, " +
         std::to_string(errors) + " check errors";
}

void judge_qemu_check(const Result<QemuCheck>& c, const char* when, uint64_t leak_bound, StateVerdict& v,
                      uint32_t max_details) {
  if (!c) {
    v.add(Guarantee::kG2, std::string("qemu-img check ") + when + ": " + c.error().message(), max_details);
    return;
  }
  bool bad = c->corruptions > 0 || c->check_errors > 0 || c->leaks > leak_bound ||
             (c->exit_code != 0 && c->exit_code != 3) || (c->exit_code == 3 && c->leaks == 0);
  if (bad)
    v.add(Guarantee::kG2,
          std::string("qemu-img check ") + when + ": exit " + std::to_string(c->exit_code) + ", " +
              counts_text(c->corruptions, c->leaks, c->check_errors) + " (leaks allowed: " +
              (leak_bound == UINT64_MAX ? std::string("any") : std::to_string(leak_bound)) + "): " + c->output,
          max_details);
}

void judge_keel_check(BlockFile& file, const char* when, uint64_t leak_bound, StateVerdict& v,
                      uint32_t max_details) {
  std::string lines;
  CheckOptions co;
  co.report = [&](const std::string& line) {
    if (lines.size() < 2000) lines += line + "\n";
  };
  auto r = check_qcow2(file, co);
  if (!r) {
    v.add(Guarantee::kG2, std::string("keel check ") + when + " failed: " + r.error().message(), max_details);
  } else if (r->corruptions > 0 || r->check_errors > 0 || r->leaks > leak_bound) {
    v.add(Guarantee::kG2,
          std::string("keel check ") + when + ": " + counts_text(r->corruptions, r->leaks, r->check_errors) +
              " (leaks allowed: " + (leak_bound == UINT64_MAX ? std::string("any") : std::to_string(leak_bound)) +
              ")\n" + lines,
          max_details);
  }
}

// Every snapshot the image lists must be one the model knows, read as it did when it was taken;
// every snapshot whose creation completed (and whose deletion did not start) must be listed.
void check_snapshots(MemoryFs& fs, const GuestModel& model, StateVerdict& v, uint32_t md) {
  OpenOptions oo;
  oo.format = "qcow2";
  oo.read_only = true;
  oo.file_opener = fs.opener();
  oo.encrypt_secret = kProofSecret;
  auto img = Image::open(MemoryFs::path(kImageName), oo);
  if (!img) {
    v.add(Guarantee::kG1, "read-only open after close failed: " + img.error().message(), md);
    return;
  }
  std::vector<SnapshotInfo> listed = (*img)->info().snapshots;
  img->reset();
  const auto& known = model.snapshots();
  for (const auto& [snap_name, snap] : known) {
    // (clang 14 cannot capture a structured binding in a lambda: copy the name.)
    const std::string& name = snap_name;
    bool found = std::any_of(listed.begin(), listed.end(), [&](const SnapshotInfo& i) { return i.name == name; });
    if (!found && snap.must_exist) v.add(Guarantee::kG3, "snapshot '" + name + "' was created and is gone", md);
  }
  for (const SnapshotInfo& info : listed) {
    auto it = known.find(info.name);
    if (it == known.end()) {
      v.add(Guarantee::kG3, "snapshot '" + info.name + "' is listed but was never created or its deletion completed", md);
      continue;
    }
    oo.snapshot = info.name;
    auto snap = Image::open(MemoryFs::path(kImageName), oo);
    if (!snap) {
      v.add(Guarantee::kG1, "opening snapshot '" + info.name + "' failed: " + snap.error().message(), md);
      continue;
    }
    if ((*snap)->size() != it->second.size_bytes)
      v.add(Guarantee::kG3, "snapshot '" + info.name + "' is " + std::to_string((*snap)->size()) + " bytes, taken at " +
                                std::to_string(it->second.size_bytes), md);
    std::string who = "snapshot '" + info.name + "' read";
    check_guest_reads(**snap, *it->second.content, v, md, who.c_str());
  }
}

// LUKS key slots (the `encrypted` workload's key-slot changes): each passphrase the model says
// must open the image opens it and each it says must not does not (G3: a completed change is
// durable); every active slot opens with one of the proof's passphrases (G2: a slot marked active
// over key material that is not its own is a half-done change the write order must prevent).
void check_key_slots(MemoryFs& fs, const GuestModel& model, StateVerdict& v, uint32_t md) {
  if (model.keys().empty()) return;
  const std::vector<uint8_t> image = fs.bytes(kImageName);
  auto h = format::decode_header(std::span<const uint8_t>(image).first(std::min<size_t>(image.size(), 65536)),
                                 image.size(), false);
  if (!h || h->crypt_method != format::kCryptLuks || h->crypto_offset > image.size() ||
      h->crypto_length > image.size() - h->crypto_offset) {
    v.add(Guarantee::kG1, "key slots: the qcow2 header does not name a LUKS region", md);
    return;
  }
  const std::span<const uint8_t> region(image.data() + h->crypto_offset, h->crypto_length);
  auto luks = format::decode_luks_header(region);
  if (!luks) {
    v.add(Guarantee::kG1, "key slots: LUKS header: " + luks.error().message(), md);
    return;
  }
  auto bytes = [](const std::string& s) { return std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size()); };
  std::vector<std::string> known = {kProofSecret};
  for (const auto& [pass, state] : model.keys()) known.push_back(pass);
  std::vector<bool> opened(format::kLuksSlots, false);
  for (const std::string& pass : known) {
    bool opens = false;
    for (uint32_t i = 0; i < format::kLuksSlots; ++i) {
      auto key = crypto::luks_slot_master_key(*luks, i, region, bytes(pass));
      if (key && key->size()) opened[i] = opens = true;
    }
    auto it = model.keys().find(pass);
    if (it == model.keys().end()) continue;
    if (it->second == GuestModel::KeyState::kOpens && !opens)
      v.add(Guarantee::kG3, "key slots: passphrase '" + pass + "' was added and does not open the image", md);
    if (it->second == GuestModel::KeyState::kRefused && opens)
      v.add(Guarantee::kG3, "key slots: passphrase '" + pass + "' was erased and still opens the image", md);
  }
  for (uint32_t i = 0; i < format::kLuksSlots; ++i)
    if (luks->slots[i].active && !opened[i])
      v.add(Guarantee::kG2, "key slots: slot " + std::to_string(i) + " is active and opens with no passphrase it was given", md);
}

// The backing file as the crash left it. Read-only workloads: unchanged. A commit workload
// (spec.base_writable): unchanged until a commit starts; then, on its own, it reads as the
// commits put it (a completed commit's content durably, G3), or as the one in progress.
void check_base(const WorkloadSpec& spec, const std::vector<uint8_t>& backing,
                const std::vector<uint8_t>& original, const GuestModel& model, StateVerdict& v, uint32_t md) {
  if (spec.base_writable && model.committed_base()) {
    check_raw_guest(backing, *model.committed_base(), v, md, "the backing file alone");
  } else if (backing != original) {
    v.add(Guarantee::kG5, spec.base_writable ? "backing file content changed before any commit"
                                             : "backing file content changed", md);
  }
}

}  // namespace

const char* guarantee_name(Guarantee g) {
  static const char* names[] = {"G1", "G2", "G3", "G4", "G5", "G6"};
  return names[static_cast<size_t>(g)];
}

const char* guarantee_title(Guarantee g) {
  static const char* titles[] = {"opens", "consistent", "durable", "no foreign data", "other layers untouched",
                                 "error paths back out"};
  return titles[static_cast<size_t>(g)];
}

bool StateVerdict::any() const {
  return std::any_of(violated.begin(), violated.end(), [](bool b) { return b; });
}

void StateVerdict::add(Guarantee g, std::string detail, uint32_t max_details) {
  size_t already = 0;
  for (const auto& d : details) already += d.first == g;
  violated[static_cast<size_t>(g)] = true;
  if (already < max_details) details.emplace_back(g, std::move(detail));
}

bool qcow2_dirty(const std::vector<uint8_t>& image) {
  if (image.size() < 80) return false;
  uint32_t version = (uint32_t(image[4]) << 24) | (uint32_t(image[5]) << 16) | (uint32_t(image[6]) << 8) | image[7];
  return version >= 3 && (image[79] & 1);
}

void check_guest_reads(Image& img, const GuestModel& model, StateVerdict& v, uint32_t max_details,
                       const char* who, std::optional<Guarantee> as, std::vector<uint32_t>* observed) {
  uint64_t total = std::min(model.sector_count() * kGuestSector, img.size());
  if (observed) observed->assign(model.sector_count(), kUnknownVersion);
  std::vector<uint8_t> buf(kReadChunk);
  for (uint64_t off = 0; off < total; off += kReadChunk) {
    uint64_t n = std::min<uint64_t>(kReadChunk, total - off);
    std::span<uint8_t> chunk(buf.data(), n);
    if (img.read(off, chunk).is_ok()) {
      judge_range(off / kGuestSector, chunk, model, v, max_details, who, as, observed);
      continue;
    }
    // Find the sectors that fail.
    for (uint64_t s = off; s < off + n; s += kGuestSector) {
      std::span<uint8_t> one(buf.data(), kGuestSector);
      Status st = img.read(s, one);
      if (st.is_ok()) {
        judge_range(s / kGuestSector, one, model, v, max_details, who, as, observed);
      } else if (!as) {
        v.add(Guarantee::kG3, std::string(who) + ": read of guest sector " + std::to_string(s / kGuestSector) +
                                  " failed: " + st.message(), max_details);
      }
    }
  }
}

void check_raw_guest(const std::vector<uint8_t>& raw, const GuestModel& model, StateVerdict& v,
                     uint32_t max_details, const char* who) {
  std::vector<uint8_t> padded;
  const std::vector<uint8_t>* disk = &raw;
  uint64_t want = model.sector_count() * kGuestSector;
  if (!model.size_allowed(raw.size()))
    v.add(Guarantee::kG3, std::string(who) + ": guest disk is " + std::to_string(raw.size()) + " bytes; model: " +
                              model.describe_sizes(), max_details);
  if (raw.size() > want) {
    padded.assign(raw.begin(), raw.begin() + static_cast<std::ptrdiff_t>(want));
    disk = &padded;
  }
  judge_range(0, *disk, model, v, max_details, who, std::nullopt);
}

StateVerdict check_state(const WorkloadSpec& spec, std::vector<uint8_t> image,
                         const std::vector<uint8_t>& backing, const GuestModel& model,
                         const StateCheckOptions& opts) {
  StateVerdict v;
  const uint32_t md = opts.max_details;
  if (!spec.damage.empty()) {  // a damaged image: G1-G5 do not apply (proof/damage.h)
    check_damaged_state(image, v, md);
    return v;
  }
  std::vector<uint8_t> computed_backing;
  if (!opts.original_backing) computed_backing = backing_content(spec);
  const std::vector<uint8_t>& original_backing = opts.original_backing ? *opts.original_backing : computed_backing;
  bool has_backing = spec.backing_bytes > 0;
  const std::vector<uint8_t> new_backing = new_backing_content(spec);  // never written

  // QEMU's view of the state exactly as the crash left it.
  std::optional<TempDir> tmp_holder;
  if (opts.qemu) tmp_holder.emplace();
  TempDir* tmp = tmp_holder ? &*tmp_holder : nullptr;
  if (tmp && tmp->ok()) {
    v.qemu_ran = true;
    Status w = tmp->write(kImageName, image);
    if (w.is_ok() && has_backing) w = tmp->write(kBackingName, backing);
    if (w.is_ok() && spec.new_backing_bytes) w = tmp->write(kNewBackingName, new_backing);
    if (!w.is_ok()) {
      v.add(Guarantee::kG2, "cannot write the state for qemu-img: " + w.message(), md);
    } else {
      // A dirty (lazy refcounts) image is repaired on open; QEMU's check runs after Keel's open.
      if (!qcow2_dirty(image)) judge_qemu_check(qemu_img_check(tmp->file(kImageName)), "on the crash state", opts.leak_bound, v, md);
      if (opts.qemu_convert) {
        auto raw = qemu_img_convert(tmp->file(kImageName), tmp->file("guest.raw"));
        if (!raw) v.add(Guarantee::kG3, "qemu-img convert: " + raw.error().message(), md);
        else check_raw_guest(*raw, model, v, md, "qemu-img convert");
      }
    }
  }

  const bool dirty = qcow2_dirty(image);
  MemoryFs fs;
  fs.put(kImageName, std::move(image));
  if (opts.keel_check && !dirty) judge_keel_check(*fs.handle(kImageName, /*read_only=*/true), "on the crash state", opts.leak_bound, v, md);
  if (has_backing) fs.put(kBackingName, backing);
  if (spec.new_backing_bytes) fs.put(kNewBackingName, new_backing);
  OpenOptions oo;
  oo.format = "qcow2";
  oo.file_opener = fs.opener();
  oo.encrypt_secret = kProofSecret;
  auto img = Image::open(MemoryFs::path(kImageName), oo);
  if (!img) {
    v.add(Guarantee::kG1, "open read-write failed: " + img.error().message(), md);
  } else if ((*img)->read_only()) {
    v.add(Guarantee::kG1, "image opened read-only", md);
  } else {
    std::vector<uint32_t> observed;
    if (!model.size_allowed((*img)->size()))
      v.add(Guarantee::kG3, "virtual size is " + std::to_string((*img)->size()) + "; model: " + model.describe_sizes(), md);
    const bool bitmaps = !model.bitmaps().empty();
    check_guest_reads(**img, model, v, md, "keel read", std::nullopt, opts.probe_write || bitmaps ? &observed : nullptr);
    if (bitmaps) check_bitmaps(**img, model, observed, v, md);
    if (opts.probe_write) {
      // Allocate after the crash: a refcount that undercounts would hand out a live cluster.
      // What each sector read is now its only allowed content.
      GuestModel after = model;
      for (uint64_t s = 0; s < observed.size(); ++s)
        if (observed[s] != kUnknownVersion) after.settle(s, observed[s]);
      std::mt19937_64 rng(opts.probe_seed);
      uint64_t cluster = spec.create.cluster_size, clusters = (*img)->size() / cluster;
      uint64_t count = std::min<uint64_t>(clusters, 2);
      uint64_t first = (rng() % (clusters - count + 1)) * cluster;
      std::vector<uint8_t> data(count * cluster);
      const uint32_t probe_version = 0xfffffff0u;
      fill_sectors(probe_version, first / kGuestSector, data);
      Status ws = (*img)->write(first, data);
      if (ws.is_ok()) ws = (*img)->flush();
      if (!ws.is_ok()) {
        v.add(Guarantee::kG1, "write after the crash failed: " + ws.message(), md);
      } else {
        after.write(first / kGuestSector, data.size() / kGuestSector, probe_version);
        after.flush();
        check_guest_reads(**img, after, v, md, "keel read after a new write");
      }
    }
    Status cs = (*img)->close();
    if (!cs.is_ok()) v.add(Guarantee::kG1, "close after open failed: " + cs.message(), md);
    img->reset();
    if (opts.keel_check) judge_keel_check(*fs.handle(kImageName), "after keel open+close", opts.leak_bound, v, md);
    check_snapshots(fs, model, v, md);
    check_key_slots(fs, model, v, md);
    if (tmp && tmp->ok()) {
      Status w = tmp->write(kImageName, fs.bytes(kImageName));
      if (w.is_ok()) judge_qemu_check(qemu_img_check(tmp->file(kImageName)), "after keel open+close", opts.leak_bound, v, md);
    }
  }

  if (has_backing) check_base(spec, backing, original_backing, model, v, md);
  if (has_backing && !fs.handle(kBackingName)->content_equals(backing))
    v.add(Guarantee::kG5, "keel's open, reads and close changed the backing file", md);
  if (spec.new_backing_bytes && !fs.handle(kNewBackingName)->content_equals(new_backing))
    v.add(Guarantee::kG5, "the second backing file changed", md);
  return v;
}

}  // namespace keel::proof
