#include "app/stop.hpp"

#include <chrono>
#include <csignal>
#include <cstdlib>

namespace mantissa::app {

namespace {

volatile std::sig_atomic_t g_signal = 0;

// The first stop signal asks for a clean stop after the current step; a second one (an impatient
// Ctrl-C) ends the process at once, as the signal's default would.
extern "C" void on_stop_signal(int sig) {
  if (g_signal != 0) {
    std::signal(sig, SIG_DFL);
    std::raise(sig);
    return;
  }
  g_signal = sig;
}

}  // namespace

void install_stop_handlers() {
  std::signal(SIGTERM, on_stop_signal);
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGUSR1, on_stop_signal);
  std::signal(SIGUSR2, on_stop_signal);
}

std::string stop_reason(const AppContext& ctx, double step_seconds, long long step) {
  // 0 = go on, 1 = injected stop, 2 = wall time, kSignalBase + the signal's number (max over ranks).
  constexpr int kSignalBase = 100;
  int local = g_signal != 0 ? kSignalBase + static_cast<int>(g_signal) : 0;
  if (local == 0 && ctx.cfg.run.wall_time > 0.0) {
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - ctx.start).count();
    if (elapsed + 1.5 * step_seconds + 5.0 > ctx.cfg.run.wall_time) local = 2;
  }
  if (local == 0) {
    if (const char* s = std::getenv("MANTISSA_STOP_AT_STEP"); s && std::atoll(s) == step) local = 1;
  }
  // Fault injection: this rank fails on its own here, as a rank whose node breaks would.
  if (const char* s = std::getenv("MANTISSA_FAIL_AT_STEP"); s && std::atoll(s) == step) {
    throw std::runtime_error(fmt::format("injected failure after step {} (MANTISSA_FAIL_AT_STEP)", step));
  }
  int any = 0;
  MPI_Allreduce(&local, &any, 1, MPI_INT, MPI_MAX, ctx.comm);
  switch (any) {
    case 0: return {};
    case 1: return fmt::format("MANTISSA_STOP_AT_STEP={}", step);
    case 2: return fmt::format("the wall-time limit [run] wall_time = {:g} s would be crossed by another step", ctx.cfg.run.wall_time);
    case kSignalBase + SIGTERM: return "SIGTERM";
    case kSignalBase + SIGUSR1: return "SIGUSR1";
    case kSignalBase + SIGUSR2: return "SIGUSR2";
    case kSignalBase + SIGINT: return "SIGINT";
    default: return fmt::format("signal {}", any - kSignalBase);
  }
}

std::string resume_hint(const AppContext& ctx, const std::string& why, const std::string& checkpoint) {
  return fmt::format(
      "stopped by {} after writing the checkpoint {}; resume with the same deck and command plus --restart, e.g.\n"
      "  mantissa {} -i {}/{}/deck.toml --restart",
      why, checkpoint, ctx.command, ctx.cfg.run.output_dir, ctx.cfg.run.name);
}

}  // namespace mantissa::app
