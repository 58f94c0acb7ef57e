// The SIGKILL test's driver and verifier (see kill_run.h).
#include "proof/kill_run.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>

#include "keel/check.h"
#include "keel/image.h"
#include "proof/checker.h"
#include "proof/pattern.h"
#include "proof/qemu_oracle.h"
#include "proof/workload.h"

namespace keel::proof {
namespace {

constexpr char kKinds[] = {'w', 'z', 'd', 'f'};

GuestOpKind kind_of(char c) {
  switch (c) {
    case 'z': return GuestOpKind::kWriteZeroes;
    case 'd': return GuestOpKind::kDiscard;
    case 'f': return GuestOpKind::kFlush;
    default: return GuestOpKind::kWrite;
  }
}

char kind_char(GuestOpKind k) {
  switch (k) {
    case GuestOpKind::kWriteZeroes: return kKinds[1];
    case GuestOpKind::kDiscard: return kKinds[2];
    case GuestOpKind::kFlush: return kKinds[3];
    default: return kKinds[0];
  }
}

bool append_line(int fd, const std::string& line) {
  return ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
}

GuestOp next_op(std::mt19937_64& rng, uint64_t size, uint64_t cluster) {
  GuestOp op;
  uint64_t sectors = size / kGuestSector;
  // Most activity in the first 16 MiB, so overwrites, frees and reuse happen.
  uint64_t span = rng() % 100 < 70 ? std::min<uint64_t>(sectors, (16u << 20) / kGuestSector) : sectors;
  uint64_t r = rng() % 100;
  if (r < 8) {
    op.kind = GuestOpKind::kFlush;
    return op;
  }
  if (r < 14) {
    uint64_t clusters = size / cluster, n = 1 + rng() % 4;
    uint64_t first = rng() % (clusters - n + 1);
    op.kind = GuestOpKind::kDiscard;
    op.offset = first * cluster;
    op.length = n * cluster;
    return op;
  }
  uint64_t len = r < 20 ? 1 + rng() % (2 * cluster / kGuestSector)
                        : (rng() % 3 == 0 ? 1 + rng() % 512 : 1 + rng() % 16);
  len = std::min(len, span);
  op.offset = (rng() % (span - len + 1)) * kGuestSector;
  op.length = len * kGuestSector;
  if (r < 20) {
    op.kind = GuestOpKind::kWriteZeroes;
    op.may_unmap = rng() & 1;
  } else {
    op.fua = rng() % 100 < 5;
  }
  return op;
}

struct Journal {
  WorkloadSpec spec;
  std::vector<GuestMark> marks;
  uint64_t started = 0, completed = 0, flushes = 0;
};

bool parse_journal(const std::string& path, Journal& j) {
  // No journal at all: the driver was killed before it opened it (a slow start, e.g. under a
  // sanitizer), so no operation started: an empty journal.
  std::error_code ec;
  if (!std::filesystem::exists(path, ec) && !ec) return true;
  std::ifstream in(path);
  if (!in) return false;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    char tag = 0;
    uint64_t index = 0;
    if (!(ls >> tag >> index) || index > (1u << 30)) continue;
    if (tag == 'S') {
      char kind = 0;
      GuestOp op;
      int fua = 0, unmap = 0;
      if (!(ls >> kind >> op.offset >> op.length >> fua >> unmap)) continue;  // a torn last line
      op.kind = kind_of(kind);
      op.fua = fua;
      op.may_unmap = unmap;
      if (j.spec.ops.size() <= index) j.spec.ops.resize(index + 1);
      j.spec.ops[index] = op;
      j.marks.push_back({static_cast<uint32_t>(index), false, 0, true});
      j.started++;
    } else if (tag == 'E') {
      std::string result;
      if (!(ls >> result) || index >= j.spec.ops.size()) continue;
      bool ok = result == "ok";
      j.marks.push_back({static_cast<uint32_t>(index), true, 0, ok});
      j.completed++;
      j.flushes += ok && j.spec.ops[index].kind == GuestOpKind::kFlush;
    }
  }
  return true;
}

// Leaks a kill may leave: guest clusters touched since the second-to-last completed flush, the
// L2 tables that map them, and a little slack for refcount blocks.
uint64_t kill_leak_bound(const Journal& j, uint64_t cluster) {
  size_t from = 0;
  std::vector<size_t> flush_ends;
  for (size_t k = 0; k < j.marks.size(); ++k) {
    const auto& m = j.marks[k];
    if (m.end && m.ok && j.spec.ops[m.op].kind == GuestOpKind::kFlush) flush_ends.push_back(k);
  }
  if (flush_ends.size() >= 2) from = flush_ends[flush_ends.size() - 2];
  std::set<uint64_t> clusters, l2s;
  uint64_t l2_span = cluster / 8 * cluster;
  for (size_t k = from; k < j.marks.size(); ++k) {
    const GuestOp& op = j.spec.ops[j.marks[k].op];
    if (j.marks[k].end || op.length == 0) continue;
    for (uint64_t c = op.offset / cluster; c <= (op.offset + op.length - 1) / cluster; ++c) {
      clusters.insert(c);
      l2s.insert(c * cluster / l2_span);
    }
  }
  return clusters.size() + l2s.size() + 4;
}

bool qcow2_file_dirty(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<uint8_t> head(80, 0);
  in.read(reinterpret_cast<char*>(head.data()), 80);
  return qcow2_dirty(head);
}

// Runs Keel's check on the file; adds a G2 violation for corruptions or too many leaks.
void keel_check_file(const std::string& path, const char* when, uint64_t bound, StateVerdict& v) {
  FileOptions fo;
  fo.read_only = true;
  auto f = open_posix_file(path, fo);
  if (!f) {
    v.add(Guarantee::kG2, std::string("cannot open for check ") + when + ": " + f.error().message(), 5);
    return;
  }
  std::string lines;
  CheckOptions co;
  co.report = [&](const std::string& l) {
    if (lines.size() < 2000) lines += "      " + l + "\n";
  };
  auto r = check_qcow2(**f, co);
  if (!r) {
    v.add(Guarantee::kG2, std::string("keel check ") + when + " failed: " + r.error().message(), 5);
  } else if (r->corruptions || r->check_errors || r->leaks > bound) {
    v.add(Guarantee::kG2, std::string("keel check ") + when + ": " + std::to_string(r->corruptions) +
                              " corruptions, " + std::to_string(r->leaks) + " leaks (allowed " + std::to_string(bound) +
                              "), " + std::to_string(r->check_errors) + " check errors\n" + lines, 5);
  }
}

}  // namespace

int run_kill_driver(const KillDriverOptions& opts) {
  int jfd = ::open(opts.journal.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (jfd < 0) {
    std::perror(opts.journal.c_str());
    return 2;
  }
  OpenOptions oo;
  oo.format = "qcow2";
  oo.encrypt_secret = kProofSecret;
  auto img = Image::open(opts.image, oo);
  if (!img) {
    std::fprintf(stderr, "kill-driver: %s\n", img.error().message().c_str());
    ::close(jfd);
    return 2;
  }
  Image& image = **img;
  const uint64_t size = image.size(), cluster = image.cluster_size();
  std::mt19937_64 rng(opts.seed);
  std::vector<uint8_t> data;
  for (uint64_t i = 0; i < opts.max_ops; ++i) {
    GuestOp op = next_op(rng, size, cluster);
    std::ostringstream s;
    s << "S " << i << " " << kind_char(op.kind) << " " << op.offset << " " << op.length << " " << op.fua << " "
      << op.may_unmap << "\n";
    if (!append_line(jfd, s.str())) return 2;
    Status st;
    switch (op.kind) {
      case GuestOpKind::kWrite:
        data.resize(op.length);
        fill_sectors(op_version(i), op.offset / kGuestSector, data);
        st = image.write(op.offset, data, op.fua);
        break;
      case GuestOpKind::kWriteZeroes: {
        ZeroFlags f;
        f.may_unmap = op.may_unmap;
        st = image.write_zeroes(op.offset, op.length, f);
        break;
      }
      case GuestOpKind::kDiscard: st = image.discard(op.offset, op.length); break;
      default: st = image.flush(); break;
    }
    if (!append_line(jfd, "E " + std::to_string(i) + (st.is_ok() ? " ok\n" : " fail\n"))) return 2;
    if (!st.is_ok()) std::fprintf(stderr, "kill-driver: op %llu: %s\n", static_cast<unsigned long long>(i), st.message().c_str());
  }
  Status cs = image.close();
  ::close(jfd);
  return cs.is_ok() ? 0 : 1;
}

int run_kill_verify(const std::string& image, const std::string& journal, bool verbose, bool qemu) {
  Journal j;
  if (!parse_journal(journal, j)) {
    std::printf("kill-verify: cannot read journal %s\n", journal.c_str());
    return 2;
  }
  StateVerdict v;
  bool dirty = qcow2_file_dirty(image);
  OpenOptions ro;
  ro.format = "qcow2";
  ro.read_only = true;
  ro.force_share = true;
  ro.encrypt_secret = kProofSecret;
  uint64_t cluster = 65536, size = 0;
  if (auto peek = Image::open(image, ro)) cluster = (*peek)->cluster_size(), size = (*peek)->size();
  uint64_t bound = kill_leak_bound(j, cluster);
  if (!dirty) keel_check_file(image, "on the killed image", bound, v);
  if (qemu) {  // QEMU's reading of the image exactly as the kill left it
    TempDir tmp;
    auto raw = tmp.ok() ? qemu_img_convert(image, tmp.file("guest.raw")) : error(io_error(EIO, "temp dir"));
    if (!raw) {
      v.add(Guarantee::kG3, "qemu-img convert of the killed image: " + raw.error().message(), 5);
    } else {
      GuestModel model(size, 0);
      for (const auto& m : j.marks) apply_mark(model, j.spec, m);
      check_raw_guest(*raw, model, v, 5, "qemu-img convert");
    }
  }

  OpenOptions oo;
  oo.format = "qcow2";
  oo.encrypt_secret = kProofSecret;
  auto img = Image::open(image, oo);
  uint64_t sectors = 0;
  if (!img) {
    v.add(Guarantee::kG1, "open read-write failed: " + img.error().message(), 5);
  } else {
    GuestModel model((*img)->size(), 0);
    for (const auto& m : j.marks) apply_mark(model, j.spec, m);
    sectors = model.sector_count();
    check_guest_reads(**img, model, v, 5, "keel read");
    Status cs = (*img)->close();
    if (!cs.is_ok()) v.add(Guarantee::kG1, "close failed: " + cs.message(), 5);
    img->reset();
    keel_check_file(image, "after keel open+close", bound, v);
  }
  std::printf("kill-verify: %llu ops started, %llu completed, %llu flushes completed; %s; %llu sectors read back\n",
              static_cast<unsigned long long>(j.started), static_cast<unsigned long long>(j.completed),
              static_cast<unsigned long long>(j.flushes), dirty ? "image dirty (lazy refcounts)" : "image clean",
              static_cast<unsigned long long>(sectors));
  if (!v.any()) {
    if (verbose) std::printf("kill-verify: OK\n");
    return 0;
  }
  for (const auto& [g, d] : v.details) std::printf("kill-verify: VIOLATION %s (%s): %s\n", guarantee_name(g), guarantee_title(g), d.c_str());
  return 1;
}

}  // namespace keel::proof
