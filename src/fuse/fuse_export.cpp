// FUSE export of an image (see fuse_export.h), on libfuse3's low-level API.
#define FUSE_USE_VERSION 34
#include "fuse/fuse_export.h"

#include <fuse_lowlevel.h>
#include <linux/falloc.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <mutex>
#include <vector>

#include <fmt/format.h>

#include "keel/limits.h"

extern char** environ;

namespace keel::fuse {

struct FuseExport::State {
  Image* image = nullptr;
  FuseExportConfig cfg;
  fuse_session* se = nullptr;
  std::atomic<bool> ended{false};  // run() returned: the mount is gone
  std::mutex mu;  // guards the attributes below
  mode_t mode = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  timespec time{};
};

namespace {

using State = FuseExport::State;

State& state(fuse_req_t req) { return *static_cast<State*>(fuse_req_userdata(req)); }

int errno_of(const Status& s) {
  if (s.is_ok()) return 0;
  if (s.err() != 0) return s.err();
  switch (s.code()) {
    case Code::kInvalidArgument: return EINVAL;
    case Code::kReadOnly: return EACCES;
    case Code::kUnsupported: return EOPNOTSUPP;
    default: return EIO;
  }
}

struct stat attributes(State& st) {
  struct stat a {};
  std::lock_guard<std::mutex> lk(st.mu);
  a.st_ino = FUSE_ROOT_ID;
  a.st_mode = st.mode;
  a.st_nlink = 1;
  a.st_uid = st.uid;
  a.st_gid = st.gid;
  a.st_size = static_cast<off_t>(st.image->size());
  a.st_blksize = 512;
  a.st_blocks = static_cast<blkcnt_t>((st.image->size() + 511) / 512);
  a.st_atim = a.st_mtim = a.st_ctim = st.time;
  return a;
}

void op_lookup(fuse_req_t req, fuse_ino_t, const char*) { fuse_reply_err(req, ENOENT); }

void op_getattr(fuse_req_t req, fuse_ino_t, fuse_file_info*) {
  struct stat a = attributes(state(req));
  fuse_reply_attr(req, &a, 1.0);
}

// Grows (or, for truncate, shrinks) the image to `size`.
Status resize(State& st, uint64_t size) {
  const uint64_t cur = st.image->size();
  if (size == cur) return Status::ok();
  return st.image->resize(size, size < cur);
}

void op_setattr(fuse_req_t req, fuse_ino_t, struct stat* attr, int to_set, fuse_file_info*) {
  State& st = state(req);
  // As qemu's FUSE export: size, mode, uid and gid only.
  const int supported = FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID;
  if (to_set & ~supported) return (void)fuse_reply_err(req, ENOTSUP);
  if (to_set & FUSE_SET_ATTR_MODE) {
    if ((attr->st_mode & S_IFMT) != S_IFREG) return (void)fuse_reply_err(req, EINVAL);
    if (!st.cfg.writable && (attr->st_mode & (S_IWUSR | S_IWGRP | S_IWOTH)))
      return (void)fuse_reply_err(req, EROFS);
  }
  if (to_set & FUSE_SET_ATTR_SIZE) {
    if (!st.cfg.writable) return (void)fuse_reply_err(req, EACCES);
    Status s = resize(st, static_cast<uint64_t>(attr->st_size));
    if (!s.is_ok()) return (void)fuse_reply_err(req, errno_of(s));
  }
  {
    std::lock_guard<std::mutex> lk(st.mu);
    if (to_set & FUSE_SET_ATTR_MODE) st.mode = attr->st_mode;
    if (to_set & FUSE_SET_ATTR_UID) st.uid = attr->st_uid;
    if (to_set & FUSE_SET_ATTR_GID) st.gid = attr->st_gid;
  }
  struct stat a = attributes(st);
  fuse_reply_attr(req, &a, 1.0);
}

void op_open(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  State& st = state(req);
  if ((fi->flags & O_ACCMODE) != O_RDONLY && !st.cfg.writable) return (void)fuse_reply_err(req, EACCES);
  fi->direct_io = 1;  // no page cache: every read and write reaches the image (and the NBD export)
  fuse_reply_open(req, fi);
}

void op_read(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info*) {
  State& st = state(req);
  const uint64_t end = st.image->size();
  if (off < 0) return (void)fuse_reply_err(req, EINVAL);
  const uint64_t offset = static_cast<uint64_t>(off);
  if (offset >= end) return (void)fuse_reply_buf(req, nullptr, 0);
  const size_t n = static_cast<size_t>(std::min<uint64_t>({size, end - offset, limits::kMaxRequestBytes}));
  std::vector<uint8_t> buf(n);
  Status s = st.image->read(offset, buf);
  if (!s.is_ok()) return (void)fuse_reply_err(req, errno_of(s));
  fuse_reply_buf(req, reinterpret_cast<const char*>(buf.data()), n);
}

void op_write(fuse_req_t req, fuse_ino_t, const char* data, size_t size, off_t off, fuse_file_info*) {
  State& st = state(req);
  if (!st.cfg.writable) return (void)fuse_reply_err(req, EACCES);
  if (off < 0) return (void)fuse_reply_err(req, EINVAL);
  const uint64_t offset = static_cast<uint64_t>(off);
  uint64_t end = st.image->size();
  if (offset + size > end) {
    if (st.cfg.growable) {
      Status s = resize(st, offset + size);
      if (!s.is_ok()) return (void)fuse_reply_err(req, errno_of(s));
    } else {
      size = offset >= end ? 0 : static_cast<size_t>(end - offset);  // as qemu: a short write
    }
  }
  if (size > 0) {
    Status s = st.image->write(offset, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(data), size));
    if (!s.is_ok()) return (void)fuse_reply_err(req, errno_of(s));
  }
  fuse_reply_write(req, size);
}

void op_fallocate(fuse_req_t req, fuse_ino_t, int mode, off_t off, off_t length, fuse_file_info*) {
  State& st = state(req);
  if (!st.cfg.writable) return (void)fuse_reply_err(req, EACCES);
  if (off < 0 || length <= 0) return (void)fuse_reply_err(req, EINVAL);
  const uint64_t offset = static_cast<uint64_t>(off);
  uint64_t end = std::min<uint64_t>(offset + static_cast<uint64_t>(length), st.image->size());
  Status s = Status::ok();
  if (mode == 0 || mode == FALLOC_FL_KEEP_SIZE) {
    // Preallocation: the engine allocates on write; only growing the file needs doing.
    const uint64_t want = offset + static_cast<uint64_t>(length);
    if (mode == 0 && want > st.image->size()) {
      if (!st.cfg.growable) return (void)fuse_reply_err(req, ENOSPC);
      s = resize(st, want);
    }
  } else if (mode == (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)) {
    // A discard that also zeroes what it cannot deallocate, so the hole reads as zeros.
    ZeroFlags zf;
    zf.may_unmap = true;
    if (offset < end) s = st.image->write_zeroes(offset, end - offset, zf);
  } else if (mode == FALLOC_FL_ZERO_RANGE || mode == (FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE)) {
    if (offset < end) s = st.image->write_zeroes(offset, end - offset, ZeroFlags{});
  } else if (mode & FALLOC_FL_PUNCH_HOLE) {
    return (void)fuse_reply_err(req, EINVAL);  // PUNCH_HOLE needs KEEP_SIZE
  } else {
    return (void)fuse_reply_err(req, EOPNOTSUPP);
  }
  fuse_reply_err(req, errno_of(s));
}

void op_fsync(fuse_req_t req, fuse_ino_t, int, fuse_file_info*) {
  State& st = state(req);
  fuse_reply_err(req, st.cfg.writable ? errno_of(st.image->flush()) : 0);
}

void op_flush(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) { op_fsync(req, ino, 1, fi); }

// SEEK_DATA / SEEK_HOLE from block status: zero extents are holes.
void op_lseek(fuse_req_t req, fuse_ino_t, off_t off, int whence, fuse_file_info*) {
  State& st = state(req);
  if (whence != SEEK_DATA && whence != SEEK_HOLE) return (void)fuse_reply_err(req, EINVAL);
  const uint64_t end = st.image->size();
  if (off < 0 || static_cast<uint64_t>(off) >= end) return (void)fuse_reply_err(req, ENXIO);
  uint64_t pos = static_cast<uint64_t>(off);
  while (pos < end) {
    auto e = st.image->block_status(pos, end - pos);
    if (!e) return (void)fuse_reply_err(req, errno_of(e.error()));
    if (e->length == 0) break;
    if ((whence == SEEK_DATA) == !e->zero) return (void)fuse_reply_lseek(req, static_cast<off_t>(pos));
    pos += e->length;
  }
  if (whence == SEEK_HOLE) return (void)fuse_reply_lseek(req, static_cast<off_t>(end));
  fuse_reply_err(req, ENXIO);
}

const fuse_lowlevel_ops kOps = [] {
  fuse_lowlevel_ops o{};
  o.lookup = op_lookup;
  o.getattr = op_getattr;
  o.setattr = op_setattr;
  o.open = op_open;
  o.read = op_read;
  o.write = op_write;
  o.flush = op_flush;
  o.fsync = op_fsync;
  o.fallocate = op_fallocate;
  o.lseek = op_lseek;
  return o;
}();

fuse_session* try_mount(State& st, bool allow_other) {
  std::string opts = fmt::format("default_permissions{}", allow_other ? ",allow_other" : "");
  std::string prog = "keel";
  std::string dash_o = "-o";
  char* argv[] = {prog.data(), dash_o.data(), opts.data(), nullptr};
  fuse_args args = FUSE_ARGS_INIT(3, argv);
  fuse_session* se = fuse_session_new(&args, &kOps, sizeof kOps, &st);
  fuse_opt_free_args(&args);  // the session keeps what it parsed; the copies are ours (LeakSanitizer)
  if (!se) return nullptr;
  if (fuse_session_mount(se, st.cfg.mountpoint.c_str()) != 0) {
    fuse_session_destroy(se);
    return nullptr;
  }
  return se;
}

}  // namespace

Result<std::unique_ptr<FuseExport>> FuseExport::mount(Image& image, const FuseExportConfig& cfg) {
  struct stat sb {};
  if (::stat(cfg.mountpoint.c_str(), &sb) < 0)
    return error(io_error(errno, fmt::format("Failed to stat '{}'", cfg.mountpoint)));
  if (!S_ISREG(sb.st_mode)) return error(invalid(fmt::format("'{}' is not a regular file", cfg.mountpoint)));
  if (cfg.writable && image.read_only()) return error(invalid("Cannot export read-only node as writable"));
  auto st = std::make_unique<State>();
  st->image = &image;
  st->cfg = cfg;
  st->mode = S_IFREG | S_IRUSR | (cfg.writable ? S_IWUSR : 0);
  st->uid = ::getuid();
  st->gid = ::getgid();
  ::clock_gettime(CLOCK_REALTIME, &st->time);
  fuse_session* se = nullptr;
  if (cfg.allow_other != AllowOther::kOff) se = try_mount(*st, true);
  if (!se && cfg.allow_other != AllowOther::kOn) se = try_mount(*st, false);
  if (!se) return error(Status(Code::kIo, "Failed to mount FUSE session to export", EIO));
  st->se = se;
  return std::unique_ptr<FuseExport>(new FuseExport(std::move(st)));
}

FuseExport::FuseExport(std::unique_ptr<State> s) : s_(std::move(s)) {}

FuseExport::~FuseExport() {
  if (!s_->se) return;
  fuse_session_unmount(s_->se);
  fuse_session_destroy(s_->se);
}

void FuseExport::run() {
  fuse_session_loop(s_->se);
  s_->ended = true;
}

void FuseExport::stop() {
  // Unmount from outside the session: the loop's read of /dev/fuse then fails with ENODEV and
  // run() returns; the session itself is torn down by the destructor on the owner's thread.
  if (s_->ended) return;  // unmounted from outside already
  const char* mp = s_->cfg.mountpoint.c_str();
  if (::umount2(mp, MNT_DETACH) == 0) return;
  std::string prog = "fusermount3", u = "-u", z = "-z", path = s_->cfg.mountpoint;
  char* argv[] = {prog.data(), u.data(), z.data(), path.data(), nullptr};
  pid_t pid = 0;
  if (::posix_spawnp(&pid, "fusermount3", nullptr, nullptr, argv, environ) == 0) {
    int status = 0;
    ::waitpid(pid, &status, 0);
  }
}

Result<FuseExportConfig> parse_fuse_export_option(const std::string& spec) {
  FuseExportConfig cfg;
  bool is_fuse = false;
  bool have_id = false;
  auto on_off = [](const std::string& key, const std::string& v) -> Result<bool> {
    if (v == "on" || v == "true" || v == "yes") return true;
    if (v == "off" || v == "false" || v == "no") return false;
    return error(invalid(fmt::format("Parameter '{}' expects 'on' or 'off'", key)));
  };
  size_t pos = 0;
  while (pos <= spec.size()) {
    size_t comma = spec.find(',', pos);
    if (comma == std::string::npos) comma = spec.size();
    std::string item = spec.substr(pos, comma - pos);
    pos = comma + 1;
    if (item.empty()) continue;
    size_t eq = item.find('=');
    if (eq == std::string::npos) return error(invalid(fmt::format("Expected '=' after parameter '{}'", item)));
    std::string key = item.substr(0, eq), value = item.substr(eq + 1);
    if (key == "type") {
      if (value != "fuse")
        return error(invalid(fmt::format("Parameter 'type' does not accept value '{}' (keel serve: only fuse)", value)));
      is_fuse = true;
    } else if (key == "id") {
      have_id = !value.empty();
    } else if (key == "node-name") {
      // keel serve exports its one image
    } else if (key == "mountpoint") {
      cfg.mountpoint = value;
    } else if (key == "writable") {
      KEEL_ASSIGN(cfg.writable, on_off(key, value));
    } else if (key == "growable") {
      KEEL_ASSIGN(cfg.growable, on_off(key, value));
    } else if (key == "allow-other") {
      if (value == "auto") {
        cfg.allow_other = AllowOther::kAuto;
      } else {
        KEEL_ASSIGN(bool on, on_off(key, value));
        cfg.allow_other = on ? AllowOther::kOn : AllowOther::kOff;
      }
    } else {
      return error(invalid(fmt::format("Parameter '{}' is unexpected", key)));
    }
  }
  if (!is_fuse) return error(invalid("Parameter 'type' is missing"));
  if (!have_id) return error(invalid("Parameter 'id' is missing"));
  if (cfg.mountpoint.empty()) return error(invalid("Parameter 'mountpoint' is missing"));
  return cfg;
}

}  // namespace keel::fuse
