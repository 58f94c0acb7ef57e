// qemu-img as an oracle (see qemu_oracle.h).
#include "proof/qemu_oracle.h"
#include "proof/workload.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>

extern char** environ;

namespace keel::proof {
namespace {

// Finds `"key": <number>` in qemu-img's JSON; 0 when absent (qemu omits zero optional fields).
uint64_t json_number(const std::string& json, const std::string& key) {
  size_t at = json.find("\"" + key + "\"");
  if (at == std::string::npos) return 0;
  at = json.find(':', at);
  if (at == std::string::npos) return 0;
  return std::strtoull(json.c_str() + at + 1, nullptr, 10);
}

}  // namespace

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/keel-proof-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (::mkdtemp(buf.data())) path_ = buf.data();
}

TempDir::~TempDir() {
  if (path_.empty()) return;
  for (const auto& f : files_) ::unlink(file(f).c_str());
  ::rmdir(path_.c_str());
}

Status TempDir::write(const std::string& name, const std::vector<uint8_t>& bytes) {
  if (path_.empty()) return io_error(EIO, "no temporary directory");
  std::string p = file(name);
  int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return io_error(errno, "create " + p);
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int e = errno;
      ::close(fd);
      return io_error(e, "write " + p);
    }
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  bool known = false;
  for (const auto& f : files_) known |= f == name;
  if (!known) files_.push_back(name);
  return Status::ok();
}

int run_command(const std::vector<std::string>& argv, std::string* output) {
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) return -1;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
  posix_spawn_file_actions_adddup2(&fa, pipefd[1], 2);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  int rc = posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(pipefd[1]);
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(pipefd[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(pipefd[0]);
  if (output) *output = std::move(out);
  if (rc != 0) return -1;
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

namespace {
// Encrypted workloads: QEMU decrypts with the proof's passphrase (ignored for plain images).
std::string secret_object() { return std::string("secret,id=keelproof,data=") + kProofSecret; }
std::string image_opts(const std::string& path) {
  std::string escaped;
  for (char ch : path) escaped += ch == ',' ? std::string(",,") : std::string(1, ch);
  return "driver=qcow2,file.filename=" + escaped + ",encrypt.key-secret=keelproof";
}
}  // namespace

bool qemu_img_available() {
  static const bool available = run_command({"qemu-img", "--version"}, nullptr) == 0;
  return available;
}

Result<QemuCheck> qemu_img_check(const std::string& path) {
  QemuCheck c;
  c.exit_code = run_command({"qemu-img", "check", "--output=json", "--object", secret_object(), "--image-opts",
                             image_opts(path)}, &c.output);
  if (c.exit_code < 0) return error(io_error(ENOENT, "cannot run qemu-img"));
  c.corruptions = json_number(c.output, "corruptions");
  c.leaks = json_number(c.output, "leaks");
  c.check_errors = json_number(c.output, "check-errors");
  return c;
}

Result<std::vector<uint8_t>> qemu_img_convert(const std::string& path, const std::string& raw_path) {
  std::string out;
  int rc = run_command({"qemu-img", "convert", "--object", secret_object(), "--image-opts", image_opts(path), "-O",
                        "raw", raw_path}, &out);
  if (rc != 0) return error(Status(Code::kIo, "qemu-img convert failed (exit " + std::to_string(rc) + "): " + out, EIO));
  std::ifstream in(raw_path, std::ios::binary);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ::unlink(raw_path.c_str());
  return bytes;
}

}  // namespace keel::proof
