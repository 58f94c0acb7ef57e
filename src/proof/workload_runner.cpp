// The workload runner: executes a workload's guest operations on an image, marking where each
// started and ended in the stream of file operations; and the model's side of each operation
// (apply_mark). See workload.h.
#include <algorithm>
#include <sstream>

#include "keel/chain_ops.h"
#include "proof/pattern.h"
#include "proof/workload.h"

namespace keel::proof {

bool makes_durable(GuestOpKind k) {
  switch (k) {
    case GuestOpKind::kFlush:
    case GuestOpKind::kReopen:
    case GuestOpKind::kSnapshotCreate:
    case GuestOpKind::kSnapshotDelete:
    case GuestOpKind::kSnapshotApply:
    case GuestOpKind::kResize:
    case GuestOpKind::kAmend:
    case GuestOpKind::kBitmapAdd:  // every bitmap change flushes metadata and syncs
    case GuestOpKind::kBitmapRemove:
    case GuestOpKind::kBitmapDisable:
    case GuestOpKind::kBitmapMerge:
    case GuestOpKind::kCommit:  // the workloads flush before it; make_empty flushes again
    case GuestOpKind::kRebase:  // flushes the copy, the header, then reopens
    case GuestOpKind::kKeySlot: return true;  // flushes first; every step synced
    default: return false;
  }
}

uint64_t max_size(const WorkloadSpec& spec) {
  uint64_t m = spec.create.size;
  for (const auto& op : spec.ops)
    if (op.kind == GuestOpKind::kResize) m = std::max(m, op.new_size);
  return m;
}

std::string GuestOp::describe() const {
  std::ostringstream o;
  switch (kind) {
    case GuestOpKind::kWrite: o << (fua ? "write(fua)" : "write"); break;
    case GuestOpKind::kWriteZeroes: o << (may_unmap ? "write_zeroes(unmap)" : "write_zeroes"); break;
    case GuestOpKind::kDiscard: o << "discard"; break;
    case GuestOpKind::kFlush: return "flush";
    case GuestOpKind::kWriteCompressed: o << "write_compressed"; break;
    case GuestOpKind::kVmstateWrite: o << "write_vmstate"; break;
    case GuestOpKind::kReopen: return "reopen";
    case GuestOpKind::kSnapshotCreate: return "snapshot create " + name;
    case GuestOpKind::kSnapshotDelete: return "snapshot delete " + name;
    case GuestOpKind::kSnapshotApply: return "snapshot apply " + name;
    case GuestOpKind::kResize: return "resize " + std::to_string(new_size);
    case GuestOpKind::kAmend:
      o << "amend";
      if (amend.version) o << " compat=" << (*amend.version == 2 ? "0.10" : "1.1");
      if (amend.lazy_refcounts) o << " lazy_refcounts=" << (*amend.lazy_refcounts ? "on" : "off");
      if (amend.refcount_bits) o << " refcount_bits=" << *amend.refcount_bits;
      return o.str();
    case GuestOpKind::kBitmapAdd: return "bitmap add " + name + " granularity=" + std::to_string(granularity);
    case GuestOpKind::kBitmapRemove: return "bitmap remove " + name;
    case GuestOpKind::kBitmapDisable: return "bitmap disable " + name;
    case GuestOpKind::kBitmapMerge: return "bitmap merge " + source + " into " + name;
    case GuestOpKind::kCommit: return keep_top ? "commit -d" : "commit (top emptied)";
    case GuestOpKind::kRebase: return "rebase -b " + name;
    case GuestOpKind::kKeySlot:
      o << "key slot " << (key_slot.activate ? "add" : "erase");
      if (key_slot.keyslot) o << " slot=" << *key_slot.keyslot;
      if (key_slot.new_passphrase) o << " new=" << std::string_view(key_slot.new_passphrase->data(), key_slot.new_passphrase->size());
      if (key_slot.old_passphrase) o << " old=" << std::string_view(key_slot.old_passphrase->data(), key_slot.old_passphrase->size());
      if (key_slot.force) o << " force";
      return o.str();
  }
  o << " [0x" << std::hex << offset << "+0x" << length << ")";
  return o.str();
}

void apply_mark(GuestModel& model, const WorkloadSpec& spec, const GuestMark& mark) {
  if (mark.op >= spec.ops.size()) {  // the final close
    if (mark.end && mark.ok) model.flush();
    return;
  }
  const GuestOp& op = spec.ops[mark.op];
  uint64_t first = op.offset / kGuestSector, count = op.length / kGuestSector;
  if (mark.end && !mark.ok) return;  // a failed operation stays uncertain
  bool certain = mark.end;
  switch (op.kind) {
    case GuestOpKind::kWrite:
    case GuestOpKind::kWriteCompressed:
      model.write(first, count, op_version(mark.op), certain);
      model.bitmaps().guest_write(op.offset, op.length, op_version(mark.op), certain);
      if (mark.end && op.fua) model.make_durable(first, count);
      break;
    case GuestOpKind::kWriteZeroes:
      model.write(first, count, kZeroVersion, certain);
      model.bitmaps().guest_write(op.offset, op.length, kZeroVersion, certain);
      break;
    case GuestOpKind::kDiscard:
      model.discard(first, count, certain);
      model.bitmaps().guest_write(op.offset, op.length, kZeroVersion, certain);
      break;
    case GuestOpKind::kFlush:
    case GuestOpKind::kReopen:
      break;
    case GuestOpKind::kSnapshotCreate: model.snapshot_create(op.name, certain); break;
    case GuestOpKind::kSnapshotDelete: model.snapshot_delete(op.name, certain); break;
    case GuestOpKind::kSnapshotApply: model.snapshot_apply(op.name, certain); break;
    case GuestOpKind::kResize: model.resize(op.new_size, certain); break;
    case GuestOpKind::kAmend: break;
    case GuestOpKind::kBitmapAdd: model.bitmaps().add(op.name, op.granularity, true, certain); break;
    case GuestOpKind::kBitmapRemove: model.bitmaps().remove(op.name, certain); break;
    case GuestOpKind::kBitmapDisable: model.bitmaps().disable(op.name, certain); break;
    case GuestOpKind::kBitmapMerge: model.bitmaps().merge(op.name, op.source, certain); break;
    case GuestOpKind::kCommit: model.commit(certain); break;
    case GuestOpKind::kRebase: break;  // the guest view does not change
    case GuestOpKind::kVmstateWrite: break;  // not the guest disk (workload.h)
    case GuestOpKind::kKeySlot:  // the guest view does not change; which passphrases open does
      // A forced add over an active slot drops the passphrase it held: the workload names it as
      // old_passphrase (not passed to the engine for an add).
      // (The proof's passphrases are test strings, printed and used as the model's keys.)
      auto text = [](const Passphrase& p) { return std::string(p.data(), p.size()); };
      if (op.key_slot.activate && op.key_slot.new_passphrase) {
        model.key_change(text(*op.key_slot.new_passphrase), true, certain);
        if (op.key_slot.old_passphrase) model.key_change(text(*op.key_slot.old_passphrase), false, certain);
      } else if (!op.key_slot.activate && op.key_slot.old_passphrase) {
        model.key_change(text(*op.key_slot.old_passphrase), false, certain);
      } else if (!op.key_slot.activate && !op.name.empty()) {  // erase by slot: `name` is its passphrase
        model.key_change(op.name, false, certain);
      }
      break;
  }
  if (mark.end && makes_durable(op.kind)) model.flush();
}

Status WorkloadRunner::open() {
  auto img = open_();
  if (!img) return img.error();
  image_ = std::move(*img);
  return Status::ok();
}

Status WorkloadRunner::execute(const GuestOp& op, uint32_t version) {
  switch (op.kind) {
    case GuestOpKind::kWrite:
    case GuestOpKind::kWriteCompressed: {
      std::vector<uint8_t> data(op.length);
      fill_sectors(version, op.offset / kGuestSector, data);
      if (op.kind == GuestOpKind::kWriteCompressed) return image_->write_compressed(op.offset, data);
      return image_->write(op.offset, data, op.fua);
    }
    case GuestOpKind::kWriteZeroes: {
      ZeroFlags f;
      f.may_unmap = op.may_unmap;
      return image_->write_zeroes(op.offset, op.length, f);
    }
    case GuestOpKind::kDiscard: return image_->discard(op.offset, op.length);
    case GuestOpKind::kFlush: return image_->flush();
    case GuestOpKind::kSnapshotCreate: return image_->snapshot_create(op.name);
    case GuestOpKind::kSnapshotDelete: return image_->snapshot_delete(op.name);
    case GuestOpKind::kSnapshotApply: return image_->snapshot_apply(op.name);
    case GuestOpKind::kResize: return image_->resize(op.new_size, op.new_size < image_->size());
    case GuestOpKind::kAmend: return image_->amend(op.amend);
    case GuestOpKind::kReopen: return reopen();
    case GuestOpKind::kBitmapAdd: return image_->bitmap_add(op.name, op.granularity);
    case GuestOpKind::kBitmapRemove: return image_->bitmap_remove(op.name);
    case GuestOpKind::kBitmapDisable: return image_->bitmap_disable(op.name);
    case GuestOpKind::kBitmapMerge: return image_->bitmap_merge_from(op.name, *image_, op.source);
    case GuestOpKind::kCommit: return commit(op);
    case GuestOpKind::kRebase: return rebase(op);
    case GuestOpKind::kVmstateWrite: {
      // The version's pattern at the area's own sector numbers: if a bug landed these bytes on
      // the disk, the checker would read them as foreign data (G4).
      std::vector<uint8_t> data(op.length);
      fill_sectors(version, (image_->size() + op.offset) / kGuestSector, data);
      return image_->write_vmstate(op.offset, data);
    }
    case GuestOpKind::kKeySlot: {
      EncryptAmendOptions o = op.key_slot;
      o.key_passphrase = kProofSecret;
      if (o.activate) o.old_passphrase.reset();  // the model's note of the overwritten passphrase
      return image_->amend_encryption(o);
    }
  }
  return invalid("unknown guest op");
}

Status WorkloadRunner::reopen() {
  Status s = image_->close();
  image_.reset();
  if (!s.is_ok()) return s;
  return open();
}

// qemu-img commit as `keel commit` does it (keel/chain_ops.h), with the image as the chain: the
// base is opened read-write through the same file layer, so its writes are part of the crash
// states, and the top is emptied once commit_into_base returned. The base is closed (which
// syncs it) only after that, so the order proven is the one commit_into_base promises by
// itself: the base is durable before the top gives anything up.
Status WorkloadRunner::commit(const GuestOp& op) {
  if (!layers_) return invalid("commit: the runner has no layer opener");
  auto base = layers_(kBackingName, true);
  if (!base) return base.error();
  CommitOptions co;
  co.base_name = kBackingName;
  Status st = commit_into_base(*image_, **base, co);
  if (st.is_ok() && !op.keep_top) st = image_->make_empty();
  Status cs = (*base)->close();
  KEEL_TRY(st);
  return cs;
}

// A safe qemu-img rebase as `keel rebase` does it, with the image's own backing file as the old
// chain; then a reopen, so later writes read (and copy on write) from the new backing file.
Status WorkloadRunner::rebase(const GuestOp& op) {
  if (!layers_) return invalid("rebase: the runner has no layer opener");
  auto new_backing = layers_(op.name, false);
  if (!new_backing) return new_backing.error();
  RebaseOptions ro;
  ro.backing_file = op.name;
  ro.backing_format = "raw";
  Status st = rebase_image(*image_, image_->backing(), new_backing->get(), ro);
  (void)(*new_backing)->close();
  KEEL_TRY(st);
  return reopen();
}

Status WorkloadRunner::step(size_t i) {
  const GuestOp& op = spec_.ops.at(i);
  marks_.push_back({static_cast<uint32_t>(i), false, position_(), true});
  Status s = image_ ? execute(op, op_version(i)) : Status(Code::kIo, "image is not open", EIO);
  marks_.push_back({static_cast<uint32_t>(i), true, position_(), s.is_ok()});
  return s;
}

Status WorkloadRunner::close() {
  uint32_t index = static_cast<uint32_t>(spec_.ops.size());
  marks_.push_back({index, false, position_(), true});
  Status s = image_ ? image_->close() : Status(Code::kIo, "image is not open", EIO);
  image_.reset();
  marks_.push_back({index, true, position_(), s.is_ok()});
  return s;
}

}  // namespace keel::proof
