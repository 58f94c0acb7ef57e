// MemoryFs (see memory_fs.h).
#include "proof/memory_fs.h"

#include <cerrno>

namespace keel::proof {

std::string base_name(const std::string& path) {
  size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

void MemoryFs::put(const std::string& name, std::vector<uint8_t> bytes) {
  std::lock_guard<std::mutex> g(mu_);
  files_[name] = std::make_unique<MemoryFile>(path(name), std::move(bytes));
}

bool MemoryFs::exists(const std::string& name) const {
  std::lock_guard<std::mutex> g(mu_);
  return files_.count(name) != 0;
}

std::vector<uint8_t> MemoryFs::bytes(const std::string& name) const {
  std::lock_guard<std::mutex> g(mu_);
  auto it = files_.find(name);
  return it == files_.end() ? std::vector<uint8_t>{} : it->second->bytes();
}

std::unique_ptr<MemoryFile> MemoryFs::handle(const std::string& name, bool read_only) const {
  std::lock_guard<std::mutex> g(mu_);
  auto it = files_.find(name);
  return it == files_.end() ? nullptr : it->second->share(read_only);
}

FileOpener MemoryFs::opener(Wrap wrap) {
  return [this, wrap](const std::string& p, const FileOptions& opts) -> Result<std::unique_ptr<BlockFile>> {
    std::string name = base_name(p);
    std::unique_ptr<BlockFile> file;
    {
      std::lock_guard<std::mutex> g(mu_);
      auto it = files_.find(name);
      if (it == files_.end()) {
        if (!opts.create) return error(Status(Code::kNotFound, "Could not open '" + p + "': No such file or directory", ENOENT));
        it = files_.emplace(name, std::make_unique<MemoryFile>(path(name))).first;
      }
      file = it->second->share(opts.read_only);
    }
    if (wrap) {
      auto wrapped = wrap(std::move(file), name, opts);
      if (!wrapped) return error(wrapped.error());
      file = std::move(*wrapped);
    }
    if (opts.create) KEEL_TRY_R(file->truncate(0));
    return file;
  };
}

}  // namespace keel::proof
