#pragma once
// How the executable ends: one documented exit status per kind of failure, one clear line per
// failure, and no rank left waiting for another (README "Exit status").
//
//   0  done
//   1  internal error (a defect of Mantissa: please report it with the line printed)
//   2  bad input: command line, deck, checkpoint, task set, run directory
//   3  stopped early by a signal or [run] wall_time, with a checkpoint written: rerun with --restart
//   4  I/O or system failure: file system (full, unwritable, missing), HDF5, memory, MPI
//   5  training diverged: most updates were skipped by the loss scaler (see the message)
//
// The end of a job is collective: every rank, failed or not, calls finish_collectively() with its
// own status. A rank that failed waits a short grace period for the others; when they do not come
// (they are waiting for it inside a collective) it ends the whole job with MPI_Abort and its status,
// so no rank ever waits forever. Ranks that succeed wait for the others as MPI_Finalize would.
#include <exception>
#include <stdexcept>
#include <string>

namespace mantissa::app {

inline constexpr int kExitOk = 0;
inline constexpr int kExitInternal = 1;
inline constexpr int kExitInput = 2;
inline constexpr int kExitResumable = 3;
inline constexpr int kExitIo = 4;
inline constexpr int kExitDiverged = 5;

// Training stopped because it diverged (fp16 overflow that the loss scaler could not contain).
struct Diverged : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The exit status of an exception that reached the top (InputError/DeckError 2, Interrupted 3,
// IoError/filesystem/bad_alloc/system 4, Diverged 5, anything else 1) and its one-line message.
struct Failure {
  int status = kExitInternal;
  std::string message;
};
Failure classify(const std::exception_ptr& e);

// Called once after MPI_Init: a private communicator for the collective exit, and handlers that turn
// std::terminate and abort() into one line and status 1 instead of a core dump.
void init_exit_handling();

// Returns the job's exit status (the largest of all ranks') once every rank got here. A rank whose
// status is not 0 gives the others `grace_seconds`; if they do not come it prints `message` (unless
// it printed it already) naming its rank, and ends the job with MPI_Abort(status).
int finish_collectively(const Failure& outcome, bool printed, double grace_seconds = 20.0);

}  // namespace mantissa::app
