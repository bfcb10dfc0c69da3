#include "app/app.hpp"

#include <mpi.h>

#include <Kokkos_Core.hpp>
#include <filesystem>
#include <fstream>

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

std::string prepare_run_dir(const AppContext& ctx) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(ctx.cfg.run.output_dir) / ctx.cfg.run.name;
  int status = 0;  // rank 0 decides, every rank learns the outcome
  std::string message;
  if (ctx.rank == 0) {
    std::error_code ec;
    if (fs::exists(dir, ec) && !fs::is_directory(dir, ec)) {
      status = 1;
      message = fmt::format("run directory {} exists and is not a directory", dir.string());
    } else if (fs::exists(dir, ec) && !fs::is_empty(dir, ec) && !ctx.cfg.run.overwrite) {
      status = 1;
      message = fmt::format(
          "run directory {} exists and is not empty; choose another run.name or allow reuse with "
          "--set run.overwrite=true (files of the same name will be replaced)",
          dir.string());
    } else {
      fs::create_directories(dir, ec);
      if (ec) {
        status = 1;
        message = fmt::format("cannot create run directory {}: {}", dir.string(), ec.message());
      } else {
        std::ofstream(dir / "deck.toml") << ctx.resolved_deck;
      }
    }
  }
  MPI_Bcast(&status, 1, MPI_INT, 0, ctx.comm);
  if (status != 0) throw InputError(ctx.rank == 0 ? message : "run directory rejected on rank 0");
  return dir.string();
}

void finish_timing_report(const AppContext& ctx, const std::string& run_dir, double wall_seconds) {
  if (ctx.rank != 0) return;
  const std::string report = RegionTimer::instance().report(wall_seconds);
  say(ctx, "\ntiming report (rank 0; also in {}/timing.txt)\n{}", run_dir, report);
  std::ofstream(std::filesystem::path(run_dir) / "timing.txt") << report;
}

}  // namespace mantissa::app
