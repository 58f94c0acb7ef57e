// The fixed-newstyle option haggling as a pure state machine: options in, reply bytes and the
// next step out. The connection feeds it what it reads from the socket; tests feed it bytes.
//
// Supported: EXPORT_NAME, ABORT, LIST, INFO, GO (INFO_EXPORT, NAME, DESCRIPTION, BLOCK_SIZE),
// STRUCTURED_REPLY, LIST_META_CONTEXT and SET_META_CONTEXT with base:allocation and, when the
// export offers them, qemu:allocation-depth and qemu:dirty-bitmap:NAME (meta_context.h). Anything
// else gets ERR_UNSUP and haggling goes on.
//
// TLS (ExportConfig::tls_required), as qemu-nbd 7.2 with --tls-creds: until STARTTLS succeeds,
// EXPORT_NAME closes the connection, STARTTLS with data gets ERR_INVALID and closes it, and
// every other option (ABORT too, which then closes) gets ERR_TLS_REQD, so no export data or
// name leaves in clear. STARTTLS answers ACK with Next::kStartTls: the connection runs the TLS
// handshake and calls tls_started(), and haggling restarts inside TLS (a second STARTTLS gets
// ERR_INVALID). Without TLS configured STARTTLS gets ERR_POLICY.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "nbd/meta_context.h"
#include "nbd/protocol.h"

namespace keel::nbd {

// What is exported, as the handshake describes it.
struct ExportConfig {
  std::string name;         // "" is the default export
  std::string description;  // sent as INFO_DESCRIPTION when non-empty
  uint64_t size = 0;
  bool read_only = false;
  bool multi_conn = false;  // advertise CAN_MULTI_CONN (one shared image, -e N > 1)
  MetaContextConfig meta;   // contexts offered besides base:allocation (-A, -B)
  bool tls_required = false;  // --tls-creds: only STARTTLS (and ABORT) before TLS
};

// Transmission flags for an export; SEND_DF only when structured replies were negotiated.
uint16_t transmission_flags(const ExportConfig& cfg, bool structured_replies);

// What the transmission phase needs to know about the negotiation.
struct Session {
  bool structured_replies = false;
  MetaSelection meta;  // the meta contexts the last SET_META_CONTEXT selected
  uint16_t eflags = 0;
};

class Negotiator {
 public:
  // kStartTls: send the reply, then run the TLS handshake and call tls_started().
  enum class Next { kContinue, kClose, kTransmission, kStartTls };
  struct Outcome {
    std::vector<uint8_t> reply;  // bytes to send before acting on `next`
    Next next = Next::kContinue;
    std::string log;             // non-empty: worth a log line (errors, unusual requests)
  };

  explicit Negotiator(ExportConfig cfg) : cfg_(std::move(cfg)) {}

  static uint16_t handshake_flags() { return kFlagFixedNewstyle | kFlagNoZeroes; }
  // Checks the client flags; false means the connection must be dropped.
  bool accept_client_flags(uint32_t flags);

  // Handles one option whose data was read in full.
  Outcome handle(uint32_t option, std::span<const uint8_t> data);
  // Handles an option whose data was too long to read (the caller skipped the bytes).
  Outcome handle_oversized(uint32_t option, uint32_t length);
  // From now on options other than ABORT get ERR_SHUTDOWN.
  void set_shutting_down() { shutting_down_ = true; }
  // The TLS handshake after STARTTLS succeeded: every option is allowed from now on.
  void tls_started() { tls_active_ = true; }
  bool tls_active() const { return tls_active_; }

  const Session& session() const { return session_; }
  const ExportConfig& config() const { return cfg_; }

 private:
  Outcome export_name(std::span<const uint8_t> data);
  Outcome info_or_go(uint32_t option, std::span<const uint8_t> data);
  Outcome meta_context(uint32_t option, std::span<const uint8_t> data);
  Outcome error(uint32_t option, uint32_t type, std::string message);
  Outcome before_tls(uint32_t option, std::span<const uint8_t> data);
  Outcome start_tls(std::span<const uint8_t> data);

  ExportConfig cfg_;
  Session session_;
  bool no_zeroes_ = false;
  bool shutting_down_ = false;
  bool tls_active_ = false;
};

}  // namespace keel::nbd
