// Plain and TLS transports for NBD connections (see transport.h).
#include "nbd/transport.h"

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

namespace keel::nbd {

ReadResult Transport::skip_bytes(uint64_t n, Deadline deadline) {
  uint8_t buf[4096];
  bool first = true;
  while (n > 0) {
    size_t k = static_cast<size_t>(std::min<uint64_t>(n, sizeof buf));
    ReadResult r = read_exact(buf, k, deadline);
    if (r != ReadResult::kOk) return (r == ReadResult::kEof && !first) ? ReadResult::kClosed : r;
    n -= k;
    first = false;
  }
  return ReadResult::kOk;
}

namespace {

class PlainTransport : public Transport {
 public:
  explicit PlainTransport(int fd) : fd_(fd) {}
  ReadResult read_exact(void* buf, size_t n, Deadline d) override { return nbd::read_exact(fd_, buf, n, d); }
  ReadResult skip_bytes(uint64_t n, Deadline d) override { return nbd::skip_bytes(fd_, n, d); }
  bool write_all(const void* buf, size_t n) override { return nbd::write_all(fd_, buf, n); }
  bool writev_all(std::vector<iovec> iov) override { return nbd::writev_all(fd_, std::move(iov)); }

 private:
  int fd_;
};

// Waits until fd is readable or the deadline passes.
bool wait_readable(int fd, Deadline deadline) {
  for (;;) {
    int timeout = -1;
    if (deadline) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(*deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      timeout = static_cast<int>(std::min<int64_t>(left.count(), 1 << 30));
    }
    pollfd p{fd, POLLIN, 0};
    int r = ::poll(&p, 1, timeout);
    if (r > 0) return true;
    if (r == 0) return false;
    if (errno != EINTR) return true;  // let the read report the error
  }
}

ssize_t push_nosignal(gnutls_transport_ptr_t ptr, const void* data, size_t n) {
  int fd = static_cast<int>(reinterpret_cast<intptr_t>(ptr));
  return ::send(fd, data, n, MSG_NOSIGNAL);
}

class TlsTransport : public Transport {
 public:
  TlsTransport(int fd, gnutls_session_t s, std::shared_ptr<const TlsCredentials> c)
      : fd_(fd), s_(s), creds_(std::move(c)) {}
  ~TlsTransport() override { gnutls_deinit(s_); }

  ReadResult read_exact(void* buf, size_t n, Deadline deadline) override {
    auto* p = static_cast<uint8_t*>(buf);
    size_t got = 0;
    while (got < n) {
      if (gnutls_record_check_pending(s_) == 0 && deadline && !wait_readable(fd_, deadline))
        return ReadResult::kTimeout;
      ssize_t r = gnutls_record_recv(s_, p + got, n - got);
      if (r == GNUTLS_E_INTERRUPTED || r == GNUTLS_E_AGAIN) continue;
      if (r <= 0) return got == 0 && r == 0 ? ReadResult::kEof : ReadResult::kClosed;
      got += static_cast<size_t>(r);
    }
    return ReadResult::kOk;
  }
  bool write_all(const void* buf, size_t n) override {
    const auto* p = static_cast<const uint8_t*>(buf);
    while (n > 0) {
      ssize_t r = gnutls_record_send(s_, p, n);
      if (r == GNUTLS_E_INTERRUPTED || r == GNUTLS_E_AGAIN) continue;
      if (r < 0) return false;
      p += r;
      n -= static_cast<size_t>(r);
    }
    return true;
  }
  bool writev_all(std::vector<iovec> iov) override {
    // Corked: the pieces of one reply go out in as few records as possible.
    gnutls_record_cork(s_);
    for (const auto& v : iov) {
      if (v.iov_len == 0) continue;
      ssize_t r = gnutls_record_send(s_, v.iov_base, v.iov_len);
      if (r < 0 && r != GNUTLS_E_AGAIN && r != GNUTLS_E_INTERRUPTED) return false;
    }
    for (;;) {
      int r = gnutls_record_uncork(s_, GNUTLS_RECORD_WAIT);
      if (r >= 0) return true;
      if (r != GNUTLS_E_AGAIN && r != GNUTLS_E_INTERRUPTED) return false;
    }
  }

 private:
  int fd_;
  gnutls_session_t s_;
  std::shared_ptr<const TlsCredentials> creds_;  // outlives the session
};

Status tls_error(const std::string& what, int err) {
  return Status(Code::kIo, fmt::format("{}: {}", what, gnutls_strerror(err)), EIO);
}

}  // namespace

std::unique_ptr<Transport> plain_transport(int fd) { return std::make_unique<PlainTransport>(fd); }

Result<std::shared_ptr<const TlsCredentials>> TlsCredentials::load(const TlsConfig& cfg) {
  auto c = std::make_shared<TlsCredentials>();
  c->cfg_ = cfg;
  namespace fs = std::filesystem;
  auto need = [&](const char* name) -> Result<std::string> {
    std::string p = (fs::path(cfg.dir) / name).string();
    if (!fs::exists(p)) return error(invalid(fmt::format("Unable to access credentials {}: No such file or directory", p)));
    return p;
  };
  if (cfg.kind == TlsConfig::Kind::kPsk) {
    KEEL_ASSIGN(std::string keys, need("keys.psk"));
    gnutls_psk_server_credentials_t psk = nullptr;
    int r = gnutls_psk_allocate_server_credentials(&psk);
    if (r < 0) return error(tls_error("Cannot allocate credentials", r));
    c->cred_ = psk;
    r = gnutls_psk_set_server_credentials_file(psk, keys.c_str());
    if (r < 0) return error(tls_error(fmt::format("Cannot set PSK server credentials from {}", keys), r));
    return std::shared_ptr<const TlsCredentials>(std::move(c));
  }
  KEEL_ASSIGN(std::string cert, need("server-cert.pem"));
  KEEL_ASSIGN(std::string key, need("server-key.pem"));
  gnutls_certificate_credentials_t x = nullptr;
  int r = gnutls_certificate_allocate_credentials(&x);
  if (r < 0) return error(tls_error("Cannot allocate credentials", r));
  c->cred_ = x;
  r = gnutls_certificate_set_x509_key_file(x, cert.c_str(), key.c_str(), GNUTLS_X509_FMT_PEM);
  if (r < 0) return error(tls_error(fmt::format("Cannot load certificate {} & key {}", cert, key), r));
  if (cfg.verify_peer) {
    KEEL_ASSIGN(std::string ca, need("ca-cert.pem"));
    r = gnutls_certificate_set_x509_trust_file(x, ca.c_str(), GNUTLS_X509_FMT_PEM);
    if (r < 0) return error(tls_error(fmt::format("Cannot load CA certificate {}", ca), r));
  }
  return std::shared_ptr<const TlsCredentials>(std::move(c));
}

TlsCredentials::~TlsCredentials() {
  if (!cred_) return;
  if (cfg_.kind == TlsConfig::Kind::kPsk) {
    gnutls_psk_free_server_credentials(static_cast<gnutls_psk_server_credentials_t>(cred_));
  } else {
    gnutls_certificate_free_credentials(static_cast<gnutls_certificate_credentials_t>(cred_));
  }
}

Result<std::unique_ptr<Transport>> tls_handshake(int fd, std::shared_ptr<const TlsCredentials> creds,
                                                 Deadline deadline) {
  gnutls_session_t s = nullptr;
  int r = gnutls_init(&s, GNUTLS_SERVER);
  if (r < 0) return error(tls_error("Cannot initialize TLS session", r));
  auto fail = [&](const std::string& what, int err) {
    gnutls_deinit(s);
    return error(tls_error(what, err));
  };
  const bool psk = creds->config().kind == TlsConfig::Kind::kPsk;
  // QEMU's priorities: NORMAL, plus the PSK key exchanges for PSK credentials.
  r = gnutls_priority_set_direct(s, psk ? "NORMAL:+ECDHE-PSK:+DHE-PSK:+PSK" : "NORMAL", nullptr);
  if (r < 0) return fail("Cannot set TLS priorities", r);
  r = gnutls_credentials_set(s, psk ? GNUTLS_CRD_PSK : GNUTLS_CRD_CERTIFICATE, creds->native());
  if (r < 0) return fail("Cannot set TLS credentials", r);
  if (!psk && creds->config().verify_peer) gnutls_certificate_server_set_request(s, GNUTLS_CERT_REQUIRE);
  gnutls_transport_set_int(s, fd);
  gnutls_transport_set_push_function(s, push_nosignal);
  gnutls_transport_set_ptr(s, reinterpret_cast<gnutls_transport_ptr_t>(static_cast<intptr_t>(fd)));
  if (deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(*deadline - std::chrono::steady_clock::now());
    gnutls_handshake_set_timeout(s, static_cast<unsigned>(std::max<int64_t>(left.count(), 1)));
  }
  do {
    r = gnutls_handshake(s);
  } while (r < 0 && gnutls_error_is_fatal(r) == 0);
  if (r < 0) return fail("TLS handshake failed", r);
  if (!psk && creds->config().verify_peer) {
    unsigned status = 0;
    r = gnutls_certificate_verify_peers2(s, &status);
    if (r < 0) return fail("Cannot verify the client certificate", r);
    if (status != 0) {
      gnutls_datum_t msg{};
      std::string why = "invalid";
      if (gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &msg, 0) == 0) {
        why.assign(reinterpret_cast<const char*>(msg.data), msg.size);
        gnutls_free(msg.data);
      }
      gnutls_deinit(s);
      return error(Status(Code::kIo, fmt::format("client certificate rejected: {}", why), EACCES));
    }
  }
  const std::string& allowed = creds->config().authz_identity;
  if (!allowed.empty()) {
    // qemu's check: the peer's DN (gnutls_x509_crt_get_dn) or PSK username must equal it.
    std::string who;
    if (psk) {
      const char* user = gnutls_psk_server_get_username(s);
      who = user ? user : "";
    } else {
      unsigned n = 0;
      const gnutls_datum_t* certs = gnutls_certificate_get_peers(s, &n);
      gnutls_x509_crt_t crt = nullptr;
      if (certs && n > 0 && gnutls_x509_crt_init(&crt) == 0) {
        if (gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER) == 0) {
          char dn[1024];
          size_t len = sizeof dn;
          if (gnutls_x509_crt_get_dn(crt, dn, &len) == 0) who.assign(dn, strnlen(dn, sizeof dn));
        }
        gnutls_x509_crt_deinit(crt);
      }
    }
    if (who != allowed) {
      gnutls_deinit(s);
      return error(Status(Code::kIo, fmt::format("TLS {} authz check for {} is denied", psk ? "PSK" : "x509", who), EACCES));
    }
  }
  return std::unique_ptr<Transport>(std::make_unique<TlsTransport>(fd, s, std::move(creds)));
}

}  // namespace keel::nbd
