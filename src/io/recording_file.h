// Crash recording: a BlockFile decorator that logs every state-changing operation, and a cursor
// that rebuilds any file content the power-loss model allows from that log.
//
// The power-loss model (docs/integrity.md, shared integrity contract): between two completed
// syncs of a file lies an epoch. After a power cut every operation completed before the file's
// last completed sync is on disk; of the operations issued since (the "open" operations) any
// subset may have reached the disk, and a write may be torn: any subset of its 512-byte sectors
// (counted from offset 0 of the file) persisted. The file size is the synced size, or the size
// some persisted operation set; bytes past the synced size that no persisted write covers read as
// zeros.
//
// A Recording is shared by every RecordingFile of one run (image, backing file, data file): the
// operations of all files form one numbered sequence, so "crash point c" means "operations
// [0, c) were issued, none after", across all files. Reads are not recorded.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "keel/block_file.h"
#include "keel/events.h"

namespace keel {

inline constexpr uint64_t kSectorBytes = 512;  // the unit of tearing

enum class FileOpKind : uint8_t { kWrite, kTruncate, kAllocate, kPunch, kSync };
const char* file_op_kind_name(FileOpKind kind);

struct FileOp {
  FileOpKind kind = FileOpKind::kWrite;
  uint32_t file = 0;         // Recording file id
  uint64_t offset = 0;       // write/allocate/punch: first byte; truncate: the new size
  uint64_t length = 0;       // write: data.size(); allocate/punch: range length
  std::vector<uint8_t> data;  // write only
  uint64_t size_before = 0;  // the file's size just before / after the op, as issued
  uint64_t size_after = 0;
  int last_event = -1;       // the engine Event announced last before this op, -1 if none

  // Sectors a write touches: [first_sector, first_sector + sector_count).
  uint64_t first_sector() const { return offset / kSectorBytes; }
  uint64_t sector_count() const;
  // A truncate, or an op that grew the file.
  bool sets_size() const { return kind == FileOpKind::kTruncate || size_after != size_before; }
  std::string describe() const;
};

struct EventMark {
  uint64_t position = 0;  // number of ops recorded when the event was announced
  Event event = Event::kCount;
};

// The shared operation log. Thread-safe while recording; the accessors that return references
// (ops(), events(), base()) REQUIRE that recording has stopped.
class Recording : public EventObserver {
 public:
  // Registers a file by name; its current content is the base state. A name seen before keeps its
  // id and recorded history (a file the engine closes and opens again).
  uint32_t add_file(const std::string& name, std::vector<uint8_t> base);
  // The id of `name`, or -1.
  int find_file(const std::string& name) const;
  uint32_t file_count() const;
  const std::string& file_name(uint32_t id) const;
  const std::vector<uint8_t>& base(uint32_t id) const;

  size_t op_count() const;
  const std::vector<FileOp>& ops() const { return ops_; }
  const std::vector<EventMark>& events() const { return events_; }
  // Ops recorded on one file, per kind (for cost measurements).
  uint64_t count(uint32_t file, FileOpKind kind) const;

  void on_event(Event e) override;

  // Runs `io` (the operation on the real file) and, if it succeeded, appends `op`. The lock is
  // held across both so that the log order is the order the operations happened in.
  template <typename Fn>
  Status record(FileOp op, Fn&& io) {
    std::lock_guard<std::mutex> g(mu_);
    Status s = io();
    if (s.is_ok()) append_locked(std::move(op));
    return s;
  }

 private:
  void append_locked(FileOp op);

  mutable std::mutex mu_;
  struct FileInfo {
    std::string name;
    std::vector<uint8_t> base;
    uint64_t size = 0;  // size after every recorded op
  };
  std::vector<FileInfo> files_;
  std::vector<FileOp> ops_;
  std::vector<EventMark> events_;
  int last_event_ = -1;
};

// Records every write, truncate, allocate, punch and sync that succeeds on `inner`.
class RecordingFile final : public BlockFile {
 public:
  // Registers `inner` with `rec` under `name` (reading its content as the base if new).
  static Result<std::unique_ptr<RecordingFile>> wrap(std::unique_ptr<BlockFile> inner,
                                                     std::shared_ptr<Recording> rec,
                                                     const std::string& name);

  Status read_at(uint64_t offset, std::span<uint8_t> buf) override;
  Status write_at(uint64_t offset, std::span<const uint8_t> buf) override;
  Status sync() override;
  Status truncate(uint64_t size) override;
  Status allocate(uint64_t offset, uint64_t length) override;
  Status punch(uint64_t offset, uint64_t length) override;
  Result<uint64_t> size() override { return inner_->size(); }
  Status lock(unsigned perms, unsigned shared) override { return inner_->lock(perms, shared); }
  Result<std::pair<bool, uint64_t>> probe_data(uint64_t offset, uint64_t max_length) override {
    return inner_->probe_data(offset, max_length);
  }
  uint64_t allocated_bytes() override { return inner_->allocated_bytes(); }
  uint32_t alignment() const override { return inner_->alignment(); }
  std::string name() const override { return inner_->name(); }
  uint32_t file_id() const { return id_; }

 private:
  RecordingFile(std::unique_ptr<BlockFile> inner, std::shared_ptr<Recording> rec, uint32_t id)
      : inner_(std::move(inner)), rec_(std::move(rec)), id_(id) {}
  FileOp make(FileOpKind kind, uint64_t offset, uint64_t length) const;

  std::unique_ptr<BlockFile> inner_;
  std::shared_ptr<Recording> rec_;
  uint32_t id_;
};

// One state the power-loss model allows at a crash point.
struct CrashState {
  uint64_t crash_point = 0;         // ops [0, crash_point) were issued
  std::vector<uint32_t> persisted;  // open ops that reached the disk, ascending op indices
  // Persisted writes that were torn: the op index and, per sector of the op, whether it persisted.
  std::vector<std::pair<uint32_t, std::vector<bool>>> torn;
  std::string describe() const;
};

// Walks the crash points of a finished Recording in order, keeping each file's synced content,
// and materializes crash states. Crash point 0 is the base state.
class CrashCursor {
 public:
  explicit CrashCursor(const Recording& rec);

  uint64_t crash_point() const { return crash_point_; }
  uint64_t last_crash_point() const { return rec_.op_count(); }
  // Moves to crash_point() + 1. REQUIRES: crash_point() < last_crash_point().
  void advance();
  // Moves forward (or restarts and moves) to `crash_point`.
  void seek(uint64_t crash_point);
  // Ops issued since their file's last completed sync, ascending.
  const std::vector<uint32_t>& open_ops() const { return open_ops_; }
  // The content every file had at its last completed sync.
  const std::vector<uint8_t>& synced(uint32_t file) const { return synced_[file]; }

  // Content of `file` in `state`. REQUIRES: state.crash_point == crash_point(), persisted and
  // torn name only open ops (checked; a violation returns an invalid-argument error).
  Result<std::vector<uint8_t>> materialize(const CrashState& state, uint32_t file) const;

 private:
  void restart();

  const Recording& rec_;
  uint64_t crash_point_ = 0;
  std::vector<std::vector<uint8_t>> synced_;
  std::vector<std::vector<uint32_t>> open_per_file_;
  std::vector<uint32_t> open_ops_;
};

// Applies `op` to `content` as the power-loss model says; `sectors` (for a write) says which of
// its sectors persisted (nullptr: all).
void apply_file_op(std::vector<uint8_t>& content, const FileOp& op, const std::vector<bool>* sectors);

}  // namespace keel
