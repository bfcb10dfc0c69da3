// The RL loop (src/rl/rl_trainer.hpp): one step's invariants, consistent mode, base-policy and
// restart loading, and a short run that raises the training reward of a warm-started model.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>

#include "model/checkpoint.hpp"
#include "model/sft.hpp"
#include "rl_test_util.hpp"
#include "rl/rl_trainer.hpp"
#include "tasks/tasks.hpp"
#include "tasks/tokenizer.hpp"

using namespace mantissa;

namespace {

config::Config tiny_rl_config() {
  config::Config c = test::tiny_addition_config(32);
  c.rl.prompts_per_step = 4;
  c.rl.samples_per_prompt = 4;
  c.rl.updates_per_step = 2;
  c.rl.eval_problems = 8;
  c.rl.eval_samples = 2;
  c.rl_optimizer.lr = 1e-4;
  return c;
}

std::map<std::string, double> as_map(const rl::Row& row) {
  std::map<std::string, double> m;
  for (const auto& [k, v] : row) {
    EXPECT_EQ(m.count(k), 0u) << "duplicate metric " << k;
    m[k] = v;
  }
  return m;
}

std::string temp_dir(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() / ("mantissa_test_rl_" + name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

}  // namespace

TEST(RlStep, EveryMetricIsFiniteAndTheFirstUpdateIsOnPolicy) {
  for (const char* p : {"fp32", "bf16", "fp16"}) {
    config::Config c = tiny_rl_config();
    c.rl.updates_per_step = 1;  // one mini-batch: its update sees pi_theta == pi_old bit for bit
    c.rl.loss = "grpo";
    Precision prec = Precision::fp32;
    parse_precision(p, prec);
    rl::RlTrainer t(c, prec, MPI_COMM_SELF);
    t.init_fresh();
    const rl::StepRecord s = t.step();
    const auto m = as_map(s.row);
    for (const auto& [k, v] : m) EXPECT_TRUE(std::isfinite(v)) << p << ": " << k << " = " << v;
    EXPECT_EQ(m.at("step"), 1.0);
    EXPECT_EQ(m.at("ratio_mean"), 1.0) << p << ": the only update's ratio pi_theta/pi_old must be exactly 1";
    EXPECT_EQ(m.at("clip_frac"), 0.0) << p;
    EXPECT_EQ(s.loss.sequences, 16.0);
    EXPECT_EQ(s.mismatch.sequences, 16);
    EXPECT_GT(s.mismatch.tokens, 0);
    EXPECT_TRUE(s.mismatch.has_exact);
    EXPECT_GE(m.at("groups_all_0") + m.at("groups_all_1"), 0.0);
    EXPECT_LE(m.at("groups_all_0") + m.at("groups_all_1"), 4.0);
    for (const char* k : {"reward_mean", "mm_k3", "mm_exact_kl_mu_pi_token", "entropy_mean", "grad_norm",
                          "weight_norm", "loss_scale", "time_rollout", "time_recompute", "time_update", "time_comm",
                          "rollout_tokens_per_s", "no_eos", "response_length_mean", "skipped_updates"}) {
      EXPECT_EQ(m.count(k), 1u) << "missing metric " << k;
    }
    if (prec == Precision::fp32) {
      EXPECT_LT(s.mismatch.mean_abs_logratio, 1e-5) << "fp32 engines differ only by reduction order";
    } else {
      EXPECT_GT(s.mismatch.mean_abs_logratio, 0.0) << p << ": the two engines must really differ";
    }
    EXPECT_EQ(t.steps_done(), 1);
  }
}

TEST(RlStep, ConsistentModeHasNoMismatch) {
  config::Config c = tiny_rl_config();
  c.precision.consistent = true;
  rl::RlTrainer t(c, Precision::bf16, MPI_COMM_SELF);
  t.init_fresh();
  const rl::StepRecord s = t.step();
  EXPECT_GT(s.mismatch.tokens, 0);
  EXPECT_EQ(s.mismatch.mean_abs_logratio, 0.0);
  EXPECT_EQ(s.mismatch.k1, 0.0);
  EXPECT_EQ(s.mismatch.seq_logratio_abs_mean, 0.0);
}

TEST(RlStep, BasePolicyGetsAFreshOptimizerAndARestartTheWholeState) {
  const std::string dir = temp_dir("ckpt");
  config::Config c = tiny_rl_config();
  c.precision.storage = "fp16";
  // A base policy written by the warm start (stage "sft", 3 steps).
  model::SftTrainer sft(c, MPI_COMM_SELF);
  sft.init_fresh();
  for (int i = 0; i < 3; ++i) sft.train_step();
  sft.save(dir + "/base.h5", "");
  rl::RlTrainer a(c, Precision::fp16, MPI_COMM_SELF);
  const model::Counters base = a.load(dir + "/base.h5");
  EXPECT_EQ(base.stage, "sft");
  EXPECT_EQ(a.steps_done(), 0);
  EXPECT_EQ(a.optimizer().step_count, 0) << "RL starts with fresh AdamW moments";
  a.step();
  a.save(dir + "/rl.h5", "");
  // A restart from an RL checkpoint takes the whole state: the next step is identical.
  rl::RlTrainer b(c, Precision::fp16, MPI_COMM_SELF);
  EXPECT_EQ(b.load(dir + "/rl.h5").stage, "rl");
  EXPECT_EQ(b.steps_done(), 1);
  EXPECT_EQ(b.optimizer().step_count, a.optimizer().step_count);
  const auto ra = as_map(a.step().row), rb = as_map(b.step().row);
  for (const char* k : {"reward_mean", "loss", "grad_norm", "weight_norm", "mm_k3", "response_length_mean"}) {
    EXPECT_EQ(ra.at(k), rb.at(k)) << k;
  }
  std::filesystem::remove_all(dir);
}

TEST(RlStep, DriftDiagnosticNeedsTenSteps) {
  EXPECT_EQ(rl::drift_diagnostic(std::vector<double>(9, 1.0)).lags, 0);
  std::vector<double> trend;
  for (int i = 0; i < 40; ++i) trend.push_back(0.01 * i);  // a drifting series is autocorrelated
  const rl::LjungBox lb = rl::drift_diagnostic(trend);
  EXPECT_EQ(lb.lags, 8);
  EXPECT_LT(lb.p_value, 1e-6);
}

TEST(RlLearn, RaisesTheRewardOfAWarmStartedModel) {
  // A warm start to a base policy that solves ~15% of held-out 1-2 digit additions at temperature 1,
  // then 30 RL steps of PG-Seq-IS in fp16 (16 prompts x 8 samples, 4 updates per step): the held-out
  // pass@1 and the training reward must both rise clearly (measured: pass@1 0.16 -> ~0.4).
  config::Config c = test::tiny_addition_config(64);
  c.precision.storage = "fp16";
  const std::string dir = temp_dir("learn");
  test::train_base_policy(c, 600, dir + "/base.h5");
  c.rl.loss = "pg_seq_is";
  c.rl.prompts_per_step = 16;
  c.rl.samples_per_prompt = 8;
  c.rl.updates_per_step = 4;
  c.rl.eval_problems = 64;
  c.rl.eval_samples = 4;
  c.rl.steps = 30;
  c.rl_optimizer.lr = 1e-4;
  rl::RlTrainer t(c, Precision::fp16, MPI_COMM_SELF);
  t.load(dir + "/base.h5");
  const rl::EvalRecord before = t.evaluate();
  std::vector<double> reward;
  for (int i = 0; i < c.rl.steps; ++i) reward.push_back(t.step().reward_mean);
  const rl::EvalRecord after = t.evaluate();
  double first = 0, last = 0;
  for (int i = 0; i < 10; ++i) first += reward[i] / 10, last += reward[reward.size() - 10 + i] / 10;
  std::printf("held-out pass@1 %.3f -> %.3f; training reward, first 10 steps %.3f, last 10 steps %.3f\n",
              before.pass_at_1, after.pass_at_1, first, last);
  // Standard error of a pass@1 difference over 2 x 256 samples is <= 0.045.
  EXPECT_GT(before.pass_at_1, 0.02) << "the base policy must solve some problems for RL to learn from";
  EXPECT_GT(after.pass_at_1, before.pass_at_1 + 0.1);
  EXPECT_GT(last, first + 0.05);
  EXPECT_EQ(t.optimizer().scaler.skipped(), 0);
  std::filesystem::remove_all(dir);
}
