// An NBD export as a BlockFile through libnbd (see nbd_file.h).
#include "cli/nbd_file.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <span>
#include <utility>
#include <vector>

#include <fmt/format.h>

#ifdef KEEL_HAVE_LIBNBD
#include <libnbd.h>
#endif

namespace keel {
namespace {

constexpr const char* kDefaultPort = "10809";  // spec: the IANA NBD port
// ours: a request never exceeds 32 MiB, the largest request QEMU's and keel's servers accept
constexpr uint64_t kMaxRequestBytes = 32ull << 20;

std::string percent_decode(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out += static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

Status no_valid_url() { return invalid("No valid URL specified"); }

// nbd[+tcp|+unix]://[HOST[:PORT]]/[EXPORT][?socket=PATH]
Result<NbdAddress> parse_uri(const std::string& name) {
  NbdAddress a;
  a.uri = name;
  size_t scheme_end = name.find("://");
  std::string scheme = name.substr(0, scheme_end);
  std::string rest = name.substr(scheme_end + 3);
  std::string query;
  if (size_t q = rest.find('?'); q != std::string::npos) {
    query = rest.substr(q + 1);
    rest = rest.substr(0, q);
  }
  size_t slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  std::string path = slash == std::string::npos ? "" : rest.substr(slash + 1);
  a.export_name = percent_decode(path);
  const bool is_unix = scheme == "nbd+unix";
  if (is_unix) {
    if (!authority.empty() || query.rfind("socket=", 0) != 0 || query.find('&') != std::string::npos)
      return error(no_valid_url());
    a.unix_path = percent_decode(query.substr(7));
    a.display = a.unix_path;
    return a;
  }
  if (!query.empty()) return error(no_valid_url());
  std::string host = authority, port = kDefaultPort;
  if (size_t colon = authority.rfind(':'); colon != std::string::npos && authority.find(']') == std::string::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
  }
  if (host.size() > 1 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host.empty()) host = "localhost";
  a.host = host;
  a.port = port;
  a.display = fmt::format("{}:{}", host, port);
  return a;
}

// nbd:unix:PATH[:exportname=E] or nbd:HOST:PORT[:exportname=E]
Result<NbdAddress> parse_legacy(const std::string& name) {
  NbdAddress a;
  std::string rest = name.substr(4);
  if (size_t e = rest.find(":exportname="); e != std::string::npos) {
    a.export_name = rest.substr(e + 12);
    rest = rest.substr(0, e);
  }
  if (rest.rfind("unix:", 0) == 0) {
    a.unix_path = rest.substr(5);
    a.display = a.unix_path;
    return a;
  }
  size_t colon = rest.rfind(':');
  a.host = colon == std::string::npos ? rest : rest.substr(0, colon);
  a.port = colon == std::string::npos ? kDefaultPort : rest.substr(colon + 1);
  a.display = fmt::format("{}:{}", a.host, a.port);
  return a;
}

}  // namespace

std::string NbdAddress::canonical() const {
  if (!unix_path.empty())
    return export_name.empty() ? fmt::format("nbd+unix://?socket={}", unix_path)
                               : fmt::format("nbd+unix:///{}?socket={}", export_name, unix_path);
  return export_name.empty() ? fmt::format("nbd://{}:{}", host, port) : fmt::format("nbd://{}:{}/{}", host, port, export_name);
}

Result<std::optional<NbdAddress>> parse_nbd_name(const std::string& name) {
  if (name.rfind("nbd://", 0) == 0 || name.rfind("nbd+tcp://", 0) == 0 || name.rfind("nbd+unix://", 0) == 0) {
    KEEL_ASSIGN(auto a, parse_uri(name));
    return std::optional<NbdAddress>(std::move(a));
  }
  if (name.rfind("nbd:", 0) == 0) {
    KEEL_ASSIGN(auto a, parse_legacy(name));
    return std::optional<NbdAddress>(std::move(a));
  }
  return std::optional<NbdAddress>();
}

#ifndef KEEL_HAVE_LIBNBD

bool nbd_client_available() { return false; }

Result<std::unique_ptr<BlockFile>> open_nbd_file(const NbdAddress&, const FileOptions&) {
  return error(unsupported("keel was built without libnbd: NBD image names are not supported"));
}

#else

namespace {

Status nbd_status(const char* what) {
  int err = nbd_get_errno();
  if (err == 0) err = EIO;
  const char* msg = nbd_get_error();
  return io_error(err, fmt::format("{}: {}", what, msg ? msg : std::strerror(err)));
}

class NbdFile final : public BlockFile {
 public:
  NbdFile(nbd_handle* h, std::string name, uint64_t size, bool read_only)
      : h_(h), name_(std::move(name)), size_(size), read_only_(read_only) {}
  ~NbdFile() override {
    nbd_shutdown(h_, 0);
    nbd_close(h_);
  }

  Status read_at(uint64_t offset, std::span<uint8_t> buf) override {
    uint64_t done = 0;
    while (done < buf.size()) {
      uint64_t off = offset + done;
      uint64_t n = std::min<uint64_t>(buf.size() - done, kMaxRequestBytes);
      if (off >= size_) {
        std::fill(buf.begin() + static_cast<ptrdiff_t>(done), buf.end(), uint8_t{0});
        break;
      }
      n = std::min(n, size_ - off);
      if (nbd_pread(h_, buf.data() + done, n, off, 0) < 0) return nbd_status("NBD read failed");
      done += n;
    }
    return Status::ok();
  }
  Status write_at(uint64_t offset, std::span<const uint8_t> buf) override {
    if (read_only_) return io_error(EROFS, "the NBD export is read-only");
    if (offset + buf.size() > size_) return io_error(ENOSPC, "write past the end of the NBD export");
    for (uint64_t done = 0; done < buf.size();) {
      uint64_t n = std::min<uint64_t>(buf.size() - done, kMaxRequestBytes);
      if (nbd_pwrite(h_, buf.data() + done, n, offset + done, 0) < 0) return nbd_status("NBD write failed");
      done += n;
    }
    return Status::ok();
  }
  Status sync() override {
    if (read_only_ || nbd_can_flush(h_) != 1) return Status::ok();
    if (nbd_flush(h_, 0) < 0) return nbd_status("NBD flush failed");
    return Status::ok();
  }
  Status truncate(uint64_t size) override {
    if (size == size_) return Status::ok();
    return unsupported("Cannot resize NBD nodes");
  }
  Status allocate(uint64_t, uint64_t) override { return Status::ok(); }
  Status punch(uint64_t offset, uint64_t length) override {
    if (read_only_) return io_error(EROFS, "the NBD export is read-only");
    if (offset >= size_) return Status::ok();
    length = std::min(length, size_ - offset);
    for (uint64_t done = 0; done < length;) {
      uint64_t n = std::min<uint64_t>(length - done, kMaxRequestBytes);
      if (nbd_can_zero(h_) == 1) {
        if (nbd_zero(h_, n, offset + done, 0) < 0) return nbd_status("NBD write zeroes failed");
      } else {
        std::vector<uint8_t> zeros(n, 0);
        if (nbd_pwrite(h_, zeros.data(), n, offset + done, 0) < 0) return nbd_status("NBD write failed");
      }
      done += n;
    }
    return Status::ok();
  }
  Result<uint64_t> size() override { return size_; }
  Result<std::pair<bool, uint64_t>> probe_data(uint64_t offset, uint64_t max_length) override {
    if (offset >= size_ || nbd_can_meta_context(h_, LIBNBD_CONTEXT_BASE_ALLOCATION) != 1)
      return std::pair<bool, uint64_t>{true, max_length};
    max_length = std::min(max_length, size_ - offset);
    struct Found {
      bool data = true;
      uint64_t length = 0;
    } found;
    nbd_extent_callback cb{};
    cb.user_data = &found;
    cb.callback = [](void* user, const char* ctx, uint64_t, uint32_t* entries, size_t n, int*) -> int {
      auto* f = static_cast<Found*>(user);
      if (std::strcmp(ctx, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0 || n < 2 || f->length) return 0;
      f->length = entries[0];
      f->data = !(entries[1] & LIBNBD_STATE_ZERO);
      return 0;
    };
    uint64_t ask = std::min<uint64_t>(max_length, 1ull << 30);
    if (nbd_block_status(h_, ask, offset, cb, LIBNBD_CMD_FLAG_REQ_ONE) < 0) return error(nbd_status("NBD block status failed"));
    if (found.length == 0) return std::pair<bool, uint64_t>{true, max_length};
    return std::pair<bool, uint64_t>{found.data, std::min<uint64_t>(found.length, max_length)};
  }
  std::string name() const override { return name_; }

 private:
  nbd_handle* h_;
  std::string name_;
  uint64_t size_;
  bool read_only_;
};

}  // namespace

bool nbd_client_available() { return true; }

Result<std::unique_ptr<BlockFile>> open_nbd_file(const NbdAddress& a, const FileOptions& opts) {
  nbd_handle* h = nbd_create();
  if (!h) return error(nbd_status("cannot create an NBD handle"));
  auto fail = [&](Status st) {
    nbd_close(h);
    return error(std::move(st));
  };
  if (nbd_set_export_name(h, a.export_name.c_str()) < 0 ||
      nbd_add_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION) < 0)
    return fail(nbd_status("cannot set up the NBD handle"));
  int rc = a.unix_path.empty() ? nbd_connect_tcp(h, a.host.c_str(), a.port.c_str()) : nbd_connect_unix(h, a.unix_path.c_str());
  if (rc < 0) {
    int err = nbd_get_errno();
    if (err == 0) err = EIO;
    // QEMU's wording for a server that cannot be reached; libnbd's own text for the rest.
    if (err == ENOENT || err == ECONNREFUSED || err == EACCES || err == ENOTSOCK)
      return fail(Status(Code::kIo, fmt::format("Failed to connect to '{}': {}", a.display, std::strerror(err)), err));
    const char* msg = nbd_get_error();
    return fail(Status(Code::kIo, msg ? msg : std::strerror(err), err));
  }
  int64_t size = nbd_get_size(h);
  if (size < 0) return fail(nbd_status("cannot get the NBD export size"));
  const bool read_only = opts.read_only || nbd_is_read_only(h) == 1;
  if (!opts.read_only && nbd_is_read_only(h) == 1)
    return fail(io_error(EACCES, "Block node is read-only"));
  return std::unique_ptr<BlockFile>(std::make_unique<NbdFile>(h, a.canonical(),
                                                              static_cast<uint64_t>(size), read_only));
}

#endif  // KEEL_HAVE_LIBNBD

}  // namespace keel
