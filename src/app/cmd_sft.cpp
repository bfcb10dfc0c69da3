// `mantissa sft`: the supervised warm start, with progress, held-out evaluation, metrics and
// checkpoints in the run directory.
#include <chrono>
#include <filesystem>

#include "app/app.hpp"
#include "app/jobs.hpp"
#include "io/hdf5.hpp"
#include "model/checkpoint.hpp"
#include "model/sft.hpp"
#include "tasks/tasks.hpp"
#include "tasks/tokenizer.hpp"

namespace mantissa::app {

void resolve_model_for_tasks(AppContext& ctx) {
  config::ModelConfig& m = ctx.cfg.model;
  const int vocab = tasks::vocab_size();
  if (m.vocab == 0) m.vocab = vocab;
  if (m.vocab < vocab) {
    throw InputError(fmt::format("{}: [model] vocab = {} is smaller than the task tokenizer's {}",
                                 ctx.deck.where("model", "vocab"), m.vocab, vocab));
  }
  const int need = 2 + tasks::max_prompt_length(ctx.cfg.task) + tasks::max_solution_length(ctx.cfg.task);
  if (need > m.max_seq) {
    throw InputError(fmt::format("{}: [model] max_seq = {} is too short: the [task] settings produce sequences of up "
                                 "to {} tokens",
                                 ctx.deck.where("model", "max_seq"), m.max_seq, need));
  }
}

SftSummary run_sft(AppContext& ctx, const std::string& run_dir) {
  const config::SftConfig& sc = ctx.cfg.sft;
  model::SftTrainer trainer(ctx.cfg, ctx.rank, ctx.nranks);
  if (sc.init_checkpoint.empty()) {
    trainer.init_fresh();
  } else {
    try {
      trainer.load(sc.init_checkpoint);
    } catch (const model::CheckpointError& e) {
      throw InputError(fmt::format("[sft] init_checkpoint: {}", e.what()));
    }
  }
  namespace fs = std::filesystem;
  const std::string ckpt_dir = (fs::path(run_dir) / "checkpoints").string();
  std::unique_ptr<io::File> metrics_file;
  std::unique_ptr<io::Series> series, eval_series;
  if (ctx.rank == 0) {
    fs::create_directories(ckpt_dir);
    const std::string path = (fs::path(run_dir) / "metrics.h5").string();
    // A reused run directory (run.overwrite) gets a fresh series: appending would mix two runs' rows.
    metrics_file = std::make_unique<io::File>(io::File::create(path));
    metrics_file->write_string("/provenance/deck", ctx.resolved_deck);
    series = std::make_unique<io::Series>(*metrics_file, "/sft");
    eval_series = std::make_unique<io::Series>(*metrics_file, "/sft_eval");
  }
  say(ctx, "sft: {} parameters, storage {}, {} rank(s), {} steps of {} problems ({} task)\n",
      trainer.table().total(), ctx.cfg.precision.storage, ctx.nranks, sc.steps, sc.batch_size, ctx.cfg.task.family);
  const auto eval_and_log = [&](long long step) {
    const model::EvalResult e = trainer.evaluate(sc.eval_problems);
    say(ctx, "sft eval  step {:>6}  held-out exact match {:6.1f}%  token accuracy {:6.2f}%  loss {:.4f} ({} problems)\n",
        step, 100.0 * e.exact_match, 100.0 * e.token_accuracy, e.loss, e.problems);
    if (eval_series) {
      eval_series->append({{"step", static_cast<double>(step)}, {"exact_match", e.exact_match},
                           {"token_accuracy", e.token_accuracy}, {"loss", e.loss}});
      eval_series->flush();
    }
    return e;
  };
  SftSummary summary;
  summary.initial = eval_and_log(trainer.step());
  const auto t0 = std::chrono::steady_clock::now();
  double window_tokens = 0.0, loss = 0.0;
  auto window_start = t0;
  for (int i = 0; i < sc.steps; ++i) {
    const model::StepResult r = trainer.train_step();
    const long long step = trainer.step();
    window_tokens += static_cast<double>(r.tokens);
    loss = r.loss;
    if (series) {
      series->append({{"step", static_cast<double>(step)}, {"loss", r.loss}, {"grad_norm", r.opt.grad_norm},
                      {"loss_scale", r.opt.loss_scale}, {"skipped", r.opt.skipped ? 1.0 : 0.0},
                      {"nonfinite", static_cast<double>(r.opt.nonfinite)}, {"lr", r.opt.lr},
                      {"tokens", static_cast<double>(r.tokens)}});
    }
    if ((i + 1) % sc.log_every == 0 || i + 1 == sc.steps) {
      const auto now = std::chrono::steady_clock::now();
      const double dt = std::chrono::duration<double>(now - window_start).count();
      const double elapsed = std::chrono::duration<double>(now - t0).count();
      const double eta = elapsed / (i + 1) * (sc.steps - i - 1);
      say(ctx, "sft step {:>6}/{}  loss {:.4f}  grad-norm {:8.3f}  scale {:>7g}  skipped {}  {:8.0f} tok/s  ETA {:.0f} s\n",
          step, sc.steps, r.loss, r.opt.grad_norm, r.opt.loss_scale, trainer.optimizer().scaler.skipped(),
          window_tokens / std::max(dt, 1e-9), eta);
      window_tokens = 0.0;
      window_start = now;
      if (series) series->flush();
    }
    const bool last = i + 1 == sc.steps;
    if (!last && sc.eval_every > 0 && step % sc.eval_every == 0) eval_and_log(step);
    if (!last && sc.checkpoint_every > 0 && step % sc.checkpoint_every == 0) {
      trainer.save((fs::path(ckpt_dir) / fmt::format("sft_step{:06d}.h5", step)).string(), ctx.resolved_deck);
    }
  }
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  summary.final_loss = loss;
  summary.final = eval_and_log(trainer.step());
  summary.checkpoint = (fs::path(run_dir) / "sft_final.h5").string();
  trainer.save(summary.checkpoint, ctx.resolved_deck);
  summary.steps = trainer.step();
  summary.skipped = trainer.optimizer().scaler.skipped();
  if (metrics_file) metrics_file->flush();
  say(ctx, "sft done: {} steps in {:.1f} s, held-out exact match {:.1f}% -> {:.1f}%, base policy written to {}\n",
      summary.steps, summary.seconds, 100.0 * summary.initial.exact_match, 100.0 * summary.final.exact_match,
      summary.checkpoint);
  return summary;
}

int cmd_sft(AppContext& ctx) {
  const auto t0 = std::chrono::steady_clock::now();
  resolve_model_for_tasks(ctx);
  const std::string run_dir = prepare_run_dir(ctx);
  run_sft(ctx, run_dir);
  finish_timing_report(ctx, run_dir, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return 0;
}

}  // namespace mantissa::app
