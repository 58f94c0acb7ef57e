// Example: libkeel's C++ API (keel/image.h, keel/check.h). Creates a qcow2 image, writes a
// pattern, flushes, reads it back, closes and checks the image.
//   find_package(keel CONFIG REQUIRED)  +  target_link_libraries(app PRIVATE keel::keel)
#include <cstdio>
#include <string>
#include <vector>

#include <keel/check.h>
#include <keel/image.h>
#include <keel/version.h>

int fail(const char* step, const keel::Status& s) {
  std::fprintf(stderr, "%s: %s\n", step, s.message().c_str());
  return 1;
}

int main(int argc, char** argv) {
  std::string path = argc > 1 ? argv[1] : "example.qcow2";
  keel::CreateOptions create;
  create.size = 64ull << 20;
  if (keel::Status s = keel::create_image(path, create); !s) return fail("create", s);
  auto image = keel::Image::open(path, keel::OpenOptions{});
  if (!image) return fail("open", image.error());

  std::vector<uint8_t> data(65536, 0xa5), back(65536);
  if (keel::Status s = (*image)->write(1 << 20, data); !s) return fail("write", s);
  if (keel::Status s = (*image)->flush(); !s) return fail("flush", s);  // now durable
  if (keel::Status s = (*image)->read(1 << 20, back); !s) return fail("read", s);
  if (back != data) {
    std::fprintf(stderr, "read back differs\n");
    return 1;
  }
  if (keel::Status s = (*image)->close(); !s) return fail("close", s);
  image->reset();

  auto file = keel::open_posix_file(path, keel::FileOptions{.read_only = true});
  if (!file) return fail("open for check", file.error());
  auto check = keel::check_qcow2(**file, keel::CheckOptions{});
  if (!check) return fail("check", check.error());
  std::printf("%s (keel %s): %zu bytes written and read back; check: %llu corruptions, %llu leaks\n",
              path.c_str(), KEEL_VERSION_STRING, data.size(),
              static_cast<unsigned long long>(check->corruptions),
              static_cast<unsigned long long>(check->leaks));
  return check->corruptions || check->leaks ? 1 : 0;
}
