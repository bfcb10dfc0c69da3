// The rollout engine against the training engine on the same weights and tokens:
//  - consistent mode: log mu == log pi bit for bit on every token, in every precision;
//  - default mode: the engines differ, ordered fp32 < fp16 < bf16;
//  - results do not depend on the number of MPI ranks (each rank samples its share of sequences).
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>

#include "model/optimizer.hpp"
#include "model/training_engine.hpp"
#include "rollout/rollout_batch.hpp"
#include "rollout/rollout_engine.hpp"
#include "tasks/tasks.hpp"
#include "tasks/tokenizer.hpp"

using namespace mantissa;

namespace {

config::Config small_config() {
  config::Config c;
  c.model.vocab = tasks::vocab_size();
  c.model.d_model = 32;
  c.model.n_layer = 2;
  c.model.n_head = 4;
  c.model.n_kv_head = 2;
  c.model.d_ff = 48;
  c.model.max_seq = 64;
  c.model.init_std = 0.2;  // a random model with input-dependent, not-too-flat distributions
  c.task.max_digits = 3;
  c.rollout.max_new_tokens = 40;
  c.rollout.split_k = 16;
  c.rollout.kv_split = 4;
  return c;
}

std::vector<std::vector<int>> prompts_for(const config::Config& c, int n) {
  std::vector<std::vector<int>> out;
  for (int i = 0; i < n; ++i) {
    out.push_back(tasks::encode_prompt(tasks::make_problem(c.task, 5, tasks::split_index(tasks::Split::train, i))));
  }
  return out;
}

struct Pair {
  std::vector<std::vector<float>> logmu, logpi;
};

Pair run_pair(const config::Config& c, Precision p, bool consistent, int n_prompts) {
  model::ParamTable table(c.model);
  model::Optimizer opt(table, c.optimizer, c.loss_scale, p);
  opt.init_weights(17);
  auto roll = rollout::make_rollout_engine(c.model, c.rollout, table, p, tasks::eos_id());
  roll->set_consistent(consistent);
  roll->load_weights(opt.master);
  const auto prompts = prompts_for(c, n_prompts);
  std::vector<std::uint64_t> ids(prompts.size());
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = i;
  const rollout::Rollout r = roll->generate(prompts, ids, 99, 0, {});
  auto train = model::make_training_engine(c.model, table, p);
  train->set_consistent(consistent, c.rollout.split_k, c.rollout.kv_split);
  train->load_weights(opt.master);
  const model::PackedBatch b = rollout::to_batch(prompts, r);
  train->forward(b);
  auto h = Kokkos::create_mirror_view_and_copy(HostSpace(), train->logp());
  return {r.logmu, rollout::response_values(b, prompts, std::vector<float>(h.data(), h.data() + h.extent(0)))};
}

}  // namespace

TEST(Rollout, ConsistentModeGivesZeroMismatchOnEveryToken) {
  const config::Config c = small_config();
  for (Precision p : {Precision::fp32, Precision::bf16, Precision::fp16}) {
    const Pair r = run_pair(c, p, true, 12);
    long long tokens = 0;
    for (std::size_t i = 0; i < r.logmu.size(); ++i) {
      ASSERT_EQ(r.logmu[i].size(), r.logpi[i].size());
      for (std::size_t t = 0; t < r.logmu[i].size(); ++t) {
        ASSERT_EQ(float_bits(r.logmu[i][t]), float_bits(r.logpi[i][t]))
            << precision_name(p) << " sequence " << i << " token " << t;
        ++tokens;
      }
    }
    EXPECT_GT(tokens, 100);
  }
}

TEST(Rollout, DefaultModeMismatchOrderedByPrecision) {
  const config::Config c = small_config();
  double mean[3] = {0, 0, 0};
  int k = 0;
  for (Precision p : {Precision::fp32, Precision::fp16, Precision::bf16}) {
    const Pair r = run_pair(c, p, false, 16);
    double s = 0;
    long long n = 0;
    for (std::size_t i = 0; i < r.logmu.size(); ++i) {
      for (std::size_t t = 0; t < r.logmu[i].size(); ++t) s += std::fabs(r.logmu[i][t] - r.logpi[i][t]), ++n;
    }
    mean[k++] = s / n;
  }
  std::printf("mean |log pi - log mu|: fp32 %.3e  fp16 %.3e  bf16 %.3e  (bf16/fp16 %.2f)\n", mean[0], mean[1], mean[2],
              mean[2] / mean[1]);
  EXPECT_LT(mean[0], mean[1]);
  EXPECT_LT(mean[1], mean[2]);
  EXPECT_LT(mean[0], 1e-5);  // fp32: only reduction order differs, ~1e-7 relative per op
}

TEST(Rollout, SamplesDoNotDependOnTheRankCount) {
  // Each rank generates its share (i % nranks == rank) of 12 sequences; every rank also generates all
  // 12 alone; the shares must equal the corresponding sequences of the whole, bit for bit.
  int rank = 0, nranks = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &nranks);
  const config::Config c = small_config();
  model::ParamTable table(c.model);
  model::Optimizer opt(table, c.optimizer, c.loss_scale, Precision::bf16);
  opt.init_weights(17);
  auto roll = rollout::make_rollout_engine(c.model, c.rollout, table, Precision::bf16, tasks::eos_id());
  roll->load_weights(opt.master);
  const auto all = prompts_for(c, 12);
  std::vector<std::uint64_t> ids(all.size());
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = i;
  const rollout::Rollout whole = roll->generate(all, ids, 7, 3, {});
  std::vector<std::vector<int>> mine;
  std::vector<std::uint64_t> mine_ids;
  for (std::size_t i = rank; i < all.size(); i += nranks) mine.push_back(all[i]), mine_ids.push_back(i);
  const rollout::Rollout part = roll->generate(mine, mine_ids, 7, 3, {});
  int mismatches = 0;
  for (std::size_t j = 0; j < mine.size(); ++j) {
    const std::size_t i = mine_ids[j];
    mismatches += part.response[j] != whole.response[i];
    for (std::size_t t = 0; t < part.logmu[j].size() && t < whole.logmu[i].size(); ++t) {
      mismatches += float_bits(part.logmu[j][t]) != float_bits(whole.logmu[i][t]);
    }
  }
  int total = 0;
  MPI_Allreduce(&mismatches, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  EXPECT_EQ(total, 0);
}
