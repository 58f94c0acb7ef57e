// Proves keel::Passphrase holds a passphrase as key material: its bytes lie in a mapping that
// /proc/self/smaps marks "dd" (MADV_DONTDUMP: left out of core dumps), copies share that one
// buffer (copying OpenOptions copies no secret), and building one from an rvalue std::string
// wipes the string's bytes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "keel/image.h"
#include "keel/passphrase.h"

namespace keel {
namespace {

// The VmFlags line of the mapping holding `p`.
std::string vm_flags_of(const void* p) {
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool inside = false;
  const auto addr = reinterpret_cast<uintptr_t>(p);
  while (std::getline(smaps, line)) {
    unsigned long lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx ", &lo, &hi) == 2 && line.find(':') > line.find(' ')) {
      inside = addr >= lo && addr < hi;
      continue;
    }
    if (inside && line.rfind("VmFlags:", 0) == 0) return line;
  }
  return "";
}

TEST(Passphrase, BytesAreNotDumpedAndCopiesShareThem) {
  Passphrase p("correct horse");
  ASSERT_EQ(std::string(p.data(), p.size()), "correct horse");
  const std::string flags = vm_flags_of(p.data());
  ASSERT_FALSE(flags.empty());
  EXPECT_NE(flags.find(" dd"), std::string::npos) << flags;
  Passphrase q = p;
  EXPECT_EQ(q.data(), p.data());  // one buffer
  OpenOptions a;
  a.encrypt_secret = p;
  OpenOptions b = a;
  EXPECT_EQ(b.encrypt_secret->data(), p.data());
  EXPECT_EQ(Passphrase().size(), 0u);
}

TEST(Passphrase, FromAnRvalueStringWipesTheString) {
  std::string s(100, 'x');  // on the heap (no small-string buffer)
  const char* old = s.data();
  const size_t cap = s.capacity();
  Passphrase p(std::move(s));
  EXPECT_EQ(p.size(), 100u);
  EXPECT_EQ(std::string(p.data(), 100), std::string(100, 'x'));
  EXPECT_TRUE(s.empty());                   // NOLINT(bugprone-use-after-move): checked on purpose
  ASSERT_EQ(s.data(), old);                 // the string kept its buffer...
  ASSERT_GE(s.capacity(), cap);
  EXPECT_TRUE(std::all_of(old, old + 100, [](char c) { return c == 0; }));  // ...wiped
}

}  // namespace
}  // namespace keel
