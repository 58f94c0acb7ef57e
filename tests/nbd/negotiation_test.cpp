// Proves the option-haggling state machine on bytes: every supported option's replies and
// their order, the transmission flags qemu-nbd 7.2 advertises (0xced, read-only, multi-conn,
// DF only with structured replies), and the errors for unknown, malformed, oversized and
// out-of-order options.
#include <gtest/gtest.h>

#include <cstdlib>
#include <random>

#include "format/endian.h"
#include "nbd/negotiation.h"
#include "nbd/wire.h"

namespace keel::nbd {
namespace {

using Bytes = std::vector<uint8_t>;

struct Rep {
  uint32_t option;
  uint32_t type;
  Bytes data;
};

// Splits a byte stream of option replies.
std::vector<Rep> split(const Bytes& b) {
  std::vector<Rep> out;
  size_t i = 0;
  while (i + 20 <= b.size()) {
    EXPECT_EQ(format::get_be64(&b[i]), kOptReplyMagic);
    Rep r{format::get_be32(&b[i + 8]), format::get_be32(&b[i + 12]), {}};
    uint32_t len = format::get_be32(&b[i + 16]);
    r.data.assign(b.begin() + static_cast<ptrdiff_t>(i + 20),
                  b.begin() + static_cast<ptrdiff_t>(i + 20 + len));
    out.push_back(r);
    i += 20 + len;
  }
  EXPECT_EQ(i, b.size());
  return out;
}

ExportConfig cfg(bool ro = false, bool multi = false) {
  ExportConfig c;
  c.name = "";
  c.description = "demo disk";
  c.size = 1 << 20;
  c.read_only = ro;
  c.multi_conn = multi;
  return c;
}

// Finds the INFO_EXPORT item and returns its flags.
uint16_t export_flags_in(const std::vector<Rep>& reps) {
  for (const auto& r : reps)
    if (r.type == kRepInfo && r.data.size() == 12 && format::get_be16(r.data.data()) == kInfoExport)
      return format::get_be16(r.data.data() + 10);
  ADD_FAILURE() << "no INFO_EXPORT";
  return 0;
}

TEST(nbd_negotiation, FlagsMatchQemuNbd) {
  EXPECT_EQ(transmission_flags(cfg(), true), 0xced);
  EXPECT_EQ(transmission_flags(cfg(), false), 0xced & ~kEflagSendDf);
  EXPECT_EQ(transmission_flags(cfg(true), true),
            kEflagHasFlags | kEflagReadOnly | kEflagSendFlush | kEflagSendFua | kEflagSendDf |
                kEflagSendCache);
  EXPECT_EQ(transmission_flags(cfg(false, true), true), 0xced | kEflagCanMultiConn);
}

TEST(nbd_negotiation, ClientFlags) {
  Negotiator n(cfg());
  EXPECT_EQ(Negotiator::handshake_flags(), 3);
  EXPECT_TRUE(n.accept_client_flags(0));
  EXPECT_TRUE(n.accept_client_flags(3));
  EXPECT_FALSE(n.accept_client_flags(4));
  EXPECT_FALSE(n.accept_client_flags(0x80000001));
}

TEST(nbd_negotiation, GoRepliesInfoThenAckAndEntersTransmission) {
  Negotiator n(cfg());
  auto sr = n.handle(kOptStructuredReply, {});
  EXPECT_EQ(split(sr.reply).at(0).type, kRepAck);
  auto out = n.handle(kOptGo, encode_info_request({"", {kInfoName, kInfoDescription, 77}}));
  EXPECT_EQ(out.next, Negotiator::Next::kTransmission);
  auto reps = split(out.reply);
  ASSERT_EQ(reps.size(), 5u);
  EXPECT_EQ(format::get_be16(reps[0].data.data()), kInfoName);
  EXPECT_EQ(reps[0].data.size(), 2u);
  EXPECT_EQ(format::get_be16(reps[1].data.data()), kInfoDescription);
  EXPECT_EQ(std::string(reps[1].data.begin() + 2, reps[1].data.end()), "demo disk");
  ASSERT_EQ(reps[2].data.size(), 14u);
  EXPECT_EQ(format::get_be16(reps[2].data.data()), kInfoBlockSize);
  EXPECT_EQ(format::get_be32(reps[2].data.data() + 2), 1u);
  EXPECT_EQ(format::get_be32(reps[2].data.data() + 6), 4096u);
  EXPECT_EQ(format::get_be32(reps[2].data.data() + 10), 32u << 20);
  EXPECT_EQ(format::get_be64(reps[3].data.data() + 2), 1u << 20);
  EXPECT_EQ(export_flags_in(reps), 0xced);
  EXPECT_EQ(reps[4].type, kRepAck);
  for (const auto& r : reps) EXPECT_EQ(r.option, kOptGo);
  EXPECT_EQ(n.session().eflags, 0xced);
  EXPECT_TRUE(n.session().structured_replies);
}

TEST(nbd_negotiation, InfoStaysInHagglingAndClearsDfWithoutStructuredReplies) {
  Negotiator n(cfg());
  auto out = n.handle(kOptInfo, encode_info_request({"", {}}));
  EXPECT_EQ(out.next, Negotiator::Next::kContinue);
  auto reps = split(out.reply);
  EXPECT_EQ(export_flags_in(reps), 0xced & ~kEflagSendDf);
  EXPECT_EQ(reps.back().type, kRepAck);
}

TEST(nbd_negotiation, UnknownExportIsErrUnknown) {
  Negotiator n(cfg());
  auto out = n.handle(kOptGo, encode_info_request({"nope", {}}));
  EXPECT_EQ(out.next, Negotiator::Next::kContinue);
  auto reps = split(out.reply);
  ASSERT_EQ(reps.size(), 1u);
  EXPECT_EQ(reps[0].type, kRepErrUnknown);
  EXPECT_EQ(std::string(reps[0].data.begin(), reps[0].data.end()), "export 'nope' not present");
}

TEST(nbd_negotiation, MalformedGoIsErrInvalid) {
  Negotiator n(cfg());
  auto out = n.handle(kOptGo, Bytes{0, 0, 0, 9});
  EXPECT_EQ(split(out.reply).at(0).type, kRepErrInvalid);
  EXPECT_FALSE(out.log.empty());
}

TEST(nbd_negotiation, ExportNameOldStyle) {
  Negotiator n(cfg());
  ASSERT_TRUE(n.accept_client_flags(kClientFlagFixedNewstyle));
  auto out = n.handle(kOptExportName, {});
  EXPECT_EQ(out.next, Negotiator::Next::kTransmission);
  EXPECT_EQ(out.reply.size(), 134u);  // zeroes: the client did not ask for NO_ZEROES
  EXPECT_EQ(format::get_be16(out.reply.data() + 8), 0xced & ~kEflagSendDf);

  Negotiator m(cfg());
  ASSERT_TRUE(m.accept_client_flags(3));
  EXPECT_EQ(m.handle(kOptExportName, {}).reply.size(), 10u);

  Negotiator bad(cfg());
  Bytes name = {'x'};
  auto b = bad.handle(kOptExportName, name);
  EXPECT_EQ(b.next, Negotiator::Next::kClose);
  EXPECT_TRUE(b.reply.empty());  // EXPORT_NAME cannot be answered with an error
}

TEST(nbd_negotiation, AbortAcksAndCloses) {
  Negotiator n(cfg());
  auto out = n.handle(kOptAbort, {});
  EXPECT_EQ(out.next, Negotiator::Next::kClose);
  EXPECT_EQ(split(out.reply).at(0).type, kRepAck);
}

TEST(nbd_negotiation, ListNamesTheExport) {
  Negotiator n(cfg());
  auto reps = split(n.handle(kOptList, {}).reply);
  ASSERT_EQ(reps.size(), 2u);
  EXPECT_EQ(reps[0].type, kRepServer);
  EXPECT_EQ(format::get_be32(reps[0].data.data()), 0u);
  EXPECT_EQ(std::string(reps[0].data.begin() + 4, reps[0].data.end()), "demo disk");
  EXPECT_EQ(reps[1].type, kRepAck);
  Bytes junk = {1};
  EXPECT_EQ(split(n.handle(kOptList, junk).reply).at(0).type, kRepErrInvalid);
}

TEST(nbd_negotiation, UnknownOptionsAreUnsupportedAndHagglingGoesOn) {
  Negotiator n(cfg());
  for (uint32_t opt : {0u, 4u, 11u, 12u, 0xffffffffu}) {
    auto out = n.handle(opt, Bytes{1, 2, 3});
    EXPECT_EQ(out.next, Negotiator::Next::kContinue);
    auto reps = split(out.reply);
    ASSERT_EQ(reps.size(), 1u);
    EXPECT_EQ(reps[0].option, opt);
    EXPECT_EQ(reps[0].type, kRepErrUnsup);
  }
  EXPECT_EQ(split(n.handle(kOptStartTls, {}).reply).at(0).type, kRepErrPolicy);
  EXPECT_EQ(n.handle(kOptGo, encode_info_request({"", {}})).next, Negotiator::Next::kTransmission);
}

TEST(nbd_negotiation, StructuredReplyTwiceIsInvalid) {
  Negotiator n(cfg());
  EXPECT_EQ(split(n.handle(kOptStructuredReply, {}).reply).at(0).type, kRepAck);
  EXPECT_EQ(split(n.handle(kOptStructuredReply, {}).reply).at(0).type, kRepErrInvalid);
  Negotiator m(cfg());
  Bytes junk = {0};
  EXPECT_EQ(split(m.handle(kOptStructuredReply, junk).reply).at(0).type, kRepErrInvalid);
}

TEST(nbd_negotiation, MetaContextNeedsStructuredReplies) {
  Negotiator n(cfg());
  auto out = n.handle(kOptSetMetaContext, encode_meta_context_request({"", {"base:allocation"}}));
  EXPECT_EQ(split(out.reply).at(0).type, kRepErrInvalid);
  EXPECT_FALSE(n.session().meta.base_allocation);
}

TEST(nbd_negotiation, SetAndListMetaContext) {
  Negotiator n(cfg());
  (void)n.handle(kOptStructuredReply, {});
  // LIST with no query lists everything; "base:" is a wildcard for LIST.
  for (auto queries : {std::vector<std::string>{}, std::vector<std::string>{"base:"}}) {
    auto reps = split(n.handle(kOptListMetaContext, encode_meta_context_request({"", queries})).reply);
    ASSERT_EQ(reps.size(), 2u);
    EXPECT_EQ(reps[0].type, kRepMetaContext);
    EXPECT_EQ(std::string(reps[0].data.begin() + 4, reps[0].data.end()), "base:allocation");
    EXPECT_EQ(reps[1].type, kRepAck);
  }
  EXPECT_FALSE(n.session().meta.base_allocation);  // LIST selects nothing
  // Unknown namespaces are ignored.
  auto none = split(n.handle(kOptSetMetaContext,
                             encode_meta_context_request({"", {"qemu:dirty-bitmap:x"}})).reply);
  ASSERT_EQ(none.size(), 1u);
  EXPECT_EQ(none[0].type, kRepAck);
  auto reps = split(n.handle(kOptSetMetaContext,
                             encode_meta_context_request({"", {"base:allocation", "base:allocation"}}))
                        .reply);
  ASSERT_EQ(reps.size(), 2u);
  EXPECT_EQ(format::get_be32(reps[0].data.data()), kMetaIdBaseAllocation);
  EXPECT_TRUE(n.session().meta.base_allocation);
  // A later SET replaces the selection.
  (void)n.handle(kOptSetMetaContext, encode_meta_context_request({"", {}}));
  EXPECT_FALSE(n.session().meta.base_allocation);
  // Wrong export.
  auto bad = split(n.handle(kOptSetMetaContext,
                            encode_meta_context_request({"other", {"base:allocation"}})).reply);
  EXPECT_EQ(bad.at(0).type, kRepErrUnknown);
}

TEST(nbd_negotiation, OversizedOption) {
  Negotiator n(cfg());
  auto out = n.handle_oversized(kOptGo, 1u << 30);
  EXPECT_EQ(out.next, Negotiator::Next::kContinue);
  EXPECT_EQ(split(out.reply).at(0).type, kRepErrTooBig);
  EXPECT_EQ(n.handle_oversized(kOptExportName, 1u << 20).next, Negotiator::Next::kClose);
}

TEST(nbd_negotiation, ShuttingDown) {
  Negotiator n(cfg());
  n.set_shutting_down();
  EXPECT_EQ(split(n.handle(kOptGo, encode_info_request({"", {}})).reply).at(0).type,
            kRepErrShutdown);
  EXPECT_EQ(n.handle(kOptAbort, {}).next, Negotiator::Next::kClose);
}

// Random option numbers and payloads (mostly near-valid ones) never crash the state machine and
// always get a well-formed reply stream whose replies all name the option asked. Seed from
// KEEL_SEED, printed.
TEST(nbd_negotiation, RandomOptionsGetWellFormedReplies) {
  const char* env = std::getenv("KEEL_SEED");
  uint64_t seed = env ? std::strtoull(env, nullptr, 10) : std::random_device{}();
  std::printf("seed %llu (replay with KEEL_SEED)\n", static_cast<unsigned long long>(seed));
  std::mt19937_64 rng(seed);
  for (int round = 0; round < 2000; ++round) {
    Negotiator n(cfg(rng() % 2, rng() % 2));
    for (int step = 0; step < 8; ++step) {
      uint32_t opt = static_cast<uint32_t>(rng() % 13);
      Bytes data;
      switch (rng() % 4) {
        case 0: data = encode_info_request({rng() % 4 ? "" : "x", {uint16_t(rng() % 5)}}); break;
        case 1: data = encode_meta_context_request({"", {rng() % 2 ? "base:" : "base:allocation"}}); break;
        case 2: break;
        default:
          data.resize(rng() % 40);
          for (auto& b : data) b = static_cast<uint8_t>(rng() % 3 ? 0 : rng());
      }
      if (!data.empty() && rng() % 5 == 0) data.resize(rng() % data.size());  // truncate
      auto out = n.handle(opt, data);
      if (opt == kOptExportName) {
        if (out.next == Negotiator::Next::kTransmission) {
          EXPECT_GE(out.reply.size(), 10u);
        }
        break;
      }
      auto reps = split(out.reply);
      ASSERT_FALSE(reps.empty()) << "seed " << seed;
      for (const auto& r : reps) EXPECT_EQ(r.option, opt) << "seed " << seed;
      EXPECT_TRUE(reps.back().type == kRepAck || (reps.back().type & kRepErrBit)) << "seed " << seed;
      if (out.next != Negotiator::Next::kContinue) break;
    }
  }
}

}  // namespace
}  // namespace keel::nbd

namespace keel::nbd {
namespace {

// TLS required (--tls-creds), as qemu-nbd 7.2: nothing but STARTTLS before the handshake.
TEST(nbd_negotiation, TlsRequiredRefusesEverythingBeforeStartTls) {
  ExportConfig c;
  c.size = 1 << 20;
  c.tls_required = true;
  for (uint32_t opt : {kOptList, kOptInfo, kOptGo, kOptStructuredReply, kOptListMetaContext,
                       kOptSetMetaContext, 42u}) {
    Negotiator n(c);
    auto out = n.handle(opt, encode_info_request({"", {}}));
    ASSERT_EQ(split(out.reply).size(), 1u);
    EXPECT_EQ(split(out.reply).at(0).type, kRepErrTlsReqd) << opt;
    EXPECT_EQ(out.next, Negotiator::Next::kContinue);
    EXPECT_EQ(split(n.handle_oversized(opt, 1u << 20).reply).at(0).type, kRepErrTlsReqd);
  }
  Negotiator n(c);
  // EXPORT_NAME cannot carry an error: the connection closes without a byte.
  auto en = n.handle(kOptExportName, {});
  EXPECT_TRUE(en.reply.empty());
  EXPECT_EQ(en.next, Negotiator::Next::kClose);
  // ABORT gets TLS_REQD, then the connection closes.
  auto ab = n.handle(kOptAbort, {});
  EXPECT_EQ(split(ab.reply).at(0).type, kRepErrTlsReqd);
  EXPECT_EQ(ab.next, Negotiator::Next::kClose);
  // STARTTLS with data is fatal.
  Bytes junk = {1, 2};
  auto bad = n.handle(kOptStartTls, junk);
  EXPECT_EQ(split(bad.reply).at(0).type, kRepErrInvalid);
  EXPECT_EQ(bad.next, Negotiator::Next::kClose);
  EXPECT_EQ(n.handle_oversized(kOptStartTls, 1u << 20).next, Negotiator::Next::kClose);
}

TEST(nbd_negotiation, StartTlsThenEverythingWorks) {
  ExportConfig c;
  c.size = 1 << 20;
  c.tls_required = true;
  Negotiator n(c);
  auto st = n.handle(kOptStartTls, {});
  ASSERT_EQ(split(st.reply).size(), 1u);
  EXPECT_EQ(split(st.reply).at(0).type, kRepAck);
  EXPECT_EQ(st.next, Negotiator::Next::kStartTls);
  n.tls_started();
  EXPECT_EQ(split(n.handle(kOptStartTls, {}).reply).at(0).type, kRepErrInvalid);  // already on
  EXPECT_EQ(split(n.handle(kOptStructuredReply, {}).reply).at(0).type, kRepAck);
  auto go = n.handle(kOptGo, encode_info_request({"", {}}));
  EXPECT_EQ(go.next, Negotiator::Next::kTransmission);
}

}  // namespace
}  // namespace keel::nbd
