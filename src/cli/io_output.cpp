// qemu-io's output formats and shared argument checks for keel io (see io_output.h).
#include "cli/io_output.h"

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>

#include <fmt/format.h>

#include "cli/util.h"

namespace keel::cli {

timespec io_now() {
  timespec t{};
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t;
}

timespec io_elapsed_since(const timespec& start) {
  timespec end = io_now();
  timespec d{end.tv_sec - start.tv_sec, end.tv_nsec - start.tv_nsec};
  if (d.tv_nsec < 0) {
    d.tv_nsec += 1000000000;
    d.tv_sec -= 1;
  }
  return d;
}

namespace {
double per_second(double value, const timespec& t) {
  return value / (static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) / 1e9);
}
}  // namespace

void io_print_report(const char* op, const timespec& t, int64_t offset, int64_t count,
                     int64_t total, int ops, bool terse) {
  if (!terse) {
    std::printf("%s %lld/%lld bytes at offset %lld\n", op, static_cast<long long>(total),
                static_cast<long long>(count), static_cast<long long>(offset));
    std::printf("%s, %d ops; %s (%s/sec and %.4f ops/sec)\n",
                cvtstr(static_cast<double>(total)).c_str(), ops, timestr(t).c_str(),
                cvtstr(per_second(static_cast<double>(total), t)).c_str(),
                per_second(ops, t));
  } else {
    auto secs = static_cast<unsigned long long>(t.tv_sec);
    std::string ts = fmt::format("{}:{:02}:{:05.2f}", secs / 3600, (secs / 60) % 60,
                                 static_cast<double>(secs % 60) + static_cast<double>(t.tv_nsec) / 1e9);
    std::printf("%lld,%d,%s,%.3f,%.3f\n", static_cast<long long>(total), ops, ts.c_str(),
                per_second(static_cast<double>(total), t), per_second(ops, t));
  }
}

void io_dump_buffer(const uint8_t* buf, int64_t offset, int64_t len) {
  for (int64_t i = 0; i < len; i += 16) {
    std::printf("%08llx:  ", static_cast<unsigned long long>(offset + i));
    for (int64_t j = 0; j < 16 && i + j < len; ++j) std::printf("%02x ", buf[i + j]);
    std::printf(" ");
    for (int64_t j = 0; j < 16 && i + j < len; ++j)
      std::putchar(std::isalnum(buf[i + j]) ? buf[i + j] : '.');
    std::printf("\n");
  }
}

int io_usage(const IoSession::Args& argv) {
  for (const auto& c : IoSession::commands())
    if (argv[0] == c.name || (c.altname && argv[0] == c.altname))
      std::printf("%s\n", c.usage_line().c_str());
  return -EINVAL;
}

int io_errno_of(const Status& st) {
  if (std::getenv("KEEL_DEBUG")) std::fprintf(stderr, "keel: debug: %s\n", st.message().c_str());
  int e = st.err();
  return e > 0 ? e : EIO;
}

bool io_parse_lengths(const std::vector<std::string>& args, size_t first, std::vector<int64_t>* lens,
                   int64_t* total) {
  *total = 0;
  for (size_t i = first; i < args.size(); ++i) {
    int64_t len = io_cvtnum(args[i]);
    if (len < 0) return false;
    if (len > kIoMaxRequestBytes) {
      std::printf("Argument '%s' exceeds maximum size %lld\n", args[i].c_str(),
                  static_cast<long long>(kIoMaxRequestBytes));
      return false;
    }
    if (*total > kIoMaxRequestBytes - len) {
      std::printf("The total number of bytes exceed the maximum size %lld\n",
                  static_cast<long long>(kIoMaxRequestBytes));
      return false;
    }
    lens->push_back(len);
    *total += len;
  }
  return true;
}


}  // namespace keel::cli
