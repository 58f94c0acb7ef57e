// Helpers for engine tests (see engine_util.h).
#include "engine/engine_util.h"

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

namespace keel::test {

TempDir::TempDir() {
  char tmpl[] = "/tmp/keel-test.XXXXXX";
  dir_ = mkdtemp(tmpl);
}
TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

CommandResult run(const std::string& cmd) {
  CommandResult r;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  int st = pclose(p);
  r.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  uint32_t x = seed * 2654435761u + 1;
  for (auto& b : v) {
    x = x * 1103515245u + 12345u;
    b = static_cast<uint8_t>(x >> 16);
  }
  return v;
}

std::unique_ptr<Image> open_rw(const std::string& path, const std::string& format) {
  OpenOptions o;
  o.format = format;
  auto r = Image::open(path, o);
  EXPECT_TRUE(r.has_value()) << (r ? "" : r.error().message());
  return r ? std::move(*r) : nullptr;
}

std::unique_ptr<Image> open_ro(const std::string& path) {
  OpenOptions o;
  o.read_only = true;
  auto r = Image::open(path, o);
  EXPECT_TRUE(r.has_value()) << (r ? "" : r.error().message());
  return r ? std::move(*r) : nullptr;
}

CommandResult qemu_check(const std::string& path) { return run("qemu-img check -f qcow2 '" + path + "'"); }

}  // namespace keel::test
