#pragma once
// Small RL fixtures shared by tests: a tiny Llama-style model on 1-2 digit additions and a warm-started
// base policy (a random model solves nothing, so every advantage would be 0 and RL would not move).
#include <string>

#include "config/config.hpp"
#include "model/sft.hpp"
#include "tasks/tokenizer.hpp"

namespace mantissa::test {

// d_model 64 (or `d_model`, d_ff = 2 d_model), 2 layers, 4 heads, 2 KV heads, max_seq 48; addition of
// 1-2 digit numbers; responses up to 40 tokens.
inline config::Config tiny_addition_config(int d_model = 64) {
  config::Config c;
  c.model.vocab = tasks::vocab_size();
  c.model.d_model = d_model;
  c.model.n_layer = 2;
  c.model.n_head = 4;
  c.model.n_kv_head = 2;
  c.model.d_ff = 2 * d_model;
  c.model.max_seq = 48;
  c.task.family = "addition";
  c.task.min_digits = 1;
  c.task.max_digits = 2;
  c.rollout.max_new_tokens = 40;
  return c;
}

// `steps` supervised warm-start steps (fp16 storage, AdamW lr 3e-3, 16 problems per step) from fresh
// weights of c's model, written to `path` by this rank alone. With tiny_addition_config(), 450 steps
// give a policy that solves ~10-30% of held-out problems (greedy 0-33%), 600 steps ~15% at T = 1.
inline void train_base_policy(config::Config c, int steps, const std::string& path) {
  c.optimizer.lr = 3e-3;
  c.sft.batch_size = 16;
  c.precision.storage = "fp16";
  model::SftTrainer t(c, MPI_COMM_SELF);
  t.init_fresh();
  for (int i = 0; i < steps; ++i) t.train_step();
  model::Counters counters;  // what SftTrainer::save would record: RL continues the data stream after them
  counters.step = steps;
  counters.data_counter = static_cast<std::int64_t>(steps) * c.sft.batch_size;
  counters.seed = c.run.seed;
  model::save_checkpoint(path, c.model, t.table(), t.optimizer(), counters, "");
}

}  // namespace mantissa::test
