// Workloads: the guest operation sequences the integrity proof runs through the engine, and the
// runner that executes them while marking where each guest operation started and ended in the
// stream of file operations (so the explorer knows, at every crash point, which writes were
// issued and which flushes had completed).
//
// A workload is a pure function of (name, seed). Write number i carries pattern version
// kFirstWriteVersion + i (proof/pattern.h), so every sector read back names the write it came from.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "keel/image.h"
#include "proof/guest_model.h"
#include "proof/pattern.h"

namespace keel::proof {

inline constexpr const char* kImageName = "top.qcow2";
inline constexpr const char* kBackingName = "base.raw";
// The `rebase` workload's second backing file (the new base).
inline constexpr const char* kNewBackingName = "base-b.raw";
// The passphrase of encrypted workloads' images (the `encrypted` workload: LUKS). Every open of
// the proof passes it; an unencrypted image ignores it.
inline constexpr const char* kProofSecret = "keel-proof";
// The passphrases the `encrypted` workload's key-slot changes add and erase.
inline constexpr const char* kProofSecret2 = "keel-proof-2";
inline constexpr const char* kProofSecret3 = "keel-proof-3";

enum class GuestOpKind {
  kWrite, kWriteZeroes, kDiscard, kFlush, kWriteCompressed, kReopen,
  // Image-level operations (qemu-img snapshot / resize / amend through the engine's API).
  kSnapshotCreate, kSnapshotDelete, kSnapshotApply, kResize, kAmend,
  // Persistent dirty bitmaps (qemu-img bitmap --add / --remove / --disable / --merge).
  kBitmapAdd, kBitmapRemove, kBitmapDisable, kBitmapMerge,
  // Backing-chain operations (keel/chain_ops.h): qemu-img commit into the backing file (then
  // make_empty of the top unless keep_top), and a safe qemu-img rebase onto another backing file.
  kCommit, kRebase,
  // LUKS key slots (qemu-img amend -o encrypt.state=...): `key_slot`, with kProofSecret as the key.
  kKeySlot,
  // VM state (qemu-io write -b, Image::write_vmstate): `length` bytes at `offset` of the area past
  // the disk. The model does not track the area: the checker proves these writes (their cluster
  // allocations and L1 growth) never disturb the disk, its snapshots or the image's consistency.
  kVmstateWrite
};

struct GuestOp {
  GuestOpKind kind = GuestOpKind::kWrite;
  uint64_t offset = 0;  // bytes, 512-aligned
  uint64_t length = 0;  // bytes, 512-aligned
  bool fua = false;
  bool may_unmap = false;  // write-zeroes
  std::string name;        // snapshot ops: the snapshot's name; bitmap ops: the bitmap (a merge's
                           // target); rebase: the new backing file
  std::string source;      // bitmap merge: the bitmap merged into `name`
  uint32_t granularity = 0;  // bitmap add
  bool keep_top = false;     // commit: do not empty the top afterwards (qemu-img commit -d)
  uint64_t new_size = 0;   // resize: the new virtual size in bytes
  AmendOptions amend;      // amend
  EncryptAmendOptions key_slot;  // key-slot change
  std::string phase;       // a label for cost reports ("fill", "overwrite"...)
  std::string describe() const;
};

struct WorkloadSpec {
  std::string name;
  std::string description;
  CreateOptions create;        // format qcow2; file_opener and backing are set by the runner
  CacheMode cache = CacheMode::kWriteback;  // how the runner opens the image
  uint64_t backing_bytes = 0;  // > 0: a raw backing file of this size holding version 1
  // The backing file may be written (commit). The checker then judges its bytes against what
  // the commits put there (GuestModel::committed_base) instead of requiring them unchanged.
  bool base_writable = false;
  // > 0: a second raw backing file (kNewBackingName) of this size, the target of a rebase:
  // new_backing_content(). Never written.
  uint64_t new_backing_bytes = 0;
  std::vector<GuestOp> ops;
  // Damage the image gets right after creation (proof/damage.h; "" = none). A damaged workload's
  // crash states are judged by check_damaged_state() instead of G1-G5.
  std::string damage;
  // Ops before this one are setup (e.g. filling the image up to a refcount-block boundary): they
  // run and enter the model, but crash points start where op `explore_from` starts.
  size_t explore_from = 0;
};

// Whether a successful end of an operation of this kind makes everything before it durable.
bool makes_durable(GuestOpKind k);
// The largest virtual size the workload's disk takes.
uint64_t max_size(const WorkloadSpec& spec);

// Every workload name, in the order the explorer runs them.
const std::vector<std::string>& workload_names();
Result<WorkloadSpec> make_workload(const std::string& name, uint64_t seed);

inline uint32_t op_version(size_t op_index) {
  return kFirstWriteVersion + static_cast<uint32_t>(op_index);
}

// The bytes of the raw backing file of `spec` (empty if none).
std::vector<uint8_t> backing_content(const WorkloadSpec& spec);
// The bytes of the second backing file (empty if none): the first one's content, except in
// every third run of 24 sectors (runs that start inside clusters, so the rebase copies partial
// clusters), which hold kNewBackingVersion; past the first file's end every other run does and
// the rest is zeros (there the rebase writes zeroes).
std::vector<uint8_t> new_backing_content(const WorkloadSpec& spec);
// A model of the guest disk before the first operation.
GuestModel initial_model(const WorkloadSpec& spec);

// Where a guest operation started or ended, counted in file operations issued before it.
struct GuestMark {
  uint32_t op = 0;  // index into spec.ops; spec.ops.size() stands for the final close
  bool end = false;
  uint64_t position = 0;
  bool ok = true;  // end marks: whether the operation succeeded
};

// Applies one mark to the model: a start issues the operation's possible outcome; a successful
// end makes it certain, and a completed flush, FUA write, reopen or close makes it durable.
void apply_mark(GuestModel& model, const WorkloadSpec& spec, const GuestMark& mark);

class WorkloadRunner {
 public:
  using Opener = std::function<Result<std::unique_ptr<Image>>()>;
  using Position = std::function<uint64_t()>;
  // Opens another file of the workload (kBackingName, kNewBackingName) as a raw image through
  // the same file layer as the image: for commit (writable) and rebase (read-only).
  using LayerOpener = std::function<Result<std::unique_ptr<Image>>(const std::string& name, bool writable)>;

  WorkloadRunner(const WorkloadSpec& spec, Opener open, Position position, LayerOpener layers = {})
      : spec_(spec), open_(std::move(open)), position_(std::move(position)), layers_(std::move(layers)) {}

  Status open();
  // Runs spec.ops[i] (an error is returned, and marked, but the runner stays usable).
  Status step(size_t i);
  // Flushes and closes the image (marked as op spec.ops.size()).
  Status close();
  // Drops the image without a clean close (a crash); no mark.
  void abandon() { image_.reset(); }
  Image* image() { return image_.get(); }
  const std::vector<GuestMark>& marks() const { return marks_; }

 private:
  Status execute(const GuestOp& op, uint32_t version);
  Status commit(const GuestOp& op);
  Status rebase(const GuestOp& op);
  Status reopen();

  const WorkloadSpec& spec_;
  Opener open_;
  Position position_;
  LayerOpener layers_;
  std::unique_ptr<Image> image_;
  std::vector<GuestMark> marks_;
};

}  // namespace keel::proof
