// zlib (raw deflate) and zstd cluster codecs.
#include "engine/compress.h"

#include <zlib.h>
#include <zstd.h>

namespace keel {
namespace {

Status inflate_raw(std::span<const uint8_t> in, std::span<uint8_t> out) {
  z_stream s{};
  if (inflateInit2(&s, -12) != Z_OK) return io_error(ENOMEM, "inflateInit2");
  s.next_in = const_cast<Bytef*>(in.data());
  s.avail_in = static_cast<uInt>(in.size());
  s.next_out = out.data();
  s.avail_out = static_cast<uInt>(out.size());
  int r = inflate(&s, Z_FINISH);
  size_t produced = out.size() - s.avail_out;
  inflateEnd(&s);
  // The stored data may be followed by padding, so Z_BUF_ERROR with a full cluster is fine.
  if ((r != Z_STREAM_END && r != Z_BUF_ERROR && r != Z_OK) || produced != out.size())
    return corrupt("compressed cluster does not inflate to a full cluster");
  return Status::ok();
}

Status zstd_decompress(std::span<const uint8_t> in, std::span<uint8_t> out) {
  ZSTD_DCtx* ctx = ZSTD_createDCtx();
  if (!ctx) return io_error(ENOMEM, "ZSTD_createDCtx");
  ZSTD_inBuffer ib{in.data(), in.size(), 0};
  ZSTD_outBuffer ob{out.data(), out.size(), 0};
  Status st;
  // Loop over frames until the cluster is full; trailing bytes are sector padding.
  while (ob.pos < ob.size && ib.pos < ib.size) {
    size_t r = ZSTD_decompressStream(ctx, &ob, &ib);
    if (ZSTD_isError(r)) {
      st = corrupt(std::string("zstd: ") + ZSTD_getErrorName(r));
      break;
    }
    if (r != 0 && ib.pos == ib.size) break;
  }
  ZSTD_freeDCtx(ctx);
  KEEL_TRY(st);
  if (ob.pos != ob.size) return corrupt("compressed cluster does not decompress to a full cluster");
  return Status::ok();
}

}  // namespace

Status decompress_cluster(CompressionType type, std::span<const uint8_t> in, std::span<uint8_t> out) {
  return type == CompressionType::kZstd ? zstd_decompress(in, out) : inflate_raw(in, out);
}

Result<std::optional<std::vector<uint8_t>>> compress_cluster(CompressionType type,
                                                             std::span<const uint8_t> in) {
  std::vector<uint8_t> out(in.size() - 1);
  size_t produced = 0;
  if (type == CompressionType::kZstd) {
    ZSTD_CCtx* ctx = ZSTD_createCCtx();
    if (!ctx) return error(io_error(ENOMEM, "ZSTD_createCCtx"));
    ZSTD_inBuffer ib{in.data(), in.size(), 0};
    ZSTD_outBuffer ob{out.data(), out.size(), 0};
    size_t r = ZSTD_compressStream2(ctx, &ob, &ib, ZSTD_e_end);
    ZSTD_freeCCtx(ctx);
    if (ZSTD_isError(r) || r != 0) return std::optional<std::vector<uint8_t>>{};  // did not fit
    produced = ob.pos;
  } else {
    z_stream s{};
    if (deflateInit2(&s, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY) != Z_OK)
      return error(io_error(ENOMEM, "deflateInit2"));
    s.next_in = const_cast<Bytef*>(in.data());
    s.avail_in = static_cast<uInt>(in.size());
    s.next_out = out.data();
    s.avail_out = static_cast<uInt>(out.size());
    int r = deflate(&s, Z_FINISH);
    produced = out.size() - s.avail_out;
    deflateEnd(&s);
    if (r != Z_STREAM_END) return std::optional<std::vector<uint8_t>>{};
  }
  out.resize(produced);
  return std::optional<std::vector<uint8_t>>(std::move(out));
}

}  // namespace keel
