#pragma once
// Mantissa's configuration: one struct per deck block, each with one schema (`visit`) that reads,
// prints and documents it. Names here are the deck's names, the code's names and the docs' names.
#include <cstdint>
#include <string>
#include <vector>

#include "config/checks.hpp"  // not deck.hpp: no toml++ here (see checks.hpp)
#include "mantissa/kernels/fp8.hpp"
#include "mantissa/kernels/precision.hpp"
#include "tasks/tasks.hpp"

namespace mantissa::config {

class Deck;  // config/deck.hpp

struct RunConfig {
  std::string name = "run";
  std::string output_dir = "runs";
  std::int64_t seed = 1234;
  bool overwrite = false;
  double wall_time = 0.0;
  template <class V>
  void visit(V& v) {
    v.key("name", name, "run name: outputs go to <output_dir>/<name>/");
    v.key("output_dir", output_dir, "directory that holds run directories");
    v.key("seed", seed, "master seed: model init, data order and sampling derive from it", Range<std::int64_t>{0, INT64_MAX});
    v.key("overwrite", overwrite, "allow writing into an existing, non-empty run directory");
    v.key("wall_time", wall_time,
          "seconds this job may run; before a step would cross the limit, write a checkpoint and stop "
          "(resumable, exit status 3); 0 = no limit",
          Range<double>{0.0, 1e9});
  }
};

struct ModelConfig {
  int vocab = 0;
  int d_model = 128;
  int n_layer = 4;
  int n_head = 4;
  int n_kv_head = 4;
  int d_ff = 352;
  int max_seq = 256;
  double rope_theta = 10000.0;
  bool tied_embeddings = true;
  double norm_eps = 1e-5;
  double init_std = 0.02;
  std::int64_t init_seed = 1;
  int head_dim() const { return d_model / n_head; }
  template <class V>
  void visit(V& v) {
    v.key("vocab", vocab, "vocabulary size; 0 = the task tokenizer's size", Range<int>{0, 1 << 20});
    v.key("d_model", d_model, "width of the residual stream", Range<int>{8, 16384});
    v.key("n_layer", n_layer, "number of transformer blocks", Range<int>{1, 256});
    v.key("n_head", n_head, "query heads per attention layer (must divide d_model)", Range<int>{1, 256});
    v.key("n_kv_head", n_kv_head, "key/value heads, grouped-query attention (must divide n_head)", Range<int>{1, 256});
    v.key("d_ff", d_ff, "hidden width of the SwiGLU MLP", Range<int>{1, 65536});
    v.key("max_seq", max_seq, "longest sequence (prompt + response) in tokens", Range<int>{2, 1 << 16});
    v.key("rope_theta", rope_theta, "rotary embedding base", Range<double>{1.0, 1e9});
    v.key("tied_embeddings", tied_embeddings, "output head shares the token embedding matrix");
    v.key("norm_eps", norm_eps, "RMSNorm epsilon", Range<double>{0.0, 1.0, true});
    v.key("init_std", init_std, "standard deviation of the normal weight initialisation", Range<double>{0.0, 1.0, true});
    v.key("init_seed", init_seed, "seed of the weight initialisation", Range<std::int64_t>{0, INT64_MAX});
  }
};

// The numerics of the two engines of one run. Named "P" when both engines store in P, "T+R" when
// the training engine stores in T and the rollout engine in R (fp32, bf16, fp16), or R is an FP8
// format (fp8_e4m3, fp8_e5m2): an FP8 rollout engine (rollout_engine.hpp) whose other parts run in T,
// as FP8-RL pairs a BF16 trainer with an FP8 sampler. These names are the entries of [rl], [probe]
// and [study] precisions, the groups of metrics.h5 and probe.h5, and the checkpoints' precision.
struct EnginePrecisions {
  Precision train = Precision::fp16;    // the training engine's storage (and the optimizer's loss scaling)
  Precision rollout = Precision::fp16;  // the rollout engine's storage (for FP8: the non-FP8 parts, = train)
  Fp8Format fp8 = Fp8Format::none;      // FP8 rollout format, or none
  bool mixed() const { return train != rollout || fp8 != Fp8Format::none; }
  std::string name() const;
};
// "P" or "T+R" as above, canonical only ("bf16+bf16" is "bf16"); false for anything else.
bool parse_engine_precisions(const std::string& name, EnginePrecisions& out);
// Every canonical name: the 3 single precisions, then the 12 pairs.
std::vector<std::string> engine_precision_names();

struct PrecisionConfig {
  std::string storage = "fp16";
  std::string rollout_storage = "same";
  bool consistent = false;
  Precision storage_precision() const {
    Precision p = Precision::fp32;
    parse_precision(storage, p);
    return p;
  }
  // The engines an entry of a precisions list names ("P" or "T+R"); a plain "P" takes rollout_storage
  // for its rollout engine unless that is "same". An empty entry: [precision] storage itself.
  EnginePrecisions engines(const std::string& entry = "") const;
  template <class V>
  void visit(V& v) {
    v.key("storage", storage,
          "storage precision P of weights used in compute, activations and KV cache (the training engine's, and the "
          "rollout engine's unless rollout_storage says otherwise)",
          OneOf{{"fp32", "bf16", "fp16"}});
    v.key("rollout_storage", rollout_storage,
          "the rollout engine's storage: same (= the training engine's), fp32, bf16, fp16, or an FP8 rollout "
          "(fp8_e4m3, fp8_e5m2: W8A8 linear layers and an FP8 KV cache, the rest in the training engine's precision); "
          "applies to storage and to every plain entry of the precisions lists",
          OneOf{{"same", "fp32", "bf16", "fp16", "fp8_e4m3", "fp8_e5m2"}});
    v.key("consistent", consistent,
          "both engines use the rollout engine's batch-invariant kernels, so log mu == log pi bit for bit");
  }
};

struct OptimizerConfig {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.0;
  double grad_clip = 1.0;
  std::string schedule = "constant";
  int warmup_steps = 0;
  double min_lr_ratio = 0.1;
  template <class V>
  void visit(V& v) {
    v.key("lr", lr, "AdamW learning rate (peak of the schedule)", Range<double>{0.0, 1.0, true});
    v.key("beta1", beta1, "AdamW first-moment decay", Range<double>{0.0, 1.0, false, true});
    v.key("beta2", beta2, "AdamW second-moment decay", Range<double>{0.0, 1.0, false, true});
    v.key("eps", eps, "AdamW epsilon (the paper uses 1e-15)", Range<double>{0.0, 1.0, true});
    v.key("weight_decay", weight_decay, "decoupled weight decay", Range<double>{0.0, 1.0});
    v.key("grad_clip", grad_clip, "global gradient-norm clip; 0 disables", Range<double>{0.0, 1e6});
    v.key("schedule", schedule, "learning-rate schedule", OneOf{{"constant", "warmup_cosine"}});
    v.key("warmup_steps", warmup_steps, "linear warm-up steps of warmup_cosine", Range<int>{0, 1 << 30});
    v.key("min_lr_ratio", min_lr_ratio, "final lr / peak lr of warmup_cosine", Range<double>{0.0, 1.0});
  }
};

struct LossScaleConfig {
  std::string mode = "auto";
  double initial = 65536.0;
  int growth_interval = 1000;
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  double min_scale = 1.0;
  template <class V>
  void visit(V& v) {
    v.key("mode", mode, "dynamic loss scaling: auto = dynamic in fp16 only", OneOf{{"auto", "dynamic", "off"}});
    v.key("initial", initial, "initial loss scale", Range<double>{1.0, 1e30});
    v.key("growth_interval", growth_interval, "clean steps before the scale grows (VeRL 400, DeepSpeed 1000)",
          Range<int>{1, 1 << 30});
    v.key("growth_factor", growth_factor, "scale multiplier after growth_interval clean steps",
          Range<double>{1.0, 1e3, true});
    v.key("backoff_factor", backoff_factor, "scale multiplier after an inf/nan gradient (step skipped)",
          Range<double>{0.0, 1.0, true, true});
    v.key("min_scale", min_scale, "smallest loss scale", Range<double>{0.0, 1e30, true});
  }
};

// The paper's RL optimizer: AdamW lr 1e-6 constant, betas (0.9, 0.95), eps 1e-15, no weight decay,
// gradient clip 1.0.
inline OptimizerConfig paper_rl_optimizer() {
  OptimizerConfig o;
  o.lr = 1e-6;
  o.eps = 1e-15;
  return o;
}

template <class V>
void visit_task(V& v, tasks::TaskConfig& t);

struct RolloutConfig {
  double temperature = 1.0;
  double top_p = 1.0;
  int top_k = 0;
  int max_new_tokens = 0;
  int split_k = 64;
  int kv_split = 16;
  template <class V>
  void visit(V& v) {
    v.key("temperature", temperature, "sampling temperature (log mu is under the tempered distribution); 0 = greedy",
          Range<double>{0.0, 100.0});
    v.key("top_p", top_p, "nucleus sampling mass; 1 = off", Range<double>{0.0, 1.0, true});
    v.key("top_k", top_k, "keep the k most likely tokens; 0 = off", Range<int>{0, 1 << 30});
    v.key("max_new_tokens", max_new_tokens, "response length limit; 0 = up to model.max_seq", Range<int>{0, 1 << 20});
    v.key("split_k", split_k, "rollout linear layers: reduction chunk along K (split-K GEMV)", Range<int>{1, 1 << 20});
    v.key("kv_split", kv_split, "rollout attention: flash-decoding chunk of cached positions", Range<int>{1, 1 << 20});
  }
};

struct SftConfig {
  int steps = 300;
  int batch_size = 32;
  int log_every = 10;
  int eval_every = 100;
  int eval_problems = 128;
  int checkpoint_every = 0;
  std::string init_checkpoint;
  template <class V>
  void visit(V& v) {
    v.key("init_checkpoint", init_checkpoint, "start from this checkpoint's weights, optimizer state and step; empty = fresh init");
    v.key("steps", steps, "optimizer steps of the supervised warm start, in all (from init_checkpoint: up to this step)",
          Range<int>{0, 1 << 30});
    v.key("batch_size", batch_size, "problems (sequences) per step", Range<int>{1, 1 << 20});
    v.key("log_every", log_every, "steps between progress lines", Range<int>{1, 1 << 30});
    v.key("eval_every", eval_every, "steps between held-out evaluations; 0 = only at the end", Range<int>{0, 1 << 30});
    v.key("eval_problems", eval_problems, "held-out problems per evaluation", Range<int>{1, 1 << 20});
    v.key("checkpoint_every", checkpoint_every, "steps between checkpoints; 0 = only at the end",
          Range<int>{0, 1 << 30});
  }
};

struct ProbeConfig {
  std::string checkpoint;
  std::vector<std::string> precisions{"fp32", "bf16", "fp16"};
  int problems = 64;
  int samples_per_problem = 1;
  bool enabled = false;
  bool plot = true;
  template <class V>
  void visit(V& v) {
    v.key("enabled", enabled, "mantissa run: probe the base policy (and compare the training engine's precisions) before RL");
    v.key("checkpoint", checkpoint, "master weights to probe (a checkpoint from mantissa sft or run); required by probe");
    v.key("precisions", precisions,
          "engine precisions compared, each on the same weights and prompts: P or T+R, e.g. \"bf16+fp8_e4m3\" "
          "(training engine T, rollout engine R; see [precision] rollout_storage)",
          OneOf{engine_precision_names()});
    v.key("problems", problems, "held-out prompts sampled", Range<int>{1, 1 << 20});
    v.key("samples_per_problem", samples_per_problem, "responses sampled per prompt", Range<int>{1, 1 << 16});
    v.key("plot", plot, "draw the PNG figures with /usr/bin/python3 (h5py, matplotlib) when available");
  }
};

// The RL stage (mission.md sections 2-3). Loss names are the rows of the loss table; see
// src/rl/losses.hpp for the exact formulas.
struct RlConfig {
  std::string init_checkpoint;
  std::string task_set;
  std::vector<std::string> precisions;
  std::int64_t seed = -1;
  int steps = 100;
  int prompts_per_step = 64;
  int samples_per_prompt = 8;
  int updates_per_step = 4;
  std::string loss = "grpo";
  std::string advantage = "dr_grpo";
  double advantage_eps = 1e-6;
  std::string loss_agg = "auto";
  std::string loss_denominator = "batch";
  double clip_eps_lo = 0.2;
  double clip_eps_hi = 0.2;
  double is_cap = 3.0;
  double gspo_eps_lo = 3e-4;
  double gspo_eps_hi = 4e-4;
  bool geo_reject = false;
  double geo_reject_lo = 0.999;
  double geo_reject_hi = 1.001;
  double token_veto = 0.0;
  bool logmu_in_storage = false;
  bool exact_kl = true;
  int log_every = 1;
  int flush_every = 10;
  int eval_every = 0;
  int eval_problems = 64;
  int eval_samples = 4;
  double eval_temperature = 1.0;
  int checkpoint_every = 0;
  bool plot = true;
  template <class V>
  void visit(V& v) {
    v.key("init_checkpoint", init_checkpoint,
          "base policy (a checkpoint from mantissa sft or run); empty = `run` trains one with the [sft] stage first");
    v.key("task_set", task_set,
          "train on this curated task set (HDF5 from mantissa curate); empty = fresh generated train problems");
    v.key("precisions", precisions,
          "run the RL stage once per engine precision (P, or T+R: training engine T, rollout engine R, e.g. "
          "\"bf16+fp8_e4m3\"), each from the same base policy; empty = [precision] storage",
          OneOf{engine_precision_names()});
    v.key("seed", seed,
          "seed of the RL stage's sampling and curated-set order; -1 = run.seed (the problems themselves, and "
          "so a curated set, stay tied to run.seed)",
          Range<std::int64_t>{-1, INT64_MAX});
    v.key("steps", steps, "RL steps (one rollout batch each)", Range<int>{0, 1 << 30});
    v.key("prompts_per_step", prompts_per_step, "prompts B per step (the paper: 64)", Range<int>{1, 1 << 20});
    v.key("samples_per_prompt", samples_per_prompt, "responses G per prompt, one group (the paper: 8)",
          Range<int>{1, 1 << 16});
    v.key("updates_per_step", updates_per_step,
          "optimizer updates per rollout batch: the batch is split into this many mini-batches of whole groups",
          Range<int>{1, 1 << 16});
    v.key("loss", loss, "policy loss, a row of the loss table (src/rl/losses.hpp)",
          OneOf{{"pg", "grpo", "grpo_token_tis", "grpo_token_mis", "grpo_seq_tis", "grpo_seq_mis", "pg_seq_is",
                 "pg_seq_tis", "pg_seq_mis", "gspo"}});
    v.key("advantage", advantage, "group baseline: grpo = (R - mean)/(std + eps), dr_grpo = R - mean",
          OneOf{{"grpo", "dr_grpo"}});
    v.key("advantage_eps", advantage_eps, "eps of the grpo advantage", Range<double>{0.0, 1.0, true});
    v.key("loss_agg", loss_agg,
          "aggregation: dr_grpo = sum / (B * max_new_tokens), token_mean, seq_mean_token_mean; auto = dr_grpo, "
          "gspo: seq_mean_token_mean",
          OneOf{{"auto", "dr_grpo", "token_mean", "seq_mean_token_mean"}});
    v.key("loss_denominator", loss_denominator,
          "counts in loss_agg's denominators when masks/filters remove tokens or sequences: batch = every response "
          "token and sequence of the mini-batch (Precision-RL's VeRL and Oat), surviving = only the live ones "
          "(gradients larger by B/B')",
          OneOf{{"batch", "surviving"}});
    v.key("clip_eps_lo", clip_eps_lo, "PPO clip: r >= 1 - clip_eps_lo", Range<double>{0.0, 1.0});
    v.key("clip_eps_hi", clip_eps_hi, "PPO clip: r <= 1 + clip_eps_hi (0.28 = clip-higher)", Range<double>{0.0, 10.0});
    v.key("is_cap", is_cap, "C, the cap of truncated (TIS) and masked (MIS) importance weights",
          Range<double>{0.0, 1e30, true});
    v.key("gspo_eps_lo", gspo_eps_lo, "GSPO clip of the sequence ratio: s >= 1 - gspo_eps_lo", Range<double>{0.0, 1.0});
    v.key("gspo_eps_hi", gspo_eps_hi, "GSPO clip of the sequence ratio: s <= 1 + gspo_eps_hi", Range<double>{0.0, 10.0});
    v.key("geo_reject", geo_reject,
          "drop a sequence whose geometric-mean weight exp(mean_t log(pi_old/mu)) is outside [geo_reject_lo, geo_reject_hi]");
    v.key("geo_reject_lo", geo_reject_lo, "lower bound of geo_reject", Range<double>{0.0, 1.0, true});
    v.key("geo_reject_hi", geo_reject_hi, "upper bound of geo_reject", Range<double>{1.0, 1e30});
    v.key("token_veto", token_veto, "drop a sequence if any token weight pi_old/mu is below this; 0 = off",
          Range<double>{0.0, 1.0});
    v.key("logmu_in_storage", logmu_in_storage,
          "round recorded log mu to the storage precision (what the Oat code does; adds avoidable mismatch)");
    v.key("exact_kl", exact_kl,
          "every step, also the exact per-token KL over the vocabulary (both engines' full distributions)");
    v.key("log_every", log_every, "steps between progress lines", Range<int>{1, 1 << 30});
    v.key("flush_every", flush_every, "steps between metrics.h5 flushes (a crash loses at most this many rows)",
          Range<int>{1, 1 << 30});
    v.key("eval_every", eval_every, "steps between held-out evaluations; 0 = before and after only", Range<int>{0, 1 << 30});
    v.key("eval_problems", eval_problems, "held-out problems per evaluation", Range<int>{1, 1 << 20});
    v.key("eval_samples", eval_samples, "responses per held-out problem (pass@1 = mean accuracy over them)",
          Range<int>{1, 1 << 16});
    v.key("eval_temperature", eval_temperature, "sampling temperature of the evaluation; 0 = greedy",
          Range<double>{0.0, 100.0});
    v.key("checkpoint_every", checkpoint_every, "steps between checkpoints; 0 = only at the end", Range<int>{0, 1 << 30});
    v.key("plot", plot, "draw reward and mismatch curves (PNG) with /usr/bin/python3 when available");
  }
};

// Perfectible task set (mission.md section 6): keep the candidate problems the base policy solves
// within [min_pass, max_pass] of the time.
struct CurateConfig {
  bool enabled = false;
  std::string checkpoint;
  int candidates = 512;
  int samples = 40;
  double min_pass = 0.2;
  double max_pass = 0.8;
  template <class V>
  void visit(V& v) {
    v.key("enabled", enabled, "mantissa run: curate a task set from the base policy before RL and train on it");
    v.key("checkpoint", checkpoint, "base policy to curate with (mantissa curate); empty in run = the base policy");
    v.key("candidates", candidates, "candidate train problems examined (the first ones of the train split)",
          Range<int>{1, 1 << 24});
    v.key("samples", samples, "responses sampled per candidate (the paper: 40)", Range<int>{1, 1 << 16});
    v.key("min_pass", min_pass, "keep problems solved at least this often", Range<double>{0.0, 1.0});
    v.key("max_pass", max_pass, "keep problems solved at most this often", Range<double>{0.0, 1.0});
  }
};

// A sweep (mantissa study): every combination precision x loss x seed is one RL run from the same base
// policy ([rl] init_checkpoint) with the [rl] settings; the MPI world is split into groups of
// ranks_per_group ranks, one configuration per group at a time.
struct StudyConfig {
  std::vector<std::string> precisions{"fp16", "bf16"};
  std::vector<std::string> losses{"pg_seq_is", "grpo"};
  std::vector<std::int64_t> seeds{1234};
  int ranks_per_group = 1;
  double collapse_drop = 0.10;
  double collapse_fraction = 0.5;
  bool plot = true;
  template <class V>
  void visit(V& v) {
    v.key("precisions", precisions, "engine precisions swept (P, or T+R as in [rl] precisions)",
          OneOf{engine_precision_names()});
    v.key("losses", losses, "losses swept (names of [rl] loss)",
          OneOf{{"pg", "grpo", "grpo_token_tis", "grpo_token_mis", "grpo_seq_tis", "grpo_seq_mis", "pg_seq_is",
                 "pg_seq_tis", "pg_seq_mis", "gspo"}});
    v.key("seeds", seeds, "run seeds swept (sampling and data order; the base policy is shared)");
    v.key("ranks_per_group", ranks_per_group, "MPI ranks per configuration (must divide the number of ranks)",
          Range<int>{1, 1 << 20});
    v.key("collapse_drop", collapse_drop,
          "a run has collapsed at the first step after its peak where the moving-average training reward has "
          "fallen from the peak by more than this (absolute reward points)",
          Range<double>{0.0, 1.0, true, false});
    v.key("collapse_fraction", collapse_fraction,
          "a run has collapsed at the first step after its peak where the moving-average training reward falls "
          "below this fraction of the peak (a second, relative collapse column of the summary)",
          Range<double>{0.0, 1.0, true, true});
    v.key("plot", plot,
          "draw study_curves.png (reward) and study_mismatch.png (mismatch) per loss and write study_table.md with "
          "/usr/bin/python3 when available");
  }
};

struct Config {
  RunConfig run;
  ModelConfig model;
  PrecisionConfig precision;
  OptimizerConfig optimizer;
  LossScaleConfig loss_scale;
  tasks::TaskConfig task;
  SftConfig sft;
  RolloutConfig rollout;
  ProbeConfig probe;
  CurateConfig curate;
  RlConfig rl;
  OptimizerConfig rl_optimizer = paper_rl_optimizer();
  StudyConfig study;

  // f(block_name, doc, visit_fn) for every block, in deck order.
  template <class F>
  void for_each_block(F&& f) {
    f("run", "where outputs go and the master seed", [&](auto& v) { run.visit(v); });
    f("model", "Llama-style decoder-only transformer", [&](auto& v) { model.visit(v); });
    f("precision", "numerics of both engines", [&](auto& v) { precision.visit(v); });
    f("optimizer", "AdamW on fp32 master weights (supervised warm start)", [&](auto& v) { optimizer.visit(v); });
    f("loss_scale", "dynamic loss scaling (fp16)", [&](auto& v) { loss_scale.visit(v); });
    f("task", "procedurally generated problems with verifiable answers", [&](auto& v) { visit_task(v, task); });
    f("sft", "supervised warm start (mantissa sft)", [&](auto& v) { sft.visit(v); });
    f("rollout", "rollout engine (policy mu): sampling and its kernels", [&](auto& v) { rollout.visit(v); });
    f("probe", "mismatch probe (mantissa probe)", [&](auto& v) { probe.visit(v); });
    f("curate", "perfectible task set (mantissa curate)", [&](auto& v) { curate.visit(v); });
    f("rl", "RL fine-tuning: losses, groups, updates, metrics", [&](auto& v) { rl.visit(v); });
    f("rl_optimizer", "AdamW of the RL stage (same keys as [optimizer]; the paper's defaults)",
      [&](auto& v) { rl_optimizer.visit(v); });
    f("study", "a sweep of precisions x losses x seeds (mantissa study)", [&](auto& v) { study.visit(v); });
  }
};

// Reads every block, rejects unknown blocks and keys, checks cross-key constraints. Throws DeckError.
Config load_config(const Deck& deck);
// The same for a deck file or a deck's text (translation units without the Deck type: nvcc-compiled
// ones cannot include deck.hpp's toml++).
Config load_config_file(const std::string& path);
Config load_config_text(const std::string& text, const std::string& name);
// The resolved deck (every key, defaults filled in) as TOML text with documentation comments.
std::string to_toml(Config& cfg);
// Every key of every block, for inputs/README.md and its completeness test.
std::vector<KeyDoc> document_keys();

}  // namespace mantissa::config
