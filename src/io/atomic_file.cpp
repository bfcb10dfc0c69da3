#include "io/atomic_file.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <hdf5.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "io/hdf5.hpp"
#include "io/seal.hpp"

namespace mantissa::io {

namespace {

[[noreturn]] void fail_errno(const std::string& path, const std::string& what, int err) {
  throw IoError(fmt::format("{}: {}: {}", path, what, std::strerror(err)));
}

// fsync of a file or directory; returns 0 or an errno value.
int fsync_path(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), directory ? (O_RDONLY | O_DIRECTORY) : O_RDONLY);
  if (fd < 0) return errno;
  int err = 0;
  if (::fsync(fd) != 0) err = errno;
  if (::close(fd) != 0 && err == 0) err = errno;
  return err;
}

std::string directory_of(const std::string& path) {
  const std::size_t k = path.rfind('/');
  if (k == std::string::npos) return ".";
  if (k == 0) return "/";
  return path.substr(0, k);
}

}  // namespace

std::string atomic_temp_path(const std::string& path) {
  return fmt::format("{}.tmp.{}", path, static_cast<long>(::getpid()));
}

void write_atomically(const std::string& path, const std::function<void(const std::string& tmp_path)>& writer) {
  silence_hdf5_errors();
  const std::string tmp = atomic_temp_path(path);
  auto discard = [&] { std::remove(tmp.c_str()); };
  try {
    writer(tmp);
  } catch (...) {
    discard();
    throw;
  }
  struct stat st {};
  if (::stat(tmp.c_str(), &st) != 0)
    throw IoError(fmt::format("{}: the writer did not create the temporary file {}", path, tmp));
  if (open_in_this_process(tmp)) {  // its contents are not final: discard (POSIX allows unlinking an open file)
    discard();
    throw IoError(fmt::format("{}: the writer returned with {} still open in HDF5 (close the File first)", path, tmp));
  }
  if (const int err = fsync_path(tmp, false); err != 0) {
    discard();
    fail_errno(tmp, "fsync failed", err);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    discard();
    fail_errno(path, fmt::format("cannot rename {} over it", tmp), err);
  }
  // Make the rename itself durable. Some file systems cannot fsync a directory (EINVAL): then the
  // rename is as durable as that file system allows, which is not an error of ours.
  const int err = fsync_path(directory_of(path), true);
  if (err != 0 && err != EINVAL && err != ENOTSUP) fail_errno(directory_of(path), "fsync of the directory failed", err);
}

void write_sealed(const std::string& path, const std::function<void(File& f)>& fill, std::size_t expected_bytes) {
  if (expected_bytes > 0) {
    struct statvfs fs {};
    const std::string dir = directory_of(path);
    if (::statvfs(dir.c_str(), &fs) == 0) {
      const double free_bytes = static_cast<double>(fs.f_bavail) * static_cast<double>(fs.f_frsize);
      const double need = 1.1 * static_cast<double>(expected_bytes) + (1 << 20);
      if (free_bytes < need)
        throw IoError(fmt::format("{}: not enough space on the file system of {}: the file needs about {:.1f} MiB, "
                                  "{:.1f} MiB are free (No space left on device); free space and rerun with --restart",
                                  path, dir, need / 1048576.0, free_bytes / 1048576.0));
    }
  }
  write_atomically(path, [&](const std::string& tmp) {
    File f = File::create_sealable(tmp);
    fill(f);
    f.close();
    seal_file(tmp);
  });
}

bool is_valid_hdf5(const std::string& path, const std::string& required_object) {
  silence_hdf5_errors();
  try {
    File f = File::open_read(path);
    return required_object.empty() || f.exists(required_object);
  } catch (...) {
    return false;
  }
}

}  // namespace mantissa::io
