// A qemu-io process driven one command at a time (see qemu_io_session.h).
#include "proof/qemu_io_session.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

extern char** environ;

namespace keel::proof {

namespace {
constexpr const char* kPrompt = "qemu-io> ";
}

Result<std::unique_ptr<QemuIoSession>> QemuIoSession::start(const std::string& path, const std::string& cache) {
  int to_child[2], from_child[2];
  if (::pipe2(to_child, O_CLOEXEC) != 0) return error(io_error(errno, "pipe"));
  if (::pipe2(from_child, O_CLOEXEC) != 0) {
    ::close(to_child[0]);
    ::close(to_child[1]);
    return error(io_error(errno, "pipe"));
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, to_child[0], 0);
  posix_spawn_file_actions_adddup2(&fa, from_child[1], 1);
  posix_spawn_file_actions_adddup2(&fa, from_child[1], 2);
  std::vector<std::string> args = {"qemu-io", "-f", "qcow2", "-t", cache, path};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  int rc = ::posix_spawnp(&pid, "qemu-io", &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(to_child[0]);
  ::close(from_child[1]);
  std::unique_ptr<QemuIoSession> s(new QemuIoSession);
  s->in_ = to_child[1];
  s->out_ = from_child[0];
  if (rc != 0) return error(io_error(rc, "spawn qemu-io"));
  s->pid_ = pid;
  auto first = s->until_prompt();
  if (!first) return error(first.error());
  return s;
}

QemuIoSession::~QemuIoSession() {
  if (in_ >= 0) ::close(in_);
  if (out_ >= 0) ::close(out_);
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    int st = 0;
    ::waitpid(pid_, &st, 0);
  }
}

Result<std::string> QemuIoSession::until_prompt() {
  std::string got;
  char buf[4096];
  const size_t plen = std::strlen(kPrompt);
  while (got.size() < plen || got.compare(got.size() - plen, plen, kPrompt) != 0) {
    ssize_t n = ::read(out_, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return error(Status(Code::kIo, "qemu-io exited: " + got, EIO));
    got.append(buf, static_cast<size_t>(n));
  }
  return got.substr(0, got.size() - plen);
}

Status QemuIoSession::run(const std::string& command) {
  std::string line = command + "\n";
  if (::write(in_, line.data(), line.size()) != static_cast<ssize_t>(line.size()))
    return io_error(errno, "write to qemu-io");
  auto out = until_prompt();
  if (!out) return out.error();
  // qemu-io reports a failed request as "<cmd> failed: <strerror>" (or "error" on open).
  if (out->find("failed") != std::string::npos || out->find("rror") != std::string::npos)
    return Status(Code::kIo, "qemu-io " + command + ": " + *out, EIO);
  return Status::ok();
}

Status QemuIoSession::quit() {
  const char q[] = "quit\n";
  (void)::write(in_, q, sizeof q - 1);
  ::close(in_);
  in_ = -1;
  int st = 0;
  pid_t p = pid_;
  pid_ = -1;
  if (::waitpid(p, &st, 0) != p) return io_error(errno, "wait for qemu-io");
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) return Status(Code::kIo, "qemu-io did not exit cleanly", EIO);
  return Status::ok();
}

}  // namespace keel::proof
