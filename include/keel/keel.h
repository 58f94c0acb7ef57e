/* keel.h: the C API of libkeel, for programs in C and for other languages (Python's ctypes,
 * Rust, Go) that can only reach a C ABI. It wraps the C++ API of keel/image.h and keel/check.h.
 *
 * Stability: this header is C99, includes only standard headers, and its ABI follows the
 * library's SONAME (libkeel.so.KEEL_VERSION_MAJOR). Option structs begin with `struct_size`, set
 * by their *_init function, so later versions can add fields at the end without breaking callers
 * built against this one.
 *
 * Errors: every fallible call returns a keel_status (KEEL_OK = 0) and, when `error` is not NULL,
 * fills it with the code, the errno that best describes the failure and a one-line message (the
 * same text the keel command prints). `error` is the caller's own memory, so calls on different
 * threads never share error state.
 *
 * Threads: a keel_image may be used from many threads at once for keel_read, keel_write,
 * keel_write_zeroes, keel_discard, keel_flush, keel_block_status, keel_size and keel_info_json;
 * only keel_close must not run concurrently with any other call on the same image. Functions
 * taking no image (keel_create, keel_check, keel_strerror, keel_version, the *_init functions)
 * are safe from any thread.
 *
 * Durability (docs/integrity.md, guarantee G3): a write, write-zeroes or discard that returned
 * KEEL_OK is durable once a later keel_flush returns KEEL_OK, or at once when it was issued with
 * KEEL_WRITE_FUA. After a failed metadata write or sync the image latches read-only: later writes
 * fail with KEEL_E_READ_ONLY, reads keep working.
 *
 * The library keeps no process-wide state: no globals, no signal handlers, no allocator tuning.
 */
#ifndef KEEL_KEEL_H
#define KEEL_KEEL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- errors ---------------------------------------------------------------------------------- */

typedef enum keel_status {
  KEEL_OK = 0,
  KEEL_E_IO = 1,               /* an I/O call failed (EIO, ENOSPC, EDQUOT...); errno says which */
  KEEL_E_CORRUPT = 2,          /* the image violates the format; the message names field and value */
  KEEL_E_UNSUPPORTED = 3,      /* a valid image or request uses something Keel does not implement */
  KEEL_E_INVALID_ARGUMENT = 4, /* a bad argument: offset past the end, unknown option value, NULL */
  KEEL_E_READ_ONLY = 5,        /* a write to an image opened or latched read-only */
  KEEL_E_BUSY = 6,             /* another process holds a conflicting lock on the image */
  KEEL_E_NOT_FOUND = 7,        /* a named thing (file, snapshot) does not exist */
  KEEL_E_NO_MEMORY = 8         /* an allocation failed */
} keel_status;

#define KEEL_ERROR_MESSAGE_SIZE 512

typedef struct keel_error {
  keel_status code;
  int err;                                /* errno value, 0 when none applies */
  char message[KEEL_ERROR_MESSAGE_SIZE];  /* NUL-terminated, truncated if longer */
} keel_error;

/* A static description of `code` ("I/O error", "image corrupt"...). Never NULL. Thread-safe. */
const char *keel_strerror(keel_status code);

/* The version of the loaded library, "MAJOR.MINOR.PATCH" (keel/version.h has the header's). */
const char *keel_version(void);

/* ---- open, create, close --------------------------------------------------------------------- */

typedef struct keel_image keel_image;

/* QEMU's cache modes (-t): writeback is the default. none and directsync use O_DIRECT. */
typedef enum keel_cache_mode {
  KEEL_CACHE_WRITEBACK = 0,
  KEEL_CACHE_WRITETHROUGH = 1,
  KEEL_CACHE_NONE = 2,
  KEEL_CACHE_DIRECTSYNC = 3,
  KEEL_CACHE_UNSAFE = 4
} keel_cache_mode;

/* Called with one line of text for events the caller may want to log (today: the message with
 * which the image is marked corrupt). May be called from any thread using the image, with
 * internal locks held: it must not call back into the image. */
typedef void (*keel_log_fn)(void *context, const char *line);

typedef struct keel_open_options {
  uint32_t struct_size;         /* sizeof(keel_open_options), set by keel_open_options_init */
  const char *format;           /* "qcow2", "raw", or NULL to probe */
  int read_only;                /* nonzero: open read-only */
  keel_cache_mode cache;
  int force_share;              /* nonzero: take no image locks (read-only opens only) */
  int no_backing;               /* nonzero: do not open the backing file (unallocated = zeros) */
  keel_log_fn log;              /* NULL = no logging */
  void *log_context;
} keel_open_options;

/* Fills `opts` with the defaults: probe the format, read-write, writeback cache. */
void keel_open_options_init(keel_open_options *opts);

/* Opens the image at `path` and stores the handle in *image (NULL on failure). `opts` may be
 * NULL for the defaults. Takes QEMU-compatible locks, so a running QEMU and keel exclude each
 * other. A dirty image left by a crash with lazy refcounts is repaired here (durably) when
 * opened read-write. */
keel_status keel_open(const char *path, const keel_open_options *opts, keel_image **image,
                      keel_error *error);

typedef struct keel_create_options {
  uint32_t struct_size;         /* sizeof(keel_create_options), set by keel_create_options_init */
  const char *format;           /* "qcow2" (default) or "raw" */
  uint64_t size;                /* virtual size in bytes; 0 with a backing file = its size */
  uint32_t cluster_size;        /* qcow2: power of two, 512..2 MiB; default 65536 */
  int version;                  /* qcow2: 3 (compat=1.1, default) or 2 (compat=0.10) */
  int lazy_refcounts;           /* qcow2 v3 only */
  const char *backing_file;     /* NULL = none; stored as given (relative to the image) */
  const char *backing_format;   /* NULL = not recorded */
} keel_create_options;

/* Fills `opts` with the defaults: qcow2 v3, 64 KiB clusters, no backing file, size 0. */
void keel_create_options_init(keel_create_options *opts);

/* Creates a new image at `path`, replacing any file there. Durable when it returns KEEL_OK. */
keel_status keel_create(const char *path, const keel_create_options *opts, keel_error *error);

/* Flushes, clears the dirty bit and frees the image. `image` is freed even when this fails (the
 * error says what could not be written). NULL is a no-op. Not concurrent with other calls on
 * the same image. */
keel_status keel_close(keel_image *image, keel_error *error);

/* ---- guest I/O ------------------------------------------------------------------------------- */

/* The virtual size in bytes. */
uint64_t keel_size(const keel_image *image);

/* Reads `length` bytes at guest `offset` into `buf`. The range must lie inside the image. */
keel_status keel_read(keel_image *image, uint64_t offset, void *buf, size_t length,
                      keel_error *error);

#define KEEL_WRITE_FUA 1u          /* durable when the call returns (Force Unit Access) */

/* Writes `length` bytes from `buf` at guest `offset`. flags: 0 or KEEL_WRITE_FUA. Durable after
 * a later successful keel_flush, or on return with KEEL_WRITE_FUA. */
keel_status keel_write(keel_image *image, uint64_t offset, const void *buf, size_t length,
                       unsigned flags, keel_error *error);

#define KEEL_ZERO_MAY_UNMAP 2u     /* the range may be deallocated instead of written */
#define KEEL_ZERO_FAST_ONLY 4u     /* fail with KEEL_E_UNSUPPORTED unless zeroing is cheap */

/* Makes [offset, offset + length) read as zeros. flags: KEEL_WRITE_FUA, KEEL_ZERO_MAY_UNMAP,
 * KEEL_ZERO_FAST_ONLY, or'ed. Durability as keel_write. */
keel_status keel_write_zeroes(keel_image *image, uint64_t offset, uint64_t length, unsigned flags,
                              keel_error *error);

/* Advisory, like QEMU's: whole clusters inside the range are deallocated (then they read as
 * zeros on qcow2 v3 images, as the backing file on images with one); partial clusters keep
 * their data. Durability as keel_write. */
keel_status keel_discard(keel_image *image, uint64_t offset, uint64_t length, keel_error *error);

/* Makes every write, write-zeroes and discard that returned before this call durable. */
keel_status keel_flush(keel_image *image, keel_error *error);

typedef struct keel_extent {
  uint64_t offset;
  uint64_t length;
  int data;          /* nonzero: reads come from stored data */
  int zero;          /* nonzero: reads as zeros */
  int depth;         /* layer providing it: 1 = this image, 2 = its backing file...; 0 = none */
  int compressed;    /* nonzero: a compressed cluster */
  int has_host_offset;
  uint64_t host_offset;  /* offset in the top layer's data file, when has_host_offset */
} keel_extent;

/* Describes the longest uniform extent starting at `offset`, at most `max_length` bytes. */
keel_status keel_block_status(keel_image *image, uint64_t offset, uint64_t max_length,
                              keel_extent *extent, keel_error *error);

/* The image's description as JSON: the text `qemu-img info --output=json` prints for it (and
 * `keel info --output=json`, which uses the same renderer), without the trailing newline: field
 * names ("filename", "format", "virtual-size", "actual-size", "cluster-size", "dirty-flag",
 * "backing-filename", "full-backing-filename", "backing-filename-format", "snapshots",
 * "format-specific", "encrypted"), key order and layout. The string is allocated: free it with
 * keel_free. */
keel_status keel_info_json(keel_image *image, char **json, keel_error *error);

/* Frees memory that libkeel returned (keel_info_json). NULL is a no-op. */
void keel_free(void *p);

/* ---- check and repair ------------------------------------------------------------------------ */

typedef enum keel_repair {
  KEEL_REPAIR_NONE = 0,    /* only check */
  KEEL_REPAIR_LEAKS = 1,   /* qemu-img check -r leaks */
  KEEL_REPAIR_ALL = 2      /* qemu-img check -r all */
} keel_repair;

/* Mirrors qemu-img check's JSON (QAPI ImageCheck). After a repair the counts are those of the
 * second check that verifies it, plus what the repair fixed. */
typedef struct keel_check_result {
  uint64_t corruptions;
  uint64_t leaks;
  uint64_t check_errors;
  uint64_t corruptions_fixed;
  uint64_t leaks_fixed;
  uint64_t image_end_offset;
  uint64_t total_clusters;
  uint64_t allocated_clusters;
  uint64_t fragmented_clusters;
  uint64_t compressed_clusters;
} keel_check_result;

/* Checks the qcow2 image at `path` (which must not be open read-write elsewhere: the check takes
 * the image lock) and, with a repair mode, repairs it. A repair is crash-safe: interrupted, it
 * never leaves the image worse than before. Raw images: KEEL_E_UNSUPPORTED. The result counts
 * are filled whenever the check itself ran (KEEL_OK): corruptions are a finding, not an error. */
keel_status keel_check(const char *path, keel_repair repair, keel_check_result *result,
                       keel_error *error);

#ifdef __cplusplus
}
#endif

#endif /* KEEL_KEEL_H */
