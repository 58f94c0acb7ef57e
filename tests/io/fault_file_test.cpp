// Proves FaultFile fails exactly the operations its blkdebug-like rules select: "any" rules from
// op N on, event-armed rules after the event, once vs forever, iotype and file filters, short writes.
#include <gtest/gtest.h>

#include "io/fault_file.h"
#include "io/memory_file.h"

namespace keel {
namespace {

std::vector<uint8_t> filled(size_t n, uint8_t v) { return std::vector<uint8_t>(n, v); }

TEST(FaultRule, ParsesAndDescribes) {
  auto r = parse_fault_rule("event=l2_update,iotype=write|sync,errno=ENOSPC,once=off,from_op=7,file=img");
  ASSERT_TRUE(r.has_value()) << r.error().message();
  EXPECT_EQ(r->event, Event::kL2Update);
  EXPECT_EQ(r->io_types, unsigned(kIoWrite | kIoSync));
  EXPECT_EQ(r->err, ENOSPC);
  EXPECT_FALSE(r->once);
  EXPECT_EQ(r->from_op, 7u);
  EXPECT_EQ(r->describe(), "event=l2_update,iotype=write|sync,errno=ENOSPC,once=off,from_op=7,file=img");
  EXPECT_TRUE(parse_fault_rule("errno=short")->short_write);
  EXPECT_EQ(parse_fault_rule("errno=EDQUOT")->err, EDQUOT);
  EXPECT_FALSE(parse_fault_rule("event=nope").has_value());
  EXPECT_FALSE(parse_fault_rule("iotype=bogus").has_value());
  EXPECT_FALSE(parse_fault_rule("errno").has_value());
  EXPECT_FALSE(parse_fault_rule("color=red").has_value());
}

TEST(FaultFile, FailsOpNOnceOrForever) {
  for (bool once : {true, false}) {
    MemoryFile mem("img");
    auto inj = std::make_shared<FaultInjector>();
    FaultRule r;
    r.from_op = 2;
    r.once = once;
    inj->add_rule(r);
    FaultFile f(mem.share(), inj);
    std::vector<uint8_t> b(512);
    EXPECT_TRUE(f.write_at(0, filled(512, 1)).is_ok());  // op 0
    EXPECT_TRUE(f.read_at(0, b).is_ok());                // op 1
    Status s = f.sync();                                 // op 2
    EXPECT_FALSE(s.is_ok());
    EXPECT_EQ(s.err(), EIO);
    EXPECT_EQ(f.read_at(0, b).is_ok(), once);  // op 3
    EXPECT_EQ(f.truncate(0).is_ok(), once);    // op 4
    EXPECT_EQ(inj->op_count(), 5u);
    EXPECT_EQ(inj->injected().size(), once ? 1u : 3u);
    EXPECT_EQ(inj->injected()[0].op_index, 2u);
    EXPECT_EQ(inj->injected()[0].io_type, unsigned(kIoSync));
  }
}

TEST(FaultFile, EventArmsRuleForMatchingIoType) {
  MemoryFile mem("img");
  auto inj = std::make_shared<FaultInjector>();
  inj->add_rule(*parse_fault_rule("event=l2_update,iotype=write,errno=ENOSPC"));
  FaultFile f(mem.share(), inj);
  EXPECT_TRUE(f.write_at(0, filled(512, 1)).is_ok());  // not armed yet
  inj->on_event(Event::kL1Update);                      // another event: still not armed
  EXPECT_TRUE(f.write_at(0, filled(512, 1)).is_ok());
  f.on_event(Event::kL2Update);  // the file forwards events to its injector
  EXPECT_TRUE(f.sync().is_ok());  // wrong iotype
  Status s = f.write_at(0, filled(512, 2));
  EXPECT_EQ(s.err(), ENOSPC);
  EXPECT_EQ(mem.bytes()[0], 1);  // nothing written
  EXPECT_TRUE(f.write_at(0, filled(512, 3)).is_ok());  // once: spent
  f.on_event(Event::kL2Update);                         // a spent rule does not re-arm
  EXPECT_TRUE(f.write_at(0, filled(512, 4)).is_ok());
  ASSERT_EQ(inj->injected().size(), 1u);
  EXPECT_EQ(inj->injected()[0].last_event, static_cast<int>(Event::kL2Update));
}

TEST(FaultFile, ShortWritePersistsFirstHalfAndFails) {
  MemoryFile mem("img", filled(4096, 0));
  auto inj = std::make_shared<FaultInjector>();
  inj->add_rule(*parse_fault_rule("errno=short"));
  FaultFile f(mem.share(), inj);
  Status s = f.write_at(0, filled(4096, 9));
  EXPECT_FALSE(s.is_ok());
  auto b = mem.bytes();
  EXPECT_EQ(b[2047], 9);
  EXPECT_EQ(b[2048], 0);
}

TEST(FaultFile, FileFilter) {
  MemoryFile a("top.qcow2"), b("base.raw");
  auto inj = std::make_shared<FaultInjector>();
  inj->add_rule(*parse_fault_rule("file=base,once=off,errno=EDQUOT"));
  FaultFile fa(a.share(), inj), fb(b.share(), inj);
  EXPECT_TRUE(fa.write_at(0, filled(1, 1)).is_ok());
  EXPECT_EQ(fb.write_at(0, filled(1, 1)).err(), EDQUOT);
  EXPECT_TRUE(fa.punch(0, 1).is_ok());
  EXPECT_EQ(fb.allocate(0, 1).err(), EDQUOT);
}

}  // namespace
}  // namespace keel
