// The crash-state explorer (see explorer.h).
#include "proof/explorer.h"

#include <malloc.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <set>
#include <sstream>

#include "io/recording_file.h"
#include "proof/damage.h"
#include "proof/memory_fs.h"
#include "proof/qemu_oracle.h"

namespace keel::proof {
namespace {

using Clock = std::chrono::steady_clock;

struct Recorded {
  WorkloadSpec spec;
  std::shared_ptr<Recording> rec = std::make_shared<Recording>();
  std::vector<GuestMark> marks;
  Status status;
};

// Sabotage::kDropSyncs: the engine believes it synced; the recording never sees the sync.
class DropSyncFile final : public BlockFile {
 public:
  explicit DropSyncFile(std::unique_ptr<BlockFile> inner) : inner_(std::move(inner)) {}
  Status read_at(uint64_t o, std::span<uint8_t> b) override { return inner_->read_at(o, b); }
  Status write_at(uint64_t o, std::span<const uint8_t> b) override { return inner_->write_at(o, b); }
  Status sync() override { return Status::ok(); }
  Status truncate(uint64_t s) override { return inner_->truncate(s); }
  Status allocate(uint64_t o, uint64_t l) override { return inner_->allocate(o, l); }
  Status punch(uint64_t o, uint64_t l) override { return inner_->punch(o, l); }
  Result<uint64_t> size() override { return inner_->size(); }
  std::string name() const override { return inner_->name(); }

 private:
  std::unique_ptr<BlockFile> inner_;
};

// Sabotage::kIgnoreSyncErrors: a failed sync is reported as done.
class IgnoreSyncErrorFile final : public BlockFile {
 public:
  explicit IgnoreSyncErrorFile(std::unique_ptr<BlockFile> inner) : inner_(std::move(inner)) {}
  Status read_at(uint64_t o, std::span<uint8_t> b) override { return inner_->read_at(o, b); }
  Status write_at(uint64_t o, std::span<const uint8_t> b) override { return inner_->write_at(o, b); }
  Status sync() override {
    (void)inner_->sync();
    return Status::ok();
  }
  Status truncate(uint64_t s) override { return inner_->truncate(s); }
  Status allocate(uint64_t o, uint64_t l) override { return inner_->allocate(o, l); }
  Status punch(uint64_t o, uint64_t l) override { return inner_->punch(o, l); }
  Result<uint64_t> size() override { return inner_->size(); }
  uint32_t alignment() const override { return inner_->alignment(); }
  std::string name() const override { return inner_->name(); }

 private:
  std::unique_ptr<BlockFile> inner_;
};

Result<std::unique_ptr<BlockFile>> wrap_recording(const std::shared_ptr<Recording>& rec,
                                                  std::unique_ptr<BlockFile> inner, const std::string& name,
                                                  Sabotage sabotage) {
  auto r = RecordingFile::wrap(std::move(inner), rec, name);
  if (!r) return error(r.error());
  return sabotaged(std::move(*r), sabotage);
}

// Creates the image and runs the workload on recording files.
Recorded record_workload(WorkloadSpec spec, const ExploreConfig& config) {
  Recorded out;
  out.spec = std::move(spec);
  WorkloadSpec& s = out.spec;
  if (s.backing_bytes) {
    s.create.backing_file = kBackingName;
    s.create.backing_format = "raw";
  }
  MemoryFs fs;
  std::string image_path;
  FileOpener opener;
  auto rec = out.rec;
  std::string dir;
  if (config.real_dir.empty()) {
    dir = MemoryFs::kDir;
    if (s.backing_bytes) fs.put(kBackingName, backing_content(s));
    if (s.new_backing_bytes) fs.put(kNewBackingName, new_backing_content(s));
    CreateOptions co = s.create;
    co.file_opener = fs.opener();
    out.status = create_image(MemoryFs::path(kImageName), co);
    if (out.status.is_ok() && !s.damage.empty()) {
      std::vector<uint8_t> b = fs.bytes(kImageName);
      apply_damage(s, b);
      fs.put(kImageName, b);
    }
    image_path = MemoryFs::path(kImageName);
    Sabotage sabotage = config.sabotage;
    opener = fs.opener([rec, sabotage](std::unique_ptr<BlockFile> inner, const std::string& name, const FileOptions&) {
      return wrap_recording(rec, std::move(inner), name, sabotage);
    });
  } else {
    dir = config.real_dir;
    image_path = config.real_dir + "/" + kImageName;
    auto put = [&](const char* name, const std::vector<uint8_t>& bytes) {
      if (!out.status.is_ok()) return;
      auto f = open_posix_file(config.real_dir + "/" + name, FileOptions{.create = true});
      if (!f) out.status = f.error();
      else out.status = (*f)->write_at(0, bytes);
    };
    if (s.backing_bytes) put(kBackingName, backing_content(s));
    if (s.new_backing_bytes) put(kNewBackingName, new_backing_content(s));
    if (out.status.is_ok()) out.status = create_image(image_path, s.create);
    if (out.status.is_ok() && !s.damage.empty()) out.status = unsupported("damaged workloads run in memory only");
    Sabotage sabotage = config.sabotage;
    opener = [rec, sabotage](const std::string& path, const FileOptions& fo) -> Result<std::unique_ptr<BlockFile>> {
      auto f = open_posix_file(path, fo);
      if (!f) return error(f.error());
      return wrap_recording(rec, std::move(*f), base_name(path), sabotage);
    };
  }
  if (!out.status.is_ok()) {
    out.status = out.status.with_context("create");
    return out;
  }
  OpenOptions oo;
  oo.format = "qcow2";
  oo.file_opener = opener;
  oo.cache = s.cache;
  oo.encrypt_secret = kProofSecret;
  oo.observer = rec.get();
  // The backing files, opened as raw images through the same recording layer (commit, rebase).
  auto layers = [&](const std::string& name, bool writable) {
    OpenOptions lo;
    lo.format = "raw";
    lo.read_only = !writable;
    // The open image holds the backing file's lock (--dir: real OFD locks); the commit writes
    // the base from inside the same process, as qemu-img commit's block job does.
    lo.force_share = true;
    lo.file_opener = opener;
    lo.observer = rec.get();
    return Image::open(dir + "/" + name, lo);
  };
  WorkloadRunner runner(s, [&] { return Image::open(image_path, oo); }, [&] { return rec->op_count(); }, layers);
  out.status = runner.open().with_context("open");
  // A damaged image's requests are refused (the image is marked corrupt): expected, and required.
  const bool damaged = !s.damage.empty();
  bool refused = false;
  for (size_t i = 0; out.status.is_ok() && i < s.ops.size(); ++i) {
    Status st = runner.step(i).with_context("guest op " + std::to_string(i) + " " + s.ops[i].describe());
    if (damaged) refused |= st.code() == Code::kCorrupt;
    else out.status = st;
  }
  if (out.status.is_ok()) {
    Status st = runner.close().with_context("close");
    if (!damaged) out.status = st;
  }
  if (out.status.is_ok() && damaged && !refused)
    out.status = corrupt("damaged workload: the engine refused no request (the damage went unnoticed)");
  out.marks = runner.marks();
  return out;
}

bool is_durability_point(const WorkloadSpec& s, const GuestMark& m) {
  if (!m.end || !m.ok) return false;
  if (m.op >= s.ops.size()) return true;  // close
  return makes_durable(s.ops[m.op].kind);
}

bool is_data_event(int e) {
  return e == static_cast<int>(Event::kDataWrite) || e == static_cast<int>(Event::kCowWrite) ||
         e == static_cast<int>(Event::kCompressedWrite);
}

std::map<std::string, PhaseCost> measure_cost(const Recorded& r, uint32_t image_id) {
  std::map<std::string, PhaseCost> cost;
  const auto& ops = r.rec->ops();
  std::vector<std::string> phase_of(ops.size(), "open");
  std::vector<bool> in_flush(ops.size(), false);
  for (size_t i = 0; i + 1 < r.marks.size(); ++i) {
    const GuestMark& a = r.marks[i];
    const GuestMark& b = r.marks[i + 1];
    if (a.end || !b.end || a.op != b.op) continue;
    bool close = a.op >= r.spec.ops.size();
    std::string phase = close ? "close" : r.spec.ops[a.op].phase;
    bool flush = !close && r.spec.ops[a.op].kind == GuestOpKind::kFlush;
    PhaseCost& pc = cost[phase];
    if (!close) {
      auto k = r.spec.ops[a.op].kind;
      if (k == GuestOpKind::kFlush) pc.guest_flushes++;
      else if (!makes_durable(k)) pc.guest_writes++;
    }
    for (uint64_t p = a.position; p < b.position && p < ops.size(); ++p) {
      phase_of[p] = phase;
      in_flush[p] = flush;
    }
  }
  for (size_t i = 0; i < ops.size(); ++i) {
    const FileOp& op = ops[i];
    if (op.file != image_id) continue;
    PhaseCost& pc = cost[phase_of[i]];
    if (op.kind == FileOpKind::kSync) (in_flush[i] ? pc.flush_syncs : pc.other_syncs)++;
    if (op.kind == FileOpKind::kWrite) (is_data_event(op.last_event) ? pc.data_writes : pc.metadata_writes)++;
  }
  return cost;
}

std::string where(const Recorded& r, uint64_t crash_point) {
  std::ostringstream o;
  if (crash_point == 0) return "before the first op";
  o << "after op " << crash_point - 1 << " (" << r.rec->ops()[crash_point - 1].describe() << ")";
  const GuestMark* in = nullptr;
  for (const auto& m : r.marks)
    if (m.position <= crash_point) in = &m;
  if (in) {
    std::string what = in->op < r.spec.ops.size() ? r.spec.ops[in->op].describe() : "close";
    o << (in->end ? ", after guest op " : ", during guest op ") << in->op << " " << what;
  }
  return o.str();
}

}  // namespace

std::unique_ptr<BlockFile> sabotaged(std::unique_ptr<BlockFile> file, Sabotage s) {
  if (s == Sabotage::kDropSyncs) return std::make_unique<DropSyncFile>(std::move(file));
  if (s == Sabotage::kIgnoreSyncErrors) return std::make_unique<IgnoreSyncErrorFile>(std::move(file));
  return file;
}

uint64_t leak_bound(const WorkloadSpec& spec, std::span<const GuestMark> marks, const Recording& rec,
                    uint32_t image_id, uint64_t crash_point) {
  std::vector<uint64_t> durable;
  for (const auto& m : marks)
    if (m.position <= crash_point && is_durability_point(spec, m)) durable.push_back(m.position);
  uint64_t from = durable.size() >= 2 ? durable[durable.size() - 2] : 0;
  const uint64_t cs = spec.create.cluster_size;
  std::set<uint64_t> host, guest;
  uint64_t l2_tables = 0;
  const auto& ops = rec.ops();
  for (uint64_t i = from; i < crash_point && i < ops.size(); ++i) {
    const FileOp& op = ops[i];
    if (op.file != image_id || op.kind == FileOpKind::kSync || op.kind == FileOpKind::kTruncate || op.length == 0) continue;
    for (uint64_t c = op.offset / cs; c <= (op.offset + op.length - 1) / cs; ++c) host.insert(c);
  }
  for (const auto& m : marks) {
    if (m.end || m.position < from || m.position > crash_point || m.op >= spec.ops.size()) continue;
    const GuestOp& g = spec.ops[m.op];
    uint64_t offset = g.offset, length = g.length;
    if (g.kind == GuestOpKind::kCommit && !g.keep_top) {
      // Emptying the top unlinks every cluster of it and its L2 tables; like a discard's, their
      // decrements become durable only after the unlink's sync.
      offset = 0;
      length = max_size(spec);
      l2_tables = (length + cs * (cs / 8) - 1) / (cs * (cs / 8));
    }
    if (length == 0) continue;
    for (uint64_t c = offset / cs; c <= (offset + length - 1) / cs; ++c) guest.insert(c);
  }
  return host.size() + guest.size() + l2_tables + 2;
}

uint64_t WorkloadReport::total_violations() const {
  uint64_t n = 0;
  for (uint64_t v : violations) n += v;
  return n;
}

WorkloadReport explore_workload(const std::string& name, const ExploreConfig& config) {
  auto started = Clock::now();
  // Every state allocates and frees images of a few MiB; keep them off mmap/munmap (which made
  // a third of the run page faults).
  mallopt(M_MMAP_THRESHOLD, 256 << 20);
  mallopt(M_TRIM_THRESHOLD, 512 << 20);
  WorkloadReport report;
  report.workload = name;
  report.seed = config.seed;
  auto spec = make_workload(name, config.seed);
  if (!spec) {
    report.run_status = spec.error();
    return report;
  }
  Recorded r = record_workload(std::move(*spec), config);
  report.guest_ops = r.spec.ops.size();
  report.run_status = r.status;
  const auto& ops = r.rec->ops();
  report.file_ops = ops.size();
  report.crash_points = 0;
  int image_id = r.rec->find_file(kImageName);
  if (!r.status.is_ok() || image_id < 0) {
    if (r.status.is_ok()) report.run_status = invalid("the image file was never opened");
    report.seconds = std::chrono::duration<double>(Clock::now() - started).count();
    return report;
  }
  report.cost = measure_cost(r, static_cast<uint32_t>(image_id));

  const std::vector<uint8_t> original_backing = backing_content(r.spec);
  // Only the image may be written — and the backing file by a commit workload, whose states
  // then carry the backing file as the crash left it too.
  int backing_id = r.rec->find_file(kBackingName);
  const bool backing_written = r.spec.base_writable && backing_id >= 0;
  std::set<uint32_t> foreign_writes;
  for (const auto& op : ops)
    if (op.file != static_cast<uint32_t>(image_id) && !(backing_written && op.file == static_cast<uint32_t>(backing_id)))
      foreign_writes.insert(op.file);
  for (uint32_t f : foreign_writes) {
    report.violations[static_cast<size_t>(Guarantee::kG5)]++;
    report.examples.push_back(name + " seed " + std::to_string(config.seed) + ": G5: the engine wrote to " +
                              r.rec->file_name(f));
  }

  uint64_t explore_start = 0;
  for (const auto& m : r.marks)
    if (!m.end && m.op == r.spec.explore_from) {
      explore_start = m.position;
      break;
    }
  for (const auto& e : r.rec->events())
    if (e.position >= explore_start) report.events[std::string(event_name(e.event))]++;
  uint64_t first_cp = config.only_crash_point.value_or(explore_start);
  uint64_t last_cp = config.only_crash_point ? std::min<uint64_t>(*config.only_crash_point, ops.size()) : ops.size();
  CrashCursor cursor(*r.rec);
  for (uint64_t cp = first_cp; cp <= last_cp; ++cp) {
    cursor.seek(cp);
    report.states_enumerated += count_states(cursor, *r.rec, config.enumeration);
  }
  double keep = 1.0;
  if (config.max_states && report.states_enumerated > config.max_states)
    keep = static_cast<double>(config.max_states) / static_cast<double>(report.states_enumerated);
  double expected = keep * static_cast<double>(report.states_enumerated);
  // qemu-img runs on every qemu_every-th checked state, starting at a seeded offset.
  uint64_t qemu_every = 0;
  if (config.qemu_samples && qemu_img_available() && expected > 0)
    qemu_every = std::max<uint64_t>(1, static_cast<uint64_t>(expected / config.qemu_samples));
  uint64_t qemu_offset = qemu_every ? config.seed % qemu_every : 0;
  // Whether state `si` of crash point `cp` is in the sample: a hash of (seed, cp, si), so
  // replaying one crash point checks exactly the states the full run checked there.
  auto sampled = [&](uint64_t cp, uint64_t si) {
    if (keep >= 1.0) return true;
    uint64_t x = config.seed * 0x9e3779b97f4a7c15ull ^ (cp << 20) ^ si;
    x ^= x >> 31;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 29;
    return static_cast<double>(x >> 11) * 0x1.0p-53 < keep;
  };

  GuestModel model = initial_model(r.spec);
  size_t next_mark = 0;
  uint64_t probe_counter = 0;
  cursor.seek(0);
  for (uint64_t cp = 0; cp <= last_cp && !report.stopped_early; ++cp) {
    cursor.seek(cp);
    while (next_mark < r.marks.size() && r.marks[next_mark].position <= cp) apply_mark(model, r.spec, r.marks[next_mark++]);
    if (cp < first_cp) continue;
    report.crash_points++;
    auto states = enumerate_states(cursor, *r.rec, config.enumeration, config.seed);
    uint64_t bound = leak_bound(r.spec, r.marks, *r.rec, static_cast<uint32_t>(image_id), cp);
    for (size_t si = 0; si < states.size(); ++si) {
      if (!sampled(cp, si)) continue;
      if (config.max_seconds > 0 &&
          std::chrono::duration<double>(Clock::now() - started).count() > config.max_seconds) {
        report.stopped_early = true;
        break;
      }
      const CrashState& st = states[si];
      auto image = cursor.materialize(st, static_cast<uint32_t>(image_id));
      if (!image) {
        report.run_status = image.error();
        return report;
      }
      std::vector<uint8_t> backing_state;
      const std::vector<uint8_t>* backing = &original_backing;
      if (backing_written) {
        auto b = cursor.materialize(st, static_cast<uint32_t>(backing_id));
        if (b) backing_state = std::move(*b);
        backing = &backing_state;
      }
      StateCheckOptions so;
      so.qemu = qemu_every && report.states_checked % qemu_every == qemu_offset;
      so.leak_bound = bound;
      so.keel_check = config.keel_check;
      so.original_backing = &original_backing;
      so.probe_write = config.probe_every && (++probe_counter % config.probe_every == 0);
      so.probe_seed = config.seed + cp * 1000 + si;
      StateVerdict v = check_state(r.spec, std::move(*image), *backing, model, so);
      report.states_checked++;
      report.qemu_checked += v.qemu_ran;
      report.probes += so.probe_write;
      if (!v.any()) continue;
      for (size_t g = 0; g < kGuarantees; ++g) report.violations[g] += v.violated[g];
      std::ostringstream o;
      o << name << " seed " << config.seed << ": " << st.describe() << ", " << where(r, cp) << ", state #" << si;
      for (const auto& [g, detail] : v.details) o << "\n    " << guarantee_name(g) << ": " << detail;
      o << "\n    replay: keel selftest crash --workload " << name << " --seed " << config.seed
        << " --crash-point " << cp << "   (or KEEL_SEED=" << config.seed << " KEEL_WORKLOAD=" << name
        << " KEEL_CRASH_POINT=" << cp << " crash_tests)";
      if (config.log) config.log(o.str());
      if (report.examples.size() < config.max_examples) report.examples.push_back(o.str());
    }
  }
  report.seconds = std::chrono::duration<double>(Clock::now() - started).count();
  return report;
}

std::string format_report(const WorkloadReport& r) {
  char line[512];
  std::snprintf(line, sizeof line,
                "%-15s seed %-6llu guest ops %4llu  file ops %5llu  crash points %5llu  states %7llu/%-7llu"
                "  qemu %4llu  probes %4llu  %6.1fs%s",
                r.workload.c_str(), static_cast<unsigned long long>(r.seed),
                static_cast<unsigned long long>(r.guest_ops), static_cast<unsigned long long>(r.file_ops),
                static_cast<unsigned long long>(r.crash_points), static_cast<unsigned long long>(r.states_checked),
                static_cast<unsigned long long>(r.states_enumerated), static_cast<unsigned long long>(r.qemu_checked),
                static_cast<unsigned long long>(r.probes), r.seconds, r.stopped_early ? " (time limit)" : "");
  std::string out = line;
  out += "\n                violations:";
  for (size_t g = 0; g < kGuarantees; ++g)
    out += std::string(" ") + guarantee_name(static_cast<Guarantee>(g)) + "=" + std::to_string(r.violations[g]);
  if (!r.run_status.is_ok()) out += "\n                WORKLOAD FAILED: " + r.run_status.message();
  return out;
}

std::string format_cost(const WorkloadReport& r) {
  std::ostringstream o;
  o << "  " << r.workload << " events:";
  for (const auto& [name, n] : r.events) o << " " << name << "=" << n;
  o << "\n";
  for (const auto& [phase, c] : r.cost) {
    char line[400];
    double syncs_per_flush = c.guest_flushes ? double(c.flush_syncs) / double(c.guest_flushes) : 0;
    double meta_per_write = c.guest_writes ? double(c.metadata_writes) / double(c.guest_writes) : 0;
    std::snprintf(line, sizeof line,
                  "  %-15s %-11s guest writes %3llu flushes %3llu | syncs/flush %.2f (other syncs %llu) | "
                  "metadata writes/guest write %.2f (data writes %llu, metadata writes %llu)\n",
                  r.workload.c_str(), phase.c_str(), static_cast<unsigned long long>(c.guest_writes),
                  static_cast<unsigned long long>(c.guest_flushes), syncs_per_flush,
                  static_cast<unsigned long long>(c.other_syncs), meta_per_write,
                  static_cast<unsigned long long>(c.data_writes), static_cast<unsigned long long>(c.metadata_writes));
    o << line;
  }
  return o.str();
}

}  // namespace keel::proof
