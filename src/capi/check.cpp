// keel_check: the consistency check and repair of keel/check.h behind the C API, with the same
// steps as `keel check` (src/cli/check.cpp): open_for_check (open, QEMU's lock permissions, format
// probe, header), check, and after a repair check again to verify it.
#include <cerrno>
#include <cstring>

#include <type_traits>
#include "capi/capi_internal.h"
#include "keel/check.h"

using keel::capi::report;

namespace {

void copy_result(const keel::CheckResult& r, keel_check_result* out) {
  out->corruptions = r.corruptions;
  out->leaks = r.leaks;
  out->check_errors = r.check_errors;
  out->corruptions_fixed = r.corruptions_fixed;
  out->leaks_fixed = r.leaks_fixed;
  out->image_end_offset = r.image_end_offset;
  out->total_clusters = r.total_clusters;
  out->allocated_clusters = r.allocated_clusters;
  out->fragmented_clusters = r.fragmented_clusters;
  out->compressed_clusters = r.compressed_clusters;
}

}  // namespace

extern "C" keel_status keel_check(const char* path, keel_repair repair, keel_check_result* result,
                                  keel_error* error) {
  using namespace keel;
  KEEL_CAPI_GUARD(error, {
    if (!path || !result) return report(KEEL_E_INVALID_ARGUMENT, EINVAL, "path and result must not be NULL", error);
    std::memset(result, 0, sizeof(*result));
    // As the integer the caller passed: an out-of-range value loaded as the enum type is UB.
    std::underlying_type_t<keel_repair> raw;
    std::memcpy(&raw, &repair, sizeof raw);
    if (raw < KEEL_REPAIR_NONE || raw > KEEL_REPAIR_ALL)
      return report(KEEL_E_INVALID_ARGUMENT, EINVAL, "Invalid repair mode: " + std::to_string(static_cast<long long>(raw)),
                    error);
    auto target = open_for_check(path, static_cast<RepairMode>(repair));  // same order as keel_repair
    if (!target) return report(target.error(), error);
    if (target->format != "qcow2")
      return report(KEEL_E_UNSUPPORTED, ENOTSUP, "This image format does not support checks", error);
    BlockFile& file = *target->file;
    CheckOptions opts;
    opts.repair = static_cast<RepairMode>(repair);
    auto first = check_qcow2(file, opts);
    if (!first) return report(first.error().with_context("Check failed"), error);
    CheckResult r = *first;
    if (r.corruptions_fixed || r.leaks_fixed) {
      auto second = check_qcow2(file, CheckOptions{});
      if (!second) return report(second.error().with_context("Check failed"), error);
      second->corruptions_fixed = r.corruptions_fixed;
      second->leaks_fixed = r.leaks_fixed;
      r = *second;
    }
    copy_result(r, result);
    return report(Status::ok(), error);
  })
}
