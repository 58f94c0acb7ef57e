// Proves that the read-only latch keeps the first error: after a metadata sync fails with ENOSPC,
// every later write, write-zeroes, discard, flush and bitmap change is refused with kReadOnly
// carrying ENOSPC and the first error's message, a later different failure does not replace it,
// and close reports it as an I/O error; reads keep working. Faults come from FaultFile on a
// MemoryFs image.
#include <gtest/gtest.h>

#include <cerrno>
#include <vector>

#include "engine/fault_util.h"
#include "io/fault_file.h"
#include "keel/image.h"
#include "proof/memory_fs.h"

namespace keel::test {
namespace {

TEST(Latch, KeepsTheFirstErrorsCodeAndErrno) {
  proof::MemoryFs fs;
  auto inj = std::make_shared<FaultInjector>();
  auto im = create_with_faults(fs, "t.qcow2", "qcow2", 4 << 20, inj);
  ASSERT_TRUE(im.has_value()) << im.error().message();
  Image& i = **im;
  std::vector<uint8_t> data(65536, 7);
  ASSERT_TRUE(i.write(0, data).is_ok());

  auto rule = parse_fault_rule("iotype=sync,errno=ENOSPC,once=on");
  ASSERT_TRUE(rule.has_value());
  inj->add_rule(*rule);
  Status first = i.flush();  // allocating write pending: the metadata sync fails
  ASSERT_FALSE(first.is_ok());
  EXPECT_EQ(first.err(), ENOSPC) << first.message();

  // A later failure of another kind must not replace the cause.
  auto eio = parse_fault_rule("iotype=write,errno=EIO,once=off");
  ASSERT_TRUE(eio.has_value());
  inj->add_rule(*eio);
  for (Status s : {i.write(1 << 20, data), i.write_zeroes(0, 65536, ZeroFlags{}), i.discard(0, 65536), i.flush(),
                   i.bitmap_add("b")}) {
    EXPECT_EQ(s.code(), Code::kReadOnly) << s.message();
    EXPECT_EQ(s.err(), ENOSPC) << s.message();
    EXPECT_NE(s.message().find("image is read-only after an error: "), std::string::npos) << s.message();
    EXPECT_NE(s.message().find(first.message()), std::string::npos) << s.message();
  }
  std::vector<uint8_t> back(65536);
  EXPECT_TRUE(i.read(0, back).is_ok());
  EXPECT_EQ(back, data);
  Status closed = i.close();
  EXPECT_EQ(closed.code(), Code::kIo) << closed.message();
  EXPECT_EQ(closed.err(), ENOSPC) << closed.message();
}

}  // namespace
}  // namespace keel::test
