// Fuzz harnesses: each takes one input as untrusted bytes and drives a part of libkeel over it
// entirely in memory (no file, no network). libFuzzer runs them (fuzz_main.cpp, clang, ASan and
// UBSan); regress_test.cpp replays the saved findings in tests/fuzz/regress/ through them in the
// normal build. A harness must never crash or hang on any input; it returns the first error the
// library reported (ok if none) so a test can check that the error is one clean line.
#pragma once

#include <cstdint>
#include <span>

#include "keel/status.h"

namespace keel::fuzz {

// Image harnesses: the input is a qcow2 file. The file system they open it in also holds
// "base.raw" (64 KiB of pattern), so an image may name it as its backing file.
//
// Opens the image read-only, reads info(), then opens its first snapshots by id.
Status open_info(std::span<const uint8_t> image);
// keel check on the bytes, then check -r all (repair) on a copy, then check of the result.
Status check(std::span<const uint8_t> image);
// Opens read-only and walks the whole disk with block_status, reading each extent (bounded).
Status read(std::span<const uint8_t> image);
// The last kWriteOpsBytes of the input are a script of guest operations (write, write_zeroes,
// discard, flush, compressed write, read); the bytes before it are the image, opened read-write.
// Runs the script, closes, then checks the result.
inline constexpr size_t kWriteOpsBytes = 32;
Status write(std::span<const uint8_t> input);
// The input is what an NBD client sends (handshake, options, requests, payloads), fed to a
// server connection over a socketpair; the export is a fresh 4 MiB qcow2 image in memory.
Status nbd(std::span<const uint8_t> client_bytes);
// The input is the LUKS region of an encrypted qcow2 image (header and key material): decoded
// and validated, then unlocked with a fixed passphrase when its PBKDF2 work is small.
Status luks_header(std::span<const uint8_t> region);

}  // namespace keel::fuzz
