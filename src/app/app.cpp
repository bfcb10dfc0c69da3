#include "app/app.hpp"

#include <fcntl.h>
#include <mpi.h>
#include <sys/file.h>
#include <unistd.h>

#include <Kokkos_Core.hpp>
#include <filesystem>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "mantissa/kernels/region.hpp"
#include "mantissa/version.hpp"

namespace mantissa::app {

std::string version_text() {
  std::string backends;
#if defined(KOKKOS_ENABLE_SERIAL)
  backends += " Serial";
#endif
#if defined(KOKKOS_ENABLE_OPENMP)
  backends += " OpenMP";
#endif
#if defined(KOKKOS_ENABLE_THREADS)
  backends += " Threads";
#endif
#if defined(KOKKOS_ENABLE_CUDA)
  backends += " CUDA";
#endif
#if defined(KOKKOS_ENABLE_HIP)
  backends += " HIP";
#endif
  char mpi_version[MPI_MAX_LIBRARY_VERSION_STRING] = {0};
  int len = 0;
  MPI_Get_library_version(mpi_version, &len);
  std::string mpi(mpi_version, static_cast<std::size_t>(len));
  if (auto nl = mpi.find_first_of("\r\n"); nl != std::string::npos) mpi.resize(nl);
  while (!mpi.empty() && (mpi.back() == ',' || mpi.back() == ' ')) mpi.pop_back();
  const int kv = KOKKOS_VERSION;
  return fmt::format(
      "mantissa {} (git {}, {} build)\n"
      "Kokkos {}.{}.{:02d}: default execution space {}, enabled backends:{}\n"
      "MPI: {}\n",
      kVersion, kGitCommit, kBuildType, kv / 10000, (kv / 100) % 100, kv % 100,
      Kokkos::DefaultExecutionSpace::name(), backends, mpi);
}

namespace {

std::FILE* g_run_log = nullptr;

// The resolved deck's lines that decide results: [run] wall_time and overwrite may change on a restart.
std::vector<std::string> result_lines(const std::string& deck) {
  std::vector<std::string> out;
  std::istringstream in(deck);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("wall_time", 0) == 0 || line.rfind("overwrite", 0) == 0) continue;
    out.push_back(line);
  }
  return out;
}

}  // namespace

namespace detail {
void log_to_run_file(const std::string& text) {
  if (!g_run_log) return;
  std::fputs(text.c_str(), g_run_log);
  std::fflush(g_run_log);
}
}  // namespace detail

namespace {

// Rank 0's lock on a run directory, held until the process ends (the kernel drops it when a job
// dies, kill -9 included): a second job started into the same directory is refused.
int g_run_lock = -1;

// "" when the lock is taken (or the file system has no locks), else why not.
std::string lock_run_dir(const std::filesystem::path& dir) {
  if (g_run_lock >= 0) return {};
  const std::filesystem::path lock = dir.parent_path() / ("." + dir.filename().string() + ".lock");
  const int fd = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return fmt::format("cannot create the lock file {}: {}", lock.string(), std::strerror(errno));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    ::close(fd);
    if (err == EWOULDBLOCK)
      return fmt::format("another mantissa job is running in {} (it holds {}); wait for it or choose another run.name",
                         dir.string(), lock.string());
    if (err == ENOLCK || err == EINVAL || err == ENOTSUP) return {};  // no locks on this file system: go on
    return fmt::format("cannot lock {}: {}", lock.string(), std::strerror(err));
  }
  g_run_lock = fd;
  return {};
}

// Temporary files of atomic writes whose job was killed ("<file>.tmp.<pid>"): never valid data.
void remove_stale_temporaries(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  for (const fs::path& d : {dir, dir / "checkpoints"}) {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(d, ec)) {
      const std::string name = e.path().filename().string();
      const std::size_t k = name.rfind(".tmp.");
      if (k == std::string::npos || k + 5 >= name.size() ||
          name.find_first_not_of("0123456789", k + 5) != std::string::npos)
        continue;
      std::error_code rm;
      fs::remove(e.path(), rm);
    }
  }
}

}  // namespace

std::string prepare_run_dir(const AppContext& ctx, bool keep_files) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(ctx.cfg.run.output_dir) / ctx.cfg.run.name;
  int status = 0;  // rank 0 decides, every rank learns the outcome
  std::string message;
  if (ctx.rank == 0) {
    std::error_code ec;
    // A run directory that run.overwrite replaces is renamed to this first and removed once the new
    // one exists; one left by a killed job is removed the next time.
    const fs::path replaced = dir.parent_path() / ("." + dir.filename().string() + ".replaced");
    fs::create_directories(dir.parent_path().empty() ? fs::path(".") : dir.parent_path(), ec);
    if (ec) {
      status = 1;
      message = fmt::format("cannot create the output directory {}: {}", dir.parent_path().string(), ec.message());
    } else if (message = lock_run_dir(dir); !message.empty()) {
      status = 1;
    } else if (fs::exists(dir, ec) && !fs::is_directory(dir, ec)) {
      status = 1;
      message = fmt::format("run directory {} exists and is not a directory", dir.string());
    } else if (!ctx.restart.empty()) {
      // A restart continues the run of this directory with the deck it was started with.
      std::ifstream f(dir / "deck.toml");
      std::stringstream old;
      old << f.rdbuf();
      if (!f) {
        status = 1;
        message = fmt::format("--restart: {} holds no deck.toml: there is no run to continue there", dir.string());
      } else {
        const auto a = result_lines(old.str()), b = result_lines(ctx.resolved_deck);
        for (std::size_t i = 0; i < std::max(a.size(), b.size()) && status == 0; ++i) {
          const std::string la = i < a.size() ? a[i] : "(end)", lb = i < b.size() ? b[i] : "(end)";
          if (la != lb) {
            status = 1;
            message = fmt::format(
                "--restart: the deck differs from the one the run in {} was started with (only [run] wall_time and "
                "overwrite may change):\n  run:  {}\n  deck: {}",
                dir.string(), la, lb);
          }
        }
      }
      if (status == 0) remove_stale_temporaries(dir);
    } else if (fs::exists(dir, ec) && !fs::is_empty(dir, ec) && !ctx.cfg.run.overwrite) {
      status = 1;
      message = fmt::format(
          "run directory {} exists and is not empty; choose another run.name, continue an interrupted run with "
          "--restart, or replace it with --set run.overwrite=true (its files are removed first)",
          dir.string());
    } else {
      // A fresh run starts from nothing: an old run's files (overwrite) would be mistaken for this
      // run's on a later restart. Rename first (atomic), remove after the new directory exists.
      fs::remove_all(replaced, ec);
      if (fs::exists(dir, ec) && !keep_files) fs::rename(dir, replaced, ec);
      if (ec) {
        status = 1;
        message = fmt::format("cannot move the old run directory {} aside to replace it: {}", dir.string(), ec.message());
      } else {
        fs::create_directories(dir, ec);
        if (ec) {
          status = 1;
          message = fmt::format("cannot create run directory {}: {}", dir.string(), ec.message());
        } else {
          std::ofstream out(dir / "deck.toml");
          out << ctx.resolved_deck;
          out.close();
          if (!out) {
            status = 1;
            message = fmt::format("cannot write {}: {}", (dir / "deck.toml").string(), std::strerror(errno));
          }
          fs::remove_all(replaced, ec);
        }
      }
    }
  }
  MPI_Bcast(&status, 1, MPI_INT, 0, ctx.comm);
  if (status != 0) throw InputError(ctx.rank == 0 ? message : "run directory rejected on rank 0");
  if (ctx.rank == 0 && !g_run_log) {
    g_run_log = std::fopen((dir / "log.txt").string().c_str(), "a");
    if (g_run_log) std::fprintf(g_run_log, "=== mantissa %s (%d rank(s))%s\n", ctx.command.c_str(), ctx.nranks,
                                ctx.restart.empty() ? "" : " --restart");
  }
  return dir.string();
}

std::vector<std::string> step_checkpoints(const std::string& dir, const std::string& prefix) {
  namespace fs = std::filesystem;
  std::vector<std::pair<long long, std::string>> found;
  std::error_code ec;
  const std::string head = prefix + "_step", tail = ".h5";
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.size() <= head.size() + tail.size() || name.rfind(head, 0) != 0 ||
        name.compare(name.size() - tail.size(), tail.size(), tail) != 0) {
      continue;
    }
    const std::string digits = name.substr(head.size(), name.size() - head.size() - tail.size());
    if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos) continue;
    found.emplace_back(std::stoll(digits), e.path().string());
  }
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<std::string> out;
  for (auto& f : found) out.push_back(std::move(f.second));
  return out;
}

void finish_timing_report(const AppContext& ctx, const std::string& run_dir, double wall_seconds) {
  if (ctx.rank != 0) return;
  const std::string report = RegionTimer::instance().report(wall_seconds);
  say(ctx, "\ntiming report (rank 0; also in {}/timing.txt)\n{}", run_dir, report);
  std::ofstream(std::filesystem::path(run_dir) / "timing.txt") << report;
}

}  // namespace mantissa::app
