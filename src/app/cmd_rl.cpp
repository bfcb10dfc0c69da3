// The RL stage: `mantissa rl` (from [rl] init_checkpoint) and the last stage of `mantissa run`.
// Per storage precision of [rl] precisions: RL from the same base policy, one progress line per
// step on rank 0, every metric per step in metrics.h5 (/rl/<precision>/steps, flushed every
// [rl] flush_every steps), held-out evaluations in /rl/<precision>/eval, checkpoints, and at the
// end a side-by-side summary with the Ljung-Box drift diagnostic and a PNG of the curves.
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>

#include "app/app.hpp"
#include "app/exit.hpp"
#include "app/health.hpp"
#include "app/jobs.hpp"
#include "app/stop.hpp"
#include "io/hdf5.hpp"
#include "mantissa/version.hpp"
#include "model/checkpoint.hpp"
#include "rl/rl_trainer.hpp"
#include "rl/task_set.hpp"

namespace mantissa::app {

namespace {

double mean_of(const std::vector<double>& v, std::size_t first, std::size_t last) {
  if (first >= last) return 0.0;
  double s = 0.0;
  for (std::size_t i = first; i < last; ++i) s += v[i];
  return s / static_cast<double>(last - first);
}

// Peak of the moving average over `w` steps (the whole mean for shorter series).
double peak_moving_average(const std::vector<double>& v, std::size_t w) {
  if (v.size() <= w) return mean_of(v, 0, v.size());
  double best = -1e300;
  for (std::size_t i = 0; i + w <= v.size(); ++i) best = std::max(best, mean_of(v, i, i + w));
  return best;
}

}  // namespace

// The summary of one precision's run, from its series in metrics.h5 (rank 0): the same for a run
// that went through in one go, one that was resumed, and one completed before a restart.
RlSummary read_rl_summary(io::File& file, const std::string& pname, const std::string& checkpoint) {
  const std::string g = "/rl/" + pname;
  io::Series steps(file, g + "/steps"), evals(file, g + "/eval");
  RlSummary sum;
  sum.precision = pname;
  sum.checkpoint = checkpoint;
  const std::vector<std::string> have = steps.columns();
  const auto col = [&](const char* name) {  // a run of 0 steps has no columns
    return std::find(have.begin(), have.end(), name) != have.end() ? steps.column(name) : std::vector<double>{};
  };
  const std::vector<double> reward = col("reward_mean"), seq_lr = col("mm_seq_logratio_mean");
  const std::size_t n = reward.size(), w = std::max<std::size_t>(1, std::min<std::size_t>(5, n / 4 + 1));
  sum.steps = static_cast<long long>(n);
  sum.reward_first = mean_of(reward, 0, std::min(n, w));
  sum.reward_last = mean_of(reward, n - std::min(n, w), n);
  sum.reward_peak = peak_moving_average(reward, w);
  sum.kl_mean = mean_of(col("mm_exact_kl_mu_pi_token"), 0, n);
  sum.abs_logratio_mean = mean_of(col("mm_mean_abs_logratio"), 0, n);
  sum.seq_abs_logratio_mean = mean_of(col("mm_seq_logratio_abs_mean"), 0, n);
  sum.seq_logratio_mean = mean_of(seq_lr, 0, n);
  sum.drift = rl::drift_diagnostic(seq_lr);
  const std::vector<double> skipped = col("skipped_total");
  sum.skipped = skipped.empty() ? 0 : static_cast<long long>(skipped.back());
  const auto total = [&](const char* name) {
    const std::vector<double> v = col(name);
    return mean_of(v, 0, n) * static_cast<double>(n);
  };
  sum.phases.rollout = total("time_rollout");
  sum.phases.recompute = total("time_recompute");
  sum.phases.update = total("time_update");
  sum.phases.comm = total("time_comm");
  sum.seconds = sum.phases.total();
  const std::vector<std::string> have_eval = evals.columns();
  const std::vector<double> pass = std::find(have_eval.begin(), have_eval.end(), "pass_at_1") != have_eval.end()
                                       ? evals.column("pass_at_1")
                                       : std::vector<double>{};
  sum.eval_initial = pass.empty() ? 0.0 : pass.front();
  sum.eval_final = pass.empty() ? 0.0 : pass.back();
  return sum;
}

namespace {

// Whether `path` is a checkpoint of this model that loads completely; prints why not (rank 0).
bool usable_checkpoint(const AppContext& ctx, const std::string& path, const model::ParamTable& table) {
  try {
    model::Optimizer scratch(table, ctx.cfg.rl_optimizer, ctx.cfg.loss_scale, Precision::fp32);
    model::load_checkpoint(path, ctx.cfg.model, table, scratch);
    return true;
  } catch (const model::CheckpointError& e) {
    say(ctx, "warning: skipping unusable checkpoint: {}\n", e.what());
    return false;
  }
}

}  // namespace

std::vector<RlSummary> run_rl(AppContext& ctx, const std::string& run_dir, const std::string& base_checkpoint,
                              const std::string& task_set_path, bool fresh_metrics) {
  namespace fs = std::filesystem;
  const config::RlConfig& rc = ctx.cfg.rl;
  // The engines of each run, by their resolved names ([precision] rollout_storage applied): the names
  // of the metrics groups, checkpoints and final files.
  std::vector<config::EnginePrecisions> runs;
  for (const std::string& e : rc.precisions) runs.push_back(ctx.cfg.precision.engines(e));
  if (runs.empty()) runs.push_back(ctx.cfg.precision.engines());
  rl::TaskSet set;
  if (!task_set_path.empty()) {
    try {
      set = rl::read_task_set(task_set_path, ctx.cfg.task, static_cast<std::uint64_t>(ctx.cfg.run.seed));
    } catch (const std::exception& e) {
      throw key_error(ctx, "rl", "task_set", e.what());
    }
  }
  const bool restarting = !ctx.restart.empty();
  model::Counters explicit_restart;
  if (restarting && ctx.restart != "auto") {
    try {
      model::ParamTable table(ctx.cfg.model);
      model::Optimizer scratch(table, ctx.cfg.rl_optimizer, ctx.cfg.loss_scale, Precision::fp32);
      explicit_restart = model::load_checkpoint(ctx.restart, ctx.cfg.model, table, scratch);
    } catch (const model::CheckpointError& e) {
      throw InputError(fmt::format("--restart: {}", e.what()));
    }
  }
  const std::string ckpt_dir = (fs::path(run_dir) / "checkpoints").string();
  const std::string h5 = (fs::path(run_dir) / "metrics.h5").string();
  std::unique_ptr<io::File> file;
  if (ctx.rank == 0) {
    fs::create_directories(ckpt_dir);
    file = open_metrics(ctx, run_dir, /*fresh=*/fresh_metrics && !restarting);
  }
  std::vector<RlSummary> out;
  for (const config::EnginePrecisions& p : runs) {
    const std::string pname = p.name();
    const std::string final_path = (fs::path(run_dir) / fmt::format("rl_{}_final.h5", pname)).string();
    rl::RlTrainer trainer(ctx.cfg, p, ctx.comm);
    // Where this precision's run starts: the base policy, or on a restart its newest usable checkpoint.
    std::string start = base_checkpoint;
    if (restarting) {
      if (fs::exists(final_path) && usable_checkpoint(ctx, final_path, trainer.table())) {
        say(ctx, "\nrl {}: completed before the restart ({}), kept\n", pname, final_path);
        if (file) out.push_back(read_rl_summary(*file, pname, final_path));
        continue;
      }
      if (ctx.restart == "auto") {
        for (const std::string& c : step_checkpoints(ckpt_dir, "rl_" + pname)) {
          if (usable_checkpoint(ctx, c, trainer.table())) {
            start = c;
            break;
          }
        }
      } else if (explicit_restart.stage == "rl" && explicit_restart.precision == pname) {
        start = ctx.restart;
      }
    }
    try {
      trainer.load(start);
    } catch (const model::CheckpointError& e) {
      throw key_error(ctx, "rl", "init_checkpoint", e.what());
    }
    if (!task_set_path.empty()) trainer.use_task_set(set);
    const long long s0 = trainer.steps_done();
    std::unique_ptr<io::Series> steps, evals;
    if (file) {
      const std::string g = "/rl/" + pname;
      if (file->exists(g) && !restarting) throw InputError(fmt::format("{}: {} already exists", h5, g));
      steps = std::make_unique<io::Series>(*file, g + "/steps");
      evals = std::make_unique<io::Series>(*file, g + "/eval");
      // A resumed run continues its series after the checkpoint's step: rows written after it are dropped.
      steps->resume_after(s0);
      evals->resume_after(s0);
      file->flush();
    }
    say(ctx,
        "\nrl {}: loss {}, advantage {}, {} steps x {} prompts x {} samples, {} updates/step, lr {:g}, temperature {}, "
        "{} rank(s), training on {}\n",
        pname, rc.loss, rc.advantage, rc.steps, rc.prompts_per_step, rc.samples_per_prompt, rc.updates_per_step,
        ctx.cfg.rl_optimizer.lr, ctx.cfg.rollout.temperature, ctx.nranks,
        task_set_path.empty() ? std::string("generated train problems")
                              : fmt::format("the curated set {} ({} problems)", task_set_path, set.indices.size()));
    if (s0 > 0) say(ctx, "rl {}: resumed from {} after step {}\n", pname, start, s0);
    const auto evaluate = [&]() {
      const rl::EvalRecord e = trainer.evaluate();
      say(ctx, "rl {} eval step {:>5}: held-out pass@1 {:.3f}, pass@{} {:.3f} ({} problems, temperature {})\n", pname,
          e.step, e.pass_at_1, e.samples, e.pass_at_n, e.problems, rc.eval_temperature);
      if (evals) {
        evals->append(finite_row({{"step", static_cast<double>(e.step)}, {"pass_at_1", e.pass_at_1},
                                  {"pass_at_n", e.pass_at_n}, {"response_length_mean", e.response_length_mean}}));
        evals->flush();
      }
    };
    if (s0 == 0) evaluate();
    const auto t0 = std::chrono::steady_clock::now();
    SkipWatch skips("rl " + pname);
    double slowest = 0.0;
    for (long long i = s0; i < rc.steps; ++i) {
      const auto ts = std::chrono::steady_clock::now();
      const rl::StepRecord s = trainer.step();
      if (steps) {
        steps->append(finite_row(s.row));
        if ((i + 1) % rc.flush_every == 0) steps->flush();
      }
      try {
        skips.record(ctx, trainer.optimizer().attempted, trainer.optimizer().scaler.skipped());
      } catch (const Diverged&) {
        if (steps) steps->flush();
        throw;
      }
      if ((i + 1) % rc.log_every == 0 || i + 1 == rc.steps) {
        const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        const double tot = std::max(1e-12, s.times.total());
        say(ctx,
            "rl {} step {:>5}/{} reward {:.3f} len {:5.1f} KL {:8.2e} |dlogp| {:8.2e} seq {:+8.2e} clip {:.3f} "
            "gnorm {:7.3f} scale {:g}{} | {:.2f} s: roll {:.0f}% recomp {:.0f}% upd {:.0f}% comm {:.0f}% | ETA {:.0f} s\n",
            pname, s.step, rc.steps, s.reward_mean, s.response_length_mean, s.mismatch.exact_kl_mu_pi_token,
            s.mismatch.mean_abs_logratio, s.mismatch.seq_logratio_mean,
            s.loss.clipped_tokens / std::max(1.0, s.loss.tokens), s.grad_norm, s.loss_scale,
            s.skipped ? fmt::format(" skipped {}", s.skipped) : std::string(), tot, 100 * s.times.rollout / tot,
            100 * s.times.recompute / tot, 100 * s.times.update / tot, 100 * s.times.comm / tot,
            el / static_cast<double>(i + 1 - s0) * static_cast<double>(rc.steps - i - 1));
      }
      const bool last = i + 1 == rc.steps;
      if (!last && rc.eval_every > 0 && s.step % rc.eval_every == 0) evaluate();
      const std::string ckpt = (fs::path(ckpt_dir) / fmt::format("rl_{}_step{:06d}.h5", pname, s.step)).string();
      const bool periodic = !last && rc.checkpoint_every > 0 && s.step % rc.checkpoint_every == 0;
      if (periodic) {
        if (steps) steps->flush();  // the series reaches the checkpoint's step before the checkpoint exists
        trainer.save(ckpt, ctx.resolved_deck);
      }
      slowest = std::max(slowest, std::chrono::duration<double>(std::chrono::steady_clock::now() - ts).count());
      if (last) break;
      const std::string why = stop_reason(ctx, slowest, s.step);
      if (!why.empty()) {
        if (steps) steps->flush();
        if (file) file->flush();
        if (!periodic) trainer.save(ckpt, ctx.resolved_deck);
        throw Interrupted(resume_hint(ctx, why, ckpt));
      }
    }
    if (steps) steps->flush();
    evaluate();
    trainer.save(final_path, ctx.resolved_deck);
    if (file) {
      RlSummary sum = read_rl_summary(*file, pname, final_path);
      const std::string g = "/rl/" + pname;
      file->write_attr(g, "ljung_box_q", sum.drift.q);
      file->write_attr(g, "ljung_box_lags", static_cast<std::int64_t>(sum.drift.lags));
      file->write_attr(g, "ljung_box_p", sum.drift.p_value);
      file->write_attr(g, "loss", rc.loss);
      file->flush();
      out.push_back(sum);
    }
  }
  if (file) file->close();
  print_rl_summary(ctx, out);
  if (ctx.rank == 0 && !out.empty()) {
    const std::string plot = fmt::format("/usr/bin/python3 {} {} {}", kPlotRl, h5, run_dir);
    if (rc.plot && std::system("/usr/bin/python3 -c 'import h5py, matplotlib' >/dev/null 2>&1") == 0) {
      const int rc_plot = std::system((plot + " >/dev/null").c_str());
      say(ctx, rc_plot == 0 ? "figure: {0}/rl_curves.png\n" : "plotting failed; run: {1}\n", run_dir, plot);
    } else {
      say(ctx, "figure: run {}\n", plot);
    }
  }
  return out;
}

void print_rl_summary(const AppContext& ctx, const std::vector<RlSummary>& runs) {
  if (runs.empty()) return;
  say(ctx, "\nRL summary ({}, {} steps each)\n{:<34}", ctx.cfg.rl.loss, runs.front().steps, "measure");
  for (const auto& r : runs) say(ctx, " {:>12}", r.precision);
  say(ctx, "\n");
  const auto line = [&](const char* name, auto get, const char* f) {
    say(ctx, "{:<34}", name);
    for (const auto& r : runs) say(ctx, " {:>12}", fmt::format(fmt::runtime(f), get(r)));
    say(ctx, "\n");
  };
  line("training reward, first steps", [](const RlSummary& r) { return r.reward_first; }, "{:.3f}");
  line("training reward, last steps", [](const RlSummary& r) { return r.reward_last; }, "{:.3f}");
  line("training reward, peak (moving avg)", [](const RlSummary& r) { return r.reward_peak; }, "{:.3f}");
  line("held-out pass@1 before", [](const RlSummary& r) { return r.eval_initial; }, "{:.3f}");
  line("held-out pass@1 after", [](const RlSummary& r) { return r.eval_final; }, "{:.3f}");
  line("exact KL(mu||pi_old)/token, mean", [](const RlSummary& r) { return r.kl_mean; }, "{:.3e}");
  line("mean |log pi_old - log mu|", [](const RlSummary& r) { return r.abs_logratio_mean; }, "{:.3e}");
  line("mean |seq log-ratio|", [](const RlSummary& r) { return r.seq_abs_logratio_mean; }, "{:.3e}");
  line("mean seq log-ratio", [](const RlSummary& r) { return r.seq_logratio_mean; }, "{:+.3e}");
  line("Ljung-Box Q of seq log-ratio", [](const RlSummary& r) { return r.drift.q; }, "{:.2f}");
  line("Ljung-Box lags", [](const RlSummary& r) { return r.drift.lags; }, "{}");
  line("Ljung-Box p (small = drift)", [](const RlSummary& r) { return r.drift.p_value; }, "{:.3f}");
  line("skipped updates (loss scale)", [](const RlSummary& r) { return r.skipped; }, "{}");
  line("seconds per step", [](const RlSummary& r) { return r.seconds / std::max(1LL, r.steps); }, "{:.2f}");
  const auto share = [](const RlSummary& r, double x) { return 100.0 * x / std::max(1e-12, r.phases.total()); };
  line("share rollout %", [&](const RlSummary& r) { return share(r, r.phases.rollout); }, "{:.1f}");
  line("share recompute %", [&](const RlSummary& r) { return share(r, r.phases.recompute); }, "{:.1f}");
  line("share update %", [&](const RlSummary& r) { return share(r, r.phases.update); }, "{:.1f}");
  line("share communication %", [&](const RlSummary& r) { return share(r, r.phases.comm); }, "{:.1f}");
  if (runs.front().drift.lags == 0) say(ctx, "(Ljung-Box needs at least 10 steps)\n");
}

int cmd_rl(AppContext& ctx) {
  const auto t0 = std::chrono::steady_clock::now();
  if (ctx.cfg.rl.steps == 0) throw key_error(ctx, "rl", "steps", "is 0: mantissa rl would have nothing to do");
  const std::string& base = ctx.cfg.rl.init_checkpoint;
  model_from_checkpoint(ctx, "rl", "init_checkpoint", base,
                        "required by mantissa rl (the base policy, e.g. the sft_final.h5 of a mantissa sft run); "
                        "mantissa run trains one first when it is empty");
  const std::string run_dir = prepare_run_dir(ctx);
  run_rl(ctx, run_dir, base, ctx.cfg.rl.task_set, true);  // on a restart the existing metrics.h5 is continued
  finish_timing_report(ctx, run_dir, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return 0;
}

}  // namespace mantissa::app
