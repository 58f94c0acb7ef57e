// ImageInfo as qemu-img 7.2's info JSON (see image_info_json.h), and the public text API
// (keel/info_json.h) on top of it.
#include "report/image_info_json.h"

#include <cstdint>

#include "keel/info_json.h"
#include "keel/paths.h"
#include "report/qemu_json.h"

namespace keel::report {

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
    j["full-backing-filename"] = resolve_relative(info.filename, info.backing_filename);
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

}  // namespace keel::report

namespace keel {

std::string info_json(const ImageInfo& info, bool local) {
  return report::qemu_json(report::image_info_json(info, local));
}

std::string info_json(std::span<const ImageInfo> chain, bool top_local) {
  auto list = nlohmann::ordered_json::array();
  for (size_t k = 0; k < chain.size(); ++k) list.push_back(report::image_info_json(chain[k], k != 0 || top_local));
  return report::qemu_json(list);
}

}  // namespace keel
