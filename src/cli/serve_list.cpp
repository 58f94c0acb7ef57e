// keel serve -L: qemu-nbd's export list (see serve_list.h).
#include "cli/serve_list.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "cli/command.h"

#ifdef KEEL_HAVE_LIBNBD
#include <libnbd.h>
#endif

namespace keel::cli {

#ifndef KEEL_HAVE_LIBNBD

int list_nbd_exports(const NbdListTarget&) {
  print_error("keel was built without libnbd: -L/--list is not supported");
  return 1;
}

#else

namespace {

struct ExportEntry {
  std::string name, description;
};

// qemu-nbd's names of the transmission flags, by bit (spec: NBD_FLAG_*).
constexpr const char* kFlagNames[] = {nullptr, "readonly", "flush", "fua", "rotational", "trim", "zeroes",
                                      "df", "multi", "resize", "cache", "fast-zero"};

uint32_t transmission_flags(nbd_handle* h) {
  uint32_t f = 1;  // NBD_FLAG_HAS_FLAGS
  auto bit = [&](int yes, int b) {
    if (yes == 1) f |= 1u << b;
  };
  bit(nbd_is_read_only(h), 1);
  bit(nbd_can_flush(h), 2);
  bit(nbd_can_fua(h), 3);
  bit(nbd_is_rotational(h), 4);
  bit(nbd_can_trim(h), 5);
  bit(nbd_can_zero(h), 6);
  bit(nbd_can_df(h), 7);
  bit(nbd_can_multi_conn(h), 8);
  bit(nbd_can_cache(h), 10);
  bit(nbd_can_fast_zero(h), 11);
  return f;
}

std::string lib_error() {
  const char* m = nbd_get_error();
  return m ? m : std::strerror(nbd_get_errno() ? nbd_get_errno() : EIO);
}

}  // namespace

int list_nbd_exports(const NbdListTarget& t) {
  nbd_handle* h = nbd_create();
  if (!h) {
    print_error(lib_error());
    return 1;
  }
  struct Closer {
    nbd_handle* h;
    ~Closer() { nbd_close(h); }
  } closer{h};
  const std::string where = t.socket_path.empty() ? fmt::format("{}:{}", t.host, t.port) : t.socket_path;
  if (nbd_set_opt_mode(h, true) < 0) {
    print_error(lib_error());
    return 1;
  }
  int rc = t.socket_path.empty() ? nbd_connect_tcp(h, t.host.c_str(), t.port.c_str())
                                 : nbd_connect_unix(h, t.socket_path.c_str());
  if (rc < 0) {
    int err = nbd_get_errno() ? nbd_get_errno() : EIO;
    print_error(fmt::format("Failed to connect to '{}': {}", where, std::strerror(err)));
    return 1;
  }
  std::vector<ExportEntry> exports;
  nbd_list_callback list_cb{};
  list_cb.user_data = &exports;
  list_cb.callback = [](void* user, const char* name, const char* desc) -> int {
    static_cast<std::vector<ExportEntry>*>(user)->push_back({name, desc ? desc : ""});
    return 0;
  };
  if (nbd_opt_list(h, list_cb) < 0) {
    print_error(lib_error());
    return 1;
  }
  std::printf("exports available: %zu\n", exports.size());
  for (const auto& e : exports) {
    std::printf(" export: '%s'\n", e.name.c_str());
    if (!e.description.empty()) std::printf("  description: %s\n", e.description.c_str());
    if (nbd_set_export_name(h, e.name.c_str()) < 0 || nbd_opt_info(h) < 0) continue;
    uint32_t flags = transmission_flags(h);
    std::printf("  size:  %lld\n", static_cast<long long>(nbd_get_size(h)));
    std::string names;
    for (size_t b = 0; b < std::size(kFlagNames); ++b)
      if (kFlagNames[b] && (flags & (1u << b))) names += fmt::format(" {}", kFlagNames[b]);
    std::printf("  flags: 0x%x (%s )\n", flags, names.c_str());
    int64_t min_block = nbd_get_block_size(h, LIBNBD_SIZE_MINIMUM);
    if (min_block > 0) {
      std::printf("  min block: %lld\n", static_cast<long long>(min_block));
      std::printf("  opt block: %lld\n", static_cast<long long>(nbd_get_block_size(h, LIBNBD_SIZE_PREFERRED)));
      std::printf("  max block: %lld\n", static_cast<long long>(nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM)));
    }
    std::vector<std::string> contexts;
    nbd_context_callback ctx_cb{};
    ctx_cb.user_data = &contexts;
    ctx_cb.callback = [](void* user, const char* name) -> int {
      static_cast<std::vector<std::string>*>(user)->push_back(name);
      return 0;
    };
    if (nbd_opt_list_meta_context(h, ctx_cb) >= 0 && !contexts.empty()) {
      std::printf("  available meta contexts: %zu\n", contexts.size());
      for (const auto& c : contexts) std::printf("   %s\n", c.c_str());
    }
  }
  nbd_opt_abort(h);
  std::fflush(stdout);
  return 0;
}

#endif  // KEEL_HAVE_LIBNBD

}  // namespace keel::cli
