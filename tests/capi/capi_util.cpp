// Helpers of the C API tests (see capi_util.h).
#include "capi/capi_util.h"

#include <sys/wait.h>

#include <cstdio>

namespace keel_capi_test {

int sh(const std::string& cmd, std::string* out) {
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return -1;
  char buf[4096];
  std::string text;
  for (size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) text.append(buf, n);
  int rc = pclose(p);
  if (out) *out = text;
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

}  // namespace keel_capi_test
