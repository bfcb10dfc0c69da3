#include "app/exit.hpp"

#include <mpi.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <new>
#include <system_error>
#include <thread>

#include "app/app.hpp"
#include "app/stop.hpp"
#include "config/checks.hpp"
#include "io/hdf5.hpp"
#include "model/checkpoint.hpp"

namespace mantissa::app {

namespace {

MPI_Comm g_exit_comm = MPI_COMM_NULL;

// Async-signal-safe: write(2) and _exit(2) only.
extern "C" void on_abort_signal(int) {
  static const char msg[] =
      "mantissa: internal error: a library called abort() (no core dump written); please report the lines above\n";
  ssize_t ignored = ::write(STDERR_FILENO, msg, sizeof msg - 1);
  (void)ignored;
  ::_exit(kExitInternal);
}

void on_terminate() {
  std::string what = "unknown exception";
  if (const std::exception_ptr e = std::current_exception()) what = classify(e).message;
  std::fprintf(stderr, "mantissa: internal error: std::terminate called (%s)\n", what.c_str());
  std::fflush(stderr);
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, kExitInternal);
  ::_exit(kExitInternal);
}

}  // namespace

Failure classify(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const InputError& x) {
    return {kExitInput, x.what()};
  } catch (const config::DeckError& x) {
    return {kExitInput, std::string("error in input deck: ") + x.what()};
  } catch (const Interrupted& x) {
    return {kExitResumable, x.what()};
  } catch (const Diverged& x) {
    return {kExitDiverged, x.what()};
  } catch (const model::CheckpointError& x) {
    return {kExitInput, x.what()};
  } catch (const io::IoError& x) {
    return {kExitIo, std::string("I/O error: ") + x.what()};
  } catch (const std::filesystem::filesystem_error& x) {
    return {kExitIo, std::string("file system error: ") + x.what()};
  } catch (const std::bad_alloc&) {
    return {kExitIo, "out of memory: the model, batch or sequence sizes need more memory than this node has; "
                     "reduce them or use more ranks"};
  } catch (const std::system_error& x) {
    return {kExitIo, std::string("system error: ") + x.what()};
  } catch (const std::exception& x) {
    return {kExitInternal, std::string("internal error (please report): ") + x.what()};
  } catch (...) {
    return {kExitInternal, "internal error (please report): an exception of unknown type"};
  }
}

void init_exit_handling() {
  if (g_exit_comm == MPI_COMM_NULL) MPI_Comm_dup(MPI_COMM_WORLD, &g_exit_comm);
  std::set_terminate(on_terminate);
  std::signal(SIGABRT, on_abort_signal);
  // A file-size limit (ulimit -f, a quota) then fails the write with EFBIG, an I/O error like a full
  // disk, instead of killing the process.
  std::signal(SIGXFSZ, SIG_IGN);
}

int finish_collectively(const Failure& outcome, bool printed, double grace_seconds) {
  const int status = outcome.status;
  const bool failed = status != kExitOk;
  int nranks = 1, rank = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &nranks);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (nranks == 1 || g_exit_comm == MPI_COMM_NULL) return status;
  MPI_Request req = MPI_REQUEST_NULL;
  MPI_Ibarrier(g_exit_comm, &req);
  int done = 0;
  if (failed) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(grace_seconds);
    while (!done && std::chrono::steady_clock::now() < until) {
      MPI_Test(&req, &done, MPI_STATUS_IGNORE);
      if (!done) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (!done) {
      if (!printed) std::fprintf(stderr, "mantissa: rank %d: %s\n", rank, outcome.message.c_str());
      std::fprintf(stderr, "mantissa: rank %d: the other ranks did not reach the end within %.0f s (they wait for "
                   "this rank); ending the job with status %d\n", rank, grace_seconds, status);
      std::fflush(stderr);
      MPI_Abort(MPI_COMM_WORLD, status);
    }
  } else {
    MPI_Wait(&req, MPI_STATUS_IGNORE);
  }
  int worst = status;
  MPI_Allreduce(&status, &worst, 1, MPI_INT, MPI_MAX, g_exit_comm);
  return worst;
}

}  // namespace mantissa::app
