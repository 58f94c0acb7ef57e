// The crash proof below a real file system (see realfs.h).
#include "proof/realfs.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <malloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <sstream>
#include <thread>

#include "io/recording_file.h"
#include "keel/check.h"
#include "proof/loop_device.h"
#include "nbd/protocol.h"
#include "proof/nbd_session.h"
#include "proof/qemu_io_session.h"
#include "proof/qemu_oracle.h"
#include "proof/realfs_util.h"

extern char** environ;

namespace keel::proof {
namespace {

using namespace realfs;

using Clock = std::chrono::steady_clock;

// What the engine did on the mounted file system: its marks in device positions, and the same
// marks in positions of its own file operations (for the leak bound).
struct Run {
  WorkloadSpec spec;
  Status status;
  std::vector<GuestMark> marks;       // positions: device ops logged
  std::vector<uint64_t> file_positions;  // per mark: file ops the engine had issued
  std::shared_ptr<Recording> files = std::make_shared<Recording>();
  uint64_t setup_end = 0;             // device ops logged once the image and backing were synced
  std::optional<uint64_t> repair_start;  // check-repair: device ops logged when the repair began
};

// check-repair: clusters appended to the closed image with refcount 1 and no reference.
constexpr uint64_t kInjectedLeaks = 3;

uint64_t be(const std::vector<uint8_t>& b, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v = (v << 8) | b[at + static_cast<size_t>(i)];
  return v;
}

// Leaks kInjectedLeaks clusters: appends them and sets their refcounts to 1 in the first refcount
// block (the workloads' images are a few MiB, so their refcounts all live there), then fsyncs.
Status inject_leaks(const std::string& path, uint64_t cluster_size) {
  KEEL_ASSIGN(std::vector<uint8_t> img, read_whole(path));
  if (img.size() < 104) return corrupt("check-repair: image too small");
  const uint64_t reftable = be(img, 48, 8);
  const uint32_t order = static_cast<uint32_t>(be(img, 96, 4));
  if (order != 4 || reftable + 8 > img.size()) return unsupported("check-repair: needs refcount_bits=16");
  const uint64_t refblock = be(img, reftable, 8) & ~0x1ffull;
  const uint64_t first = (img.size() + cluster_size - 1) / cluster_size;
  if (refblock == 0 || first + kInjectedLeaks > cluster_size / 2) return unsupported("check-repair: image too large");
  Fd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  if (fd.get() < 0) return io_error(errno, "open " + path);
  std::vector<uint8_t> zeros(cluster_size * kInjectedLeaks, 0);
  if (::pwrite(fd.get(), zeros.data(), zeros.size(), static_cast<off_t>(first * cluster_size)) !=
      static_cast<ssize_t>(zeros.size()))
    return io_error(errno, "append leaked clusters");
  for (uint64_t k = 0; k < kInjectedLeaks; ++k) {
    const uint8_t one[2] = {0, 1};
    if (::pwrite(fd.get(), one, 2, static_cast<off_t>(refblock + (first + k) * 2)) != 2)
      return io_error(errno, "write leaked refcount");
  }
  if (::fsync(fd.get()) != 0) return io_error(errno, "fsync " + path);
  return Status::ok();
}

// check-repair: after the workload, `keel check -r all` on the leaky image; the crash states are
// those of the interrupted repair, and every guest sector must still read as the workload left it.
Status run_repair(Run& r, const std::string& mnt, const std::string& image_path, Recording& device) {
  KEEL_TRY(inject_leaks(image_path, r.spec.create.cluster_size));
  {
    Fd d(::open(mnt.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (d.get() < 0 || ::syncfs(d.get()) != 0) return io_error(errno, "syncfs " + mnt);
  }
  r.repair_start = device.op_count();
  const uint32_t index = static_cast<uint32_t>(r.spec.ops.size());  // as a second close: all durable
  r.marks.push_back({index, false, *r.repair_start, true});
  r.file_positions.push_back(r.files->op_count());
  auto f = open_posix_file(image_path, FileOptions{});
  if (!f) return f.error();
  CheckOptions co;
  co.repair = RepairMode::kAll;
  auto res = check_qcow2(**f, co);
  Status st = res ? (*f)->sync() : res.error();
  if (st.is_ok() && res->leaks_fixed < kInjectedLeaks)
    st = corrupt("check -r all fixed " + std::to_string(res->leaks_fixed) + " of the injected leaks");
  r.marks.push_back({index, true, static_cast<uint64_t>(device.op_count()), st.is_ok()});
  r.file_positions.push_back(r.files->op_count());
  return st.with_context("check -r all");
}

Status run_on_mount(Run& r, const std::string& mnt, const RealFsConfig& config, Recording& device) {
  WorkloadSpec& s = r.spec;
  if (s.backing_bytes) KEEL_TRY(write_whole(mnt + "/" + kBackingName, backing_content(s)));
  if (s.new_backing_bytes) KEEL_TRY(write_whole(mnt + "/" + kNewBackingName, new_backing_content(s)));
  const std::string image_path = mnt + "/" + kImageName;
  KEEL_TRY(create_image(image_path, s.create).with_context("create"));
  {
    Fd d(::open(mnt.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (d.get() < 0 || ::syncfs(d.get()) != 0) return io_error(errno, "syncfs " + mnt);
  }
  r.setup_end = device.op_count();
  auto files = r.files;
  Sabotage sabotage = config.sabotage;
  FileOpener opener = [files, sabotage](const std::string& path, const FileOptions& fo) -> Result<std::unique_ptr<BlockFile>> {
    auto f = open_posix_file(path, fo);
    if (!f) return error(f.error());
    auto w = RecordingFile::wrap(std::move(*f), files, std::filesystem::path(path).filename().string());
    if (!w) return error(w.error());
    return sabotaged(std::move(*w), sabotage);
  };
  OpenOptions oo;
  oo.format = "qcow2";
  oo.file_opener = opener;
  oo.cache = s.cache;
  oo.observer = files.get();
  auto layers = [&](const std::string& name, bool writable) {
    OpenOptions lo;
    lo.format = "raw";
    lo.read_only = !writable;
    lo.force_share = true;
    lo.file_opener = opener;
    lo.cache = s.cache;
    return Image::open(mnt + "/" + name, lo);
  };
  WorkloadRunner runner(
      s, [&] { return Image::open(image_path, oo); },
      [&] {
        r.file_positions.push_back(files->op_count());
        return static_cast<uint64_t>(device.op_count());
      },
      layers);
  Status st = runner.open().with_context("open");
  for (size_t i = 0; st.is_ok() && i < s.ops.size(); ++i)
    st = runner.step(i).with_context("guest op " + std::to_string(i) + " " + s.ops[i].describe());
  if (st.is_ok()) st = runner.close().with_context("close");
  else runner.abandon();
  r.marks = runner.marks();
  if (st.is_ok() && s.name == "check-repair") st = run_repair(r, mnt, image_path, device);
  return st;
}

// The same workload written by QEMU: qemu-io on the image, one command per guest operation.
Status run_on_mount_qemu(Run& r, const std::string& mnt, const std::string& scratch, Recording& device) {
  WorkloadSpec& s = r.spec;
  if (s.backing_bytes) KEEL_TRY(write_whole(mnt + "/" + kBackingName, backing_content(s)));
  const std::string image_path = mnt + "/" + kImageName;
  KEEL_TRY(create_image(image_path, s.create).with_context("create"));
  {
    Fd d(::open(mnt.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (d.get() < 0 || ::syncfs(d.get()) != 0) return io_error(errno, "syncfs " + mnt);
  }
  r.setup_end = device.op_count();
  auto session = QemuIoSession::start(image_path, cache_name(s.cache));
  if (!session) return session.error();
  const std::string pattern = scratch + "/pattern";
  auto mark = [&](uint32_t op, bool end, bool ok) {
    r.marks.push_back({op, end, static_cast<uint64_t>(device.op_count()), ok});
    r.file_positions.push_back(0);
  };
  for (size_t i = 0; i < s.ops.size(); ++i) {
    const GuestOp& op = s.ops[i];
    std::string cmd;
    const std::string range = " " + std::to_string(op.offset) + " " + std::to_string(op.length);
    switch (op.kind) {
      case GuestOpKind::kWrite: {
        std::vector<uint8_t> bytes(op.length);
        fill_sectors(op_version(i), op.offset / kGuestSector, bytes);
        KEEL_TRY(write_whole(pattern, bytes));
        cmd = std::string("write -q") + (op.fua ? " -f" : "") + " -s " + pattern + range;
        break;
      }
      case GuestOpKind::kWriteZeroes:
        cmd = std::string("write -q -z") + (op.may_unmap ? " -u" : "") + (op.fua ? " -f" : "") + range;
        break;
      case GuestOpKind::kDiscard: cmd = "discard -q" + range; break;
      case GuestOpKind::kFlush: cmd = "flush"; break;
      default: return unsupported("the qemu-io driver runs writes, write-zeroes, discards and flushes only (op " +
                                  std::to_string(i) + " " + op.describe() + ")");
    }
    mark(static_cast<uint32_t>(i), false, true);
    Status st = (*session)->run(cmd);
    mark(static_cast<uint32_t>(i), true, st.is_ok());
    KEEL_TRY(st.with_context("guest op " + std::to_string(i) + " " + op.describe()));
  }
  const uint32_t close_index = static_cast<uint32_t>(s.ops.size());
  mark(close_index, false, true);
  Status st = (*session)->quit();
  mark(close_index, true, st.is_ok());
  return st.with_context("qemu-io quit");
}

// Multi-connection NBD: `keel serve -e N` (this very binary) on the image; the workload's writes go
// round-robin over N connections and every flush goes to connection 0, which with CAN_MULTI_CONN
// must make the writes completed on every connection durable.
Status run_on_mount_nbd(Run& r, const std::string& mnt, const std::string& scratch, const RealFsConfig& config,
                        Recording& device) {
  WorkloadSpec& s = r.spec;
  if (s.backing_bytes) KEEL_TRY(write_whole(mnt + "/" + kBackingName, backing_content(s)));
  const std::string image_path = mnt + "/" + kImageName;
  KEEL_TRY(create_image(image_path, s.create).with_context("create"));
  {
    Fd d(::open(mnt.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (d.get() < 0 || ::syncfs(d.get()) != 0) return io_error(errno, "syncfs " + mnt);
  }
  r.setup_end = device.op_count();
  const uint32_t n = std::max<uint32_t>(2, config.nbd_connections);
  const std::string sock = scratch + "/nbd.sock";
  std::vector<std::string> args = {"keel", "serve", "-f", "qcow2", "-k", sock, "-e", std::to_string(n),
                                   "--cache", cache_name(s.cache), "--discard", "unmap", image_path};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  if (int rc = ::posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv.data(), environ); rc != 0)
    return io_error(rc, "spawn keel serve");
  auto reap = [&](bool kill_it) -> Status {
    if (pid < 0) return Status::ok();
    for (int i = 0; i < 500; ++i) {  // up to 10 s for the server to close the image and exit
      int st = 0;
      pid_t w = ::waitpid(pid, &st, WNOHANG);
      if (w == pid) {
        pid = -1;
        return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? Status::ok()
                                                      : Status(Code::kIo, "keel serve did not exit cleanly", EIO);
      }
      if (kill_it) ::kill(pid, SIGKILL);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    pid = -1;
    return Status(Code::kIo, "keel serve did not exit after its clients left", EIO);
  };
  std::vector<std::unique_ptr<NbdSession>> conns;
  for (uint32_t i = 0; i < n; ++i) {
    auto c = NbdSession::connect(sock, 10000);
    if (!c) {
      (void)reap(true);
      return c.error().with_context("nbd connection " + std::to_string(i));
    }
    if (!((*c)->eflags() & nbd::kEflagCanMultiConn)) {
      (void)reap(true);
      return Status(Code::kIo, "keel serve -e " + std::to_string(n) + " did not advertise CAN_MULTI_CONN", EIO);
    }
    conns.push_back(std::move(*c));
  }
  auto mark = [&](uint32_t op, bool end, bool ok) {
    r.marks.push_back({op, end, static_cast<uint64_t>(device.op_count()), ok});
    r.file_positions.push_back(0);
  };
  Status st = Status::ok();
  for (size_t i = 0; st.is_ok() && i < s.ops.size(); ++i) {
    const GuestOp& op = s.ops[i];
    NbdSession& c = *conns[op.kind == GuestOpKind::kFlush ? 0 : i % n];
    const uint16_t fua = op.fua ? nbd::kCmdFlagFua : 0;
    const uint32_t len = static_cast<uint32_t>(op.length);
    mark(static_cast<uint32_t>(i), false, true);
    switch (op.kind) {
      case GuestOpKind::kWrite: {
        std::vector<uint8_t> bytes(op.length);
        fill_sectors(op_version(i), op.offset / kGuestSector, bytes);
        st = c.request(nbd::kCmdWrite, fua, op.offset, len, bytes);
        break;
      }
      case GuestOpKind::kWriteZeroes:
        st = c.request(nbd::kCmdWriteZeroes, static_cast<uint16_t>(fua | (op.may_unmap ? 0 : nbd::kCmdFlagNoHole)),
                       op.offset, len);
        break;
      case GuestOpKind::kDiscard: st = c.request(nbd::kCmdTrim, fua, op.offset, len); break;
      case GuestOpKind::kFlush: st = c.request(nbd::kCmdFlush, 0, 0, 0); break;
      default: st = unsupported("the NBD driver runs writes, write-zeroes, discards and flushes only");
    }
    mark(static_cast<uint32_t>(i), true, st.is_ok());
    st = st.with_context("guest op " + std::to_string(i) + " " + op.describe());
  }
  const uint32_t close_index = static_cast<uint32_t>(s.ops.size());
  mark(close_index, false, true);
  for (auto& c : conns) c->disconnect();
  Status exit_status = reap(!st.is_ok());
  mark(close_index, true, exit_status.is_ok());
  KEEL_TRY(st);
  return exit_status;
}

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

bool qemu_io_can_run(const WorkloadSpec& spec) {
  for (const auto& op : spec.ops)
    if (op.kind != GuestOpKind::kWrite && op.kind != GuestOpKind::kWriteZeroes && op.kind != GuestOpKind::kDiscard &&
        op.kind != GuestOpKind::kFlush)
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
  if (!config.recorder) {
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
  Run r = record(std::move(*spec), config, wd, rp, recorder);
  report.guest_ops = r.spec.ops.size();
  report.run_status = r.status;
  if (!r.status.is_ok() || !recorder) return finish();
  const Recording& dev = *recorder->recording();
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
  for (uint64_t cp = 0; cp <= ops.size() && !report.stopped_early; ++cp) {
    while (next_mark < r.marks.size() && r.marks[next_mark].position <= cp) apply_mark(model, r.spec, r.marks[next_mark++]);
    if (cp < explore_start) continue;
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
    uint64_t file_cp = r.files->op_count();
    for (size_t i = 0; i < r.marks.size(); ++i)
      if (r.marks[i].position > cp) {
        file_cp = r.file_positions[i];
        break;
      }
    // qemu-io's file ops are not recorded: its column tolerates leaks (counts corruption only).
    const uint64_t injected = r.repair_start ? kInjectedLeaks : 0;
    uint64_t bound = image_id >= 0 && !config.qemu_io && !config.nbd ? injected + leak_bound(r.spec, file_marks, *r.files, static_cast<uint32_t>(image_id), file_cp)
                                   : UINT64_MAX;
    for (size_t si = 0; si < states.size(); ++si) {
      if (!sampled(cp, si)) continue;
      if (config.max_seconds > 0 && std::chrono::duration<double>(Clock::now() - started).count() > config.max_seconds) {
        report.stopped_early = true;
        break;
      }
      const CrashState& cs = states[si];
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
        auto loop = LoopDevice::attach(wd.file("state.img"));
        if (!loop) {
          report.run_status = loop.error();
          return finish();
        }
        auto m = Mount::attach(loop->path(), wd.file("smnt"), config.fs, mount_options(config.fs));
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
        Status u = m->unmount();
        if (!u.is_ok()) {
          report.run_status = u;
          return finish();
        }
      }
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
      report.states_checked++;
      report.qemu_checked += v.qemu_ran;
      if (!v.any()) continue;
      for (size_t g = 0; g < kGuarantees; ++g) report.violations[g] += v.violated[g];
      std::ostringstream o;
      o << out.engine << " " << config.fs << " cache=" << out.cache << " " << name << " seed " << config.seed << ": " << cs.describe()
        << ", " << where(r, dev, cp) << ", state #" << si;
      for (const auto& [g, detail] : v.details) o << "\n    " << guarantee_name(g) << ": " << detail;
      o << "\n    replay: keel selftest crash " << (config.qemu_io ? "--engine qemu-io " : config.nbd ? "--engine nbd " : "") << "--fs " << config.fs << " --cache " << out.cache << " --workload " << name
        << " --seed " << config.seed;
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
  if (r.unmountable) out += "\n       first unmountable state: " + r.first_unmountable;
  if (!w.run_status.is_ok()) out += "\n       WORKLOAD FAILED: " + w.run_status.message();
  return out;
}

}  // namespace keel::proof
