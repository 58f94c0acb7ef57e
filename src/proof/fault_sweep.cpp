// The G6 fault sweep (see fault_sweep.h).
#include "proof/fault_sweep.h"
#include "proof/damage.h"

#include <chrono>
#include <cstdio>
#include <sstream>

#include "io/fault_file.h"
#include "io/recording_file.h"
#include "proof/explorer.h"
#include "proof/memory_fs.h"
#include "proof/qemu_oracle.h"

namespace keel::proof {
namespace {

using Clock = std::chrono::steady_clock;

class Fanout final : public EventObserver {
 public:
  Fanout(EventObserver* a, EventObserver* b) : a_(a), b_(b) {}
  void on_event(Event e) override {
    a_->on_event(e);
    b_->on_event(e);
  }

 private:
  EventObserver* a_;
  EventObserver* b_;
};

// The image (and model) the sweep starts from: created, and set up if the workload has a setup.
struct Prepared {
  WorkloadSpec spec;
  std::vector<uint8_t> image;
  std::vector<uint8_t> backing;
  GuestModel model{0, 0};
  Status status;
};

Prepared prepare(const std::string& name, uint64_t seed) {
  Prepared p;
  auto spec = make_workload(name, seed);
  if (!spec) {
    p.status = spec.error();
    return p;
  }
  p.spec = std::move(*spec);
  if (p.spec.backing_bytes) {
    p.spec.create.backing_file = kBackingName;
    p.spec.create.backing_format = "raw";
  }
  p.backing = backing_content(p.spec);
  p.model = initial_model(p.spec);
  MemoryFs fs;
  if (p.spec.backing_bytes) fs.put(kBackingName, p.backing);
  if (p.spec.new_backing_bytes) fs.put(kNewBackingName, new_backing_content(p.spec));
  CreateOptions co = p.spec.create;
  co.file_opener = fs.opener();
  p.status = create_image(MemoryFs::path(kImageName), co).with_context("create");
  if (p.status.is_ok() && !p.spec.damage.empty()) {
    std::vector<uint8_t> b = fs.bytes(kImageName);
    apply_damage(p.spec, b);
    fs.put(kImageName, b);
  }
  if (p.status.is_ok() && p.spec.explore_from > 0) {
    OpenOptions oo;
    oo.format = "qcow2";
    oo.file_opener = fs.opener();
    oo.encrypt_secret = kProofSecret;
    WorkloadRunner runner(p.spec, [&] { return Image::open(MemoryFs::path(kImageName), oo); }, [] { return 0; });
    p.status = runner.open().with_context("setup open");
    for (size_t i = 0; p.status.is_ok() && i < p.spec.explore_from; ++i) p.status = runner.step(i).with_context("setup");
    if (p.status.is_ok()) p.status = runner.close().with_context("setup close");
    for (const auto& m : runner.marks()) apply_mark(p.model, p.spec, m);
  }
  p.image = fs.bytes(kImageName);
  p.backing = fs.bytes(kBackingName);  // a setup that commits may have written it
  return p;
}

struct Run {
  uint64_t io_ops = 0;
  uint64_t injected = 0;
  Status clean_status;  // for the clean run: the first failure
  StateVerdict verdict;
  bool qemu_ran = false;
  uint64_t states = 0;
  std::string trace;  // the guest ops and their results, for reports
};

void merge(StateVerdict& into, const StateVerdict& from, const char* what, uint32_t md) {
  for (size_t g = 0; g < kGuarantees; ++g) into.violated[g] = into.violated[g] || from.violated[g];
  for (const auto& [g, d] : from.details) {
    size_t already = 0;
    for (const auto& e : into.details) already += e.first == g;
    if (already < md) into.details.emplace_back(g, std::string(what) + ": " + d);
  }
}

Run run_with(const Prepared& p, const std::optional<FaultRule>& rule, bool qemu, uint32_t md) {
  Run out;
  const WorkloadSpec& spec = p.spec;
  MemoryFs fs;
  fs.put(kImageName, p.image);
  if (spec.backing_bytes) fs.put(kBackingName, p.backing);
  if (spec.new_backing_bytes) fs.put(kNewBackingName, new_backing_content(spec));
  auto rec = std::make_shared<Recording>();
  auto inj = std::make_shared<FaultInjector>();
  if (rule) inj->add_rule(*rule);
  Fanout fan(rec.get(), inj.get());
  OpenOptions oo;
  oo.format = "qcow2";
  oo.cache = spec.cache;
  oo.observer = &fan;
  oo.encrypt_secret = kProofSecret;
  oo.file_opener = fs.opener([rec, inj](std::unique_ptr<BlockFile> inner, const std::string& name,
                                        const FileOptions&) -> Result<std::unique_ptr<BlockFile>> {
    auto r = RecordingFile::wrap(std::move(inner), rec, name);
    if (!r) return error(r.error());
    return std::unique_ptr<BlockFile>(std::make_unique<FaultFile>(std::move(*r), inj));
  });
  auto layers = [&](const std::string& name, bool writable) {
    OpenOptions lo;
    lo.format = "raw";
    lo.read_only = !writable;
    lo.observer = &fan;
    lo.file_opener = oo.file_opener;
    return Image::open(MemoryFs::path(name), lo);
  };
  WorkloadRunner runner(spec, [&] { return Image::open(MemoryFs::path(kImageName), oo); },
                        [&] { return rec->op_count(); }, layers);
  GuestModel model = p.model;
  size_t applied = 0;
  auto apply_new = [&] {
    while (applied < runner.marks().size()) apply_mark(model, spec, runner.marks()[applied++]);
  };
  auto fault_text = [&](size_t from) {
    auto inj_list = inj->injected();
    std::string t;
    for (size_t k = from; k < inj_list.size() && k < from + 2; ++k)
      t += (t.empty() ? "" : ", ") + std::string(io_type_name(inj_list[k].io_type)) + " op " +
           std::to_string(inj_list[k].op_index) +
           (inj_list[k].last_event >= 0 ? std::string(" after ") + std::string(event_name(static_cast<Event>(inj_list[k].last_event))) : "");
    return t;
  };
  auto note = [&](const Status& s) {
    // A damaged workload's requests are refused by design (proof/damage.h).
    if (!rule && out.clean_status.is_ok() && !s.is_ok() && spec.damage.empty()) out.clean_status = s;
    out.trace += "\n      " + (s.is_ok() ? std::string("ok: ") : "FAILED: " + s.message() + ": ");
  };

  size_t before = inj->injected().size();
  Status os = runner.open();
  note(os);
  out.trace += "open";
  if (os.is_ok() && inj->injected().size() > before)
    out.verdict.add(Guarantee::kG6, "open succeeded although " + fault_text(before) + " failed", md);
  for (size_t i = spec.explore_from; runner.image() && i < spec.ops.size(); ++i) {
    before = inj->injected().size();
    Status s = runner.step(i);
    note(s);
    out.trace += "guest op " + std::to_string(i) + " " + spec.ops[i].describe();
    apply_new();
    if (inj->injected().size() == before) continue;
    if (s.is_ok())
      out.verdict.add(Guarantee::kG6, "guest op " + std::to_string(i) + " " + spec.ops[i].describe() +
                                          " succeeded although " + fault_text(before) + " failed", md);
    if (runner.image())
      check_guest_reads(*runner.image(), model, out.verdict, md, "live read after the error", Guarantee::kG6);
  }
  if (runner.image()) {
    before = inj->injected().size();
    Status cs = runner.close();
    note(cs);
    out.trace += "close";
    apply_new();
    if (cs.is_ok() && inj->injected().size() > before)
      out.verdict.add(Guarantee::kG6, "close succeeded although " + fault_text(before) + " failed", md);
  }
  runner.abandon();
  out.io_ops = inj->op_count();
  out.injected = inj->injected().size();
  if (!rule && !out.clean_status.is_ok()) return out;

  // The file now (a kill right here) and as its last completed sync left it (a power cut).
  int image_id = rec->find_file(kImageName);
  uint64_t end = rec->op_count();
  StateCheckOptions so;
  so.original_backing = &p.backing;
  so.leak_bound = image_id >= 0 ? leak_bound(spec, runner.marks(), *rec, static_cast<uint32_t>(image_id), end) : UINT64_MAX;
  so.qemu = qemu;
  StateVerdict kill = check_state(spec, fs.bytes(kImageName), fs.bytes(kBackingName), model, so);
  merge(out.verdict, kill, "after a kill", md);
  out.qemu_ran = kill.qemu_ran;
  out.states = 1;
  if (image_id >= 0) {
    CrashCursor cursor(*rec);
    cursor.seek(end);
    auto synced = cursor.materialize({end, {}, {}}, static_cast<uint32_t>(image_id));
    // A commit workload's backing file as its last completed sync left it, too.
    std::vector<uint8_t> backing = p.backing;
    int backing_id = rec->find_file(kBackingName);
    if (spec.base_writable && backing_id >= 0) {
      auto b = cursor.materialize({end, {}, {}}, static_cast<uint32_t>(backing_id));
      if (b) backing = std::move(*b);
    }
    if (synced) {
      so.qemu = false;
      StateVerdict cut = check_state(spec, std::move(*synced), backing, model, so);
      merge(out.verdict, cut, "after a power cut", md);
      out.states++;
    }
  }
  return out;
}

}  // namespace

uint64_t FaultSweepReport::total_violations() const {
  uint64_t n = 0;
  for (uint64_t v : violations) n += v;
  return n;
}

FaultSweepReport sweep_faults(const std::string& workload, const FaultSweepConfig& config) {
  auto started = Clock::now();
  FaultSweepReport report;
  report.workload = workload;
  report.seed = config.seed;
  const uint32_t md = 3;
  Prepared p = prepare(workload, config.seed);
  if (!p.status.is_ok()) {
    report.run_status = p.status;
    return report;
  }
  Run clean = run_with(p, std::nullopt, false, md);
  report.io_ops = clean.io_ops;
  if (!clean.clean_status.is_ok()) {
    report.run_status = clean.clean_status.with_context(clean.trace);
    return report;
  }
  if (clean.verdict.any()) {  // a clean run must pass the checks too
    report.run_status = invalid("the run without faults fails the checks: " +
                                (clean.verdict.details.empty() ? std::string("?") : clean.verdict.details[0].second));
    return report;
  }

  std::vector<uint64_t> indices;
  if (config.only_index) {
    indices.push_back(*config.only_index);
  } else {
    uint64_t n = report.io_ops;
    uint64_t want = config.max_indices && config.max_indices < n ? config.max_indices : n;
    for (uint64_t k = 0; k < want; ++k) indices.push_back(k * n / want);
  }
  static const struct {
    int err;
    bool short_write;
    const char* name;
  } kKinds[] = {{EIO, false, "EIO"}, {ENOSPC, false, "ENOSPC"}, {EDQUOT, false, "EDQUOT"}, {EIO, true, "short"}};
  uint64_t planned = indices.size() * ((config.once ? 1 : 0) + (config.forever ? 1 : 0));
  uint64_t qemu_every = config.qemu_samples && qemu_img_available() && planned
                            ? std::max<uint64_t>(1, planned / config.qemu_samples) : 0;
  for (uint64_t index : indices) {
    for (int mode = 0; mode < 2; ++mode) {
      bool once = mode == 0;
      if ((once && !config.once) || (!once && !config.forever)) continue;
      const auto& kind = kKinds[(index + mode) % 4];
      FaultRule rule;
      rule.from_op = index;
      rule.once = once;
      rule.err = kind.err;
      rule.short_write = kind.short_write;
      bool qemu = qemu_every && report.runs % qemu_every == 0;
      Run r = run_with(p, rule, qemu, md);
      report.runs++;
      report.faults_injected += r.injected;
      report.states_checked += r.states;
      report.qemu_checked += r.qemu_ran;
      if (!r.verdict.any()) continue;
      for (size_t g = 0; g < kGuarantees; ++g) report.violations[g] += r.verdict.violated[g];
      std::ostringstream o;
      o << workload << " seed " << config.seed << ": I/O op " << index << " failed " << (once ? "once" : "forever")
        << " with " << kind.name << " (" << rule.describe() << ")";
      for (const auto& [g, d] : r.verdict.details) o << "\n    " << guarantee_name(g) << ": " << d;
      o << "\n    guest ops:" << r.trace;
      o << "\n    replay: keel selftest faults --workload " << workload << " --seed " << config.seed
        << " --index " << index;
      if (config.log) config.log(o.str());
      if (report.examples.size() < config.max_examples) report.examples.push_back(o.str());
    }
  }
  report.seconds = std::chrono::duration<double>(Clock::now() - started).count();
  return report;
}

std::string format_fault_report(const FaultSweepReport& r) {
  char line[512];
  std::snprintf(line, sizeof line,
                "%-15s seed %-6llu I/O ops %5llu  runs %5llu  faults injected %6llu  states %5llu  qemu %3llu  %6.1fs",
                r.workload.c_str(), static_cast<unsigned long long>(r.seed), static_cast<unsigned long long>(r.io_ops),
                static_cast<unsigned long long>(r.runs), static_cast<unsigned long long>(r.faults_injected),
                static_cast<unsigned long long>(r.states_checked), static_cast<unsigned long long>(r.qemu_checked),
                r.seconds);
  std::string out = line;
  out += "\n                violations:";
  for (size_t g = 0; g < kGuarantees; ++g)
    out += std::string(" ") + guarantee_name(static_cast<Guarantee>(g)) + "=" + std::to_string(r.violations[g]);
  if (!r.run_status.is_ok()) out += "\n                WORKLOAD FAILED: " + r.run_status.message();
  return out;
}

}  // namespace keel::proof
