// The image fuzz harnesses (harness.h): open + info, check and repair, the read path and the
// write path, each on a qcow2 file held in memory.
#include <algorithm>
#include <cerrno>
#include <memory>
#include <string>
#include <vector>

#include "harness.h"
#include "overlap_probe.h"
#include "io/memory_file.h"
#include "keel/check.h"
#include "keel/image.h"
#include "proof/memory_fs.h"

namespace keel::fuzz {
namespace {

constexpr const char* kImage = "image.qcow2";
constexpr const char* kBase = "base.raw";
constexpr uint64_t kBaseBytes = 64 * 1024;
// A file may not grow past this: a fuzzed table entry may point anywhere in a 2^56 byte space,
// and a real file would be sparse there, a memory file is not.
constexpr uint64_t kMaxFileBytes = 64ull << 20;
// Bounds of the read walk, so one input runs in milliseconds whatever the virtual size.
constexpr int kMaxExtents = 512;
constexpr uint64_t kMaxReadBytes = 64 * 1024;
constexpr uint64_t kMaxTotalReadBytes = 4ull << 20;
constexpr int kMaxSnapshotsOpened = 2;

// Refuses writes that would make the file larger than kMaxFileBytes (ENOSPC, as a full disk).
class CappedFile final : public BlockFile {
 public:
  explicit CappedFile(std::unique_ptr<BlockFile> inner) : inner_(std::move(inner)) {}
  Status read_at(uint64_t offset, std::span<uint8_t> buf) override { return inner_->read_at(offset, buf); }
  Status write_at(uint64_t offset, std::span<const uint8_t> buf) override {
    KEEL_TRY(fits(offset, buf.size()));
    return inner_->write_at(offset, buf);
  }
  Status sync() override { return inner_->sync(); }
  Status truncate(uint64_t size) override {
    KEEL_TRY(fits(size, 0));
    return inner_->truncate(size);
  }
  Status allocate(uint64_t offset, uint64_t length) override {
    KEEL_TRY(fits(offset, length));
    return inner_->allocate(offset, length);
  }
  Status punch(uint64_t offset, uint64_t length) override { return inner_->punch(offset, length); }
  Result<uint64_t> size() override { return inner_->size(); }
  uint64_t allocated_bytes() override { return inner_->allocated_bytes(); }
  std::string name() const override { return inner_->name(); }

 private:
  static Status fits(uint64_t offset, uint64_t length) {
    if (offset > kMaxFileBytes || length > kMaxFileBytes - offset)
      return io_error(ENOSPC, "fuzz file size cap");
    return Status::ok();
  }
  std::unique_ptr<BlockFile> inner_;
};

// A memory file system holding the image and base.raw, with every file capped.
struct Fs {
  proof::MemoryFs fs;
  FileOpener opener;

  explicit Fs(std::span<const uint8_t> image) {
    fs.put(kImage, std::vector<uint8_t>(image.begin(), image.end()));
    static const std::vector<uint8_t> base = [] {
      std::vector<uint8_t> b(kBaseBytes);
      for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<uint8_t>(i * 7 + 1);
      return b;
    }();
    fs.put(kBase, base);
    opener = fs.opener([](std::unique_ptr<BlockFile> inner, const std::string&, const FileOptions&)
                           -> Result<std::unique_ptr<BlockFile>> {
      return std::unique_ptr<BlockFile>(std::make_unique<CappedFile>(std::move(inner)));
    });
  }
  OpenOptions options(bool read_only) const {
    OpenOptions o;
    o.format = "qcow2";
    o.read_only = read_only;
    o.force_share = true;
    o.file_opener = opener;
    return o;
  }
  static std::string path() { return proof::MemoryFs::path(kImage); }
};

Status first_error(Status a, const Status& b) { return a.is_ok() ? b : a; }

// Reads [offset, offset + length) in pieces of at most kMaxReadBytes, within `budget`.
Status read_range(Image& img, uint64_t offset, uint64_t length, uint64_t& budget) {
  std::vector<uint8_t> buf;
  while (length > 0 && budget > 0) {
    uint64_t n = std::min({length, kMaxReadBytes, budget});
    buf.resize(n);
    KEEL_TRY(img.read(offset, buf));
    offset += n;
    length -= n;
    budget -= n;
  }
  return Status::ok();
}

uint64_t le16(const uint8_t* p) { return p[0] | uint64_t(p[1]) << 8; }

}  // namespace

Status open_info(std::span<const uint8_t> image) {
  Fs fs(image);
  auto img = Image::open(Fs::path(), fs.options(true));
  if (!img) return img.error();
  ImageInfo info = (*img)->info();
  Status s = (*img)->close();
  for (int i = 0; i < kMaxSnapshotsOpened && i < static_cast<int>(info.snapshots.size()); ++i) {
    OpenOptions o = fs.options(true);
    o.snapshot = info.snapshots[static_cast<size_t>(i)].id;
    auto snap = Image::open(Fs::path(), o);
    if (!snap) {
      s = first_error(s, snap.error());
      continue;
    }
    (void)(*snap)->info();
    s = first_error(s, (*snap)->close());
  }
  return s;
}

Status check(std::span<const uint8_t> image) {
  CheckOptions co;
  co.report = [](const std::string&) {};
  MemoryFile original("image.qcow2", std::vector<uint8_t>(image.begin(), image.end()), true);
  auto r = check_qcow2(original, co);
  Status s = r ? Status::ok() : r.error();
  CappedFile copy(std::make_unique<MemoryFile>("copy.qcow2", std::vector<uint8_t>(image.begin(), image.end())));
  co.repair = RepairMode::kAll;
  auto fixed = check_qcow2(copy, co);
  if (!fixed) return first_error(s, fixed.error());
  co.repair = RepairMode::kNone;
  auto again = check_qcow2(copy, co);
  return first_error(s, again ? Status::ok() : again.error());
}

Status read(std::span<const uint8_t> image) {
  Fs fs(image);
  auto opened = Image::open(Fs::path(), fs.options(true));
  if (!opened) return opened.error();
  Image& img = **opened;
  Status s = Status::ok();
  uint64_t budget = kMaxTotalReadBytes;
  uint64_t offset = 0;
  for (int i = 0; i < kMaxExtents && offset < img.size(); ++i) {
    auto e = img.block_status(offset, img.size() - offset);
    if (!e) {
      s = e.error();
      break;
    }
    if (e->length == 0 || e->offset != offset || e->length > img.size() - offset) {
      s = corrupt("block_status returned a bad extent");  // a harness-visible engine bug
      __builtin_trap();
    }
    // The start and the end of each extent (its middle is like its ends).
    Status r = read_range(img, offset, std::min(e->length, kMaxReadBytes), budget);
    if (r.is_ok() && e->length > kMaxReadBytes)
      r = read_range(img, offset + e->length - kMaxReadBytes, kMaxReadBytes, budget);
    s = first_error(s, r);
    offset += e->length;
  }
  // An unaligned read across a cluster boundary.
  if (img.size() > img.cluster_size() + 3) {
    std::vector<uint8_t> b(7);
    s = first_error(s, img.read(img.cluster_size() - 3, b));
  }
  return first_error(s, img.close());
}

Status write(std::span<const uint8_t> input) {
  if (input.size() < kWriteOpsBytes) return invalid("input shorter than the operation script");
  auto ops = input.subspan(input.size() - kWriteOpsBytes);
  Fs fs(input.first(input.size() - kWriteOpsBytes));
  Status s = Status::ok();
  std::vector<uint8_t> before;
  {
    auto opened = Image::open(Fs::path(), fs.options(false));
    if (!opened) return opened.error();
    // After the open: a dirty image's repair may have moved the refcount structures.
    before = fs.fs.bytes(kImage);
    Image& img = **opened;
    const uint64_t size = img.size();
    const uint64_t cs = std::max<uint64_t>(img.cluster_size(), 512);
    std::vector<uint8_t> buf;
    // 8 operations of 4 bytes: kind, length class, u16 position (a fraction of the disk).
    for (size_t i = 0; i + 4 <= ops.size() && size > 0; i += 4) {
      const uint8_t kind = ops[i] % 6;
      const bool unaligned = ops[i] & 0x80;
      uint64_t len = (ops[i + 1] % 16 + 1) * 512;
      if (ops[i + 1] & 0x10) len = (ops[i + 1] % 4 + 1) * cs;
      uint64_t pos = static_cast<uint64_t>((static_cast<unsigned __int128>(size) * le16(&ops[i + 2])) >> 16);
      pos &= ~uint64_t(511);
      if (unaligned) pos += ops[i + 2] % 512;
      if (pos >= size) pos = size - 1;
      len = std::min(len, size - pos);
      // The guest marker, tagged with the operation, over and over (overlap_probe.h).
      buf.resize(len);
      for (uint64_t k = 0; k < len; ++k)
        buf[k] = k % 16 == 12 ? static_cast<uint8_t>(ops[i] + i) : kGuestMarker[k % 16];
      Status r;
      switch (kind) {
        case 0: r = img.write(pos, buf, ops[i] & 0x40); break;
        case 1: r = img.write_zeroes(pos, len, ZeroFlags{(ops[i] & 0x40) != 0, false, (ops[i] & 0x20) != 0}); break;
        case 2: r = img.discard(pos, len); break;
        case 3: r = img.flush(); break;
        case 4: {
          uint64_t c = pos / cs * cs;
          if (size - c >= cs) {
            buf.assign(cs, static_cast<uint8_t>(ops[i + 1] & 3));
            r = img.write_compressed(c, buf);
          }
          break;
        }
        default: r = img.read(pos, buf); break;
      }
      s = first_error(s, r);
    }
    s = first_error(s, img.close());
  }
  // No metadata cluster the write path never moves gained guest data (issue 13).
  const std::vector<uint8_t> now = fs.fs.bytes(kImage);
  for (const ProbeCluster& c : stable_metadata(before))
    if (count_markers(now, c.offset, c.size) > count_markers(before, c.offset, c.size)) __builtin_trap();
  // Whatever the engine left must be checkable.
  auto after = fs.fs.handle(kImage, true);
  CheckOptions co;
  co.report = [](const std::string&) {};
  auto r = check_qcow2(*after, co);
  return first_error(s, r ? Status::ok() : r.error());
}

}  // namespace keel::fuzz
