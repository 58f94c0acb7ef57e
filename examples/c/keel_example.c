/* Example: libkeel's C API (keel/keel.h). Creates a qcow2 image, writes a pattern, flushes,
 * reads it back, closes and checks the image.
 *   cc keel_example.c $(pkg-config --cflags --libs keel) -o keel_example
 *   ./keel_example /tmp/example.qcow2 */
#include <keel/keel.h>

#include <stdio.h>
#include <string.h>

static int fail(const char *step, const keel_error *err) {
  fprintf(stderr, "%s: %s (%s)\n", step, err->message, keel_strerror(err->code));
  return 1;
}

int main(int argc, char **argv) {
  const char *path = argc > 1 ? argv[1] : "example.qcow2";
  keel_create_options create;
  keel_image *image = NULL;
  keel_error err;
  keel_check_result check;
  unsigned char data[65536], back[65536];

  keel_create_options_init(&create);
  create.size = 64ull << 20; /* 64 MiB */
  if (keel_create(path, &create, &err) != KEEL_OK) return fail("create", &err);
  if (keel_open(path, NULL, &image, &err) != KEEL_OK) return fail("open", &err);

  memset(data, 0x5a, sizeof data);
  if (keel_write(image, 1 << 20, data, sizeof data, 0, &err) != KEEL_OK) return fail("write", &err);
  if (keel_flush(image, &err) != KEEL_OK) return fail("flush", &err); /* now durable */
  if (keel_read(image, 1 << 20, back, sizeof back, &err) != KEEL_OK) return fail("read", &err);
  if (memcmp(data, back, sizeof data) != 0) {
    fprintf(stderr, "read back differs\n");
    return 1;
  }
  if (keel_close(image, &err) != KEEL_OK) return fail("close", &err);

  if (keel_check(path, KEEL_REPAIR_NONE, &check, &err) != KEEL_OK) return fail("check", &err);
  printf("%s: %llu bytes written and read back; check: %llu corruptions, %llu leaks\n", path,
         (unsigned long long)sizeof data, (unsigned long long)check.corruptions,
         (unsigned long long)check.leaks);
  return check.corruptions || check.leaks ? 1 : 0;
}
