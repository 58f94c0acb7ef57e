// Renders ImageInfo like qemu-img 7.2's info (JSON fields and human layout, see info_format.h).
#include "cli/info_format.h"

#include <ctime>

#include <fmt/format.h>
#include <fmt/printf.h>

#include "cli/util.h"
#include "keel/report.h"

namespace keel::cli {

std::string snapshot_row(const SnapshotInfo* sn) {
  if (!sn)
    return fmt::sprintf("%-10s%-17s%8s%20s%13s%11s", "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK",
                        "ICOUNT");
  char date[64] = {};
  time_t t = static_cast<time_t>(sn->date_sec);
  struct tm tm_local {};
  localtime_r(&t, &tm_local);
  std::strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S", &tm_local);
  uint64_t secs = sn->vm_clock_nsec / 1000000000u;
  std::string clock = fmt::sprintf("%02d:%02d:%02d.%03d", static_cast<int>(secs / 3600),
                                   static_cast<int>((secs / 60) % 60), static_cast<int>(secs % 60),
                                   static_cast<int>((sn->vm_clock_nsec / 1000000) % 1000));
  std::string icount = sn->icount != UINT64_MAX ? std::to_string(sn->icount) : "";
  // qemu pads with C printf, which counts bytes; fmt::sprintf would count code points.
  std::string name = sn->name;
  if (name.size() < 16) name.append(16 - name.size(), ' ');
  return fmt::sprintf("%-9s %s %8s%20s%13s%11s", sn->id, name, size_to_str(sn->vm_state_size), date, clock,
                      icount);
}

std::string image_info_human(const ImageInfo& info, bool local) {
  std::string out = fmt::format(
      "image: {}\nfile format: {}\nvirtual size: {} ({} bytes)\ndisk size: {}\n", info.filename,
      info.format, size_to_str(info.virtual_size), info.virtual_size,
      local ? size_to_str(info.actual_size) : std::string("unavailable"));
  if (info.encrypted) out += "encrypted: yes\n";
  if (info.cluster_size != 0) out += fmt::format("cluster_size: {}\n", info.cluster_size);
  if (info.dirty) out += "cleanly shut down: no\n";
  if (!info.backing_filename.empty()) {
    std::string full = path_combine(info.filename, info.backing_filename);
    out += "backing file: " + info.backing_filename;
    if (full != info.backing_filename) out += " (actual path: " + full + ")";
    out += "\n";
    if (!info.backing_format.empty()) out += "backing file format: " + info.backing_format + "\n";
  }
  if (!info.snapshots.empty()) {
    out += "Snapshot list:\n" + snapshot_row(nullptr) + "\n";
    for (const auto& s : info.snapshots) out += snapshot_row(&s) + "\n";
  }
  if (std::string spec = format_specific_text(info, 1); !spec.empty()) {
    out += "Format specific information:\n";
    out += spec;
  }
  return out;
}

}  // namespace keel::cli
