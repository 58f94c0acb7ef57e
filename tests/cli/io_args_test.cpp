// Proves keel io parses command arguments like qemu-io 7.2 (glibc getopt with permutation,
// qemu_strtosz numbers, pattern bytes), comparing with outputs taken from the real qemu-io.
#include <gtest/gtest.h>

#include "cli/io_session.h"

namespace keel::cli {
namespace {

struct Parsed {
  bool ok;
  std::string letters;
  std::vector<std::string> args;
  std::vector<std::string> operands;
};

Parsed getopt(std::vector<std::string> argv, const char* spec) {
  std::vector<ParsedOption> opts;
  Parsed p;
  p.ok = io_getopt(argv, spec, &opts, &p.operands);
  for (const auto& o : opts) {
    p.letters += o.letter;
    p.args.push_back(o.arg);
  }
  return p;
}

TEST(IoGetopt, FlagsAndArguments) {
  auto p = getopt({"write", "-P", "0xab", "-q", "0", "64k"}, "bcCfnpP:quzs:");
  ASSERT_TRUE(p.ok);
  EXPECT_EQ(p.letters, "Pq");
  EXPECT_EQ(p.args[0], "0xab");
  EXPECT_EQ(p.operands, (std::vector<std::string>{"0", "64k"}));
}

TEST(IoGetopt, ClustersAndAttachedArguments) {
  auto p = getopt({"write", "-zu", "-P5", "1M", "1M"}, "bcCfnpP:quzs:");
  ASSERT_TRUE(p.ok);
  EXPECT_EQ(p.letters, "zuP");
  EXPECT_EQ(p.args[2], "5");
}

TEST(IoGetopt, OptionsAfterOperandsArePermuted) {
  auto p = getopt({"read", "0", "512", "-v"}, "bCl:pqP:s:v");
  ASSERT_TRUE(p.ok);
  EXPECT_EQ(p.letters, "v");
  EXPECT_EQ(p.operands.size(), 2u);
}

TEST(IoGetopt, DoubleDashEndsOptions) {
  auto p = getopt({"read", "--", "-5", "1"}, "v");
  ASSERT_TRUE(p.ok);
  EXPECT_EQ(p.operands, (std::vector<std::string>{"-5", "1"}));
}

TEST(IoGetopt, UnknownOptionAndMissingArgument) {
  EXPECT_FALSE(getopt({"read", "-Z", "0", "1"}, "bCl:pqP:s:v").ok);
  EXPECT_FALSE(getopt({"read", "0", "1", "-P"}, "bCl:pqP:s:v").ok);
}

TEST(IoCvtnum, SizesLikeQemuIo) {
  EXPECT_EQ(io_cvtnum("0"), 0);
  EXPECT_EQ(io_cvtnum("64k"), 65536);
  EXPECT_EQ(io_cvtnum("1M"), 1048576);
  EXPECT_EQ(io_cvtnum("0x10000"), 65536);
  EXPECT_EQ(io_cvtnum("1.5k"), 1536);
  testing::internal::CaptureStdout();
  EXPECT_EQ(io_cvtnum("x"), -EINVAL);
  EXPECT_EQ(io_cvtnum("8E"), -ERANGE);
  EXPECT_EQ(testing::internal::GetCapturedStdout(),
            "Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- x\n"
            "Parsing error: argument too large -- 8E\n");
}

TEST(IoPattern, Bytes) {
  EXPECT_EQ(io_parse_pattern("0"), 0);
  EXPECT_EQ(io_parse_pattern("0xab"), 0xab);
  EXPECT_EQ(io_parse_pattern("255"), 255);
  EXPECT_EQ(io_parse_pattern("010"), 8);
  testing::internal::CaptureStdout();
  EXPECT_EQ(io_parse_pattern("300"), -1);
  EXPECT_EQ(io_parse_pattern("-1"), -1);
  EXPECT_EQ(io_parse_pattern("1x"), -1);
  EXPECT_EQ(testing::internal::GetCapturedStdout(),
            "300 is not a valid pattern byte\n-1 is not a valid pattern byte\n"
            "1x is not a valid pattern byte\n");
}

}  // namespace
}  // namespace keel::cli
