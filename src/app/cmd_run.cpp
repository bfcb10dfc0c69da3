// `mantissa run`: the main job. Stages present in this build: the supervised warm start, the
// training engine's precision check on the base policy, and the mismatch probe of the rollout engine
// against the training engine on it. The RL stages (losses, per-step metrics) come with a later
// issue; the job says so rather than pretending.
#include <chrono>

#include "app/app.hpp"
#include "app/jobs.hpp"
#include "model/precision_compare.hpp"
#include "tasks/tasks.hpp"

namespace mantissa::app {

int cmd_run(AppContext& ctx) {
  const auto t0 = std::chrono::steady_clock::now();
  resolve_model_for_tasks(ctx);
  const std::string run_dir = prepare_run_dir(ctx);
  say(ctx, "mantissa run: stage 1/3 supervised warm start\n");
  const SftSummary sft = run_sft(ctx, run_dir);

  say(ctx, "\nmantissa run: stage 2/3 training-engine precision check on the base policy\n");
  model::SftTrainer probe(ctx.cfg, 0, 1);  // every rank computes the same small table
  probe.load(sft.checkpoint);
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
  if (deltas[2].mean_abs > 0) say(ctx, "  bf16 / fp16 ratio: {:.1f} (unit roundoffs differ by 8x)\n", deltas[1].mean_abs / deltas[2].mean_abs);

  say(ctx, "\nmantissa run: stage 3/3 mismatch probe: rollout engine (mu) vs training engine (pi), same weights\n");
  run_probe(ctx, run_dir, sft.checkpoint);

  say(ctx,
      "\nmantissa run: done. What ran: warm start ({} steps, held-out exact match {:.1f}% -> {:.1f}%), the\n"
      "training-engine precision check and the mu-vs-pi probe above. Not in this build yet: RL with the\n"
      "paper's losses and per-step mismatch metrics (issue 5). Outputs: {}/\n",
      sft.steps, 100.0 * sft.initial.exact_match, 100.0 * sft.final.exact_match, run_dir);
  finish_timing_report(ctx, run_dir, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return 0;
}

const std::vector<Command>& commands() {
  static const std::vector<Command> list = {
      {"run", "the main job: warm start, then the stages this build has (see README)", &cmd_run},
      {"sft", "supervised warm start on generated worked solutions", &cmd_sft},
      {"curate", "perfectible task set: keep the problems the base policy solves 20-80% of the time", &cmd_curate},
      {"probe", "mismatch between the rollout and training engines per precision on a checkpoint", &cmd_probe},
  };
  return list;
}

}  // namespace mantissa::app
