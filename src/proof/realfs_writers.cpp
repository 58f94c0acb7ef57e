// The writers of the real-file-system harness (see realfs_writers.h).
#include "proof/realfs_writers.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <thread>

#include "keel/check.h"
#include "nbd/protocol.h"
#include "proof/nbd_session.h"
#include "proof/qemu_io_session.h"
#include "proof/qemu_oracle.h"
#include "proof/realfs_util.h"

extern char** environ;

namespace keel::proof::realfs {
namespace {


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

}  // namespace

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
  // A snapshot op: qemu-io quits (closing the image flushes it), `qemu-img snapshot -c/-d/-a`
  // runs on the closed image (it flushes before it returns), and qemu-io starts again; the
  // op's start and end marks enclose all three.
  auto snapshot = [&](const char* flag, const std::string& name) -> Status {
    KEEL_TRY((*session)->quit().with_context("qemu-io quit"));
    std::string out;
    if (run_command({"qemu-img", "snapshot", flag, name, image_path}, &out) != 0)
      return io_error(EIO, std::string("qemu-img snapshot ") + flag + " " + name + ": " + out);
    auto again = QemuIoSession::start(image_path, cache_name(s.cache));
    if (!again) return again.error();
    session = std::move(again);
    return Status::ok();
  };
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
      case GuestOpKind::kResize: cmd = "truncate " + std::to_string(op.new_size); break;  // grows or shrinks
      case GuestOpKind::kSnapshotCreate: cmd = "-c"; break;
      case GuestOpKind::kSnapshotDelete: cmd = "-d"; break;
      case GuestOpKind::kSnapshotApply: cmd = "-a"; break;
      default: return unsupported("the qemu-io driver runs writes, write-zeroes, discards, flushes, resizes and "
                                  "snapshot create/delete/apply only (op " + std::to_string(i) + " " + op.describe() + ")");
    }
    mark(static_cast<uint32_t>(i), false, true);
    const bool snap = op.kind == GuestOpKind::kSnapshotCreate || op.kind == GuestOpKind::kSnapshotDelete ||
                      op.kind == GuestOpKind::kSnapshotApply;
    Status st = snap ? snapshot(cmd.c_str(), op.name) : (*session)->run(cmd);
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
  // cache=none: the io_uring loop (its direct I/O path too); otherwise the reader/writer threads.
  const char* aio = s.cache == CacheMode::kNone ? "io_uring" : "threads";
  std::vector<std::string> args = {"keel", "serve", "-f", "qcow2", "-k", sock, "-e", std::to_string(n),
                                   "--cache", cache_name(s.cache), "--aio", aio, "--discard", "unmap",
                                   image_path};
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

}  // namespace keel::proof::realfs
