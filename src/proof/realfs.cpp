// The crash proof below a real file system (see realfs.h).
#include "proof/realfs.h"

#include <fcntl.h>
#include <malloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <span>
#include <sstream>
#include <unordered_set>

#include "io/recording_file.h"
#include "proof/loop_device.h"
#include "proof/qemu_oracle.h"
#include "proof/realfs_log.h"
#include "proof/realfs_util.h"
#include "proof/realfs_writers.h"

namespace keel::proof {
namespace {

using namespace realfs;

using Clock = std::chrono::steady_clock;

// Records the workload on a fresh file system made from `base`.
Run record(WorkloadSpec spec, const RealFsConfig& config, const WorkDir& wd, BlockRecorder*& recorder_out,
           std::unique_ptr<BlockRecorder>& recorder) {
  Run r;
  r.spec = std::move(spec);
  auto rec = config.recorder(wd.file("live.img"), wd.file("dev"));
  if (!rec) {
    r.status = rec.error();
    return r;
  }
  recorder = std::move(*rec);
  recorder_out = recorder.get();
  {
    auto loop = LoopDevice::attach(recorder->device_file());
    if (!loop) {
      r.status = loop.error().with_context("loop device on the FUSE recorder");
      return r;
    }
    auto m = Mount::attach(loop->path(), wd.file("mnt"), config.fs, mount_options(config.fs));
    if (!m) {
      r.status = m.error();
      return r;
    }
    r.status = config.qemu_io ? run_on_mount_qemu(r, wd.file("mnt"), wd.dir, *recorder->recording())
               : config.nbd   ? run_on_mount_nbd(r, wd.file("mnt"), wd.dir, config, *recorder->recording())
                              : run_on_mount(r, wd.file("mnt"), config, *recorder->recording());
    Status u = m->unmount();
    if (r.status.is_ok()) r.status = u;
  }
  recorder->stop();
  return r;
}

std::string where(const Run& r, const Recording& dev, uint64_t cp) {
  std::ostringstream o;
  o << "device op " << cp - 1 << " (" << dev.ops()[cp - 1].describe() << ")";
  const GuestMark* in = nullptr;
  for (const auto& m : r.marks)
    if (m.position <= cp) in = &m;
  if (in) {
    std::string what = in->op < r.spec.ops.size() ? r.spec.ops[in->op].describe() : "close";
    o << (in->end ? ", after guest op " : ", during guest op ") << in->op << " " << what;
  }
  return o.str();
}

}  // namespace

const std::vector<std::string>& real_fs_workloads() {
  static const std::vector<std::string> names = {"alloc",  "alloc-falloc", "discard-reuse", "l2-tables", "reftable-grow",
                                                 "resize", "snapshots",    "check-repair"};
  return names;
}

Result<WorkloadSpec> make_real_fs_workload(const std::string& name, uint64_t seed) {
  // alloc-falloc: the allocating writes into an image created with preallocation=falloc (the
  // file's clusters are the file system's unwritten extents until written).
  if (name == "check-repair") {  // alloc, then an interrupted keel check -r all (run_repair)
    auto s = make_workload("alloc", seed);
    if (!s) return s;
    s->name = name;
    return s;
  }
  if (name == "alloc-falloc") {
    auto s = make_workload("alloc", seed);
    if (!s) return s;
    s->name = name;
    s->create.preallocation = Preallocation::kFalloc;
    return s;
  }
  return make_workload(name, seed);
}

bool nbd_can_run(const WorkloadSpec& spec) {
  for (const auto& op : spec.ops)
    if (op.kind != GuestOpKind::kWrite && op.kind != GuestOpKind::kWriteZeroes && op.kind != GuestOpKind::kDiscard &&
        op.kind != GuestOpKind::kFlush)
      return false;
  return spec.damage.empty() && spec.name != "check-repair";
}

bool qemu_io_can_run(const WorkloadSpec& spec) {
  for (const auto& op : spec.ops)
    if (op.kind != GuestOpKind::kWrite && op.kind != GuestOpKind::kWriteZeroes && op.kind != GuestOpKind::kDiscard &&
        op.kind != GuestOpKind::kFlush && op.kind != GuestOpKind::kResize && op.kind != GuestOpKind::kSnapshotCreate &&
        op.kind != GuestOpKind::kSnapshotDelete && op.kind != GuestOpKind::kSnapshotApply)
      return false;
  return spec.damage.empty() && spec.name != "check-repair";  // the repair is Keel's own step
}

RealFsReport explore_on_real_fs(const std::string& name, const RealFsConfig& config) {
  auto started = Clock::now();
  mallopt(M_MMAP_THRESHOLD, 256 << 20);
  RealFsReport out;
  out.fs = config.fs;
  out.cache = cache_name(config.cache);
  out.engine = config.qemu_io ? "qemu-io" : config.nbd ? "keel-nbd" : "keel";
  WorkloadReport& report = out.run;
  report.workload = name;
  report.seed = config.seed;
  auto finish = [&] {
    report.seconds = std::chrono::duration<double>(Clock::now() - started).count();
    return out;
  };
  if (!config.recorder && config.replay_log.empty()) {
    report.run_status = unsupported("no block recorder: keel was built without libfuse3");
    return finish();
  }
  if (std::string why = real_fs_unavailable(config.fs); !why.empty()) {
    report.run_status = unsupported(why);
    return finish();
  }
  auto spec = make_real_fs_workload(name, config.seed);
  if (!spec) {
    report.run_status = spec.error();
    return finish();
  }
  if (!spec->damage.empty()) {
    report.run_status = unsupported("damaged workloads run in memory only");
    return finish();
  }
  spec->cache = config.cache;
  if (spec->backing_bytes) {
    spec->create.backing_file = kBackingName;
    spec->create.backing_format = "raw";
  }

  WorkDir wd;
  if (Status st = prepare_device(wd, config.work_dir, config.fs); !st.is_ok()) {
    report.run_status = st;
    return finish();
  }

  std::unique_ptr<BlockRecorder> recorder;
  BlockRecorder* rp = nullptr;
  Run r;
  std::shared_ptr<Recording> devrec;
  const LogIdentity identity{config.fs, name, out.cache, out.engine, config.seed};
  if (!config.replay_log.empty()) {  // a saved log: its device image, device log and marks
    auto l = load_device_log(config.replay_log, wd.file("base.img"));
    if (l && (l->id.fs != identity.fs || l->id.workload != name || l->id.seed != config.seed ||
              l->id.engine != out.engine || l->id.cache != out.cache)) {
      report.run_status = invalid("'" + config.replay_log + "' is a log of " + l->id.engine + " " + l->id.fs + " cache=" +
                                  l->id.cache + " " + l->id.workload + " seed " + std::to_string(l->id.seed));
      return finish();
    }
    if (!l) {
      report.run_status = l.error();
      return finish();
    }
    r = std::move(l->run);
    r.spec = std::move(*spec);
    devrec = l->dev;
  } else {
    r = record(std::move(*spec), config, wd, rp, recorder);
    if (recorder) devrec = recorder->recording();
    if (r.status.is_ok() && devrec && !config.save_log.empty())
      r.status = save_device_log(config.save_log, identity, r, *devrec, wd.file("base.img"));
  }
  report.guest_ops = r.spec.ops.size();
  report.run_status = r.status;
  if (!r.status.is_ok() || !devrec) return finish();
  const Recording& dev = *devrec;
  const auto& ops = dev.ops();
  out.device_ops = ops.size();
  for (const auto& op : ops) out.device_flushes += op.kind == FileOpKind::kSync;
  report.file_ops = r.files->op_count();
  int image_id = r.files->find_file(kImageName);

  uint64_t explore_start = r.repair_start.value_or(r.setup_end);
  if (r.spec.explore_from > 0)
    for (const auto& m : r.marks)
      if (!m.end && m.op == r.spec.explore_from) {
        explore_start = m.position;
        break;
      }
  CrashCursor cursor(dev);
  for (uint64_t cp = explore_start; cp <= ops.size(); ++cp) {
    cursor.seek(cp);
    report.states_enumerated += count_states(cursor, dev, config.enumeration);
  }
  double keep = 1.0;
  if (config.max_states && report.states_enumerated > config.max_states)
    keep = static_cast<double>(config.max_states) / static_cast<double>(report.states_enumerated);
  const double expected = keep * static_cast<double>(report.states_enumerated);
  uint64_t qemu_every = 0;
  if (config.qemu_samples && qemu_img_available() && expected > 0)
    qemu_every = std::max<uint64_t>(1, static_cast<uint64_t>(expected / config.qemu_samples));
  auto sampled = [&](uint64_t cp, uint64_t si) {
    if (keep >= 1.0) return true;
    uint64_t x = config.seed * 0x9e3779b97f4a7c15ull ^ (cp << 20) ^ si;
    x ^= x >> 31;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 29;
    return static_cast<double>(x >> 11) * 0x1.0p-53 < keep;
  };

  // The leak bound counts the engine's file ops; a device crash point maps to the file ops the
  // engine had issued by the next mark (everything that could have reached the device).
  std::vector<GuestMark> file_marks = r.marks;
  for (size_t i = 0; i < file_marks.size(); ++i) file_marks[i].position = r.file_positions[i];
  const std::vector<uint8_t> original_backing = backing_content(r.spec);

  GuestModel model = initial_model(r.spec);
  size_t next_mark = 0;
  uint64_t synced_upto = 0;  // device ops [0, synced_upto) are in synced.img
  Status io = sparse_copy(wd.file("base.img"), wd.file("synced.img"));
  Fd synced(::open(wd.file("synced.img").c_str(), O_RDWR | O_CLOEXEC));
  if (!io.is_ok() || synced.get() < 0) {
    report.run_status = io.is_ok() ? io_error(errno, "open synced.img") : io;
    return finish();
  }
  std::optional<LoopDevice> state_loop;  // the reused device (see the mount below)
  std::unordered_set<std::string> seen;  // state digests + model positions (config.dedup)
  for (uint64_t cp = 0; cp <= ops.size() && !report.stopped_early; ++cp) {
    while (next_mark < r.marks.size() && r.marks[next_mark].position <= cp) apply_mark(model, r.spec, r.marks[next_mark++]);
    if (cp < explore_start) continue;
    if (config.crash_point && cp != *config.crash_point) continue;
    cursor.seek(cp);
    report.crash_points++;
    // Bring synced.img to the last completed flush before cp.
    uint64_t open_from = cursor.open_ops().empty() ? cp : cursor.open_ops().front();
    for (; synced_upto < open_from; ++synced_upto) {
      io = apply_write(synced.get(), ops[synced_upto], nullptr);
      if (!io.is_ok()) {
        report.run_status = io;
        return finish();
      }
    }
    auto states = enumerate_states(cursor, dev, config.enumeration, config.seed);
    // The file ops the engine had issued by the next mark could all have reached the device; but
    // only the marks the device reached count (an operation ending after cp made nothing durable).
    const uint64_t file_cp = next_mark < r.marks.size() ? r.file_positions[next_mark] : r.files->op_count();
    const std::span<const GuestMark> reached(file_marks.data(), next_mark);
    // qemu-io's file ops are not recorded: its column tolerates leaks (counts corruption only).
    const uint64_t injected = r.repair_start ? kInjectedLeaks : 0;
    uint64_t bound = image_id >= 0 && !config.qemu_io && !config.nbd
                         ? injected + leak_bound(r.spec, reached, *r.files, static_cast<uint32_t>(image_id), file_cp)
                         : UINT64_MAX;
    for (size_t si = 0; si < states.size(); ++si) {
      if (!sampled(cp, si)) continue;
      if (config.max_seconds > 0 && std::chrono::duration<double>(Clock::now() - started).count() > config.max_seconds) {
        report.stopped_early = true;
        break;
      }
      const CrashState& cs = states[si];
      // A state whose device bytes and model equal an earlier one's has the same verdict.
      if (config.dedup) {
        std::string key = state_digest(synced.get(), synced_upto, ops, cs);
        if (!key.empty()) {
          key.append(reinterpret_cast<const char*>(&next_mark), sizeof next_mark);
          if (!seen.insert(std::move(key)).second) {
            out.duplicates++;
            continue;
          }
        }
      }
      auto t0 = Clock::now();
      io = sparse_copy(wd.file("synced.img"), wd.file("state.img"));
      if (io.is_ok()) {
        Fd sf(::open(wd.file("state.img").c_str(), O_RDWR | O_CLOEXEC));
        for (uint32_t op : cs.persisted) {
          const std::vector<bool>* mask = nullptr;
          for (const auto& [t, m] : cs.torn)
            if (t == op) mask = &m;
          if (io.is_ok()) io = apply_write(sf.get(), ops[op], mask);
        }
      }
      if (!io.is_ok()) {
        report.run_status = io;
        return finish();
      }
      std::vector<uint8_t> image, backing = original_backing;
      Status read_status = Status::ok();
      {
        // One loop device serves every state while its page cache can be shown empty before
        // each mount (LoopDevice::drop_cache); otherwise (and with reuse_loop off) a fresh one.
        if (state_loop && !state_loop->drop_cache().is_ok()) {
          state_loop.reset();
          out.loop_reattached++;
        }
        std::optional<LoopDevice> fresh;
        if (!state_loop) {
          auto loop = LoopDevice::attach(wd.file("state.img"));
          if (!loop) {
            report.run_status = loop.error();
            return finish();
          }
          fresh.emplace(std::move(*loop));
          if (config.reuse_loop && fresh->drop_cache().is_ok()) {
            state_loop = std::move(fresh);
            fresh.reset();
          }
        }
        const std::string& device = state_loop ? state_loop->path() : fresh->path();
        auto t1 = Clock::now();
        out.time.build += std::chrono::duration<double>(t1 - t0).count();
        auto m = Mount::attach(device, wd.file("smnt"), config.fs, mount_options(config.fs));
        auto t2 = Clock::now();
        out.time.mount += std::chrono::duration<double>(t2 - t1).count();
        if (!m) {
          if (out.unmountable++ == 0)
            out.first_unmountable = m.error().message() + " at " + where(r, dev, cp) + ", " + cs.describe();
          continue;
        }
        auto img = read_whole(wd.file("smnt") + "/" + kImageName);
        if (img) image = std::move(*img);
        else read_status = img.error();
        if (r.spec.base_writable) {
          auto b = read_whole(wd.file("smnt") + "/" + kBackingName);
          if (b) backing = std::move(*b);
        }
        auto t3 = Clock::now();
        out.time.read += std::chrono::duration<double>(t3 - t2).count();
        Status u = m->unmount();
        if (!u.is_ok()) {
          report.run_status = u;
          return finish();
        }
        fresh.reset();
        out.time.unmount += std::chrono::duration<double>(Clock::now() - t3).count();
      }
      auto t4 = Clock::now();
      StateVerdict v;
      if (!read_status.is_ok()) {
        v.add(Guarantee::kG1, "the image file cannot be read after the crash: " + read_status.message(), 3);
      } else {
        StateCheckOptions so;
        so.qemu = qemu_every && report.states_checked % qemu_every == config.seed % qemu_every;
        so.leak_bound = bound;
        so.original_backing = &original_backing;
        v = check_state(r.spec, std::move(image), backing, model, so);
      }
      out.time.check += std::chrono::duration<double>(Clock::now() - t4).count();
      report.states_checked++;
      report.qemu_checked += v.qemu_ran;
      if (!v.any()) continue;
      for (size_t g = 0; g < kGuarantees; ++g) report.violations[g] += v.violated[g];
      std::ostringstream o;
      o << out.engine << " " << config.fs << " cache=" << out.cache << " " << name << " seed " << config.seed << ": " << cs.describe()
        << ", " << where(r, dev, cp) << ", state #" << si;
      for (const auto& [g, detail] : v.details) o << "\n    " << guarantee_name(g) << ": " << detail;
      o << "\n    replay: keel selftest crash " << (config.qemu_io ? "--engine qemu-io " : config.nbd ? "--engine nbd " : "") << "--fs " << config.fs << " --cache " << out.cache << " --workload " << name
        << " --seed " << config.seed << " (the workload again: the kernel may log the device differently)";
      if (!config.save_log.empty() || !config.replay_log.empty())
        o << "\n    exact replay: keel selftest crash --replay-log "
          << (config.replay_log.empty() ? config.save_log : config.replay_log) << " --crash-point " << cp;
      if (config.log) config.log(o.str());
      if (report.examples.size() < config.max_examples) report.examples.push_back(o.str());
    }
  }
  return finish();
}

std::string format_real_fs_report(const RealFsReport& r) {
  const WorkloadReport& w = r.run;
  char line[512];
  std::snprintf(line, sizeof line,
                "%-7s %-6s %-9s %-14s seed %-5llu device ops %6llu (flushes %4llu)  crash points %5llu  states %6llu/%-7llu"
                "  qemu %3llu  unmountable %llu  %5.1fs%s",
                r.engine.c_str(), r.fs.c_str(), r.cache.c_str(), w.workload.c_str(), static_cast<unsigned long long>(w.seed),
                static_cast<unsigned long long>(r.device_ops), static_cast<unsigned long long>(r.device_flushes),
                static_cast<unsigned long long>(w.crash_points), static_cast<unsigned long long>(w.states_checked),
                static_cast<unsigned long long>(w.states_enumerated), static_cast<unsigned long long>(w.qemu_checked),
                static_cast<unsigned long long>(r.unmountable), w.seconds, w.stopped_early ? " (time limit)" : "");
  std::string out = line;
  out += "\n       violations:";
  for (size_t g = 0; g < kGuarantees; ++g)
    out += std::string(" ") + guarantee_name(static_cast<Guarantee>(g)) + "=" + std::to_string(w.violations[g]);
  if (w.states_checked) {
    const double n = static_cast<double>(w.states_checked);
    std::snprintf(line, sizeof line,
                  "\n       per state (ms): build %.1f  mount %.1f  read %.1f  unmount %.1f  check %.1f;"
                  "  %.1f states/s; %llu duplicates skipped%s",
                  r.time.build * 1e3 / n, r.time.mount * 1e3 / n, r.time.read * 1e3 / n, r.time.unmount * 1e3 / n,
                  r.time.check * 1e3 / n, n / std::max(1e-9, r.time.build + r.time.mount + r.time.read + r.time.unmount + r.time.check),
                  static_cast<unsigned long long>(r.duplicates), r.loop_reattached ? " (loop device re-attached)" : "");
    out += line;
  }
  if (r.unmountable) out += "\n       first unmountable state: " + r.first_unmountable;
  if (!w.run_status.is_ok()) out += "\n       WORKLOAD FAILED: " + w.run_status.message();
  return out;
}

}  // namespace keel::proof
