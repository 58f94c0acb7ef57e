// The damage tool, the guest-content reader and the process helpers of corrupt_util.h.
#include "check/corrupt_util.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>

#include "format/endian.h"
#include "format/header.h"
#include "format/tables.h"

namespace keel::testing {

using namespace format;

const char* damage_name(Damage d) {
  switch (d) {
    case Damage::kRefcountZero: return "refcount_zero";
    case Damage::kRefcountHigh: return "refcount_too_high";
    case Damage::kDoubleReference: return "double_reference";
    case Damage::kEntryPastEof: return "entry_past_eof";
    case Damage::kMisalignedEntry: return "misaligned_entry";
    case Damage::kClearedCopied: return "cleared_copied";
    case Damage::kL1AtRefcountTable: return "l1_at_refcount_table";
    case Damage::kRefblockDropped: return "refblock_dropped";
    case Damage::kTruncated: return "truncated_file";
  }
  return "?";
}

const std::vector<Damage>& all_damages() {
  static const std::vector<Damage> v = {
      Damage::kRefcountZero,    Damage::kRefcountHigh,  Damage::kDoubleReference,
      Damage::kEntryPastEof,    Damage::kMisalignedEntry, Damage::kClearedCopied,
      Damage::kL1AtRefcountTable, Damage::kRefblockDropped, Damage::kTruncated,
  };
  return v;
}

namespace {

// A view of an image held in memory.
struct View {
  std::vector<uint8_t>& bytes;
  Header h;
  uint64_t cs = 0;
  uint64_t esz = 8;

  uint64_t be64(uint64_t off) const { return off + 8 <= bytes.size() ? get_be64(&bytes[off]) : 0; }
  void put64(uint64_t off, uint64_t v) {
    if (off + 8 > bytes.size()) bytes.resize(off + 8, 0);
    put_be64(&bytes[off], v);
  }
  uint64_t l1_entry(uint64_t idx) const { return be64(h.l1_table_offset + idx * 8); }
  // File offset of the L2 entry for guest_offset (0 if its L2 table is missing).
  uint64_t l2_entry_pos(uint64_t guest_offset) const {
    uint64_t ci = guest_offset / cs;
    uint64_t l2 = l1_entry(ci / h.l2_entries()) & kOffsetMask;
    return l2 ? l2 + (ci % h.l2_entries()) * esz : 0;
  }
  uint64_t refcount_pos_block(uint64_t cluster, uint64_t* block) const {
    uint64_t rbe = cs * 8 / h.refcount_bits();
    uint64_t e = be64(h.refcount_table_offset + (cluster / rbe) * 8) & ~kReftableReserved;
    *block = e;
    return cluster % rbe;
  }
  Result<uint64_t> get_rc(uint64_t cluster) const {
    uint64_t block;
    uint64_t idx = refcount_pos_block(cluster, &block);
    if (!block || block + cs > bytes.size()) return error(invalid("no refcount block"));
    return get_refcount(std::span<const uint8_t>(&bytes[block], cs), idx, h.refcount_bits());
  }
  Status set_rc(uint64_t cluster, uint64_t v) {
    uint64_t block;
    uint64_t idx = refcount_pos_block(cluster, &block);
    if (!block || block + cs > bytes.size()) return invalid("no refcount block");
    set_refcount(std::span<uint8_t>(&bytes[block], cs), idx, h.refcount_bits(), v);
    return Status::ok();
  }
};

Result<Header> parse(std::span<const uint8_t> bytes) {
  if (bytes.size() < 512) return error(corrupt("image too small"));
  KEEL_ASSIGN(uint32_t bits, peek_cluster_bits(bytes.subspan(0, 512)));
  std::vector<uint8_t> c0(1ull << bits, 0);
  std::memcpy(c0.data(), bytes.data(), std::min<size_t>(c0.size(), bytes.size()));
  return decode_header(c0, UINT64_MAX, true);
}

// Guest clusters of the active image whose data (or L2 table) starts at or after `cut`.
std::vector<GuestRange> ranges_past(const View& v, uint64_t cut) {
  std::vector<GuestRange> out;
  const uint64_t span = v.h.l2_entries() * v.cs;
  auto add = [&](uint64_t off, uint64_t len) {
    if (off >= v.h.size) return;
    len = std::min(len, v.h.size - off);
    if (!out.empty() && out.back().offset + out.back().length == off) out.back().length += len;
    else out.push_back({off, len});
  };
  for (uint64_t j = 0; j < v.h.l1_size; ++j) {
    uint64_t l2 = v.l1_entry(j) & kOffsetMask;
    if (!l2) continue;
    if (l2 >= cut) {
      add(j * span, span);
      continue;
    }
    for (uint64_t i = 0; i < v.h.l2_entries(); ++i) {
      uint64_t e = v.be64(l2 + i * v.esz);
      uint64_t host = (e & kCompressed) ? decode_compressed(e, v.h.cluster_bits).host_offset : (e & kOffsetMask);
      if (host && host + ((e & kCompressed) ? 1 : v.cs) > cut) add((j * v.h.l2_entries() + i) * v.cs, v.cs);
    }
  }
  return out;
}

}  // namespace

Result<std::vector<GuestRange>> damage_bytes(std::vector<uint8_t>& bytes, Damage kind, uint64_t guest_offset) {
  KEEL_ASSIGN(Header h, parse(bytes));
  View v{bytes, h, h.cluster_size(), h.extended_l2() ? 16u : 8u};
  const uint64_t cs = v.cs;
  guest_offset = guest_offset / cs * cs;
  const uint64_t pos = v.l2_entry_pos(guest_offset);
  const uint64_t entry = pos ? v.be64(pos) : 0;
  const uint64_t host = entry & kOffsetMask;
  if (!pos || !host || (entry & kCompressed))
    return error(invalid(fmt::format("guest offset 0x{:x} is not an allocated standard cluster", guest_offset)));
  const std::vector<GuestRange> target = {{guest_offset, cs}};
  switch (kind) {
    case Damage::kRefcountZero:
      KEEL_TRY_R(v.set_rc(host / cs, 0));
      return std::vector<GuestRange>{};
    case Damage::kRefcountHigh: {
      KEEL_ASSIGN(uint64_t rc, v.get_rc(host / cs));
      if (rc < refcount_max(h.refcount_bits())) {
        KEEL_TRY_R(v.set_rc(host / cs, rc + 1));
        return std::vector<GuestRange>{};
      }
      // A one-bit refcount cannot go higher: give a free cluster of the file a refcount instead.
      for (uint64_t c = 1; c < bytes.size() / cs; ++c) {
        auto r = v.get_rc(c);
        if (r && *r == 0) {
          KEEL_TRY_R(v.set_rc(c, 1));
          return std::vector<GuestRange>{};
        }
      }
      // None free: append one.
      bytes.resize(bytes.size() / cs * cs + cs, 0);
      KEEL_TRY_R(v.set_rc(bytes.size() / cs - 1, 1));
      return std::vector<GuestRange>{};
    }
    case Damage::kDoubleReference: {
      // The first other allocated guest cluster lends its data cluster.
      for (uint64_t g = 0; g < h.size; g += cs) {
        if (g == guest_offset) continue;
        uint64_t p = v.l2_entry_pos(g), e = p ? v.be64(p) : 0;
        if (!(e & kOffsetMask) || (e & kCompressed) || (e & kOffsetMask) == host) continue;
        v.put64(pos, (entry & ~kOffsetMask) | (e & kOffsetMask));
        return target;
      }
      return error(invalid("no second allocated cluster to share"));
    }
    case Damage::kEntryPastEof: {
      uint64_t eof = (bytes.size() + cs - 1) / cs * cs;
      v.put64(pos, (entry & ~kOffsetMask) | (eof + 16 * cs));
      return target;
    }
    case Damage::kMisalignedEntry:
      if (cs <= 512) return error(unsupported("512-byte clusters cannot be misaligned"));
      v.put64(pos, entry + 512);
      return target;
    case Damage::kClearedCopied:
      if (!(entry & kCopied)) return error(invalid("target entry has no COPIED flag"));
      v.put64(pos, entry & ~kCopied);
      return std::vector<GuestRange>{};
    case Damage::kL1AtRefcountTable: {
      uint64_t span = h.l2_entries() * cs;
      uint64_t idx = guest_offset / span;
      v.put64(h.l1_table_offset + idx * 8, kCopied | h.refcount_table_offset);
      return std::vector<GuestRange>{{idx * span, std::min(span, h.size - idx * span)}};
    }
    case Damage::kRefblockDropped:
      v.put64(h.refcount_table_offset, 0);
      return std::vector<GuestRange>{};
    case Damage::kTruncated: {
      std::vector<GuestRange> lost = ranges_past(v, host);
      bytes.resize(host);
      return lost;
    }
  }
  return error(invalid("unknown damage"));
}

Result<uint64_t> last_data_cluster(std::span<const uint8_t> image) {
  KEEL_ASSIGN(Header h, parse(image));
  const uint64_t cs = h.cluster_size(), esz = h.extended_l2() ? 16 : 8;
  auto be64 = [&](uint64_t off) -> uint64_t { return off + 8 <= image.size() ? get_be64(&image[off]) : 0; };
  uint64_t best_host = 0, best_guest = 0;
  for (uint64_t j = 0; j < h.l1_size; ++j) {
    uint64_t l2 = be64(h.l1_table_offset + j * 8) & kOffsetMask;
    if (!l2) continue;
    for (uint64_t i = 0; i < h.l2_entries(); ++i) {
      uint64_t e = be64(l2 + i * esz);
      if (e & kCompressed) continue;
      uint64_t host = e & kOffsetMask;
      if (host > best_host) {
        best_host = host;
        best_guest = (j * h.l2_entries() + i) * cs;
      }
    }
  }
  if (!best_host) return error(invalid("no allocated cluster"));
  return best_guest;
}

Result<std::vector<GuestRange>> damage_image(const std::string& path, Damage kind, uint64_t guest_offset) {
  KEEL_ASSIGN(auto bytes, read_file(path));
  KEEL_ASSIGN(auto lost, damage_bytes(bytes, kind, guest_offset));
  KEEL_TRY_R(write_file(path, bytes));
  return lost;
}

Result<std::vector<uint8_t>> read_guest(std::span<const uint8_t> image) {
  KEEL_ASSIGN(Header h, parse(image));
  const uint64_t cs = h.cluster_size(), esz = h.extended_l2() ? 16 : 8, sc = cs / kSubclusters;
  if (h.size > (1ull << 32)) return error(invalid("image too large to read into memory"));
  auto be64 = [&](uint64_t off) -> uint64_t { return off + 8 <= image.size() ? get_be64(&image[off]) : 0; };
  auto copy = [&](uint8_t* dst, uint64_t src, uint64_t n) {
    for (uint64_t k = 0; k < n; ++k) dst[k] = src + k < image.size() ? image[src + k] : 0;
  };
  std::vector<uint8_t> guest(h.size, 0);
  for (uint64_t g = 0; g < h.size; g += cs) {
    uint64_t ci = g / cs;
    uint64_t l1 = be64(h.l1_table_offset + (ci / h.l2_entries()) * 8);
    uint64_t l2 = l1 & kOffsetMask;
    if (!l2) continue;
    if (l2 % cs) continue;  // unreadable for QEMU; reads as zeros here
    uint64_t p = l2 + (ci % h.l2_entries()) * esz;
    uint64_t e = be64(p), bm = h.extended_l2() ? be64(p + 8) : 0;
    uint64_t n = std::min(cs, h.size - g);
    if (e & kCompressed) return error(unsupported("compressed clusters"));
    uint64_t host = e & kOffsetMask;
    if (host % cs) continue;  // unreadable for QEMU; reads as zeros here
    if (!h.extended_l2()) {
      if ((e & kZeroFlag) || !host) continue;
      copy(&guest[g], host, n);
      continue;
    }
    for (uint32_t s = 0; s < kSubclusters && s * sc < n; ++s)
      if (((bm >> s) & 1) && !((bm >> (32 + s)) & 1) && host) copy(&guest[g + s * sc], host + s * sc, std::min(sc, n - s * sc));
  }
  return guest;
}

Result<std::vector<uint8_t>> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return error(io_error(ENOENT, "open " + path));
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

Status write_file(const std::string& path, std::span<const uint8_t> bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!out) return io_error(EIO, "write " + path);
  return Status::ok();
}

int run(const std::string& command, std::string* output) {
  std::string cmd = command + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return -1;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0)
    if (output) output->append(buf, n);
  int st = pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/keel-check-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  char* d = mkdtemp(buf.data());
  path_ = d ? d : "/tmp";
}

TempDir::~TempDir() {
  std::error_code ec;
  if (path_ != "/tmp") std::filesystem::remove_all(path_, ec);
}

}  // namespace keel::testing
