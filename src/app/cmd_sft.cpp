// `mantissa sft`: the supervised warm start, with progress, held-out evaluation, metrics and
// checkpoints in the run directory.
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <Kokkos_Core.hpp>

#include "app/app.hpp"
#include "app/exit.hpp"
#include "app/health.hpp"
#include "app/jobs.hpp"
#include "app/stop.hpp"
#include "io/hdf5.hpp"
#include "model/checkpoint.hpp"
#include "model/params.hpp"
#include "model/sft.hpp"
#include "tasks/tasks.hpp"
#include "tasks/tokenizer.hpp"

namespace mantissa::app {

namespace {

// Bytes this rank certainly needs (a lower bound: the largest items only), so that a deck that
// cannot fit is refused before any work rather than failing after minutes with files written.
struct MemoryNeed {
  double weights = 0, activations = 0, rollout = 0;
  double total() const { return weights + activations + rollout; }
};

MemoryNeed estimate_memory(const config::Config& c, int nranks) {
  const model::ParamTable table(c.model);
  const double P = static_cast<double>(table.total()), d = c.model.d_model, ff = c.model.d_ff,
               L = c.model.n_layer, V = c.model.vocab, S = c.model.max_seq;
  const double kv = static_cast<double>(c.model.n_kv_head) * c.model.head_dim();
  MemoryNeed m;
  m.weights = 16.0 * P;  // fp32 master, gradients and both Adam moments
  // Training: per token at least the saved inputs of every layer's GEMMs in fp32-sized work
  // buffers and the logits row; tokens of the largest forward (an SFT batch or an RL mini-batch).
  const double sft_tokens = static_cast<double>(c.sft.batch_size) * S;
  // Each rank samples and trains on its share of the prompts; the SFT batch is per rank too.
  const double rl_rows = std::ceil(static_cast<double>(c.rl.prompts_per_step) / nranks) * c.rl.samples_per_prompt;
  const double rl_tokens = rl_rows / std::max(1, c.rl.updates_per_step) * S;
  const double per_token = 4.0 * (L * (4.0 * d + 2.0 * ff) + V);
  m.activations = per_token * std::max(sft_tokens, rl_tokens);
  // Rollout: the KV cache of every row and, for the exact KL, one vocabulary row per generated token.
  const double new_tokens = c.rollout.max_new_tokens > 0 ? std::min<double>(c.rollout.max_new_tokens, S) : S;
  m.rollout = rl_rows * S * L * 2.0 * kv * 2.0 + (c.rl.exact_kl ? rl_rows * new_tokens * V * 4.0 * 2.0 : 0.0);
  return m;
}

// MemAvailable of /proc/meminfo in bytes, or 0 when unknown.
double available_memory() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  double kib = 0;
  while (in >> key >> kib) {
    if (key == "MemAvailable:") return kib * 1024.0;
    in.ignore(1 << 10, '\n');
  }
  return 0.0;
}

// Free memory of this rank's GPU in bytes (CUDA builds), or 0 when unknown or not a GPU build.
double available_device_memory() {
#if defined(KOKKOS_ENABLE_CUDA)
  std::size_t free_bytes = 0, total_bytes = 0;
  if (cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess) return static_cast<double>(free_bytes);
#endif
  return 0.0;
}

void check_memory(const AppContext& ctx) {
  const bool host = Kokkos::SpaceAccessibility<Kokkos::HostSpace, MemSpace>::accessible;
  // Host memory is shared by the node's ranks; a GPU build runs one rank per GPU (inputs/jobs/gpu.slurm).
  const double avail = host ? available_memory() : available_device_memory();
  if (avail <= 0) return;
  int local = 1;
  if (host) {
    MPI_Comm node;  // ranks on this node share its memory
    MPI_Comm_split_type(ctx.comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
    MPI_Comm_size(node, &local);
    MPI_Comm_free(&node);
  }
  const MemoryNeed need = estimate_memory(ctx.cfg, ctx.nranks);
  if (need.total() * local <= avail) return;
  const auto gib = [](double b) { return b / (1024.0 * 1024.0 * 1024.0); };
  throw InputError(fmt::format(
      "the deck needs at least {:.1f} GiB per rank (weights and optimizer {:.1f}, training activations {:.1f}, "
      "rollout KV cache and exact-KL rows {:.1f}) x {} rank(s) on this {}, but only {:.1f} GiB is available; "
      "reduce [model] sizes, max_seq, batch sizes or [rollout] max_new_tokens, set [rl] exact_kl = false, or use "
      "more nodes",
      gib(need.total()), gib(need.weights), gib(need.activations), gib(need.rollout), local, host ? "node" : "GPU",
      gib(avail)));
}

}  // namespace

void resolve_model_for_tasks(AppContext& ctx) {
  config::ModelConfig& m = ctx.cfg.model;
  const int vocab = tasks::vocab_size();
  if (m.vocab == 0) m.vocab = vocab;
  if (m.vocab < vocab) {
    throw InputError(fmt::format("{}: [model] vocab = {} is smaller than the task tokenizer's {}",
                                 deck_where(ctx, "model", "vocab"), m.vocab, vocab));
  }
  const int need = 2 + tasks::max_prompt_length(ctx.cfg.task) + tasks::max_solution_length(ctx.cfg.task);
  if (need > m.max_seq) {
    throw InputError(fmt::format("{}: [model] max_seq = {} is too short: the [task] settings produce sequences of up "
                                 "to {} tokens",
                                 deck_where(ctx, "model", "max_seq"), m.max_seq, need));
  }
  check_memory(ctx);
}

void model_from_checkpoint(AppContext& ctx, const char* block, const char* key, const std::string& path,
                           const char* required_note) {
  if (path.empty()) throw key_error(ctx, block, key, required_note);
  try {
    ctx.cfg.model = model::read_checkpoint_model(path);
  } catch (const model::CheckpointError& e) {
    throw key_error(ctx, block, key, e.what());
  }
  if (std::string(block) == "rl" && std::string(key) == "init_checkpoint") {
    // The RL stage starts from a base policy; an RL checkpoint carries its own step counters.
    std::string stage;
    try {
      stage = io::File::open_read(path).read_attr<std::string>("/", "stage");
    } catch (const io::IoError& e) {
      throw key_error(ctx, block, key, e.what());
    }
    if (stage != "sft") {
      throw key_error(ctx, block, key,
                      fmt::format("{} is a checkpoint of the '{}' stage, not a base policy: name a warm start's "
                                  "checkpoint (sft_final.h5), or continue that run with --restart",
                                  path, stage));
    }
  }
  resolve_model_for_tasks(ctx);
}

SftSummary run_sft(AppContext& ctx, const std::string& run_dir) {
  namespace fs = std::filesystem;
  const config::SftConfig& sc = ctx.cfg.sft;
  const std::string ckpt_dir = (fs::path(run_dir) / "checkpoints").string();
  model::SftTrainer trainer(ctx.cfg, ctx.comm);
  // Where the warm start begins: fresh, [sft] init_checkpoint, or on a restart its newest usable checkpoint.
  std::string resume;
  if (!ctx.restart.empty()) {
    std::vector<std::string> candidates =
        ctx.restart == "auto" ? step_checkpoints(ckpt_dir, "sft") : std::vector<std::string>{ctx.restart};
    for (const std::string& c : candidates) {
      try {
        model::SftTrainer probe(ctx.cfg, ctx.comm);
        if (probe.load(c).stage == "sft") {
          resume = c;
          break;
        }
      } catch (const model::CheckpointError& e) {
        if (ctx.restart != "auto") throw InputError(fmt::format("--restart: {}", e.what()));
        say(ctx, "warning: skipping unusable checkpoint: {}\n", e.what());
      }
    }
  }
  try {
    if (!resume.empty()) {
      trainer.load(resume);
    } else if (sc.init_checkpoint.empty()) {
      trainer.init_fresh();
    } else {
      trainer.load(sc.init_checkpoint);
    }
  } catch (const model::CheckpointError& e) {
    throw key_error(ctx, "sft", "init_checkpoint", e.what());
  }
  // A resumed run or one from [sft] init_checkpoint continues the checkpoint's step count: sft.steps is the
  // warm start's total, as the lr schedule counts it (a continuation used to run sft.steps more steps).
  const long long s0 = trainer.step();
  if (resume.empty() && !sc.init_checkpoint.empty() && s0 >= sc.steps) {
    throw key_error(ctx, "sft", "steps",
                    fmt::format("{} is the warm start's total number of steps, but init_checkpoint {} is already at "
                                "step {}: set sft.steps above {} to continue it",
                                sc.steps, sc.init_checkpoint, s0, s0));
  }
  std::unique_ptr<io::File> metrics_file;
  std::unique_ptr<io::Series> series, eval_series;
  if (ctx.rank == 0) {
    fs::create_directories(ckpt_dir);
    metrics_file = open_metrics(ctx, run_dir, /*fresh=*/ctx.restart.empty());
    series = std::make_unique<io::Series>(*metrics_file, "/sft");
    eval_series = std::make_unique<io::Series>(*metrics_file, "/sft_eval");
    // A resumed warm start continues its series after the checkpoint's step (a fresh one: no-op).
    series->resume_after(s0);
    eval_series->resume_after(s0);
  }
  say(ctx, "sft: {} parameters, storage {}, {} rank(s), {} steps of {} problems ({} task)\n",
      trainer.table().total(), ctx.cfg.precision.storage, ctx.nranks, sc.steps, sc.batch_size, ctx.cfg.task.family);
  if (s0 > 0) say(ctx, "sft: {} from {} after step {}\n", resume.empty() ? "continuing" : "resumed",
                  resume.empty() ? sc.init_checkpoint : resume, s0);
  const auto eval_and_log = [&](long long step) {
    const model::EvalResult e = trainer.evaluate(sc.eval_problems);
    say(ctx, "sft eval  step {:>6}  held-out exact match {:6.1f}%  token accuracy {:6.2f}%  loss {:.4f} ({} problems)\n",
        step, 100.0 * e.exact_match, 100.0 * e.token_accuracy, e.loss, e.problems);
    if (eval_series) {
      eval_series->append(finite_row({{"step", static_cast<double>(step)}, {"exact_match", e.exact_match},
                                      {"token_accuracy", e.token_accuracy}, {"loss", e.loss}}));
      eval_series->flush();
    }
    return e;
  };
  SftSummary summary;
  if (resume.empty()) summary.initial = eval_and_log(trainer.step());
  const auto t0 = std::chrono::steady_clock::now();
  SkipWatch skips("the warm start");
  double window_tokens = 0.0, loss = 0.0, slowest = 0.0;
  auto window_start = t0;
  for (long long i = s0; i < sc.steps; ++i) {
    const auto ts = std::chrono::steady_clock::now();
    const model::StepResult r = trainer.train_step();
    const long long step = trainer.step();
    window_tokens += static_cast<double>(r.tokens);
    loss = r.loss;
    if (series) {
      series->append(finite_row({{"step", static_cast<double>(step)}, {"loss", r.loss}, {"grad_norm", r.opt.grad_norm},
                                 {"loss_scale", r.opt.loss_scale}, {"skipped", r.opt.skipped ? 1.0 : 0.0},
                                 {"nonfinite", static_cast<double>(r.opt.nonfinite)}, {"lr", r.opt.lr},
                                 {"tokens", static_cast<double>(r.tokens)}}));
    }
    try {
      skips.record(ctx, trainer.optimizer().attempted, trainer.optimizer().scaler.skipped());
    } catch (const Diverged&) {
      if (series) series->flush();
      throw;
    }
    if ((i + 1) % sc.log_every == 0 || i + 1 == sc.steps) {
      const auto now = std::chrono::steady_clock::now();
      const double dt = std::chrono::duration<double>(now - window_start).count();
      const double elapsed = std::chrono::duration<double>(now - t0).count();
      const double eta = elapsed / static_cast<double>(i + 1 - s0) * static_cast<double>(sc.steps - i - 1);
      say(ctx, "sft step {:>6}/{}  loss {:.4f}  grad-norm {:8.3f}  scale {:>7g}  skipped {}  {:8.0f} tok/s  ETA {:.0f} s\n",
          step, sc.steps, r.loss, r.opt.grad_norm, r.opt.loss_scale, trainer.optimizer().scaler.skipped(),
          window_tokens / std::max(dt, 1e-9), eta);
      window_tokens = 0.0;
      window_start = now;
      if (series) series->flush();
    }
    const bool last = i + 1 == sc.steps;
    if (!last && sc.eval_every > 0 && step % sc.eval_every == 0) eval_and_log(step);
    const std::string ckpt = (fs::path(ckpt_dir) / fmt::format("sft_step{:06d}.h5", step)).string();
    const bool periodic = !last && sc.checkpoint_every > 0 && step % sc.checkpoint_every == 0;
    if (periodic) {
      if (series) series->flush();  // the series reaches the checkpoint's step before the checkpoint exists
      trainer.save(ckpt, ctx.resolved_deck);
    }
    slowest = std::max(slowest, std::chrono::duration<double>(std::chrono::steady_clock::now() - ts).count());
    if (last) break;
    const std::string why = stop_reason(ctx, slowest, step);
    if (!why.empty()) {
      if (series) series->flush();
      if (!periodic) trainer.save(ckpt, ctx.resolved_deck);
      throw Interrupted(resume_hint(ctx, why, ckpt));
    }
  }
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  summary.final_loss = loss;
  summary.final = eval_and_log(trainer.step());
  if (s0 > 0 && eval_series) {  // the evaluation before the first step was written by the first attempt
    const std::vector<double> em = eval_series->column("exact_match");
    summary.initial.exact_match = em.empty() ? 0.0 : em.front();
  }
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
