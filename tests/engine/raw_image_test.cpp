// Proves that a raw image reports a failed hole punch as the I/O error it is: write_zeroes with
// may_unmap over a file whose punch fails with EIO returns EIO (it does not quietly write zeros
// instead, which would report success for an operation whose I/O failed: G6), and without the
// fault the same call succeeds and the range reads as zeros. Faults come from FaultFile on a
// MemoryFs file.
#include <gtest/gtest.h>

#include <cerrno>
#include <vector>

#include "engine/fault_util.h"
#include "io/fault_file.h"
#include "keel/image.h"
#include "proof/memory_fs.h"

namespace keel::test {
namespace {

TEST(RawImage, FailedPunchIsReportedNotReplacedByZeros) {
  proof::MemoryFs fs;
  auto inj = std::make_shared<FaultInjector>();
  auto im = create_with_faults(fs, "t.raw", "raw", 1 << 20, inj);
  ASSERT_TRUE(im.has_value()) << im.error().message();
  Image& i = **im;
  std::vector<uint8_t> data(65536, 7);
  ASSERT_TRUE(i.write(0, data).is_ok());

  auto rule = parse_fault_rule("iotype=punch,errno=EIO,once=on");
  ASSERT_TRUE(rule.has_value());
  inj->add_rule(*rule);
  ZeroFlags unmap;
  unmap.may_unmap = true;
  Status failed = i.write_zeroes(0, 65536, unmap);
  EXPECT_EQ(failed.code(), Code::kIo) << failed.message();
  EXPECT_EQ(failed.err(), EIO) << failed.message();

  // The rule fired once: the same call now punches, and the range reads as zeros.
  ASSERT_TRUE(i.write_zeroes(0, 65536, unmap).is_ok());
  std::vector<uint8_t> back(65536, 1);
  ASSERT_TRUE(i.read(0, back).is_ok());
  EXPECT_EQ(back, std::vector<uint8_t>(65536, 0));
  EXPECT_TRUE(i.close().is_ok());
}

}  // namespace
}  // namespace keel::test
