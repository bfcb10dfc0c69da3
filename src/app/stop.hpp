#pragma once
// Stopping a job early and cleanly: batch schedulers send SIGTERM (or a chosen signal such as
// SIGUSR1, e.g. sbatch --signal=USR1@120) before they kill a job, and [run] wall_time bounds a job's
// own run time. The stages check once per step, collectively, so every rank stops after the same
// step; the stage then writes a checkpoint and throws Interrupted (exit status 3, "resumable").
#include <mpi.h>

#include <stdexcept>
#include <string>

#include "app/app.hpp"
#include "app/exit.hpp"  // kExitResumable

namespace mantissa::app {

struct Interrupted : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// SIGTERM, SIGINT, SIGUSR1 and SIGUSR2 set a flag (async-signal-safe); a second one ends the process
// at once. Called once by main.
void install_stop_handlers();

// Collective over ctx.comm: a non-empty reason on every rank when any rank got a stop signal, or
// when another step of up to `step_seconds` (plus a margin for the checkpoint) would cross
// [run] wall_time measured from the job's start. The environment variable MANTISSA_STOP_AT_STEP=n
// (fault injection for tests and restart drills) stops after the stage's step n;
// MANTISSA_FAIL_AT_STEP=n makes the ranks that have it fail there alone (an internal error, status 1).
std::string stop_reason(const AppContext& ctx, double step_seconds, long long step);

// The message of an interrupted job: what stopped it, where the checkpoint is, how to resume.
std::string resume_hint(const AppContext& ctx, const std::string& why, const std::string& checkpoint);

}  // namespace mantissa::app
