// The C API's image functions (keel.h): open, create, close and guest I/O, each a thin wrapper
// over keel::Image that checks the C caller's pointers and turns Status into keel_error.
#include <cerrno>
#include <cstring>
#include <type_traits>
#include <new>
#include <span>
#include <string>

#include "capi/capi_internal.h"

using keel::capi::report;

namespace {

keel_status null_argument(const char* name, keel_error* error) {
  return report(KEEL_E_INVALID_ARGUMENT, EINVAL, std::string(name) + " must not be NULL", error);
}

// An options struct from a caller built against an older keel.h is shorter: copy what it has
// and keep the defaults for the rest.
template <typename T>
T copy_options(const T* given, void (*init)(T*)) {
  T out;
  init(&out);
  if (given) {
    size_t n = given->struct_size < sizeof(T) ? given->struct_size : sizeof(T);
    std::memcpy(&out, given, n);
    out.struct_size = sizeof(T);
  }
  return out;
}

// The cache mode as the integer the caller stored: C may put any int in an enum field, and
// loading an out-of-range value as the C++ enum type is undefined behaviour (UBSan: -fsanitize=enum).
long long raw_cache(const keel_open_options& o) {
  std::underlying_type_t<keel_cache_mode> v;
  static_assert(sizeof v == sizeof o.cache);
  std::memcpy(&v, &o.cache, sizeof v);
  return static_cast<long long>(v);
}
bool valid_cache(long long m) { return m >= KEEL_CACHE_WRITEBACK && m <= KEEL_CACHE_UNSAFE; }

}  // namespace

extern "C" void keel_open_options_init(keel_open_options* opts) {
  if (!opts) return;
  std::memset(opts, 0, sizeof(*opts));
  opts->struct_size = sizeof(*opts);
  opts->cache = KEEL_CACHE_WRITEBACK;
}

extern "C" void keel_create_options_init(keel_create_options* opts) {
  if (!opts) return;
  std::memset(opts, 0, sizeof(*opts));
  opts->struct_size = sizeof(*opts);
  opts->cluster_size = 65536;
  opts->version = 3;
}

extern "C" keel_status keel_open(const char* path, const keel_open_options* given, keel_image** image,
                                 keel_error* error) {
  KEEL_CAPI_GUARD(error, {
    if (image) *image = nullptr;
    if (!path) return null_argument("path", error);
    if (!image) return null_argument("image", error);
    keel_open_options o = copy_options(given, keel_open_options_init);
    if (!valid_cache(raw_cache(o)))
      return report(KEEL_E_INVALID_ARGUMENT, EINVAL, "Invalid cache mode: " + std::to_string(raw_cache(o)), error);
    auto handle = std::make_unique<keel_image>();
    handle->log = o.log;
    handle->log_context = o.log_context;
    keel::OpenOptions opts;
    if (o.format) opts.format = o.format;
    opts.read_only = o.read_only != 0;
    opts.cache = static_cast<keel::CacheMode>(raw_cache(o));  // same order as keel::CacheMode
    opts.force_share = o.force_share != 0;
    opts.no_backing = o.no_backing != 0;
    if (o.log) {
      keel_image* h = handle.get();
      opts.on_corruption = [h](const std::string& text) {
        h->log(h->log_context, ("Marking image as corrupt: " + text).c_str());
      };
    }
    auto img = keel::Image::open(path, opts);
    if (!img) return report(img.error(), error);
    handle->image = std::move(*img);
    *image = handle.release();
    return report(keel::Status::ok(), error);
  })
}

extern "C" keel_status keel_create(const char* path, const keel_create_options* given, keel_error* error) {
  KEEL_CAPI_GUARD(error, {
    if (!path) return null_argument("path", error);
    keel_create_options o = copy_options(given, keel_create_options_init);
    keel::CreateOptions opts;
    if (o.format) opts.format = o.format;
    opts.size = o.size;
    opts.cluster_size = o.cluster_size;
    opts.version = o.version;
    opts.lazy_refcounts = o.lazy_refcounts != 0;
    if (o.backing_file) opts.backing_file = o.backing_file;
    if (o.backing_format) opts.backing_format = o.backing_format;
    return report(keel::create_image(path, opts), error);
  })
}

extern "C" keel_status keel_close(keel_image* image, keel_error* error) {
  if (!image) return report(keel::Status::ok(), error);
  std::unique_ptr<keel_image> owned(image);
  KEEL_CAPI_GUARD(error, { return report(owned->image->close(), error); })
}

extern "C" uint64_t keel_size(const keel_image* image) { return image ? image->image->size() : 0; }

extern "C" keel_status keel_read(keel_image* image, uint64_t offset, void* buf, size_t length,
                                 keel_error* error) {
  KEEL_CAPI_GUARD(error, {
    if (!image) return null_argument("image", error);
    if (!buf && length) return null_argument("buf", error);
    return report(image->image->read(offset, {static_cast<uint8_t*>(buf), length}), error);
  })
}

extern "C" keel_status keel_write(keel_image* image, uint64_t offset, const void* buf, size_t length,
                                  unsigned flags, keel_error* error) {
  KEEL_CAPI_GUARD(error, {
    if (!image) return null_argument("image", error);
    if (!buf && length) return null_argument("buf", error);
    if (flags & ~KEEL_WRITE_FUA)
      return report(KEEL_E_INVALID_ARGUMENT, EINVAL, "Unknown keel_write flags: " + std::to_string(flags), error);
    std::span<const uint8_t> data(static_cast<const uint8_t*>(buf), length);
    return report(image->image->write(offset, data, (flags & KEEL_WRITE_FUA) != 0), error);
  })
}

extern "C" keel_status keel_write_zeroes(keel_image* image, uint64_t offset, uint64_t length, unsigned flags,
                                         keel_error* error) {
  KEEL_CAPI_GUARD(error, {
    if (!image) return null_argument("image", error);
    if (flags & ~(KEEL_WRITE_FUA | KEEL_ZERO_MAY_UNMAP | KEEL_ZERO_FAST_ONLY))
      return report(KEEL_E_INVALID_ARGUMENT, EINVAL,
                    "Unknown keel_write_zeroes flags: " + std::to_string(flags), error);
    keel::ZeroFlags z;
    z.fua = (flags & KEEL_WRITE_FUA) != 0;
    z.may_unmap = (flags & KEEL_ZERO_MAY_UNMAP) != 0;
    z.fast_only = (flags & KEEL_ZERO_FAST_ONLY) != 0;
    return report(image->image->write_zeroes(offset, length, z), error);
  })
}

extern "C" keel_status keel_discard(keel_image* image, uint64_t offset, uint64_t length, keel_error* error) {
  KEEL_CAPI_GUARD(error, {
    if (!image) return null_argument("image", error);
    return report(image->image->discard(offset, length), error);
  })
}

extern "C" keel_status keel_flush(keel_image* image, keel_error* error) {
  KEEL_CAPI_GUARD(error, {
    if (!image) return null_argument("image", error);
    return report(image->image->flush(), error);
  })
}

extern "C" keel_status keel_block_status(keel_image* image, uint64_t offset, uint64_t max_length,
                                         keel_extent* extent, keel_error* error) {
  KEEL_CAPI_GUARD(error, {
    if (!image) return null_argument("image", error);
    if (!extent) return null_argument("extent", error);
    auto e = image->image->block_status(offset, max_length);
    if (!e) return report(e.error(), error);
    std::memset(extent, 0, sizeof(*extent));
    extent->offset = e->offset;
    extent->length = e->length;
    extent->data = e->data;
    extent->zero = e->zero;
    extent->depth = e->depth;
    extent->compressed = e->compressed;
    extent->has_host_offset = e->host_offset.has_value();
    extent->host_offset = e->host_offset.value_or(0);
    return report(keel::Status::ok(), error);
  })
}
