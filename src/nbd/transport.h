// The byte stream under one NBD connection: plain (the socket itself) or TLS (GnuTLS over the
// socket, after STARTTLS). The connection reads and writes only through a Transport, so the
// switch to TLS in the middle of the handshake is one pointer swap.
//
// Threads: one thread may read while another writes (GnuTLS allows one sender and one receiver
// at a time); two readers or two writers at once are not allowed.
#pragma once

#include <sys/uio.h>

#include <memory>
#include <string>
#include <vector>

#include "keel/status.h"
#include "nbd/socket.h"

namespace keel::nbd {

class Transport {
 public:
  virtual ~Transport() = default;
  virtual ReadResult read_exact(void* buf, size_t n, Deadline deadline = std::nullopt) = 0;
  virtual ReadResult skip_bytes(uint64_t n, Deadline deadline = std::nullopt);
  virtual bool write_all(const void* buf, size_t n) = 0;
  virtual bool writev_all(std::vector<iovec> iov) = 0;
};

// The socket as it is (does not own fd).
std::unique_ptr<Transport> plain_transport(int fd);

// Server TLS credentials, as QEMU's tls-creds-x509 / tls-creds-psk objects (endpoint=server):
//   x509: DIR/server-cert.pem, DIR/server-key.pem, and with verify_peer (QEMU's default)
//         DIR/ca-cert.pem to check the client's certificate against;
//   psk:  DIR/keys.psk, lines "username:hexkey".
struct TlsConfig {
  enum class Kind { kX509, kPsk } kind = Kind::kX509;
  std::string dir;
  bool verify_peer = true;
  // --tls-authz with authz-simple: the one client identity allowed (x509: the certificate's
  // distinguished name as GnuTLS prints it, e.g. "C=GB,O=Keel,CN=client"; PSK: the username).
  // Empty: every client that completes the handshake.
  std::string authz_identity;
};

class TlsCredentials {
 public:
  static Result<std::shared_ptr<const TlsCredentials>> load(const TlsConfig& cfg);
  ~TlsCredentials();
  const TlsConfig& config() const { return cfg_; }
  void* native() const { return cred_; }  // gnutls_certificate_credentials_t / psk_server

 private:
  TlsConfig cfg_;
  void* cred_ = nullptr;
};

// Runs the server side of the TLS handshake on fd (after STARTTLS was acknowledged) and returns
// the TLS transport; an error says why the client was refused (bad certificate, wrong PSK...).
Result<std::unique_ptr<Transport>> tls_handshake(int fd, std::shared_ptr<const TlsCredentials> creds,
                                                 Deadline deadline);

}  // namespace keel::nbd
