// NBD protocol constants (NetworkBlockDevice/nbd doc/proto.md): magics, option and reply
// codes, flags, commands and the spec's error numbers. Everything on the wire is big endian.
#pragma once

#include <cstdint>

#include "keel/limits.h"

namespace keel::nbd {

// Handshake.
inline constexpr uint64_t kNbdMagic = 0x4e42444d41474943ull;      // "NBDMAGIC"
inline constexpr uint64_t kOptMagic = 0x49484156454F5054ull;      // "IHAVEOPT"
inline constexpr uint64_t kOptReplyMagic = 0x0003e889045565a9ull;
inline constexpr uint16_t kFlagFixedNewstyle = 1u << 0;           // handshake flags
inline constexpr uint16_t kFlagNoZeroes = 1u << 1;
inline constexpr uint32_t kClientFlagFixedNewstyle = 1u << 0;     // client flags
inline constexpr uint32_t kClientFlagNoZeroes = 1u << 1;
inline constexpr uint32_t kKnownClientFlags = kClientFlagFixedNewstyle | kClientFlagNoZeroes;

// Options.
inline constexpr uint32_t kOptExportName = 1;
inline constexpr uint32_t kOptAbort = 2;
inline constexpr uint32_t kOptList = 3;
inline constexpr uint32_t kOptStartTls = 5;
inline constexpr uint32_t kOptInfo = 6;
inline constexpr uint32_t kOptGo = 7;
inline constexpr uint32_t kOptStructuredReply = 8;
inline constexpr uint32_t kOptListMetaContext = 9;
inline constexpr uint32_t kOptSetMetaContext = 10;

// Option replies. Errors have bit 31 set.
inline constexpr uint32_t kRepAck = 1;
inline constexpr uint32_t kRepServer = 2;
inline constexpr uint32_t kRepInfo = 3;
inline constexpr uint32_t kRepMetaContext = 4;
inline constexpr uint32_t kRepErrBit = 1u << 31;
inline constexpr uint32_t kRepErrUnsup = kRepErrBit | 1;
inline constexpr uint32_t kRepErrPolicy = kRepErrBit | 2;
inline constexpr uint32_t kRepErrInvalid = kRepErrBit | 3;
inline constexpr uint32_t kRepErrPlatform = kRepErrBit | 4;
inline constexpr uint32_t kRepErrTlsReqd = kRepErrBit | 5;
inline constexpr uint32_t kRepErrUnknown = kRepErrBit | 6;
inline constexpr uint32_t kRepErrShutdown = kRepErrBit | 7;
inline constexpr uint32_t kRepErrBlockSizeReqd = kRepErrBit | 8;
inline constexpr uint32_t kRepErrTooBig = kRepErrBit | 9;

// NBD_OPT_INFO / NBD_OPT_GO information types.
inline constexpr uint16_t kInfoExport = 0;
inline constexpr uint16_t kInfoName = 1;
inline constexpr uint16_t kInfoDescription = 2;
inline constexpr uint16_t kInfoBlockSize = 3;

// Transmission flags.
inline constexpr uint16_t kEflagHasFlags = 1u << 0;
inline constexpr uint16_t kEflagReadOnly = 1u << 1;
inline constexpr uint16_t kEflagSendFlush = 1u << 2;
inline constexpr uint16_t kEflagSendFua = 1u << 3;
inline constexpr uint16_t kEflagRotational = 1u << 4;
inline constexpr uint16_t kEflagSendTrim = 1u << 5;
inline constexpr uint16_t kEflagSendWriteZeroes = 1u << 6;
inline constexpr uint16_t kEflagSendDf = 1u << 7;
inline constexpr uint16_t kEflagCanMultiConn = 1u << 8;
inline constexpr uint16_t kEflagSendCache = 1u << 10;
inline constexpr uint16_t kEflagSendFastZero = 1u << 11;

// Transmission phase.
inline constexpr uint32_t kRequestMagic = 0x25609513;
inline constexpr uint32_t kSimpleReplyMagic = 0x67446698;
inline constexpr uint32_t kStructuredReplyMagic = 0x668e33ef;
inline constexpr size_t kRequestHeaderBytes = 28;
inline constexpr size_t kSimpleReplyHeaderBytes = 16;
inline constexpr size_t kChunkHeaderBytes = 20;

// Command flags.
inline constexpr uint16_t kCmdFlagFua = 1u << 0;
inline constexpr uint16_t kCmdFlagNoHole = 1u << 1;
inline constexpr uint16_t kCmdFlagDf = 1u << 2;
inline constexpr uint16_t kCmdFlagReqOne = 1u << 3;
inline constexpr uint16_t kCmdFlagFastZero = 1u << 4;

// Commands.
inline constexpr uint16_t kCmdRead = 0;
inline constexpr uint16_t kCmdWrite = 1;
inline constexpr uint16_t kCmdDisc = 2;
inline constexpr uint16_t kCmdFlush = 3;
inline constexpr uint16_t kCmdTrim = 4;
inline constexpr uint16_t kCmdCache = 5;
inline constexpr uint16_t kCmdWriteZeroes = 6;
inline constexpr uint16_t kCmdBlockStatus = 7;

// Structured reply chunks.
inline constexpr uint16_t kReplyFlagDone = 1u << 0;
inline constexpr uint16_t kChunkNone = 0;
inline constexpr uint16_t kChunkOffsetData = 1;
inline constexpr uint16_t kChunkOffsetHole = 2;
inline constexpr uint16_t kChunkBlockStatus = 5;
inline constexpr uint16_t kChunkError = 0x8001;
inline constexpr uint16_t kChunkErrorOffset = 0x8002;

// base:allocation extent flags.
inline constexpr uint32_t kStateHole = 1u << 0;
inline constexpr uint32_t kStateZero = 1u << 1;

// Meta contexts we serve, with qemu's context ids (nbd/server.c NBD_META_ID_*; see meta_context.h).
inline constexpr const char* kMetaBaseAllocation = "base:allocation";
inline constexpr const char* kMetaAllocationDepth = "qemu:allocation-depth";
inline constexpr const char* kMetaDirtyBitmapPrefix = "qemu:dirty-bitmap:";
inline constexpr uint32_t kMetaIdBaseAllocation = 0;
inline constexpr uint32_t kMetaIdAllocationDepth = 1;
inline constexpr uint32_t kMetaIdDirtyBitmap = 2;  // + the bitmap's index
inline constexpr uint32_t kStateDirty = 1u << 0;   // qemu:dirty-bitmap extent flag

// The spec's error values (these happen to be Linux errno numbers, but are fixed by the spec).
inline constexpr uint32_t kErrPerm = 1;
inline constexpr uint32_t kErrIo = 5;
inline constexpr uint32_t kErrNoMem = 12;
inline constexpr uint32_t kErrInval = 22;
inline constexpr uint32_t kErrNoSpc = 28;
inline constexpr uint32_t kErrOverflow = 75;
inline constexpr uint32_t kErrNotSup = 95;
inline constexpr uint32_t kErrShutdown = 108;

// Block sizes we advertise (NBD_INFO_BLOCK_SIZE), as qemu-nbd does: the engine does
// read-modify-write for unaligned requests.
inline constexpr uint32_t kMinBlockSize = 1;
inline constexpr uint32_t kPreferredBlockSize = 4096;
inline constexpr uint32_t kMaxBlockSize = static_cast<uint32_t>(limits::kMaxRequestBytes);

// Bounds of ours that limits.h does not (yet) carry.
// Bytes of request payload and read buffers one connection may hold at once; with at most
// kMaxRequestBytes per request this still admits two maximal requests in flight.
inline constexpr uint64_t kMaxInFlightBytesPerConnection = 2 * limits::kMaxRequestBytes;
// Most chunks a structured READ reply is split into; past it the rest is sent as one data chunk.
inline constexpr uint32_t kMaxReadChunks = 1024;
// Most extents in one BLOCK_STATUS reply (a 512 KiB payload).
inline constexpr uint32_t kMaxBlockStatusExtents = 65536;
// Most bytes of one error message we put on the wire.
inline constexpr uint32_t kMaxErrorMessage = 4096;

static_assert(kMaxInFlightBytesPerConnection >= limits::kMaxRequestBytes);
static_assert(limits::kMaxNbdExportName < limits::kMaxNbdOptionBytes);
static_assert(limits::kMaxNbdInFlight >= 32, "clients such as fio pipeline 32 requests");

}  // namespace keel::nbd
