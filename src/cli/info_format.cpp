// Renders ImageInfo like qemu-img 7.2's info (JSON fields and human layout, see info_format.h).
#include "cli/info_format.h"

#include <ctime>

#include <fmt/format.h>
#include <fmt/printf.h>

#include "cli/util.h"

namespace keel::cli {

std::optional<nlohmann::ordered_json> format_specific_json(const ImageInfo& info) {
  if (info.format != "qcow2") return std::nullopt;
  nlohmann::ordered_json data;
  bool v3 = info.compat != "0.10";
  data["compat"] = info.compat.empty() ? "1.1" : info.compat;
  if (v3) {
    data["lazy-refcounts"] = info.lazy_refcounts;
    data["corrupt"] = info.corrupt;
    if (!info.bitmaps.empty()) {
      auto list = nlohmann::ordered_json::array();
      for (const auto& b : info.bitmaps) {
        nlohmann::ordered_json e;
        e["flags"] = nlohmann::ordered_json::array();
        for (const auto& f : b.flags) e["flags"].push_back(f);
        e["name"] = b.name;
        e["granularity"] = b.granularity;
        list.push_back(e);
      }
      data["bitmaps"] = list;
    }
    if (!info.data_file.empty()) {
      data["data-file"] = info.data_file;
      data["data-file-raw"] = info.data_file_raw;
    }
    data["extended-l2"] = info.extended_l2;
  }
  data["refcount-bits"] = info.refcount_bits;
  if (info.encrypt) {  // QEMU's QCryptoBlockInfoLUKS (key order comes from qemu_json's QDict order)
    const auto& e = *info.encrypt;
    nlohmann::ordered_json enc;
    enc["format"] = e.format;
    if (e.format == "luks") {
      enc["cipher-alg"] = e.cipher_alg;
      enc["cipher-mode"] = e.cipher_mode;
      enc["ivgen-alg"] = e.ivgen_alg;
      if (!e.ivgen_hash_alg.empty()) enc["ivgen-hash-alg"] = e.ivgen_hash_alg;
      enc["hash-alg"] = e.hash_alg;
      enc["payload-offset"] = e.payload_offset;
      enc["master-key-iters"] = e.master_key_iters;
      enc["uuid"] = e.uuid;
      auto slots = nlohmann::ordered_json::array();
      for (const auto& sl : e.slots) {
        nlohmann::ordered_json o;
        o["active"] = sl.active;
        if (sl.active) {
          o["iters"] = sl.iters;
          o["stripes"] = sl.stripes;
        }
        o["key-offset"] = sl.key_offset;
        slots.push_back(o);
      }
      enc["slots"] = slots;
    }
    data["encrypt"] = enc;
  }
  data["compression-type"] = info.compression_type.empty() ? "zlib" : info.compression_type;
  nlohmann::ordered_json spec;
  spec["type"] = "qcow2";
  spec["data"] = data;
  return spec;
}

nlohmann::ordered_json image_info_json(const ImageInfo& info, bool local) {
  nlohmann::ordered_json j;
  j["filename"] = info.filename;
  j["format"] = info.format;
  j["virtual-size"] = info.virtual_size;
  if (local) j["actual-size"] = info.actual_size;
  if (info.cluster_size != 0) j["cluster-size"] = info.cluster_size;
  if (!info.backing_filename.empty()) {
    j["backing-filename"] = info.backing_filename;
    j["full-backing-filename"] = path_combine(info.filename, info.backing_filename);
    if (!info.backing_format.empty()) j["backing-filename-format"] = info.backing_format;
  }
  if (!info.snapshots.empty()) {
    auto list = nlohmann::ordered_json::array();
    for (const auto& s : info.snapshots) {
      nlohmann::ordered_json e;
      e["id"] = s.id;
      e["name"] = s.name;
      e["vm-state-size"] = s.vm_state_size;
      e["date-sec"] = s.date_sec;
      e["date-nsec"] = s.date_nsec;
      e["vm-clock-sec"] = s.vm_clock_nsec / 1000000000u;
      e["vm-clock-nsec"] = s.vm_clock_nsec % 1000000000u;
      if (s.icount != UINT64_MAX) e["icount"] = s.icount;
      list.push_back(e);
    }
    j["snapshots"] = list;
  }
  if (auto spec = format_specific_json(info)) j["format-specific"] = *spec;
  if (info.encrypted) j["encrypted"] = true;
  if (local) j["dirty-flag"] = info.dirty;
  return j;
}

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
  if (auto spec = format_specific_json(info)) {
    out += "Format specific information:\n";
    out += qemu_human_dump((*spec)["data"], 1);
  }
  return out;
}

}  // namespace keel::cli
