// Transmission-phase commands: validating a request header against the negotiated session, and
// running a valid request on the keel::Image to produce its reply (simple or structured).
//
// check_request() runs on the reader thread before any payload is read, so a bad request is
// answered without buffering it. execute() runs on a worker thread; it only uses the public
// Image API, which is safe to call from many threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "keel/image.h"
#include "keel/status.h"
#include "nbd/export_bitmaps.h"
#include "nbd/flush_generation.h"
#include "nbd/negotiation.h"
#include "nbd/reply.h"
#include "nbd/wire.h"

namespace keel::nbd {

enum class DiscardMode { kIgnore, kUnmap };       // qemu --discard
enum class DetectZeroes { kOff, kOn, kUnmap };    // qemu --detect-zeroes

// How the export serves requests, fixed when the server starts.
struct ExportPolicy {
  DiscardMode discard = DiscardMode::kIgnore;
  DetectZeroes detect_zeroes = DetectZeroes::kOff;
  // -B: the bitmaps behind the qemu:dirty-bitmap contexts (ExportConfig::meta.bitmaps names
  // them in the same order); null when none are served.
  std::shared_ptr<const ExportBitmaps> bitmaps;
  // Shared by every connection of the export: flushes a finished flush covered are answered
  // at once (flush_generation.h). Null: every flush reaches the image.
  std::shared_ptr<FlushGeneration> flushes;
};

// Everything a command needs besides the image: fixed once the handshake is over.
struct CommandContext {
  Session session;
  uint64_t export_size = 0;
  bool read_only = false;
  ExportPolicy policy;
};

struct RequestError {
  uint32_t error = 0;   // 0: the request is valid
  std::string message;
  explicit operator bool() const { return error != 0; }
};

// Validates flags, type, length and range of a request (not DISC). Returns error 0 if valid.
RequestError check_request(const CommandContext& ctx, const RequestHeader& h);

// The reply carrying `error` for request h: an ERROR chunk with structured replies (mandatory
// for READ), else a simple reply.
Reply error_reply(const CommandContext& ctx, const RequestHeader& h, uint32_t error,
                  std::string_view message);

// Runs a request that passed check_request. `payload` is the WRITE data (empty otherwise).
Reply execute(Image& image, const CommandContext& ctx, const RequestHeader& h,
              std::vector<uint8_t> payload);

// Maps an engine Status to one of the spec's error values.
uint32_t nbd_error(const Status& s);

// Bytes of buffer a request needs while in flight (payload or read data).
uint64_t request_buffer_bytes(const RequestHeader& h);

}  // namespace keel::nbd
