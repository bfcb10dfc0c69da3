// `mantissa curate`: the perfectible task set (mission.md section 6). The base policy samples
// [curate] samples responses for each of the first [curate] candidates train problems; the problems it
// solves within [min_pass, max_pass] of the time are written to <run_dir>/task_set.h5, which
// `mantissa rl` / `run` train on ([rl] task_set). See src/rl/task_set.hpp for the sampling and the file.
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>

#include "app/app.hpp"
#include "app/jobs.hpp"
#include "model/checkpoint.hpp"
#include "model/optimizer.hpp"
#include "model/params.hpp"
#include "rl/task_set.hpp"

namespace mantissa::app {

int cmd_curate(AppContext& ctx) {
  const auto t0 = std::chrono::steady_clock::now();
  const config::CurateConfig& cc = ctx.cfg.curate;
  model_from_checkpoint(ctx, "curate", "checkpoint", cc.checkpoint,
                        "required: the base policy to curate with (e.g. the sft_final.h5 of a mantissa sft run)");
  const std::string run_dir = prepare_run_dir(ctx);
  run_curate(ctx, run_dir, cc.checkpoint);
  finish_timing_report(ctx, run_dir, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return 0;
}

std::string run_curate(AppContext& ctx, const std::string& run_dir, const std::string& checkpoint) {
  const config::CurateConfig& cc = ctx.cfg.curate;
  const config::ModelConfig& mc = ctx.cfg.model;
  model::ParamTable table(mc);
  model::Optimizer opt(table, ctx.cfg.optimizer, ctx.cfg.loss_scale, Precision::fp32);
  try {
    model::load_checkpoint(checkpoint, mc, table, opt);
  } catch (const model::CheckpointError& e) {
    throw InputError(fmt::format("curate: base policy: {}", e.what()));
  }
  const long long sequences = static_cast<long long>(cc.candidates) * cc.samples;
  say(ctx,
      "curate: {} on the first {} train problems x {} samples ({} sequences) in {}, temperature {}, keeping pass "
      "rates in [{}, {}], {} rank(s)\n",
      checkpoint, cc.candidates, cc.samples, sequences, ctx.cfg.precision.storage, ctx.cfg.rollout.temperature,
      cc.min_pass, cc.max_pass, ctx.nranks);

  // Progress every ~10% of rank 0's share (candidates are dealt round-robin, so it tracks the whole).
  const auto t0 = std::chrono::steady_clock::now();
  const auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  int next_tenth = 1;
  const rl::CurateProgress progress = [&](long long done, long long total) {
    if (total <= 0) return;
    const int tenth = static_cast<int>(10 * done / total);
    if (tenth < next_tenth) return;
    next_tenth = tenth + 1;
    say(ctx, "curate: {:3d}% ({} of rank 0's {} sequences), {:.1f} s\n", 10 * tenth, done, total, elapsed());
  };
  rl::TaskSet set = rl::curate(ctx.cfg, table, opt.master, ctx.rank, ctx.nranks, progress);
  set.source_checkpoint = checkpoint;
  const double seconds = elapsed();

  // Summary: histogram of every candidate's pass rate, the kept share and its mean.
  const int n = static_cast<int>(set.candidate_pass_rates.size());
  std::vector<int> bins(10, 0);
  for (float r : set.candidate_pass_rates) {
    // rates are k / samples; the small offset keeps exact tenths (e.g. 12/40 = 0.3) in their own bin
    bins[std::min(9, static_cast<int>(std::floor(static_cast<double>(r) * 10.0 + 1e-6)))] += 1;
  }
  const int widest = std::max(1, *std::max_element(bins.begin(), bins.end()));
  say(ctx, "\npass rate of the {} candidates ({} samples each):\n", n, cc.samples);
  for (int b = 0; b < 10; ++b) {
    say(ctx, "  [{:.1f}, {:.1f}{} {:>8}  {}\n", b / 10.0, (b + 1) / 10.0, b == 9 ? "]" : ")", bins[b],
        std::string(static_cast<std::size_t>((40LL * bins[b] + widest - 1) / widest), '#'));
  }
  double kept_mean = 0.0;
  for (float r : set.pass_rates) kept_mean += r;
  if (!set.pass_rates.empty()) kept_mean /= static_cast<double>(set.pass_rates.size());
  say(ctx, "kept {} of {} candidates ({:.1f}%) with pass rate in [{}, {}]; mean pass rate of the kept set {:.3f}\n",
      set.size(), n, n > 0 ? 100.0 * static_cast<double>(set.size()) / n : 0.0, cc.min_pass, cc.max_pass, kept_mean);
  say(ctx, "{} sequences in {:.1f} s ({:.1f} sequences/s)\n", sequences, seconds,
      seconds > 0 ? static_cast<double>(sequences) / seconds : 0.0);
  if (set.size() == 0) {
    throw InputError(fmt::format("curate: no candidate's pass rate is within [curate] min_pass = {} .. max_pass = {} "
                                 "({} candidates x {} samples); widen the bounds or raise [curate] candidates",
                                 cc.min_pass, cc.max_pass, cc.candidates, cc.samples));
  }

  // Rank 0 writes; every rank learns whether it worked (no rank waits forever on a failed write).
  const std::string path = (std::filesystem::path(run_dir) / "task_set.h5").string();
  int status = 0;
  std::string message;
  if (ctx.rank == 0) {
    try {
      rl::write_task_set(path, set, ctx.cfg.task, static_cast<std::uint64_t>(ctx.cfg.run.seed), ctx.resolved_deck);
    } catch (const std::exception& e) {
      status = 1;
      message = e.what();
    }
  }
  MPI_Bcast(&status, 1, MPI_INT, 0, MPI_COMM_WORLD);
  if (status != 0) {
    throw InputError(ctx.rank == 0 ? fmt::format("curate: writing {} failed: {}", path, message)
                                   : std::string("curate: writing the task set failed on rank 0"));
  }
  say(ctx, "task set: {}\n", path);
  return path;
}

}  // namespace mantissa::app
