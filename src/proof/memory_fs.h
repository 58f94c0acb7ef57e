// MemoryFs: a tiny in-memory file system of MemoryFiles, and the FileOpener that hands them to the
// engine (OpenOptions::file_opener / CreateOptions::file_opener).
//
// Files are keyed by base name, so an image at "/keel-proof/top.qcow2" whose header names the
// backing file "base.raw" finds it where the engine resolves it ("/keel-proof/base.raw"). An
// optional decorator wraps every file the engine opens: a RecordingFile, a FaultFile, or both.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "io/memory_file.h"
#include "keel/image.h"

namespace keel::proof {

class MemoryFs {
 public:
  static constexpr const char* kDir = "/keel-proof";
  // The path the engine is given for `name`.
  static std::string path(const std::string& name) { return std::string(kDir) + "/" + name; }

  void put(const std::string& name, std::vector<uint8_t> bytes);
  bool exists(const std::string& name) const;
  std::vector<uint8_t> bytes(const std::string& name) const;
  // A handle on the file's store (nullptr if missing).
  std::unique_ptr<MemoryFile> handle(const std::string& name, bool read_only = false) const;

  // Wraps a file the engine opens: (the memory file, its base name, the engine's options).
  using Wrap = std::function<Result<std::unique_ptr<BlockFile>>(
      std::unique_ptr<BlockFile> inner, const std::string& name, const FileOptions& opts)>;
  // An opener over this file system (which must outlive it). A file opened with opts.create is
  // created if missing and truncated to 0 through the decorator, so a recording sees the truncate.
  FileOpener opener(Wrap wrap = {});

 private:
  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<MemoryFile>> files_;
};

std::string base_name(const std::string& path);

}  // namespace keel::proof
