// `mantissa run`: the main job. Stages, in order:
//   1. warm start ([sft]) unless [rl] init_checkpoint names a base policy;
//   2. if [probe] enabled: the training engine's precision check and the mu-vs-pi probe on the base;
//   3. if [curate] enabled: the perfectible task set, which the RL stage then trains on;
//   4. RL ([rl], [rl_optimizer]) once per [rl] precisions entry, from the same base policy.
// Everything goes to the run directory: deck.toml, metrics.h5, checkpoints, figures, timing.txt.
#include <chrono>
#include <filesystem>

#include "app/app.hpp"
#include "app/jobs.hpp"
#include "io/hdf5.hpp"
#include "model/checkpoint.hpp"
#include "rl/task_set.hpp"
#include "model/precision_compare.hpp"
#include "tasks/tasks.hpp"

namespace mantissa::app {

namespace {

void precision_check(AppContext& ctx, const std::string& checkpoint) {
  model::SftTrainer probe(ctx.cfg, MPI_COMM_SELF);  // every rank computes the same small table
  probe.load(checkpoint);
  model::PackedBatch batch;
  const int n = std::min(64, ctx.cfg.sft.eval_problems);
  for (int i = 0; i < n; ++i) {
    const auto p = tasks::make_problem(ctx.cfg.task, static_cast<std::uint64_t>(ctx.cfg.run.seed),
                                       tasks::split_index(tasks::Split::eval, static_cast<std::uint64_t>(i)));
    const auto ex = tasks::encode_example(p);
    batch.add_sequence(ex.ids, ex.prompt_tokens - 1);
  }
  batch.upload();
  const auto deltas = model::compare_precisions(ctx.cfg.model, probe.table(), probe.optimizer().master, batch);
  say(ctx, "  same fp32 master weights, {} held-out problems, {} response tokens\n", n, deltas[0].tokens);
  say(ctx, "  {:<9} {:>24} {:>16}\n", "storage", "mean |logp - logp_fp32|", "max");
  for (const auto& d : deltas) {
    say(ctx, "  {:<9} {:>24.3e} {:>16.3e}\n", precision_name(d.precision), d.mean_abs, d.max_abs);
  }
  if (deltas[2].mean_abs > 0) {
    say(ctx, "  bf16 / fp16 ratio: {:.1f} (unit roundoffs differ by 8x)\n", deltas[1].mean_abs / deltas[2].mean_abs);
  }
}

}  // namespace

int cmd_run(AppContext& ctx) {
  const auto t0 = std::chrono::steady_clock::now();
  std::string base = ctx.cfg.rl.init_checkpoint;
  const bool warm_start = base.empty();
  if (warm_start) {
    resolve_model_for_tasks(ctx);
  } else {
    model_from_checkpoint(ctx, "rl", "init_checkpoint", base, "");
  }
  const std::string run_dir = prepare_run_dir(ctx);
  const int stages = (warm_start ? 1 : 0) + (ctx.cfg.probe.enabled ? 1 : 0) + (ctx.cfg.curate.enabled ? 1 : 0) +
                     (ctx.cfg.rl.steps > 0 ? 1 : 0);
  int stage = 0;
  std::string sft_line;
  namespace fs = std::filesystem;
  const bool restarting = !ctx.restart.empty();
  // On a restart, a stage whose output is complete is kept (an explicit --restart checkpoint of a
  // later stage implies that the earlier ones are complete).
  const auto done = [&](const std::string& file, auto&& usable) {
    const std::string path = (fs::path(run_dir) / file).string();
    if (!restarting || !fs::exists(path)) return false;
    try {
      usable(path);
      return true;
    } catch (const std::exception& e) {
      say(ctx, "warning: {} cannot be reused ({}); its stage runs again\n", path, e.what());
      return false;
    }
  };
  if (warm_start) {
    say(ctx, "mantissa run: stage {}/{} supervised warm start\n", ++stage, stages);
    const std::string final_sft = (fs::path(run_dir) / "sft_final.h5").string();
    if (done("sft_final.h5", [&](const std::string& p) {
          model::SftTrainer t(ctx.cfg, ctx.comm);
          t.load(p);
        })) {
      say(ctx, "kept from before the restart: {}\n", final_sft);
      base = final_sft;
      sft_line = "warm start (from before the restart), ";
    } else {
      const SftSummary sft = run_sft(ctx, run_dir);
      base = sft.checkpoint;
      sft_line = fmt::format("warm start {} steps (held-out exact match {:.1f}% -> {:.1f}%), ", sft.steps,
                             100.0 * sft.initial.exact_match, 100.0 * sft.final.exact_match);
    }
  }
  if (ctx.cfg.probe.enabled && done("probe.h5", [](const std::string& p) { io::File::open_read(p); })) {
    say(ctx, "\nmantissa run: stage {}/{} probe: kept from before the restart\n", ++stage, stages);
  } else if (ctx.cfg.probe.enabled) {
    say(ctx, "\nmantissa run: stage {}/{} precision check and mu-vs-pi probe of the base policy\n", ++stage, stages);
    precision_check(ctx, base);
    run_probe(ctx, run_dir, base);
  }
  std::string task_set = ctx.cfg.rl.task_set;
  if (ctx.cfg.curate.enabled) {
    say(ctx, "\nmantissa run: stage {}/{} curation of a perfectible task set\n", ++stage, stages);
    if (done("task_set.h5", [&](const std::string& p) {
          rl::read_task_set(p, ctx.cfg.task, static_cast<std::uint64_t>(ctx.cfg.run.seed));
        })) {
      task_set = (fs::path(run_dir) / "task_set.h5").string();
      say(ctx, "kept from before the restart: {}\n", task_set);
    } else {
      task_set = run_curate(ctx, run_dir, ctx.cfg.curate.checkpoint.empty() ? base : ctx.cfg.curate.checkpoint);
    }
  }
  std::vector<RlSummary> rl;
  if (ctx.cfg.rl.steps > 0) {
    say(ctx, "\nmantissa run: stage {}/{} RL fine-tuning\n", ++stage, stages);
    rl = run_rl(ctx, run_dir, base, task_set, !warm_start);
  }
  std::string rl_line;
  for (const auto& r : rl) {
    rl_line += fmt::format("RL {} reward {:.3f} -> {:.3f} (pass@1 {:.3f} -> {:.3f}); ", r.precision, r.reward_first,
                           r.reward_last, r.eval_initial, r.eval_final);
  }
  say(ctx, "\nmantissa run: done: {}{}outputs in {}/\n", sft_line, rl_line, run_dir);
  finish_timing_report(ctx, run_dir, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return 0;
}

const std::vector<Command>& commands() {
  static const std::vector<Command> list = {
      {"run", "the main job: warm start, probe, curation and RL, as the deck asks", &cmd_run},
      {"sft", "supervised warm start on generated worked solutions", &cmd_sft},
      {"curate", "perfectible task set: keep the problems the base policy solves 20-80% of the time", &cmd_curate},
      {"rl", "RL fine-tuning of the base policy [rl] init_checkpoint", &cmd_rl},
      {"probe", "mismatch between the rollout and training engines per precision on a checkpoint", &cmd_probe},
      {"study", "a sweep of precisions x losses x seeds over groups of MPI ranks", &cmd_study},
  };
  return list;
}

}  // namespace mantissa::app
