/* Proves that keel.h is a C99 header usable on its own: compiled with -std=c99 -pedantic -Wall
 * -Wextra -Werror against include/keel/keel.h alone, linked with libkeel.so, it creates an image,
 * writes, flushes, reads back, checks it, and sees the documented error for a missing file. */
#include <keel/keel.h>

#include <stdio.h>
#include <string.h>

static int fail(const char *what, const keel_error *err) {
  fprintf(stderr, "abi_c99: %s: %s (%s, errno %d)\n", what, err->message, keel_strerror(err->code), err->err);
  return 1;
}

int main(int argc, char **argv) {
  keel_create_options co;
  keel_open_options oo;
  keel_image *img = NULL;
  keel_error err;
  keel_check_result cr;
  keel_extent ext;
  unsigned char out[4096], in[4096];
  char missing[4096];
  if (argc != 2) {
    fprintf(stderr, "usage: abi_c99 IMAGE\n");
    return 2;
  }
  keel_create_options_init(&co);
  co.size = 1024 * 1024;
  if (keel_create(argv[1], &co, &err) != KEEL_OK) return fail("create", &err);
  keel_open_options_init(&oo);
  oo.format = "qcow2";
  oo.cache = KEEL_CACHE_WRITETHROUGH;
  if (keel_open(argv[1], &oo, &img, &err) != KEEL_OK) return fail("open", &err);
  memset(out, 0xab, sizeof out);
  if (keel_write(img, 8192, out, sizeof out, KEEL_WRITE_FUA, &err) != KEEL_OK) return fail("write", &err);
  if (keel_flush(img, &err) != KEEL_OK) return fail("flush", &err);
  if (keel_read(img, 8192, in, sizeof in, &err) != KEEL_OK) return fail("read", &err);
  if (memcmp(in, out, sizeof in) != 0) {
    fprintf(stderr, "abi_c99: read back differs\n");
    return 1;
  }
  if (keel_block_status(img, 65536, keel_size(img) - 65536, &ext, &err) != KEEL_OK) return fail("block status", &err);
  if (ext.data || !ext.zero) {
    fprintf(stderr, "abi_c99: cluster 1 (never written) should read as zeros, not data\n");
    return 1;
  }
  if (keel_close(img, &err) != KEEL_OK) return fail("close", &err);
  if (keel_check(argv[1], KEEL_REPAIR_NONE, &cr, &err) != KEEL_OK) return fail("check", &err);
  if (cr.corruptions != 0 || cr.leaks != 0) {
    fprintf(stderr, "abi_c99: check found %lu corruptions, %lu leaks\n", (unsigned long)cr.corruptions,
            (unsigned long)cr.leaks);
    return 1;
  }
  snprintf(missing, sizeof missing, "%s.missing", argv[1]);
  if (keel_open(missing, NULL, &img, &err) != KEEL_E_NOT_FOUND || img != NULL) {
    fprintf(stderr, "abi_c99: opening a missing file should fail with KEEL_E_NOT_FOUND\n");
    return 1;
  }
  printf("abi_c99: ok (libkeel %s)\n", keel_version());
  return 0;
}
