// keel check: the internal snapshot table and each snapshot's L1 table.
//
// The table is read leniently, entry by entry, with format/'s entry decoder
// (decode_snapshot_entry_header, make_snapshot_entry): decode_snapshot_table refuses a whole
// table for one bad entry, and check must judge each entry. Like QEMU: a table that cannot be read fails the check (exit 1)
// unless repairing; an entry whose L1 table is misaligned or too large is a corruption, and a
// repair deletes that snapshot. Keel also deletes snapshots whose L1 table lies past the end of
// the file or on top of other metadata. Deleting rewrites the table into new clusters (the
// refcount rebuild writes it and switches the header to it in the same sector write).
#include <array>

#include <fmt/format.h>

#include "check/checker.h"
#include "format/snapshot_table.h"
#include "keel/limits.h"

namespace keel::check {

using namespace format;

namespace {
constexpr uint64_t kWindowBytes = 1ull << 20;  // ours: snapshot table read-ahead
}  // namespace

Status Checker::load_snapshots() {
  const uint32_t nb = h_.nb_snapshots;
  if (nb == 0) return Status::ok();
  const uint64_t base = h_.snapshots_offset;

  // A read-ahead window over the table (bytes past the end of the file read as zeros).
  std::vector<uint8_t> window;
  uint64_t window_pos = 0;
  auto fetch = [&](uint64_t pos, uint64_t len, uint8_t* dst) -> Status {
    while (len > 0) {
      if (window.empty() || pos < window_pos || pos >= window_pos + window.size()) {
        window_pos = pos;
        window.assign(kWindowBytes, 0);
        KEEL_TRY(read(base + pos, window));
      }
      uint64_t n = std::min(len, window_pos + window.size() - pos);
      std::memcpy(dst, &window[pos - window_pos], n);
      dst += n;
      pos += n;
      len -= n;
    }
    return Status::ok();
  };

  uint64_t pos = 0;
  std::string failure;
  for (uint32_t i = 0; i < nb; ++i) {
    std::array<uint8_t, kSnapshotEntryHeaderBytes> hd;
    if (pos + hd.size() > limits::kMaxSnapshotTableBytes) {
      failure = "Snapshot table exceeds the maximum size";
      break;
    }
    KEEL_TRY(fetch(pos, hd.size(), hd.data()));
    const SnapshotEntryHeader h = decode_snapshot_entry_header(hd);  // format/'s lenient reading
    if (pos + h.unpadded_bytes() > limits::kMaxSnapshotTableBytes) {
      failure = "Snapshot table exceeds the maximum size";
      break;
    }
    if (h.extra_size > limits::kMaxSnapshotExtraData) {
      if (!fixing()) {
        failure = fmt::format("Too much extra metadata in snapshot table entry {}", i);
        break;
      }
      report(fmt::format("Discarding too much extra metadata in snapshot table entry {} ({} > {})", i, h.extra_size,
                         limits::kMaxSnapshotExtraData));
      ++res_.corruptions;
      rewrite_snapshots_ = true;
    }
    std::vector<uint8_t> extra(std::min<uint32_t>(h.extra_size, limits::kMaxSnapshotExtraData));
    KEEL_TRY(fetch(pos + hd.size(), extra.size(), extra.data()));
    std::string id(h.id_size, '\0'), name(h.name_size, '\0');
    KEEL_TRY(fetch(pos + hd.size() + h.extra_size, h.id_size, reinterpret_cast<uint8_t*>(id.data())));
    KEEL_TRY(fetch(pos + hd.size() + h.extra_size + h.id_size, h.name_size, reinterpret_cast<uint8_t*>(name.data())));
    SnapshotRecord rec;
    rec.entry = make_snapshot_entry(h, std::move(extra), std::move(id), std::move(name));
    if (rec.entry.extra.size() < 16) rec.entry.disk_size = h_.size;  // as QEMU assumes for old entries
    snapshots_.push_back(std::move(rec));
    pos += snapshot_entry_bytes(h.extra_size, h.id_size, h.name_size);
  }
  if (!failure.empty()) {
    if (!fixing()) {
      report("ERROR failed to read the snapshot table: " + failure);
      return Status(Code::kCorrupt, "failed to read the snapshot table: " + failure, EFBIG);
    }
    report(fmt::format("Repairing the snapshot table: {}; keeping the {} snapshots before that point", failure,
                       snapshots_.size()));
    ++res_.corruptions;
    rewrite_snapshots_ = true;
  }
  snapshot_table_bytes_ = pos;

  auto drop_all = [&] {
    for (auto& s : snapshots_) s.walk = false;
    if (fixing()) {
      for (auto& s : snapshots_) s.keep = false;
      rewrite_snapshots_ = true;
      report("Repairing: deleting every snapshot");
    }
  };
  if (!g_.range_in_file(base, pos)) {
    corruption(fmt::format(
        "ERROR: counting reference for region exceeding the end of the file by one cluster or more: "
        "offset 0x{:x} size 0x{:x}",
        base, pos));
    drop_all();
    return Status::ok();
  }
  if (Owner o = claim(base, pos, Owner::kSnapshotTable); o != Owner::kNone) {
    corruption(fmt::format("ERROR snapshot table at offset 0x{:x} overlaps the {}", base, owner_name(o)));
    drop_all();
    return Status::ok();
  }

  for (size_t i = 0; i < snapshots_.size(); ++i) {
    // v3 entries carry at least the 64-bit VM state size and the disk size (16 bytes).
    if (h_.version >= 3 && snapshots_[i].entry.extra.size() < 16) {
      corruption(fmt::format("{} snapshot table entry {} is incomplete", fix_prefix(), i));
      if (fixing()) rewrite_snapshots_ = true;
    }
  }
  for (auto& s : snapshots_) {
    const SnapshotEntry& e = s.entry;
    const uint64_t bytes = uint64_t(e.l1_size) * 8;
    const char* verb = fixing() ? "Deleting" : "ERROR";
    std::string problem;
    if (e.l1_table_offset % g_.cluster_size) {
      problem = fmt::format("{} snapshot {} ({}) l1_offset={:#x}: L1 table is not cluster aligned; snapshot table "
                            "entry corrupted", verb, e.id, e.name, e.l1_table_offset);
    } else if (bytes > limits::kMaxL1Bytes) {
      problem = fmt::format("{} snapshot {} ({}) l1_size={:#x}: L1 table is too large; snapshot table entry "
                            "corrupted", verb, e.id, e.name, e.l1_size);
    } else if (bytes > 0 && !g_.range_in_file(e.l1_table_offset, bytes)) {
      problem = fmt::format("{} snapshot {} ({}) l1_offset={:#x}: L1 table is outside image", verb, e.id, e.name,
                            e.l1_table_offset);
    } else if (Owner o = claim(e.l1_table_offset, bytes, Owner::kSnapshotL1); o != Owner::kNone) {
      problem = fmt::format("{} snapshot {} ({}) l1_offset={:#x}: L1 table overlaps the {}", verb, e.id, e.name,
                            e.l1_table_offset, owner_name(o));
    }
    if (problem.empty()) continue;
    corruption(problem);
    s.walk = false;
    if (fixing()) {
      s.keep = false;
      rewrite_snapshots_ = true;
    }
  }
  return Status::ok();
}

std::vector<uint8_t> Checker::encode_kept_snapshots() const {
  std::vector<SnapshotEntry> kept;
  for (const auto& s : snapshots_)
    if (s.keep) kept.push_back(s.entry);
  return encode_snapshot_table(kept, h_.version);
}

}  // namespace keel::check
