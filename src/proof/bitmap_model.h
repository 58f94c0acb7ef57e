// BitmapModel: what the persistent dirty bitmaps of the image may look like after a crash, for
// the checker's bitmap oracle (proof/bitmap_check.h).
//
// Names, like snapshot names: a bitmap whose add completed (and whose removal did not start) must
// be listed; one never added, or whose removal completed, must not be. Contents, by QEMU's in_use
// protocol: a bitmap listed in-use is inconsistent (a crash while it was tracking) and is not
// trusted, so nothing is required of it. A consistent one must never miss a write: it has its bit
// set for every granule of every guest write, write-zeroes and discard that completed while it was
// enabled (after its add completed, before a disable or remove started), and for every sector
// that reads back as the data of a write issued while it was enabled (the data reached the disk,
// so the bitmap must say so). A completed merge gives the target everything required of the
// source at that moment.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace keel::proof {

class BitmapModel {
 public:
  struct Bitmap {
    uint32_t granularity = 0;
    bool must_exist = false;        // its add completed and no removal started
    std::optional<bool> auto_flag;  // enabled; nullopt while a change of it is in progress
    bool tracking = false;          // guest writes issued now must be tracked
    std::vector<std::pair<uint64_t, uint64_t>> required;  // byte ranges [offset, +length) it must mark
    std::set<uint32_t> versions;    // write versions issued while tracking
  };

  // Each is called when the operation starts (certain = false) and when it completes (true).
  void add(const std::string& name, uint32_t granularity, bool enabled, bool certain);
  void remove(const std::string& name, bool certain);
  void disable(const std::string& name, bool certain);
  void merge(const std::string& target, const std::string& source, bool certain);
  // A guest write (version >= kFirstWriteVersion), write-zeroes or discard (version 0).
  void guest_write(uint64_t offset, uint64_t length, uint32_t version, bool certain);

  const std::map<std::string, Bitmap>& bitmaps() const { return bitmaps_; }
  bool empty() const { return bitmaps_.empty(); }

 private:
  std::map<std::string, Bitmap> bitmaps_;
};

}  // namespace keel::proof
