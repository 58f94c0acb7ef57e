// Shared parts of the real-file-system harness (see realfs_util.h).
#include "proof/realfs_util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nettle/sha2.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>

#include "proof/loop_device.h"
#include "proof/qemu_oracle.h"

namespace keel::proof::realfs {

// Device sizes: each file system's minimum with room for the workloads' few MiB (mkfs.xfs
// refuses less than 300 MiB). The files are sparse on tmpfs, so the size costs little.
uint64_t device_bytes(const std::string& fs) {
  if (fs == "xfs") return 320ull << 20;
  if (fs == "btrfs") return 256ull << 20;
  return 64ull << 20;
}

std::vector<std::string> mkfs_command(const std::string& fs, const std::string& path) {
  // ext4: inode tables and journal zeroed by mkfs, so the kernel's lazy-init thread does not
  // write in the background of the recording.
  if (fs == "ext4") return {"mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", path};
  if (fs == "xfs") return {"mkfs.xfs", "-q", "-f", path};
  return {"mkfs.btrfs", "-q", "-f", path};
}

// xfs refuses a second mount of a file system whose UUID it has seen mounted (the copies share it).
std::string mount_options(const std::string& fs) { return fs == "xfs" ? "nouuid" : ""; }

const char* cache_name(CacheMode c) {
  switch (c) {
    case CacheMode::kNone: return "none";
    case CacheMode::kWritethrough: return "writethrough";
    case CacheMode::kDirectsync: return "directsync";
    case CacheMode::kUnsafe: return "unsafe";
    default: return "writeback";
  }
}


Status make_sparse(const std::string& path, uint64_t size) {
  Fd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (fd.get() < 0) return io_error(errno, "create " + path);
  if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) return io_error(errno, "ftruncate " + path);
  return Status::ok();
}

// Copies `from` to `to` extent by extent (holes stay holes).
Status sparse_copy(const std::string& from, const std::string& to) {
  Fd in(::open(from.c_str(), O_RDONLY | O_CLOEXEC));
  if (in.get() < 0) return io_error(errno, "open " + from);
  Fd out(::open(to.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (out.get() < 0) return io_error(errno, "create " + to);
  struct stat sb {};
  if (::fstat(in.get(), &sb) != 0) return io_error(errno, "stat " + from);
  if (::ftruncate(out.get(), sb.st_size) != 0) return io_error(errno, "ftruncate " + to);
  off_t pos = 0;
  while (pos < sb.st_size) {
    off_t data = ::lseek(in.get(), pos, SEEK_DATA);
    if (data < 0) break;  // ENXIO: no data past pos
    off_t hole = ::lseek(in.get(), data, SEEK_HOLE);
    if (hole < 0) hole = sb.st_size;
    off_t src = data, dst = data;
    size_t left = static_cast<size_t>(hole - data);
    while (left > 0) {
      ssize_t n = ::copy_file_range(in.get(), &src, out.get(), &dst, left, 0);
      if (n <= 0) return io_error(n < 0 ? errno : EIO, "copy_file_range " + from);
      left -= static_cast<size_t>(n);
    }
    pos = hole;
  }
  return Status::ok();
}

// Writes `op` (a device write) to `fd`; with `mask`, only the sectors it marks persisted.
Status apply_write(int fd, const FileOp& op, const std::vector<bool>* mask) {
  if (op.kind != FileOpKind::kWrite || op.length == 0) return Status::ok();
  const uint64_t first = op.first_sector();
  const uint64_t end = op.offset + op.length;
  for (uint64_t i = 0; i < op.sector_count(); ++i) {
    if (mask && !(*mask)[i]) continue;
    uint64_t from = std::max(op.offset, (first + i) * kSectorBytes);
    uint64_t to = std::min(end, (first + i + 1) * kSectorBytes);
    if (!mask) {  // whole write at once
      from = op.offset;
      to = end;
    }
    if (::pwrite(fd, op.data.data() + (from - op.offset), to - from, static_cast<off_t>(from)) !=
        static_cast<ssize_t>(to - from))
      return io_error(errno, "write crash state");
    if (!mask) break;
  }
  return Status::ok();
}

Result<std::vector<uint8_t>> read_whole(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return error(io_error(errno, "open " + path));
  struct stat sb {};
  if (::fstat(fd.get(), &sb) != 0) return error(io_error(errno, "stat " + path));
  std::vector<uint8_t> b(static_cast<size_t>(sb.st_size));
  size_t done = 0;
  while (done < b.size()) {
    ssize_t n = ::pread(fd.get(), b.data() + done, b.size() - done, static_cast<off_t>(done));
    if (n < 0) return error(io_error(errno, "read " + path));
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  b.resize(done);
  return b;
}

Status write_whole(const std::string& path, const std::vector<uint8_t>& bytes) {
  auto f = open_posix_file(path, FileOptions{.create = true});
  if (!f) return f.error();
  KEEL_TRY((*f)->write_at(0, bytes));
  return (*f)->sync();
}

Status dig_holes(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  if (fd.get() < 0) return io_error(errno, "open " + path);
  struct stat sb {};
  if (::fstat(fd.get(), &sb) != 0) return io_error(errno, "stat " + path);
  constexpr size_t kBlock = 4096;
  std::vector<uint8_t> buf(1 << 20);
  for (off_t pos = 0; pos < sb.st_size;) {
    off_t data = ::lseek(fd.get(), pos, SEEK_DATA);
    if (data < 0) break;  // ENXIO: no data past pos
    data &= ~static_cast<off_t>(kBlock - 1);
    ssize_t n = ::pread(fd.get(), buf.data(), buf.size(), data);
    if (n < 0) return io_error(errno, "read " + path);
    if (n == 0) break;
    for (size_t b = 0; b + kBlock <= static_cast<size_t>(n); b += kBlock) {
      const uint8_t* p = buf.data() + b;
      if (p[0] != 0 || std::memcmp(p, p + 1, kBlock - 1) != 0) continue;
      if (::fallocate(fd.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, data + static_cast<off_t>(b), kBlock) != 0)
        return io_error(errno, "punch a hole in " + path);
    }
    pos = data + n;
  }
  return Status::ok();
}

std::string state_digest(int synced_fd, uint64_t synced_id, const std::vector<FileOp>& ops, const CrashState& cs) {
  // The final bytes of every sector the state's persisted writes touch (later writes win).
  std::map<uint64_t, const uint8_t*> sectors;
  for (uint32_t i : cs.persisted) {
    const FileOp& op = ops[i];
    if (op.kind != FileOpKind::kWrite || op.length == 0) continue;
    if (op.offset % kSectorBytes != 0 || op.length % kSectorBytes != 0) return "";
    const std::vector<bool>* mask = nullptr;
    for (const auto& [t, m] : cs.torn)
      if (t == i) mask = &m;
    for (uint64_t s = 0; s < op.length / kSectorBytes; ++s)
      if (!mask || (*mask)[s]) sectors[op.first_sector() + s] = op.data.data() + s * kSectorBytes;
  }
  sha256_ctx ctx;
  sha256_init(&ctx);
  sha256_update(&ctx, sizeof synced_id, reinterpret_cast<const uint8_t*>(&synced_id));
  uint8_t old[kSectorBytes];
  for (const auto& [sector, bytes] : sectors) {
    ssize_t n = ::pread(synced_fd, old, kSectorBytes, static_cast<off_t>(sector * kSectorBytes));
    if (n == static_cast<ssize_t>(kSectorBytes) && std::memcmp(old, bytes, kSectorBytes) == 0) continue;
    if (n < 0) return "";
    sha256_update(&ctx, sizeof sector, reinterpret_cast<const uint8_t*>(&sector));
    sha256_update(&ctx, kSectorBytes, bytes);
  }
  std::string digest(SHA256_DIGEST_SIZE, '\0');
  sha256_digest(&ctx, SHA256_DIGEST_SIZE, reinterpret_cast<uint8_t*>(digest.data()));
  return digest;
}

WorkDir::~WorkDir() {
    if (dir.empty()) return;
    std::error_code ec;
    // Only our files: the mount points are unmounted by now (Mount's destructor ran first).
  std::filesystem::remove_all(dir, ec);
}

Status prepare_device(WorkDir& wd, const std::string& work_dir, const std::string& fs) {
  std::string tmpl = work_dir + "/keel-realfs-XXXXXX";
  if (!::mkdtemp(tmpl.data())) return io_error(errno, "mkdtemp " + tmpl);
  wd.dir = tmpl;
  for (const char* d : {"mnt", "smnt"}) ::mkdir(wd.file(d).c_str(), 0700);
  KEEL_TRY(make_sparse(wd.file("base.img"), device_bytes(fs)));
  std::string out;
  if (run_command(mkfs_command(fs, wd.file("base.img")), &out) != 0) return io_error(EIO, "mkfs." + fs + ": " + out);
  KEEL_TRY(dig_holes(wd.file("base.img")));
  KEEL_TRY(sparse_copy(wd.file("base.img"), wd.file("live.img")));
  return make_sparse(wd.file("dev"), 0);
}

}  // namespace keel::proof::realfs
