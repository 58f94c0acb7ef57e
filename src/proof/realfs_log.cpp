// Saved device logs of the real-file-system harness (see realfs_log.h).
#include "proof/realfs_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nettle/sha2.h>

#include <cstdio>
#include <cstring>

#include "proof/realfs_util.h"

namespace keel::proof::realfs {
namespace {

constexpr char kMagic[8] = {'K', 'E', 'E', 'L', 'R', 'F', 'S', '1'};
constexpr uint64_t kMaxBlob = 1ull << 32;  // no field of a sane log is larger

// Both sides hash every byte but the trailing SHA-256 itself: a damaged log is an error, never
// different states judged.
class Out {
 public:
  explicit Out(FILE* f) : f_(f) { sha256_init(&sha_); }
  void bytes(const void* p, size_t n) {
    if (ok_ && n && std::fwrite(p, 1, n, f_) != n) ok_ = false;
    sha256_update(&sha_, n, static_cast<const uint8_t*>(p));
  }
  void digest() {
    uint8_t d[SHA256_DIGEST_SIZE];
    sha256_digest(&sha_, sizeof d, d);
    if (ok_ && std::fwrite(d, 1, sizeof d, f_) != sizeof d) ok_ = false;
  }
  void u64(uint64_t v) { bytes(&v, sizeof v); }
  void blob(const void* p, size_t n) {
    u64(n);
    bytes(p, n);
  }
  void str(const std::string& s) { blob(s.data(), s.size()); }
  bool ok() const { return ok_; }

 private:
  FILE* f_;
  sha256_ctx sha_;
  bool ok_ = true;
};

class In {
 public:
  explicit In(FILE* f) : f_(f) {
    sha256_init(&sha_);
    struct stat sb {};
    left_ = ::fstat(::fileno(f), &sb) == 0 ? static_cast<uint64_t>(sb.st_size) : 0;
  }
  void bytes(void* p, size_t n) {
    if (n > left_) ok_ = false;  // a damaged length: never allocate or read past the file
    if (ok_ && n && std::fread(p, 1, n, f_) != n) ok_ = false;
    if (!ok_) return;
    left_ -= n;
    sha256_update(&sha_, n, static_cast<const uint8_t*>(p));
  }
  // Whether the trailing SHA-256 matches everything read, and nothing follows it.
  bool digest_matches() {
    uint8_t want[SHA256_DIGEST_SIZE], got[SHA256_DIGEST_SIZE];
    sha256_digest(&sha_, sizeof got, got);
    if (!ok_ || left_ != sizeof want || std::fread(want, 1, sizeof want, f_) != sizeof want) return false;
    return std::memcmp(want, got, sizeof want) == 0;
  }
  uint64_t u64() {
    uint64_t v = 0;
    bytes(&v, sizeof v);
    return ok_ ? v : 0;
  }
  std::vector<uint8_t> blob() {
    uint64_t n = u64();
    if (n > kMaxBlob || n > left_) ok_ = false;
    std::vector<uint8_t> b(ok_ ? n : 0);
    bytes(b.data(), b.size());
    return b;
  }
  std::string str() {
    auto b = blob();
    return std::string(b.begin(), b.end());
  }
  bool ok() const { return ok_; }
  uint64_t left() const { return left_; }

 private:
  FILE* f_;
  sha256_ctx sha_;
  uint64_t left_ = 0;  // bytes of the file not read yet
  bool ok_ = true;
};

void put_identity(Out& o, const LogIdentity& id) {
  o.bytes(kMagic, sizeof kMagic);
  o.str(id.fs);
  o.str(id.workload);
  o.str(id.cache);
  o.str(id.engine);
  o.u64(id.seed);
}

Result<LogIdentity> get_identity(In& in, const std::string& path) {
  char magic[sizeof kMagic] = {};
  in.bytes(magic, sizeof magic);
  if (!in.ok() || std::memcmp(magic, kMagic, sizeof kMagic) != 0)
    return error(invalid("'" + path + "' is not a saved device log (no KEELRFS1 magic)"));
  LogIdentity id;
  id.fs = in.str();
  id.workload = in.str();
  id.cache = in.str();
  id.engine = in.str();
  id.seed = in.u64();
  if (!in.ok()) return error(invalid("'" + path + "': truncated header"));
  return id;
}

// Ops and events interleaved as they were recorded (sizes and last events are recomputed on load).
void put_recording(Out& o, const Recording& rec) {
  o.u64(rec.file_count());
  for (uint32_t i = 0; i < rec.file_count(); ++i) {
    o.str(rec.file_name(i));
    o.blob(rec.base(i).data(), rec.base(i).size());
  }
  o.u64(rec.events().size());
  for (const auto& e : rec.events()) {
    o.u64(e.position);
    o.u64(static_cast<uint64_t>(e.event));
  }
  o.u64(rec.ops().size());
  for (const auto& op : rec.ops()) {
    o.u64(static_cast<uint64_t>(op.kind));
    o.u64(op.file);
    o.u64(op.offset);
    o.u64(op.length);
    o.blob(op.data.data(), op.data.size());
  }
}

Status get_recording(In& in, Recording& rec) {
  const uint64_t files = in.u64();
  for (uint64_t i = 0; i < files && in.ok(); ++i) {
    std::string name = in.str();
    rec.add_file(name, in.blob());
  }
  const uint64_t event_count = in.u64();
  if (event_count > in.left() / 16) return invalid("saved device log: a bad event count");
  std::vector<EventMark> events(event_count);
  for (auto& e : events) {
    e.position = in.u64();
    e.event = static_cast<Event>(in.u64());
  }
  const uint64_t ops = in.u64();
  size_t next_event = 0;
  for (uint64_t i = 0; i < ops && in.ok(); ++i) {
    for (; next_event < events.size() && events[next_event].position <= i; ++next_event) rec.on_event(events[next_event].event);
    FileOp op;
    op.kind = static_cast<FileOpKind>(in.u64());
    op.file = static_cast<uint32_t>(in.u64());
    op.offset = in.u64();
    op.length = in.u64();
    op.data = in.blob();
    if (op.kind > FileOpKind::kSync || op.file >= rec.file_count()) return invalid("saved device log: a bad op");
    KEEL_TRY(rec.record(std::move(op), [] { return Status::ok(); }));
  }
  for (; next_event < events.size(); ++next_event) rec.on_event(events[next_event].event);
  return in.ok() ? Status::ok() : invalid("saved device log: truncated");
}

}  // namespace

Status save_device_log(const std::string& path, const LogIdentity& id, const Run& run, const Recording& dev,
                       const std::string& base_image) {
  FILE* f = std::fopen(path.c_str(), "wbe");
  if (!f) return io_error(errno, "create " + path);
  Out o(f);
  put_identity(o, id);
  o.u64(run.setup_end);
  o.u64(run.repair_start ? 1 : 0);
  o.u64(run.repair_start.value_or(0));
  o.u64(run.marks.size());
  for (size_t i = 0; i < run.marks.size(); ++i) {
    const GuestMark& m = run.marks[i];
    o.u64(m.op);
    o.u64(m.end);
    o.u64(m.position);
    o.u64(m.ok);
    o.u64(i < run.file_positions.size() ? run.file_positions[i] : 0);
  }
  put_recording(o, dev);
  put_recording(o, *run.files);
  // The device image: its data extents.
  Fd in(::open(base_image.c_str(), O_RDONLY | O_CLOEXEC));
  struct stat sb {};
  if (in.get() < 0 || ::fstat(in.get(), &sb) != 0) {
    int e = errno;
    std::fclose(f);
    return io_error(e, "open " + base_image);
  }
  o.u64(static_cast<uint64_t>(sb.st_size));
  std::vector<uint8_t> buf;
  for (off_t pos = 0; pos < sb.st_size;) {
    off_t data = ::lseek(in.get(), pos, SEEK_DATA);
    if (data < 0) break;
    off_t hole = ::lseek(in.get(), data, SEEK_HOLE);
    if (hole < 0) hole = sb.st_size;
    buf.resize(static_cast<size_t>(hole - data));
    if (::pread(in.get(), buf.data(), buf.size(), data) != static_cast<ssize_t>(buf.size())) {
      int e = errno;
      std::fclose(f);
      return io_error(e, "read " + base_image);
    }
    o.u64(1);
    o.u64(static_cast<uint64_t>(data));
    o.blob(buf.data(), buf.size());
    pos = hole;
  }
  o.u64(0);  // no more extents
  o.digest();
  bool ok = o.ok() && std::fflush(f) == 0 && ::fsync(::fileno(f)) == 0;
  int e = errno;
  std::fclose(f);
  return ok ? Status::ok() : io_error(e ? e : EIO, "write " + path);
}

Result<LogIdentity> read_log_identity(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rbe");
  if (!f) return error(io_error(errno, "open " + path));
  In in(f);
  auto id = get_identity(in, path);
  std::fclose(f);
  return id;
}

Result<LoadedLog> load_device_log(const std::string& path, const std::string& base_image) {
  FILE* f = std::fopen(path.c_str(), "rbe");
  if (!f) return error(io_error(errno, "open " + path));
  struct Closer {
    FILE* f;
    ~Closer() { std::fclose(f); }
  } closer{f};
  In in(f);
  LoadedLog l;
  KEEL_ASSIGN(l.id, get_identity(in, path));
  l.run.setup_end = in.u64();
  const bool repair = in.u64() != 0;
  const uint64_t repair_start = in.u64();
  if (repair) l.run.repair_start = repair_start;
  const uint64_t marks = in.u64();
  for (uint64_t i = 0; i < marks && in.ok(); ++i) {
    GuestMark m;
    m.op = static_cast<uint32_t>(in.u64());
    m.end = in.u64() != 0;
    m.position = in.u64();
    m.ok = in.u64() != 0;
    l.run.marks.push_back(m);
    l.run.file_positions.push_back(in.u64());
  }
  l.dev = std::make_shared<Recording>();
  KEEL_TRY_R(get_recording(in, *l.dev).with_context(path));
  KEEL_TRY_R(get_recording(in, *l.run.files).with_context(path));
  const uint64_t size = in.u64();
  KEEL_TRY_R(make_sparse(base_image, size));
  Fd out(::open(base_image.c_str(), O_RDWR | O_CLOEXEC));
  if (out.get() < 0) return error(io_error(errno, "open " + base_image));
  while (in.ok() && in.u64() == 1) {
    const uint64_t at = in.u64();
    auto bytes = in.blob();
    if (!in.ok()) break;
    if (at + bytes.size() > size) return error(invalid("'" + path + "': a device extent past the device's end"));
    if (::pwrite(out.get(), bytes.data(), bytes.size(), static_cast<off_t>(at)) != static_cast<ssize_t>(bytes.size()))
      return error(io_error(errno, "write " + base_image));
  }
  if (!in.ok() || !in.digest_matches())
    return error(invalid("'" + path + "': truncated or damaged saved device log (SHA-256 mismatch)"));
  l.run.status = Status::ok();
  return l;
}

}  // namespace keel::proof::realfs
