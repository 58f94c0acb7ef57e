// keel selftest: the integrity proof, runnable by anyone on their own build and machine.
//   keel selftest crash  [--workload W]... [--seconds N] [--seed S] [--states N] [--qemu N]
//                        [--crash-point C] [--dir D] [--sabotage drop-syncs]
//       explores the crash states the power-loss model allows (docs/integrity.md) and prints the
//       states explored and the violations per guarantee and per workload;
//   keel selftest crash --fs ext4|xfs|btrfs [--cache none|writeback]... [--workload W]...
//       the same below a real file system: power loss on the block device under it
//       (proof/realfs.h); exit status 77 when this machine cannot run it (no root, loop, FUSE, mkfs);
//       --save-log F keeps the run's device log, `--replay-log F [--crash-point C]` judges its
//       states again exactly (proof/realfs_log.h); --fresh-loops (a new loop device per state) and
//       --no-dedup (states identical to an earlier one judged again): the slower ways, to compare;
//   keel selftest faults [--workload W]... [--seed S] [--index I] [--max-indices N] [--qemu N]
//       fails every I/O operation of each workload, once and forever, and checks G6;
//   keel selftest kill-driver IMAGE --journal J [--seed S] [--ops N]
//   keel selftest kill-verify IMAGE --journal J
//       the two halves of the SIGKILL test (tests/interop/kill_sigkill.sh).
// Exit status: 0 when no guarantee was violated, 1 otherwise (or on a usage error).
#include <chrono>
#include <cstdio>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "cli/command.h"
#include "proof/explorer.h"
#include "proof/fault_sweep.h"
#include "proof/kill_run.h"
#include "proof/qemu_oracle.h"
#include "proof/loop_device.h"
#include "proof/realfs.h"
#include "proof/realfs_log.h"
#ifdef KEEL_HAVE_FUSE
#include "fuse/block_recorder.h"
#endif

namespace keel::cli {
namespace {

using proof::Guarantee;
using proof::kGuarantees;

struct Args {
  std::vector<std::string> workloads;
  double seconds = 0;
  std::optional<uint64_t> seed;
  uint64_t states = 0;
  uint32_t qemu = 20;
  std::optional<uint64_t> crash_point;
  std::optional<uint64_t> index;
  uint64_t max_indices = 0;
  std::string dir;
  std::string sabotage;
  std::vector<std::string> fs;
  std::vector<std::string> caches;
  bool fsync_error = false;
  std::string engine = "keel";
  bool fresh_loops = false;  // --fs: a new loop device per state
  bool no_dedup = false;     // --fs: duplicate states mounted and judged again
  std::string save_log, replay_log;  // --fs: proof/realfs_log.h
  uint32_t all_subsets = 10;
  bool quiet = false;
  bool verbose = false;
  bool kill_qemu = false;  // kill-verify --qemu
  std::string image, journal;
  uint64_t ops = UINT64_MAX;
};

uint64_t random_seed() {
  return std::random_device{}() % 1000000;
}

Result<std::vector<std::string>> selected(const Args& a) {
  if (a.workloads.empty()) return proof::workload_names();
  for (const auto& w : a.workloads) {
    bool known = false;
    for (const auto& n : proof::workload_names()) known |= n == w;
    if (!known) {
      std::string all;
      for (const auto& n : proof::workload_names()) all += " " + n;
      return error(invalid("unknown workload '" + w + "' (known:" + all + ")"));
    }
  }
  return a.workloads;
}

void print_guarantees(const std::array<uint64_t, kGuarantees>& v) {
  for (size_t g = 0; g < kGuarantees; ++g)
    std::printf("  %s %-24s %llu\n", proof::guarantee_name(static_cast<Guarantee>(g)),
                proof::guarantee_title(static_cast<Guarantee>(g)), static_cast<unsigned long long>(v[g]));
}

int run_crash(const Args& a) {
  auto names = selected(a);
  if (!names) {
    print_error(names.error().message());
    return 1;
  }
  proof::ExploreConfig c;
  c.seed = a.seed.value_or(random_seed());
  c.max_states = a.states;
  c.qemu_samples = a.qemu;
  c.probe_every = 25;
  c.only_crash_point = a.crash_point;
  c.real_dir = a.dir;
  c.enumeration.all_subsets_max_ops = a.all_subsets;
  if (a.sabotage == "drop-syncs") {
    c.sabotage = proof::Sabotage::kDropSyncs;
  } else if (!a.sabotage.empty()) {
    print_error("unknown sabotage '" + a.sabotage + "' (known: drop-syncs)");
    return 1;
  }
  c.log = [&](const std::string& s) {
    if (!a.quiet) std::printf("VIOLATION %s\n", s.c_str());
  };
  std::printf("keel selftest crash: seed %llu, workloads %zu, %s, qemu-img %s\n",
              static_cast<unsigned long long>(c.seed), names->size(),
              a.seconds > 0 ? ("for " + std::to_string(static_cast<int>(a.seconds)) + " s").c_str() : "one pass",
              proof::qemu_img_available() ? "on a sample" : "not found (skipped)");
  std::fflush(stdout);

  struct Totals {
    uint64_t runs = 0, states = 0, qemu = 0;
    std::array<uint64_t, kGuarantees> v{};
    bool failed = false;
  };
  std::map<std::string, Totals> per;
  Totals all;
  auto started = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count(); };
  uint64_t seed = c.seed;
  bool first_pass = true;
  while (first_pass || (a.seconds > 0 && elapsed() < a.seconds)) {
    for (const auto& w : *names) {
      if (a.seconds > 0 && !first_pass && elapsed() >= a.seconds) break;
      c.seed = seed;
      c.max_seconds = a.seconds > 0 ? std::max(1.0, a.seconds - elapsed()) : 0;
      auto r = proof::explore_workload(w, c);
      std::printf("%s\n", proof::format_report(r).c_str());
      if (first_pass && !a.quiet) std::printf("%s", proof::format_cost(r).c_str());
      std::fflush(stdout);
      for (Totals* t : {&per[w], &all}) {
        t->runs++;
        t->states += r.states_checked;
        t->qemu += r.qemu_checked;
        for (size_t g = 0; g < kGuarantees; ++g) t->v[g] += r.violations[g];
        t->failed |= !r.run_status.is_ok();
      }
    }
    first_pass = false;
    seed++;
    if (a.seconds <= 0) break;
  }
  std::printf("\nSummary (%.0f s): %llu crash states explored in %llu workload runs (seeds %llu..%llu), "
              "%llu also checked by qemu-img\n",
              elapsed(), static_cast<unsigned long long>(all.states), static_cast<unsigned long long>(all.runs),
              static_cast<unsigned long long>(a.seed.value_or(c.seed)), static_cast<unsigned long long>(seed - 1),
              static_cast<unsigned long long>(all.qemu));
  for (const auto& [w, t] : per) {
    uint64_t v = 0;
    for (auto x : t.v) v += x;
    std::printf("  %-15s runs %4llu  states %9llu  violations %llu%s\n", w.c_str(), static_cast<unsigned long long>(t.runs),
                static_cast<unsigned long long>(t.states), static_cast<unsigned long long>(v),
                t.failed ? "  (WORKLOAD FAILED)" : "");
  }
  std::printf("Violations per guarantee:\n");
  print_guarantees(all.v);
  uint64_t total = 0;
  for (auto x : all.v) total += x;
  std::printf("%s\n", total == 0 && !all.failed ? "RESULT: 0 violations" : "RESULT: VIOLATIONS FOUND");
  return total == 0 && !all.failed ? 0 : 1;
}

// keel selftest crash --fs: one report line per file system, cache mode and workload.
int run_real_fs(const Args& a) {
  std::vector<std::string> names = a.workloads.empty() ? proof::real_fs_workloads() : a.workloads;
  for (const auto& w : names) {
    if (auto spec = proof::make_real_fs_workload(w, 1); !spec) {
      print_error("unknown workload '" + w + "' for --fs: " + spec.error().message());
      return 1;
    }
  }
  std::vector<CacheMode> caches;
  for (const auto& c : a.caches.empty() ? std::vector<std::string>{"none", "writeback"} : a.caches) {
    // unsafe (flushes are no-ops) is there as a mutation: it must lose flushed writes, for Keel
    // and for qemu-io alike.
    if (c != "none" && c != "writeback" && c != "unsafe") {
      print_error("unknown cache mode '" + c + "' for --fs (known: none, writeback, unsafe)");
      return 1;
    }
    caches.push_back(c == "none" ? CacheMode::kNone : c == "unsafe" ? CacheMode::kUnsafe : CacheMode::kWriteback);
  }
  for (const auto& fs : a.fs) {
    if (fs != "ext4" && fs != "xfs" && fs != "btrfs") {
      print_error("unknown file system '" + fs + "' for --fs (known: ext4, xfs, btrfs)");
      return 1;
    }
  }
  proof::RealFsConfig c;
  c.seed = a.seed.value_or(random_seed());
  c.max_states = a.states;
  c.max_seconds = a.seconds;
  c.qemu_samples = a.qemu;
  c.enumeration.all_subsets_max_ops = a.all_subsets;
  c.reuse_loop = !a.fresh_loops;
  c.dedup = !a.no_dedup;
  c.save_log = a.save_log;
  c.replay_log = a.replay_log;
  c.crash_point = a.crash_point;
  if (!a.save_log.empty() && (a.fs.size() != 1 || names.size() != 1 || caches.size() != 1 || a.engine == "both")) {
    print_error("--save-log writes one run's log: give one --fs, one --workload, one --cache and one --engine");
    return 1;
  }
  if (a.sabotage == "drop-syncs") {
    c.sabotage = proof::Sabotage::kDropSyncs;
  } else if (a.sabotage == "ignore-sync-errors") {
    c.sabotage = proof::Sabotage::kIgnoreSyncErrors;
  } else if (!a.sabotage.empty()) {
    print_error("unknown sabotage '" + a.sabotage + "' (known: drop-syncs, ignore-sync-errors)");
    return 1;
  }
#ifdef KEEL_HAVE_FUSE
  c.recorder = fuse::start_block_recorder;
#endif
  c.log = [&](const std::string& s) {
    if (!a.quiet) std::printf("VIOLATION %s\n", s.c_str());
  };
  std::printf("keel selftest crash --fs: seed %llu, power loss below the file system\n",
              static_cast<unsigned long long>(c.seed));
  std::array<uint64_t, kGuarantees> all{};
  std::array<uint64_t, kGuarantees> qemu_v{};
  uint64_t states = 0, unmountable = 0, qemu_states = 0;
  bool failed = false;
  if (a.engine != "keel" && a.engine != "qemu-io" && a.engine != "both" && a.engine != "nbd") {
    print_error("unknown engine '" + a.engine + "' for --fs (known: keel, qemu-io, both, nbd)");
    return 1;
  }
  for (const auto& fs : a.fs) {
    c.fs = fs;
#ifndef KEEL_HAVE_FUSE
    std::printf("SKIPPED: keel was built without libfuse3 (the block recorder)\n");
    return 77;
#endif
    if (std::string why = proof::real_fs_unavailable(fs); !why.empty()) {
      std::printf("SKIPPED %s: %s\n", fs.c_str(), why.c_str());
      return 77;
    }
    for (CacheMode cache : caches) {
      c.cache = cache;
      if (a.fsync_error) {
        auto r = proof::check_fsync_error_rule(c);
        std::printf("%s\n", r.describe().c_str());
        std::fflush(stdout);
        all[static_cast<size_t>(Guarantee::kG6)] += r.violations.size();
        failed |= !r.run_status.is_ok() || !r.injected;
        continue;
      }
      for (const auto& w : names) {
        for (int engine = 0; engine < 3; ++engine) {  // keel, qemu-io, keel serve -e 4 (nbd)
          const bool qemu_io = engine == 1;
          if (engine == 0 && a.engine != "keel" && a.engine != "both") continue;
          if (engine == 1 && a.engine != "qemu-io" && a.engine != "both") continue;
          if (engine == 2 && a.engine != "nbd") continue;
          c.nbd = engine == 2;
          if (c.nbd && !proof::nbd_can_run(*proof::make_real_fs_workload(w, c.seed))) continue;
          if (qemu_io && !proof::qemu_io_can_run(*proof::make_real_fs_workload(w, c.seed))) {
            std::printf("qemu-io %-6s %-9s %-14s (not run: the qemu-io driver has no snapshot/resize commands)\n",
                        fs.c_str(), cache == CacheMode::kNone ? "none" : cache == CacheMode::kUnsafe ? "unsafe" : "writeback",
                        w.c_str());
            continue;
          }
          c.qemu_io = qemu_io;
          auto r = proof::explore_on_real_fs(w, c);
          std::printf("%s\n", proof::format_real_fs_report(r).c_str());
          std::fflush(stdout);
          // QEMU's numbers are reported beside Keel's; they do not fail Keel's selftest, and a
          // workload the qemu-io driver cannot express is skipped.
          if (qemu_io) {
            qemu_states += r.run.states_checked;
            for (size_t g = 0; g < kGuarantees; ++g) qemu_v[g] += r.run.violations[g];
            continue;
          }
          states += r.run.states_checked;
          unmountable += r.unmountable;
          for (size_t g = 0; g < kGuarantees; ++g) all[g] += r.run.violations[g];
          failed |= !r.run.run_status.is_ok();
        }
      }
    }
  }
  std::printf("\nSummary: %llu crash states below the file system, %llu the file system could not mount\n",
              static_cast<unsigned long long>(states), static_cast<unsigned long long>(unmountable));
  std::printf("Violations per guarantee:\n");
  print_guarantees(all);
  if (a.engine == "qemu-io" || a.engine == "both") {
    std::printf("QEMU (qemu-io on the same harness): %llu crash states; violations per guarantee:\n",
                static_cast<unsigned long long>(qemu_states));
    print_guarantees(qemu_v);
  }
  uint64_t total = 0;
  for (auto x : all) total += x;
  std::printf("%s\n", total == 0 && !failed ? "RESULT: 0 violations" : "RESULT: VIOLATIONS FOUND");
  return total == 0 && !failed ? 0 : 1;
}

int run_faults(const Args& a) {
  auto names = selected(a);
  if (!names) {
    print_error(names.error().message());
    return 1;
  }
  proof::FaultSweepConfig c;
  c.seed = a.seed.value_or(random_seed());
  c.only_index = a.index;
  c.max_indices = a.max_indices;
  c.qemu_samples = a.qemu;
  c.log = [&](const std::string& s) {
    if (!a.quiet) std::printf("VIOLATION %s\n", s.c_str());
  };
  std::printf("keel selftest faults: seed %llu\n", static_cast<unsigned long long>(c.seed));
  std::array<uint64_t, kGuarantees> v{};
  uint64_t runs = 0;
  bool failed = false;
  for (const auto& w : *names) {
    auto r = proof::sweep_faults(w, c);
    std::printf("%s\n", proof::format_fault_report(r).c_str());
    std::fflush(stdout);
    runs += r.runs;
    for (size_t g = 0; g < kGuarantees; ++g) v[g] += r.violations[g];
    failed |= !r.run_status.is_ok();
  }
  std::printf("\nSummary: %llu fault runs\nRuns violating each guarantee:\n", static_cast<unsigned long long>(runs));
  print_guarantees(v);
  uint64_t total = 0;
  for (auto x : v) total += x;
  std::printf("%s\n", total == 0 && !failed ? "RESULT: 0 violations" : "RESULT: VIOLATIONS FOUND");
  return total == 0 && !failed ? 0 : 1;
}

std::function<int()> setup(CLI::App* sub) {
  auto args = std::make_shared<Args>();
  sub->require_subcommand(1);
  auto add_common = [&](CLI::App* s) {
    s->add_option("-w,--workload", args->workloads, "Workload (repeatable; default: all)");
    s->add_option("-s,--seed", args->seed, "Seed (default: random; printed)");
    s->add_option("--qemu", args->qemu, "Check about this many states per workload with qemu-img too");
    s->add_flag("-q,--quiet", args->quiet, "Do not print each violation or the cost table");
  };
  CLI::App* crash = sub->add_subcommand("crash", "Explore crash states and check guarantees G1-G5");
  add_common(crash);
  crash->add_option("--seconds", args->seconds, "Keep exploring new seeds for this long");
  crash->add_option("--states", args->states, "At most this many states per workload run (0 = all)");
  crash->add_option("--crash-point", args->crash_point, "Replay: check only this crash point");
  crash->add_option("--all-subsets", args->all_subsets, "Every subset while an epoch has at most N ops");
  crash->add_option("--dir", args->dir, "Record the workload on real files in this directory");
  crash->add_option("--sabotage", args->sabotage, "Break the storage on purpose (drop-syncs) to see violations");
  crash->add_option("--fs", args->fs, "Power loss below a real file system: ext4, xfs or btrfs (repeatable; root)");
  crash->add_flag("--fsync-error", args->fsync_error,
                  "With --fs: fail one device flush (EIO); check no later flush reports success");
  crash->add_option("--engine", args->engine,
                    "With --fs: who writes the workload: keel (default), qemu-io (the QEMU column), both, or nbd "
                    "(keel serve -e 4: writes over 4 connections, flushes on one)");
  crash->add_option("--save-log", args->save_log,
                    "With --fs: save the recorded device log (and device image, marks) to this file");
  crash->add_option("--replay-log", args->replay_log,
                    "Judge the crash states of a log --save-log wrote (exactly; with --crash-point: one point)");
  crash->add_flag("--fresh-loops", args->fresh_loops, "With --fs: attach a new loop device per state (the slow way)");
  crash->add_flag("--no-dedup", args->no_dedup, "With --fs: judge states identical to an earlier one again");
  crash->add_option("--cache", args->caches, "With --fs: the engine's cache mode, none or writeback (repeatable)");
  CLI::App* faults = sub->add_subcommand("faults", "Fail every I/O operation once and forever; check G6");
  add_common(faults);
  faults->add_option("--index", args->index, "Replay: fail only this I/O operation index");
  faults->add_option("--max-indices", args->max_indices, "At most this many indices per workload (0 = all)");
  CLI::App* driver = sub->add_subcommand("kill-driver", "Run journaled guest I/O until killed (kill test)");
  driver->add_option("image", args->image, "qcow2 image")->required();
  driver->add_option("--journal", args->journal, "Journal file")->required();
  driver->add_option("-s,--seed", args->seed, "Seed");
  driver->add_option("--ops", args->ops, "Stop after this many operations");
  CLI::App* verify = sub->add_subcommand("kill-verify", "Check a killed image against its journal");
  verify->add_option("image", args->image, "qcow2 image")->required();
  verify->add_option("--journal", args->journal, "Journal file")->required();
  verify->add_flag("-v,--verbose", args->verbose, "Say OK when everything held");
  verify->add_flag("--qemu", args->kill_qemu, "Also judge qemu-img's reading of the killed image (convert to raw)");
  return [args, crash, faults, driver, verify]() -> int {
    if (crash->parsed() && !args->replay_log.empty()) {  // the run's identity comes from the log
      auto id = proof::realfs::read_log_identity(args->replay_log);
      if (!id) {
        print_error(id.error().message());
        return 1;
      }
      args->fs = {id->fs};
      args->workloads = {id->workload};
      args->caches = {id->cache};
      args->seed = id->seed;
      args->engine = id->engine == "keel-nbd" ? "nbd" : id->engine;
    }
    if (crash->parsed()) return args->fs.empty() ? run_crash(*args) : run_real_fs(*args);
    if (faults->parsed()) return run_faults(*args);
    if (driver->parsed())
      return proof::run_kill_driver({args->image, args->journal, args->seed.value_or(1), args->ops});
    if (verify->parsed()) return proof::run_kill_verify(args->image, args->journal, args->verbose, args->kill_qemu);
    return 1;
  };
}

}  // namespace

KEEL_COMMAND(selftest, "selftest", "Prove the integrity guarantees on this machine (crash states, faults, kills)",
             setup);

}  // namespace keel::cli
