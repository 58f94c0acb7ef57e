// Image::open and create_image: format probing, cache modes, locks, and dispatch to drivers.
#include <fmt/format.h>

#include "engine/qcow2_image.h"
#include "engine/raw_image.h"
#include "format/header.h"
#include "keel/image.h"

namespace keel {

Result<CacheMode> parse_cache_mode(std::string_view name) {
  if (name == "writeback") return CacheMode::kWriteback;
  if (name == "writethrough") return CacheMode::kWritethrough;
  if (name == "none" || name == "off") return CacheMode::kNone;
  if (name == "directsync") return CacheMode::kDirectsync;
  if (name == "unsafe") return CacheMode::kUnsafe;
  return error(invalid(fmt::format("Invalid cache option: {}", name)));
}

Result<AioMode> parse_aio_mode(std::string_view name) {
  if (name == "threads" || name == "native") return AioMode::kThreads;
  if (name == "io_uring") return AioMode::kIoUring;
  return error(invalid(fmt::format("Invalid aio option: {}", name)));
}

Status Image::snapshot_create(const std::string&) {
  return unsupported(fmt::format("Format {} does not support internal snapshots", format()));
}
Status Image::snapshot_delete(const std::string&) {
  return unsupported(fmt::format("Format {} does not support internal snapshots", format()));
}
Status Image::snapshot_apply(const std::string&) {
  return unsupported(fmt::format("Format {} does not support internal snapshots", format()));
}
Status Image::amend(const AmendOptions&) {
  return unsupported(fmt::format("Format driver '{}' does not support option amendment", format()));
}
Status Image::amend_encryption(const EncryptAmendOptions&) {
  return unsupported("Can't amend encryption options - encryption not present");
}
Status Image::resize(uint64_t, bool) { return unsupported(fmt::format("Format {} does not support resize", format())); }

Status Image::read_vmstate(uint64_t, std::span<uint8_t>) { return unsupported("VM state is not supported by format " + format()); }
Status Image::write_vmstate(uint64_t, std::span<const uint8_t>) {
  return unsupported("VM state is not supported by format " + format());
}

Status Image::write_compressed(uint64_t, std::span<const uint8_t>) {
  return unsupported(fmt::format("compressed writes are not supported by format {}", format()));
}

FileOptions file_options_for(const OpenOptions& opts) {
  FileOptions f;
  f.read_only = opts.read_only;
  f.direct = opts.cache == CacheMode::kNone || opts.cache == CacheMode::kDirectsync;
  f.no_flush = opts.cache == CacheMode::kUnsafe;
  return f;
}

Result<std::unique_ptr<BlockFile>> open_block_file(const std::string& path, const OpenOptions& opts,
                                                   const FileOptions& f) {
  if (opts.file_opener) return opts.file_opener(path, f);
  return open_posix_file(path, f);
}

Status lock_image_file(BlockFile& file, const OpenOptions& opts) {
  if (opts.force_share) return Status::ok();
  if (opts.read_only)
    return file.lock(kPermConsistentRead, kPermConsistentRead | kPermWriteUnchanged | kPermResize);
  return file.lock(kPermConsistentRead | kPermWrite | kPermResize, kPermConsistentRead | kPermWriteUnchanged);
}

Result<std::unique_ptr<Image>> Image::open(const std::string& path, const OpenOptions& opts) {
  if (!opts.format.empty() && opts.format != "qcow2" && opts.format != "raw")
    return error(invalid(fmt::format("Unknown driver '{}'", opts.format)));
  OpenOptions o = opts;
  if (!o.snapshot.empty()) o.read_only = true;
  KEEL_ASSIGN(auto file, open_block_file(path, o, file_options_for(o)));
  KEEL_TRY_R(lock_image_file(*file, o));
  std::string fmt_name = o.format;
  if (fmt_name.empty()) {
    uint8_t magic[4] = {};
    KEEL_TRY_R(file->read_at(0, magic));
    fmt_name = format::is_qcow2(magic) ? "qcow2" : "raw";
  }
  if (fmt_name == "raw") {
    if (!o.snapshot.empty()) return error(unsupported("raw images have no snapshots"));
    return open_raw_image(std::move(file), path, o);
  }
  OpenChain chain;
  return open_qcow2_image(std::move(file), path, o, chain);
}

Status create_image(const std::string& path, const CreateOptions& opts) {
  if (opts.format == "raw") {
    FileOptions f;
    f.create = true;
    auto file = opts.file_opener ? opts.file_opener(path, f) : open_posix_file(path, f);
    if (!file) return file.error();
    KEEL_TRY((*file)->truncate(opts.size));
    if (opts.preallocation == Preallocation::kFalloc && opts.size) KEEL_TRY((*file)->allocate(0, opts.size));
    if (opts.preallocation == Preallocation::kFull && opts.size) {
      std::vector<uint8_t> zeros(1 << 20, 0);
      for (uint64_t off = 0; off < opts.size; off += zeros.size())
        KEEL_TRY((*file)->write_at(off, {zeros.data(), std::min<uint64_t>(zeros.size(), opts.size - off)}));
    }
    return opts.durable ? (*file)->sync() : Status::ok();
  }
  if (opts.format != "qcow2") return invalid(fmt::format("Unknown file format '{}'", opts.format));
  return create_qcow2_image(path, opts);
}

}  // namespace keel
