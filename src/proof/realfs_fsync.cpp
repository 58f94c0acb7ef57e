// The fsync-error rule below a real file system (see realfs.h).
#include <fcntl.h>

#include <sstream>

#include "proof/loop_device.h"
#include "proof/pattern.h"
#include "proof/realfs.h"
#include "proof/realfs_util.h"

namespace keel::proof {
namespace {

using namespace realfs;

constexpr uint64_t kCluster = 64 * 1024;
constexpr int kFlushes = 8;    // engine write+flush rounds
constexpr int kFailRound = 2;  // the round whose device flush fails

void run_rounds(Image& img, BlockRecorder& recorder, FsyncErrorReport& r) {
  std::vector<uint8_t> buf(kCluster);
  for (int i = 0; i < kFlushes; ++i) {
    for (size_t k = 0; k < buf.size(); ++k) buf[k] = static_cast<uint8_t>(i * 31 + k);
    Status w = img.write(static_cast<uint64_t>(i + 1) * kCluster, buf);
    if (r.first_failed >= 0 && w.is_ok())
      r.violations.push_back("write " + std::to_string(i) + " succeeded after flush " +
                             std::to_string(r.first_failed) + " failed (the image did not latch read-only)");
    if (i == kFailRound) recorder.fail_next_flush();
    const uint64_t before = recorder.failed_flushes();
    Status f = img.flush();
    const bool failed_here = recorder.failed_flushes() > before;
    if (failed_here) r.injected_during = i;
    r.flushes.push_back(f.is_ok() ? "ok" : f.message());
    if (failed_here && f.is_ok())
      r.violations.push_back("flush " + std::to_string(i) + " reported success although the device flush under it failed with EIO");
    if (r.first_failed >= 0 && f.is_ok())
      r.violations.push_back("flush " + std::to_string(i) + " reported success after flush " +
                             std::to_string(r.first_failed) + " failed (data written before the failure may be lost)");
    if (!f.is_ok() && r.first_failed < 0) r.first_failed = i;
  }
  r.injected = recorder.failed_flushes() > 0;
  if (r.injected && r.first_failed < 0)
    r.violations.push_back("the device flush failed, yet every engine flush reported success");
}

}  // namespace

FsyncErrorReport check_fsync_error_rule(const RealFsConfig& config) {
  FsyncErrorReport r;
  r.fs = config.fs;
  r.cache = cache_name(config.cache);
  if (!config.recorder) {
    r.run_status = unsupported("no block recorder: keel was built without libfuse3");
    return r;
  }
  WorkDir wd;
  if (Status st = prepare_device(wd, config.work_dir, config.fs); !st.is_ok()) {
    r.run_status = st;
    return r;
  }
  auto recorder = config.recorder(wd.file("live.img"), wd.file("dev"));
  if (!recorder) {
    r.run_status = recorder.error();
    return r;
  }
  {
    auto loop = LoopDevice::attach((*recorder)->device_file());
    if (!loop) {
      r.run_status = loop.error();
      return r;
    }
    auto m = Mount::attach(loop->path(), wd.file("mnt"), config.fs, mount_options(config.fs));
    if (!m) {
      r.run_status = m.error();
      return r;
    }
    const std::string path = wd.file("mnt") + "/" + kImageName;
    CreateOptions co;
    co.size = 4 << 20;
    co.cluster_size = kCluster;
    Status st = create_image(path, co);
    if (st.is_ok()) {
      OpenOptions oo;
      oo.format = "qcow2";
      oo.cache = config.cache;
      Sabotage sabotage = config.sabotage;
      oo.file_opener = [sabotage](const std::string& p, const FileOptions& fo) -> Result<std::unique_ptr<BlockFile>> {
        auto f = open_posix_file(p, fo);
        if (!f) return error(f.error());
        return sabotaged(std::move(*f), sabotage);
      };
      auto img = Image::open(path, oo);
      if (!img) {
        st = img.error();
      } else {
        std::vector<uint8_t> first(kCluster, 0x5a);
        st = (*img)->write(0, first);
        if (st.is_ok()) st = (*img)->flush().with_context("the flush before any fault");
        if (st.is_ok()) run_rounds(**img, **recorder, r);
        (void)(*img)->close();
      }
    }
    r.run_status = st;
    (void)m->unmount();
  }
  (*recorder)->stop();
  return r;
}

std::string FsyncErrorReport::describe() const {
  std::ostringstream o;
  o << fs << " cache=" << cache << " fsync-error rule: ";
  if (!run_status.is_ok()) return o.str() + "HARNESS FAILED: " + run_status.message();
  o << (injected ? "device flush failed " : "device flush NOT failed (no flush reached the device) ")
    << (injected_during >= 0 ? "during engine flush " + std::to_string(injected_during) : std::string("in the background"))
    << "; first engine flush failing: " << first_failed << "; flushes:";
  for (size_t i = 0; i < flushes.size(); ++i) o << " [" << i << "] " << (flushes[i] == "ok" ? "ok" : "failed");
  o << "; violations " << violations.size();
  for (const auto& v : violations) o << "\n    VIOLATION: " << v;
  if (first_failed >= 0 && first_failed < static_cast<int>(flushes.size()))
    o << "\n    first failure: " << flushes[static_cast<size_t>(first_failed)];
  return o.str();
}

}  // namespace keel::proof
