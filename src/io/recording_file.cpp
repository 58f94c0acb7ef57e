// Crash recording and crash-state materialization (see recording_file.h for the model).
#include "io/recording_file.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <sstream>

namespace keel {

const char* file_op_kind_name(FileOpKind kind) {
  switch (kind) {
    case FileOpKind::kWrite: return "write";
    case FileOpKind::kTruncate: return "truncate";
    case FileOpKind::kAllocate: return "allocate";
    case FileOpKind::kPunch: return "punch";
    case FileOpKind::kSync: return "sync";
  }
  return "?";
}

uint64_t FileOp::sector_count() const {
  if (kind != FileOpKind::kWrite || length == 0) return 0;
  uint64_t last = (offset + length - 1) / kSectorBytes;
  return last - first_sector() + 1;
}

std::string FileOp::describe() const {
  std::ostringstream o;
  o << file_op_kind_name(kind) << " file#" << file;
  switch (kind) {
    case FileOpKind::kWrite:
    case FileOpKind::kAllocate:
    case FileOpKind::kPunch:
      o << " [0x" << std::hex << offset << "+0x" << length << std::dec << ")";
      break;
    case FileOpKind::kTruncate: o << " to 0x" << std::hex << offset << std::dec; break;
    case FileOpKind::kSync: break;
  }
  if (last_event >= 0) o << " after " << event_name(static_cast<Event>(last_event));
  return o.str();
}

// ---- Recording ----

uint32_t Recording::add_file(const std::string& name, std::vector<uint8_t> base) {
  std::lock_guard<std::mutex> g(mu_);
  for (uint32_t i = 0; i < files_.size(); ++i)
    if (files_[i].name == name) return i;
  FileInfo f;
  f.name = name;
  f.size = base.size();
  f.base = std::move(base);
  files_.push_back(std::move(f));
  return static_cast<uint32_t>(files_.size() - 1);
}

int Recording::find_file(const std::string& name) const {
  std::lock_guard<std::mutex> g(mu_);
  for (size_t i = 0; i < files_.size(); ++i)
    if (files_[i].name == name) return static_cast<int>(i);
  return -1;
}

uint32_t Recording::file_count() const {
  std::lock_guard<std::mutex> g(mu_);
  return static_cast<uint32_t>(files_.size());
}

const std::string& Recording::file_name(uint32_t id) const { return files_.at(id).name; }
const std::vector<uint8_t>& Recording::base(uint32_t id) const { return files_.at(id).base; }

size_t Recording::op_count() const {
  std::lock_guard<std::mutex> g(mu_);
  return ops_.size();
}

uint64_t Recording::count(uint32_t file, FileOpKind kind) const {
  std::lock_guard<std::mutex> g(mu_);
  uint64_t n = 0;
  for (const auto& op : ops_) n += (op.file == file && op.kind == kind);
  return n;
}

void Recording::on_event(Event e) {
  std::lock_guard<std::mutex> g(mu_);
  events_.push_back({ops_.size(), e});
  last_event_ = static_cast<int>(e);
}

void Recording::append_locked(FileOp op) {
  FileInfo& f = files_.at(op.file);
  op.size_before = f.size;
  switch (op.kind) {
    case FileOpKind::kWrite:
    case FileOpKind::kAllocate:
      if (op.length > 0) f.size = std::max(f.size, op.offset + op.length);
      break;
    case FileOpKind::kTruncate: f.size = op.offset; break;
    case FileOpKind::kPunch:
    case FileOpKind::kSync: break;
  }
  op.size_after = f.size;
  op.last_event = last_event_;
  ops_.push_back(std::move(op));
}

// ---- RecordingFile ----

Result<std::unique_ptr<RecordingFile>> RecordingFile::wrap(std::unique_ptr<BlockFile> inner,
                                                           std::shared_ptr<Recording> rec,
                                                           const std::string& name) {
  int known = rec->find_file(name);
  uint32_t id;
  if (known >= 0) {
    id = static_cast<uint32_t>(known);
  } else {
    KEEL_ASSIGN(uint64_t n, inner->size());
    std::vector<uint8_t> base(n);
    KEEL_TRY_R(inner->read_at(0, base));
    id = rec->add_file(name, std::move(base));
  }
  return std::unique_ptr<RecordingFile>(new RecordingFile(std::move(inner), std::move(rec), id));
}

FileOp RecordingFile::make(FileOpKind kind, uint64_t offset, uint64_t length) const {
  FileOp op;
  op.kind = kind;
  op.file = id_;
  op.offset = offset;
  op.length = length;
  return op;
}

Status RecordingFile::read_at(uint64_t offset, std::span<uint8_t> buf) {
  return inner_->read_at(offset, buf);
}

Status RecordingFile::write_at(uint64_t offset, std::span<const uint8_t> buf) {
  FileOp op = make(FileOpKind::kWrite, offset, buf.size());
  op.data.assign(buf.begin(), buf.end());
  return rec_->record(std::move(op), [&] { return inner_->write_at(offset, buf); });
}

Status RecordingFile::sync() {
  return rec_->record(make(FileOpKind::kSync, 0, 0), [&] { return inner_->sync(); });
}

Status RecordingFile::truncate(uint64_t size) {
  return rec_->record(make(FileOpKind::kTruncate, size, 0), [&] { return inner_->truncate(size); });
}

Status RecordingFile::allocate(uint64_t offset, uint64_t length) {
  return rec_->record(make(FileOpKind::kAllocate, offset, length),
                      [&] { return inner_->allocate(offset, length); });
}

Status RecordingFile::punch(uint64_t offset, uint64_t length) {
  return rec_->record(make(FileOpKind::kPunch, offset, length),
                      [&] { return inner_->punch(offset, length); });
}

// ---- materialization ----

void apply_file_op(std::vector<uint8_t>& content, const FileOp& op, const std::vector<bool>* sectors) {
  switch (op.kind) {
    case FileOpKind::kWrite: {
      uint64_t first = op.first_sector();
      uint64_t count = op.sector_count();
      for (uint64_t i = 0; i < count; ++i) {
        if (sectors && !(*sectors)[i]) continue;
        uint64_t lo = std::max(op.offset, (first + i) * kSectorBytes);
        uint64_t hi = std::min(op.offset + op.length, (first + i + 1) * kSectorBytes);
        if (content.size() < hi) content.resize(hi, 0);
        std::memcpy(content.data() + lo, op.data.data() + (lo - op.offset), hi - lo);
      }
      break;
    }
    case FileOpKind::kTruncate: content.resize(op.offset, 0); break;
    case FileOpKind::kAllocate:
      if (content.size() < op.offset + op.length) content.resize(op.offset + op.length, 0);
      break;
    case FileOpKind::kPunch:
      if (op.offset < content.size()) {
        uint64_t n = std::min<uint64_t>(op.length, content.size() - op.offset);
        std::memset(content.data() + op.offset, 0, n);
      }
      break;
    case FileOpKind::kSync: break;
  }
}

std::string CrashState::describe() const {
  std::ostringstream o;
  o << "crash point " << crash_point << ", persisted {";
  for (size_t i = 0; i < persisted.size(); ++i) o << (i ? "," : "") << persisted[i];
  o << "}";
  for (const auto& [op, mask] : torn) {
    o << ", op " << op << " torn to sectors {";
    bool first = true;
    for (size_t i = 0; i < mask.size(); ++i)
      if (mask[i]) {
        o << (first ? "" : ",") << i;
        first = false;
      }
    o << "} of " << mask.size();
  }
  return o.str();
}

CrashCursor::CrashCursor(const Recording& rec) : rec_(rec) { restart(); }

void CrashCursor::restart() {
  crash_point_ = 0;
  uint32_t n = rec_.file_count();
  synced_.assign(n, {});
  for (uint32_t i = 0; i < n; ++i) synced_[i] = rec_.base(i);
  open_per_file_.assign(n, {});
  open_ops_.clear();
}

void CrashCursor::advance() {
  const auto& ops = rec_.ops();
  uint32_t index = static_cast<uint32_t>(crash_point_);
  const FileOp& op = ops.at(index);
  ++crash_point_;
  auto& open = open_per_file_[op.file];
  if (op.kind == FileOpKind::kSync) {
    for (uint32_t i : open) apply_file_op(synced_[op.file], ops[i], nullptr);
    open.clear();
    open_ops_.clear();
    for (const auto& per_file : open_per_file_)
      open_ops_.insert(open_ops_.end(), per_file.begin(), per_file.end());
    std::sort(open_ops_.begin(), open_ops_.end());
  } else {
    open.push_back(index);
    open_ops_.push_back(index);  // indices grow, so the list stays sorted
  }
}

void CrashCursor::seek(uint64_t crash_point) {
  if (crash_point < crash_point_) restart();
  while (crash_point_ < crash_point && crash_point_ < last_crash_point()) advance();
}

Result<std::vector<uint8_t>> CrashCursor::materialize(const CrashState& state, uint32_t file) const {
  if (state.crash_point != crash_point_)
    return error(invalid("crash state is for crash point " + std::to_string(state.crash_point) +
                         ", cursor is at " + std::to_string(crash_point_)));
  const auto& ops = rec_.ops();
  std::vector<uint8_t> content = synced_.at(file);
  uint64_t final_size = content.size();
  for (uint32_t index : state.persisted) {
    if (!std::binary_search(open_ops_.begin(), open_ops_.end(), index))
      return error(invalid("op " + std::to_string(index) + " is not open at crash point " +
                           std::to_string(crash_point_)));
    const FileOp& op = ops[index];
    if (op.file != file) continue;
    const std::vector<bool>* mask = nullptr;
    for (const auto& t : state.torn)
      if (t.first == index) mask = &t.second;
    if (mask && mask->size() != op.sector_count())
      return error(invalid("torn mask of op " + std::to_string(index) + " has the wrong size"));
    apply_file_op(content, op, mask);
    if (op.sets_size()) final_size = op.size_after;
  }
  content.resize(final_size, 0);
  return content;
}

}  // namespace keel
