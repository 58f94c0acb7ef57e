// The byte layout of cluster 0 (see header_layout.h): the extension chain walk that
// decode_header and the in-place header rewrites share.
#include "format/header_layout.h"

#include <algorithm>
#include <cstring>

#include "format/endian.h"
#include "format/header.h"
#include "keel/limits.h"

namespace keel::format {

ExtensionChain walk_extensions(std::span<const uint8_t> c0, uint64_t start, uint64_t area_end) {
  area_end = std::min<uint64_t>(area_end, c0.size());
  ExtensionChain chain;
  uint64_t e = start;
  while (e + 8 <= area_end) {  // each step moves on by at least 8 bytes
    const uint32_t type = get_be32(&c0[e]);
    if (type == kExtEnd) {
      chain.terminated = true;
      break;
    }
    if (chain.slots.size() >= limits::kMaxHeaderExtensions) {
      chain.too_many = true;
      break;
    }
    const ExtensionSlot slot{e, type, get_be32(&c0[e + 4])};
    chain.slots.push_back(slot);
    e = slot.end();
  }
  chain.stop = e;
  return chain;
}

uint64_t HeaderLayout::area_end() const {
  return backing_offset ? std::min(backing_offset, cluster_bytes) : cluster_bytes;
}

uint64_t HeaderLayout::used_end() const {
  const uint64_t chain_end = std::min(extensions.end(), cluster_bytes);
  const uint64_t name_end = backing_offset ? backing_offset + backing_size : 0;
  return std::max(chain_end, name_end);
}

HeaderLayout decode_header_layout(std::span<const uint8_t> c0) {
  HeaderLayout l;
  l.cluster_bytes = c0.size();
  if (c0.size() < kMinLayoutBytes) return l;
  l.version = get_be32(&c0[kOffsetVersion]);
  l.backing_offset = get_be64(&c0[kOffsetBackingFile]);
  l.backing_size = get_be32(&c0[kOffsetBackingFile + 8]);
  if (l.version >= 3) {
    l.header_length = get_be32(&c0[kOffsetHeaderLength]);
    l.autoclear = get_be64(&c0[kOffsetAutoclear]);
  } else {
    l.header_length = kV2HeaderLength;
  }
  l.extensions = walk_extensions(c0, l.header_length, l.area_end());
  return l;
}

std::vector<uint8_t> header_without_feature_table(std::span<const uint8_t> c0) {
  const HeaderLayout l = decode_header_layout(c0);
  const uint64_t cs = c0.size(), boff = l.backing_offset, bsize = l.backing_size;
  if (cs < kMinLayoutBytes || l.header_length > cs || (boff && boff + bsize > cs)) return {};
  if (!l.extensions.terminated) return {};
  std::vector<uint8_t> out(cs, 0);
  std::memcpy(out.data(), c0.data(), l.header_length);
  uint64_t o = l.header_length;
  for (const ExtensionSlot& s : l.extensions.slots) {
    if (s.end() > l.area_end()) return {};
    if (s.type == kExtFeatureTable) continue;
    std::memcpy(&out[o], &c0[s.offset], s.end() - s.offset);
    o += s.end() - s.offset;
  }
  o += 8;  // the end marker (zeros)
  if (boff) {
    if (o + bsize > cs) return {};
    std::memcpy(&out[o], &c0[boff], bsize);
    put_be64(&out[kOffsetBackingFile], o);
  }
  return out;
}

}  // namespace keel::format
