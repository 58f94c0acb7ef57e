// Proves that keel check survives arbitrary damage to qcow2 metadata and that -r all always ends
// with an image keel check and qemu-img check both call clean: seeded random mutations of the
// metadata words of images made by qemu (snapshots, compressed clusters, bitmaps, extended L2,
// 1-bit refcounts, 512-byte clusters). Prints its seed; replay one case with KEEL_SEED=<seed>
// (KEEL_MUTATION_ITERS sets the number of cases, default 240).
#include <gtest/gtest.h>

#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "check/corrupt_util.h"
#include "format/endian.h"
#include "format/header.h"
#include "format/tables.h"
#include "io/memory_file.h"
#include "keel/check.h"

namespace keel::testing {
namespace {

using namespace format;

struct Base {
  const char* name;
  std::vector<std::string> script;  // shell lines; $I is the image
};

const std::vector<Base>& bases() {
  static const std::vector<Base> v = {
      {"snapshots",
       {"qemu-img create -q -f qcow2 -o cluster_size=4k $I 4M", "qemu-io -c 'write -P 0xaa 0 256k' $I",
        "qemu-img snapshot -c s1 $I", "qemu-io -c 'write -P 0xbb 64k 64k' -c 'write -P 0xcc 3M 32k' $I",
        "qemu-img snapshot -c s2 $I", "qemu-io -c 'write -P 0xdd 1M 16k' $I"}},
      {"compressed",
       {"qemu-img create -q -f qcow2 -o cluster_size=4k $I.src 2M",
        "qemu-io -c 'write -P 0xaa 0 256k' -c 'write -P 0xbb 1M 64k' $I.src",
        "qemu-img convert -c -O qcow2 -o cluster_size=4k $I.src $I", "qemu-io -c 'write -P 0xcc 1536k 16k' $I"}},
      {"bitmaps",
       {"qemu-img create -q -f qcow2 -o cluster_size=4k $I 4M", "qemu-io -c 'write -P 0xaa 0 128k' $I",
        "qemu-img bitmap --add $I b0", "qemu-img bitmap --add -g 8k $I b1",
        "qemu-io -c 'write -P 0xbb 2M 64k' $I"}},
      {"extl2",
       {"qemu-img create -q -f qcow2 -o cluster_size=16k,extended_l2=on $I 8M",
        "qemu-io -c 'write -P 0xaa 4k 4k' -c 'write -P 0xbb 1M 64k' -c 'write -z 2M 8k' $I"}},
      {"rc1_c512",
       {"qemu-img create -q -f qcow2 -o cluster_size=512,refcount_bits=1 $I 1M",
        "qemu-io -c 'write -P 0xaa 0 16k' -c 'write -P 0xbb 300k 8k' $I"}},
  };
  return v;
}

// The byte ranges holding metadata words worth mutating.
std::vector<std::pair<uint64_t, uint64_t>> metadata_ranges(const std::vector<uint8_t>& img) {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  std::vector<uint8_t> c0(img.begin(), img.begin() + std::min<size_t>(img.size(), 1 << 21));
  auto h = decode_header(c0, UINT64_MAX, true);
  if (!h) return out;
  const uint64_t cs = h->cluster_size();
  auto be64 = [&](uint64_t off) -> uint64_t { return off + 8 <= img.size() ? get_be64(&img[off]) : 0; };
  out.push_back({40, 32});  // l1 offset .. snapshots offset
  out.push_back({h->l1_table_offset, uint64_t(h->l1_size) * 8});
  out.push_back({h->refcount_table_offset, uint64_t(h->refcount_table_clusters) * cs});
  for (uint64_t i = 0; i < uint64_t(h->refcount_table_clusters) * cs / 8; ++i)
    if (uint64_t rb = be64(h->refcount_table_offset + i * 8) & ~0x1ffull) out.push_back({rb, cs});
  for (uint64_t j = 0; j < h->l1_size; ++j)
    if (uint64_t l2 = be64(h->l1_table_offset + j * 8) & kOffsetMask) out.push_back({l2, cs});
  if (h->nb_snapshots) out.push_back({h->snapshots_offset, 64});
  if (h->bitmaps) out.push_back({h->bitmaps->directory_offset, h->bitmaps->directory_size});
  return out;
}

void mutate(std::vector<uint8_t>& img, std::mt19937_64& rng, std::string* log) {
  auto ranges = metadata_ranges(img);
  if (ranges.empty()) return;
  int n = 1 + static_cast<int>(rng() % 4);
  for (int k = 0; k < n; ++k) {
    auto [off, len] = ranges[rng() % ranges.size()];
    if (len < 8) continue;
    uint64_t pos = off + (rng() % (len / 8)) * 8;
    if (pos + 8 > img.size()) continue;
    uint64_t old = get_be64(&img[pos]), v = old;
    switch (rng() % 7) {
      case 0: v = 0; break;
      case 1: v ^= 1ull << (rng() % 64); break;
      case 2: v = rng(); break;
      case 3: v = (rng() % (img.size() / 512 + 64)) * 512; break;                       // some offset
      case 4: v = (old & 0xff000000000001ffull) | ((rng() % (img.size() / 512 + 4)) << 9); break;  // repoint
      case 5: v = old + 512; break;
      case 6: v = old | (1ull << 63); break;
    }
    put_be64(&img[pos], v);
    *log += fmt::format("  word at 0x{:x}: {:#x} -> {:#x}\n", pos, old, v);
  }
  if (rng() % 8 == 0) {  // sometimes also truncate
    uint64_t cut = img.size() - (rng() % std::max<uint64_t>(1, img.size() / 4));
    img.resize(cut);
    *log += fmt::format("  truncated to {}\n", cut);
  }
}

TEST(MutationTest, RepairAlwaysEndsClean) {
  TempDir dir;
  std::vector<std::vector<uint8_t>> images;
  for (const auto& b : bases()) {
    std::string path = dir.file(std::string(b.name) + ".qcow2");
    for (const auto& line : b.script) {
      std::string cmd = line, out;
      for (size_t p; (p = cmd.find("$I")) != std::string::npos;) cmd.replace(p, 2, path);
      ASSERT_EQ(run(cmd, &out), 0) << cmd << "\n" << out;
    }
    auto bytes = read_file(path);
    ASSERT_TRUE(bytes);
    images.push_back(*bytes);
  }
  // A synthetic base: the first image's header over tables full of pseudo-random bytes.
  {
    std::vector<uint8_t> garbage = images[0];
    std::mt19937_64 g(12345);
    for (size_t i = 4096; i < garbage.size(); ++i) garbage[i] = static_cast<uint8_t>(g());
    images.push_back(std::move(garbage));
  }
  const char* env_seed = std::getenv("KEEL_SEED");
  const char* env_iters = std::getenv("KEEL_MUTATION_ITERS");
  uint64_t first = env_seed ? std::strtoull(env_seed, nullptr, 0) : 1;
  uint64_t iters = env_seed ? 1 : (env_iters ? std::strtoull(env_iters, nullptr, 0) : 240);
  std::printf("mutation test: seeds %llu..%llu (replay one with KEEL_SEED=<seed>)\n",
              static_cast<unsigned long long>(first), static_cast<unsigned long long>(first + iters - 1));
  uint64_t repaired = 0, refused = 0, qemu_checked = 0;
  for (uint64_t seed = first; seed < first + iters; ++seed) {
    std::mt19937_64 rng(seed);
    size_t which = rng() % images.size();
    std::vector<uint8_t> img = images[which];
    std::string log = fmt::format("seed {} base {}\n", seed, which < bases().size() ? bases()[which].name : "random");
    mutate(img, rng, &log);
    SCOPED_TRACE(log);
    if (std::getenv("KEEL_MUTATION_VERBOSE")) std::fprintf(stderr, "%s", log.c_str());

    MemoryFile file("img", img);
    CheckOptions none;
    auto checked = check_qcow2(file, none);  // must return, whatever the bytes
    CheckOptions all;
    all.repair = RepairMode::kAll;
    std::string detail;
    all.report = [&detail](const std::string& s) { detail += s + "\n"; };
    auto r = check_qcow2(file, all);
    if (!r) {
      // Only a header that cannot be decoded may refuse the repair (QEMU cannot open it either).
      ++refused;
      EXPECT_FALSE(checked) << "check worked but repair failed: " << r.error().message() << "\n" << detail;
      std::string path = dir.file("refused.qcow2"), out;
      ASSERT_TRUE(write_file(path, img).is_ok());
      int rc = run("qemu-img check " + path, &out);
      EXPECT_NE(rc, 0) << "keel refused (" << r.error().message() << ") but qemu-img checked it:\n" << out;
      continue;
    }
    ++repaired;
    EXPECT_EQ(r->corruptions, 0u) << detail;
    EXPECT_EQ(r->leaks, 0u) << detail;
    EXPECT_EQ(r->check_errors, 0u) << detail;
    auto again = check_qcow2(file, none);
    ASSERT_TRUE(again) << again.error().message();
    EXPECT_EQ(again->corruptions + again->leaks + again->check_errors, 0u) << detail;
    // qemu-img agrees.
    std::string path = dir.file("mutated.qcow2"), out;
    ASSERT_TRUE(write_file(path, file.bytes()).is_ok());
    int rc = run("qemu-img check " + path, &out);
    ++qemu_checked;
    EXPECT_EQ(rc, 0) << "qemu-img check after keel's repair:\n" << out << "\nrepair log:\n" << detail;
    if (HasFailure()) break;
  }
  std::printf("mutation test: %llu repaired, %llu refused (undecodable header), %llu confirmed by qemu-img\n",
              static_cast<unsigned long long>(repaired), static_cast<unsigned long long>(refused),
              static_cast<unsigned long long>(qemu_checked));
}

}  // namespace
}  // namespace keel::testing
