#pragma once
// Mantissa's configuration: one struct per deck block, each with one schema (`visit`) that reads,
// prints and documents it. Names here are the deck's names, the code's names and the docs' names.
#include <cstdint>
#include <string>
#include <vector>

#include "config/deck.hpp"
#include "mantissa/kernels/precision.hpp"
#include "tasks/tasks.hpp"

namespace mantissa::config {

struct RunConfig {
  std::string name = "run";
  std::string output_dir = "runs";
  std::int64_t seed = 1234;
  bool overwrite = false;
  template <class V>
  void visit(V& v) {
    v.key("name", name, "run name: outputs go to <output_dir>/<name>/");
    v.key("output_dir", output_dir, "directory that holds run directories");
    v.key("seed", seed, "master seed: model init, data order and sampling derive from it", Range<std::int64_t>{0, INT64_MAX});
    v.key("overwrite", overwrite, "allow writing into an existing, non-empty run directory");
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

struct PrecisionConfig {
  std::string storage = "fp16";
  bool consistent = false;
  Precision storage_precision() const {
    Precision p = Precision::fp32;
    parse_precision(storage, p);
    return p;
  }
  template <class V>
  void visit(V& v) {
    v.key("storage", storage, "storage precision P of weights used in compute, activations and KV cache",
          OneOf{{"fp32", "bf16", "fp16"}});
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
    v.key("init_checkpoint", init_checkpoint, "start from this checkpoint's weights and optimizer state; empty = fresh init");
    v.key("steps", steps, "optimizer steps of the supervised warm start", Range<int>{0, 1 << 30});
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
  bool plot = true;
  template <class V>
  void visit(V& v) {
    v.key("checkpoint", checkpoint, "master weights to probe (a checkpoint from mantissa sft or run); required by probe");
    v.key("precisions", precisions, "storage precisions compared, each on the same weights and prompts",
          OneOf{{"fp32", "bf16", "fp16"}});
    v.key("problems", problems, "held-out prompts sampled", Range<int>{1, 1 << 20});
    v.key("samples_per_problem", samples_per_problem, "responses sampled per prompt", Range<int>{1, 1 << 16});
    v.key("plot", plot, "draw the PNG figures with /usr/bin/python3 (h5py, matplotlib) when available");
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

  // f(block_name, doc, visit_fn) for every block, in deck order.
  template <class F>
  void for_each_block(F&& f) {
    f("run", "where outputs go and the master seed", [&](auto& v) { run.visit(v); });
    f("model", "Llama-style decoder-only transformer", [&](auto& v) { model.visit(v); });
    f("precision", "numerics of both engines", [&](auto& v) { precision.visit(v); });
    f("optimizer", "AdamW on fp32 master weights", [&](auto& v) { optimizer.visit(v); });
    f("loss_scale", "dynamic loss scaling (fp16)", [&](auto& v) { loss_scale.visit(v); });
    f("task", "procedurally generated problems with verifiable answers", [&](auto& v) { visit_task(v, task); });
    f("sft", "supervised warm start (mantissa sft)", [&](auto& v) { sft.visit(v); });
    f("rollout", "rollout engine (policy mu): sampling and its kernels", [&](auto& v) { rollout.visit(v); });
    f("probe", "mismatch probe (mantissa probe)", [&](auto& v) { probe.visit(v); });
  }
};

// Reads every block, rejects unknown blocks and keys, checks cross-key constraints. Throws DeckError.
Config load_config(const Deck& deck);
// The resolved deck (every key, defaults filled in) as TOML text with documentation comments.
std::string to_toml(Config& cfg);
// Every key of every block, for inputs/README.md and its completeness test.
std::vector<KeyDoc> document_keys();

}  // namespace mantissa::config
