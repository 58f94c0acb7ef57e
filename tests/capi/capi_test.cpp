// Proves that the C API (include/keel/keel.h) does what its header promises, through the shared
// library as an embedding program links it: data written through it reads back through it and
// through qemu-io, the errors carry the documented code, errno and message, block status, info
// JSON, backing files and check/repair agree with qemu-img (the oracle), and concurrent writers
// on one handle do not disturb each other.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "capi/capi_util.h"
#include "keel/keel.h"
#include "keel/version.h"

namespace {

using keel_capi_test::sh;

class CApi : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/keel_capi_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    img_ = dir_ + "/a.qcow2";
  }
  void TearDown() override { sh("rm -rf '" + dir_ + "'"); }

  // Creates a qcow2 image of `size` bytes through the C API and opens it read-write.
  keel_image* create_open(uint64_t size, const char* backing = nullptr) {
    keel_create_options co;
    keel_create_options_init(&co);
    co.size = size;
    co.backing_file = backing;
    if (backing) co.backing_format = "qcow2";
    keel_error err;
    EXPECT_EQ(keel_create(img_.c_str(), &co, &err), KEEL_OK) << err.message;
    keel_image* img = nullptr;
    EXPECT_EQ(keel_open(img_.c_str(), nullptr, &img, &err), KEEL_OK) << err.message;
    return img;
  }

  std::string dir_, img_;
};

TEST_F(CApi, WrittenDataReadsBackThroughKeelAndQemuIo) {
  keel_image* img = create_open(16 << 20);
  ASSERT_NE(img, nullptr);
  EXPECT_EQ(keel_size(img), 16u << 20);
  std::vector<uint8_t> data(3 * 65536 + 512, 0x5a);
  keel_error err;
  ASSERT_EQ(keel_write(img, 65536 - 512, data.data(), data.size(), 0, &err), KEEL_OK) << err.message;
  std::vector<uint8_t> fua(4096, 0x77);
  ASSERT_EQ(keel_write(img, 8 << 20, fua.data(), fua.size(), KEEL_WRITE_FUA, &err), KEEL_OK) << err.message;
  ASSERT_EQ(keel_flush(img, &err), KEEL_OK) << err.message;
  std::vector<uint8_t> back(data.size());
  ASSERT_EQ(keel_read(img, 65536 - 512, back.data(), back.size(), &err), KEEL_OK) << err.message;
  EXPECT_EQ(back, data);
  ASSERT_EQ(keel_close(img, &err), KEEL_OK) << err.message;

  std::string out;
  EXPECT_EQ(sh("qemu-io -f qcow2 -c 'read -P 0x5a 65024 197120' -c 'read -P 0x77 8M 4k' "
               "-c 'read -P 0 0 65024' '" + img_ + "'", &out), 0) << out;
  EXPECT_EQ(out.find("Pattern verification failed"), std::string::npos) << out;
  EXPECT_EQ(sh("qemu-img check -q '" + img_ + "'", &out), 0) << out;
}

TEST_F(CApi, ReadsWhatQemuWrote) {
  ASSERT_EQ(sh("qemu-img create -q -f qcow2 '" + img_ + "' 4M && qemu-io -c 'write -P 0xc3 1M 64k' '" + img_ + "'"), 0);
  keel_open_options o;
  keel_open_options_init(&o);
  o.read_only = 1;
  o.format = "qcow2";
  keel_image* img = nullptr;
  keel_error err;
  ASSERT_EQ(keel_open(img_.c_str(), &o, &img, &err), KEEL_OK) << err.message;
  std::vector<uint8_t> buf(65536 + 4096);
  ASSERT_EQ(keel_read(img, (1 << 20) - 4096, buf.data(), buf.size(), &err), KEEL_OK);
  for (size_t i = 0; i < buf.size(); i++) ASSERT_EQ(buf[i], i < 4096 ? 0 : 0xc3) << i;
  // Read-only: a write fails with the documented code and leaves the image alone.
  EXPECT_EQ(keel_write(img, 0, buf.data(), 512, 0, &err), KEEL_E_READ_ONLY);
  EXPECT_EQ(err.code, KEEL_E_READ_ONLY);
  EXPECT_NE(err.err, 0);
  EXPECT_GT(std::strlen(err.message), 0u);
  ASSERT_EQ(keel_close(img, &err), KEEL_OK);
}

TEST_F(CApi, ErrorsCarryCodeErrnoAndMessage) {
  keel_image* img = reinterpret_cast<keel_image*>(1);
  keel_error err;
  std::string missing = dir_ + "/missing.qcow2";
  EXPECT_EQ(keel_open(missing.c_str(), nullptr, &img, &err), KEEL_E_NOT_FOUND);
  EXPECT_EQ(img, nullptr);
  EXPECT_EQ(err.code, KEEL_E_NOT_FOUND);
  EXPECT_EQ(err.err, ENOENT);
  EXPECT_NE(std::string(err.message).find("missing.qcow2"), std::string::npos) << err.message;

  EXPECT_EQ(keel_open(nullptr, nullptr, &img, &err), KEEL_E_INVALID_ARGUMENT);
  EXPECT_EQ(err.err, EINVAL);
  EXPECT_EQ(keel_open(img_.c_str(), nullptr, &img, nullptr), KEEL_E_NOT_FOUND);  // error may be NULL

  keel_open_options o;
  keel_open_options_init(&o);
  o.cache = static_cast<keel_cache_mode>(42);
  EXPECT_EQ(keel_open(img_.c_str(), &o, &img, &err), KEEL_E_INVALID_ARGUMENT);
  EXPECT_NE(std::string(err.message).find("42"), std::string::npos) << err.message;

  keel_create_options co;
  keel_create_options_init(&co);
  co.size = 1 << 20;
  co.cluster_size = 3000;
  EXPECT_EQ(keel_create(img_.c_str(), &co, &err), KEEL_E_INVALID_ARGUMENT) << err.message;

  img = create_open(1 << 20);
  ASSERT_NE(img, nullptr);
  uint8_t b[512] = {};
  EXPECT_EQ(keel_read(img, (1 << 20) - 256, b, sizeof b, &err), KEEL_E_INVALID_ARGUMENT);
  EXPECT_NE(std::string(err.message).find("past the end"), std::string::npos) << err.message;
  EXPECT_EQ(keel_write(img, 0, b, sizeof b, 0x80, &err), KEEL_E_INVALID_ARGUMENT);
  EXPECT_EQ(keel_write_zeroes(img, 0, 512, 0x80, &err), KEEL_E_INVALID_ARGUMENT);

  // A second read-write open of the same image conflicts with the first one's lock.
  keel_image* second = nullptr;
  EXPECT_EQ(keel_open(img_.c_str(), nullptr, &second, &err), KEEL_E_BUSY) << err.message;
  EXPECT_EQ(second, nullptr);
  EXPECT_EQ(keel_close(img, &err), KEEL_OK);
  EXPECT_EQ(keel_close(nullptr, &err), KEEL_OK);

  for (int c = KEEL_OK; c <= KEEL_E_NO_MEMORY; c++)
    EXPECT_GT(std::strlen(keel_strerror(static_cast<keel_status>(c))), 0u);
  EXPECT_STRNE(keel_strerror(KEEL_E_IO), keel_strerror(KEEL_E_CORRUPT));
  EXPECT_STREQ(keel_version(), KEEL_VERSION_STRING);
}

TEST_F(CApi, ZeroesDiscardAndBlockStatusAgreeWithQemu) {
  keel_image* img = create_open(4 << 20);
  ASSERT_NE(img, nullptr);
  std::vector<uint8_t> data(4 * 65536, 0xee);
  keel_error err;
  ASSERT_EQ(keel_write(img, 0, data.data(), data.size(), 0, &err), KEEL_OK);
  keel_extent e;
  ASSERT_EQ(keel_block_status(img, 0, 4 << 20, &e, &err), KEEL_OK) << err.message;
  EXPECT_EQ(e.offset, 0u);
  EXPECT_EQ(e.length, 4u * 65536);
  EXPECT_TRUE(e.data);
  EXPECT_FALSE(e.zero);
  EXPECT_EQ(e.depth, 1);
  EXPECT_TRUE(e.has_host_offset);

  ASSERT_EQ(keel_write_zeroes(img, 65536, 65536, KEEL_ZERO_MAY_UNMAP, &err), KEEL_OK) << err.message;
  ASSERT_EQ(keel_discard(img, 2 * 65536, 65536, &err), KEEL_OK) << err.message;
  ASSERT_EQ(keel_block_status(img, 65536, 4 << 20, &e, &err), KEEL_OK);
  EXPECT_EQ(e.offset, 65536u);
  EXPECT_EQ(e.length, 2u * 65536);
  EXPECT_TRUE(e.zero);
  EXPECT_FALSE(e.data);
  ASSERT_EQ(keel_block_status(img, 3 * 65536, 4 << 20, &e, &err), KEEL_OK);
  EXPECT_TRUE(e.data);
  EXPECT_EQ(e.length, 65536u);
  ASSERT_EQ(keel_close(img, &err), KEEL_OK);

  std::string out;
  EXPECT_EQ(sh("qemu-io -f qcow2 -c 'read -P 0xee 0 64k' -c 'read -P 0 64k 128k' -c 'read -P 0xee 192k 64k' '" +
               img_ + "'", &out), 0) << out;
  EXPECT_EQ(out.find("Pattern verification failed"), std::string::npos) << out;
  EXPECT_EQ(sh("qemu-img check -q '" + img_ + "'", &out), 0) << out;
}

TEST_F(CApi, BackingFileAndInfoJsonMatchQemuImg) {
  std::string base = dir_ + "/base.qcow2";
  ASSERT_EQ(sh("qemu-img create -q -f qcow2 '" + base + "' 2M && qemu-io -c 'write -P 0x11 0 1M' '" + base + "'"), 0);
  keel_image* img = create_open(0, "base.qcow2");  // size 0: the backing file's
  ASSERT_NE(img, nullptr);
  EXPECT_EQ(keel_size(img), 2u << 20);
  keel_error err;
  uint8_t b[4096];
  ASSERT_EQ(keel_read(img, 4096, b, sizeof b, &err), KEEL_OK);
  EXPECT_EQ(b[0], 0x11);
  EXPECT_EQ(b[4095], 0x11);
  keel_extent e;
  ASSERT_EQ(keel_block_status(img, 0, 2 << 20, &e, &err), KEEL_OK);
  EXPECT_EQ(e.depth, 2);
  EXPECT_EQ(e.length, 1u << 20);

  char* json = nullptr;
  ASSERT_EQ(keel_info_json(img, &json, &err), KEEL_OK) << err.message;
  ASSERT_NE(json, nullptr);
  std::string mine = json;
  keel_free(json);
  ASSERT_EQ(keel_close(img, &err), KEEL_OK);

  // The same renderer as `keel info --output=json`, so the text is qemu-img's byte for byte
  // (field names, key order, layout); only the trailing newline is the command's.
  std::string theirs;
  ASSERT_EQ(sh("qemu-img info -U --output=json '" + img_ + "'", &theirs), 0) << theirs;
  EXPECT_EQ(mine + "\n", theirs);
  auto parsed = nlohmann::json::parse(mine);
  EXPECT_EQ(parsed["full-backing-filename"], base);
}

// A leaked cluster: refcount 1 for cluster 10, which nothing references (qemu-img's default
// layout: refcount block at 0x20000, 16-bit big-endian entries). The file is extended over
// cluster 10 first: checks only count refcounts of clusters inside the file.
void leak_cluster_10(const std::string& path) {
  ASSERT_EQ(::truncate(path.c_str(), 11 * 65536), 0);
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(0x20000 + 10 * 2);
  const char one[2] = {0, 1};
  f.write(one, 2);
}

TEST_F(CApi, CheckFindsAndRepairsALeakAsQemuImgDoes) {
  ASSERT_EQ(sh("qemu-img create -q -f qcow2 '" + img_ + "' 8M && qemu-io -c 'write -P 1 0 64k' '" + img_ + "'"), 0);
  keel_check_result r;
  keel_error err;
  ASSERT_EQ(keel_check(img_.c_str(), KEEL_REPAIR_NONE, &r, &err), KEEL_OK) << err.message;
  EXPECT_EQ(r.corruptions, 0u);
  EXPECT_EQ(r.leaks, 0u);
  EXPECT_EQ(r.allocated_clusters, 1u);

  leak_cluster_10(img_);
  std::string out;
  ASSERT_EQ(sh("qemu-img check '" + img_ + "'", &out), 3) << out;  // the oracle sees the leak too
  ASSERT_EQ(keel_check(img_.c_str(), KEEL_REPAIR_NONE, &r, &err), KEEL_OK) << err.message;
  EXPECT_EQ(r.leaks, 1u);
  EXPECT_EQ(r.corruptions, 0u);
  ASSERT_EQ(keel_check(img_.c_str(), KEEL_REPAIR_LEAKS, &r, &err), KEEL_OK) << err.message;
  EXPECT_EQ(r.leaks_fixed, 1u);
  EXPECT_EQ(r.leaks, 0u);
  EXPECT_EQ(sh("qemu-img check '" + img_ + "'", &out), 0) << out;

  // A check needs the image to itself for a repair: an open read-write handle blocks it.
  keel_image* img = nullptr;
  ASSERT_EQ(keel_open(img_.c_str(), nullptr, &img, &err), KEEL_OK);
  EXPECT_EQ(keel_check(img_.c_str(), KEEL_REPAIR_ALL, &r, &err), KEEL_E_BUSY) << err.message;
  ASSERT_EQ(keel_close(img, &err), KEEL_OK);

  std::string raw = dir_ + "/r.raw";
  ASSERT_EQ(sh("qemu-img create -q -f raw '" + raw + "' 1M"), 0);
  EXPECT_EQ(keel_check(raw.c_str(), KEEL_REPAIR_NONE, &r, &err), KEEL_E_UNSUPPORTED);
  EXPECT_EQ(keel_check((dir_ + "/none").c_str(), KEEL_REPAIR_NONE, &r, &err), KEEL_E_NOT_FOUND);
}

TEST_F(CApi, ConcurrentWritersOnOneHandle) {
  keel_image* img = create_open(32 << 20);
  ASSERT_NE(img, nullptr);
  constexpr int kThreads = 4;
  std::vector<std::thread> threads;
  std::vector<int> failures(kThreads, 0);
  for (int t = 0; t < kThreads; t++) {
    threads.emplace_back([&, t] {
      std::vector<uint8_t> buf(32768, static_cast<uint8_t>(0x40 + t));
      keel_error err;
      // Thread t owns every kThreads-th 32 KiB piece: allocations of shared clusters interleave.
      for (uint64_t i = t; i < 256; i += kThreads)
        if (keel_write(img, i * 32768, buf.data(), buf.size(), 0, &err) != KEEL_OK) failures[t]++;
      if (keel_flush(img, &err) != KEEL_OK) failures[t]++;
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; t++) EXPECT_EQ(failures[t], 0) << t;
  std::vector<uint8_t> back(32768);
  keel_error err;
  for (uint64_t i = 0; i < 256; i++) {
    ASSERT_EQ(keel_read(img, i * 32768, back.data(), back.size(), &err), KEEL_OK);
    ASSERT_EQ(back[0], 0x40 + i % kThreads) << i;
    ASSERT_EQ(back[32767], 0x40 + i % kThreads) << i;
  }
  ASSERT_EQ(keel_close(img, &err), KEEL_OK);
  std::string out;
  EXPECT_EQ(sh("qemu-img check -q '" + img_ + "'", &out), 0) << out;
}

}  // namespace
