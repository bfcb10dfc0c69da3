// The rollout engine's FP8 mode (make_rollout_engine(..., fp8), fp8_round.hpp) on a tiny random
// model (rl_test_util.hpp's addition model, init_std 0.2 for input-dependent distributions):
//  - an FP8 engine (bf16 + e4m3) and a bf16 engine on the same master weights and prompts both run;
//    the FP8 engine's log mu are finite and differ from the bf16 engine's (the mode has an effect);
//    two FP8 engines, and one FP8 engine called twice, give the same bits (determinism);
//  - the mismatch against the bf16 engine, mean |log p_fp8 - log p_bf16| over the full distribution
//    at the first generated position (which every engine reaches from the same prompt), is larger
//    for E5M2 (u8 = 2^-3) than for E4M3 (2^-4);
//  - set_consistent(true) throws std::invalid_argument for an FP8 engine;
//  - fp8 = none is the engine as before: the default argument and an explicit Fp8Format::none give
//    the same bits in every precision.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <stdexcept>
#include <string_view>
#include <utility>
#include <vector>

#include "model/optimizer.hpp"
#include "rl_test_util.hpp"
#include "rollout/rollout_engine.hpp"
#include "tasks/tasks.hpp"
#include "tasks/tokenizer.hpp"

using namespace mantissa;

namespace {

config::Config fp8_config() {
  config::Config c = test::tiny_addition_config(64);  // d_model 64, d_ff 128: one partial group / block each
  c.model.init_std = 0.2;
  c.rollout.max_new_tokens = 12;
  return c;
}

std::vector<std::vector<int>> prompts_for(const config::Config& c, int n) {
  std::vector<std::vector<int>> out;
  for (int i = 0; i < n; ++i)
    out.push_back(tasks::encode_prompt(tasks::make_problem(c.task, 5, tasks::split_index(tasks::Split::train, i))));
  return out;
}

struct Engines {
  config::Config c = fp8_config();
  model::ParamTable table{c.model};
  model::Optimizer opt{table, c.optimizer, c.loss_scale, Precision::bf16};
  std::vector<std::vector<int>> prompts = prompts_for(c, 8);
  std::vector<std::uint64_t> ids;
  explicit Engines(std::uint64_t weight_seed = 17) {
    opt.init_weights(weight_seed);
    for (std::size_t i = 0; i < prompts.size(); ++i) ids.push_back(i);
  }
  rollout::Rollout run(Precision p, Fp8Format f, std::uint64_t seed = 99) const {
    auto e = rollout::make_rollout_engine(c.model, c.rollout, table, p, tasks::eos_id(), f);
    e->load_weights(opt.master);
    rollout::RolloutOptions o;
    o.record_full_logprobs = true;
    return e->generate(prompts, ids, seed, 0, o);
  }
};

// Same tokens, log mu and full distributions, bit for bit.
void expect_same_bits(const rollout::Rollout& a, const rollout::Rollout& b, std::string_view what) {
  ASSERT_EQ(a.response, b.response) << what;
  ASSERT_EQ(a.finished, b.finished) << what;
  ASSERT_EQ(a.nonfinite, b.nonfinite) << what;
  for (std::size_t i = 0; i < a.logmu.size(); ++i) {
    ASSERT_EQ(a.logmu[i].size(), b.logmu[i].size()) << what;
    for (std::size_t t = 0; t < a.logmu[i].size(); ++t)
      ASSERT_EQ(float_bits(a.logmu[i][t]), float_bits(b.logmu[i][t])) << what << " sequence " << i << " token " << t;
    ASSERT_EQ(a.full_logprobs[i].size(), b.full_logprobs[i].size()) << what;
    for (std::size_t k = 0; k < a.full_logprobs[i].size(); ++k)
      ASSERT_EQ(float_bits(a.full_logprobs[i][k]), float_bits(b.full_logprobs[i][k])) << what << " sequence " << i;
  }
}

// mean |log p_a - log p_b| over the vocabulary at the first generated position of every sequence
// (the same prompt for both engines), on entries where both are finite.
double first_position_mismatch(const rollout::Rollout& a, const rollout::Rollout& b, int vocab) {
  double s = 0.0;
  long long n = 0;
  for (std::size_t i = 0; i < a.full_logprobs.size(); ++i) {
    if (a.full_logprobs[i].size() < static_cast<std::size_t>(vocab) || b.full_logprobs[i].size() < static_cast<std::size_t>(vocab))
      continue;
    for (int v = 0; v < vocab; ++v) {
      const double x = a.full_logprobs[i][v], y = b.full_logprobs[i][v];
      if (std::isfinite(x) && std::isfinite(y)) s += std::fabs(x - y), ++n;
    }
  }
  EXPECT_GT(n, 0);
  return s / static_cast<double>(n);
}

}  // namespace

TEST(Fp8Rollout, Fp8EngineRunsDiffersFromBf16AndIsDeterministic) {
  const Engines st;
  const rollout::Rollout bf = st.run(Precision::bf16, Fp8Format::none);
  const rollout::Rollout q = st.run(Precision::bf16, Fp8Format::e4m3);
  long long tokens = 0, nonfinite = 0;
  for (std::size_t i = 0; i < q.logmu.size(); ++i) {
    nonfinite += q.nonfinite[i];
    for (float l : q.logmu[i]) {
      EXPECT_TRUE(std::isfinite(l) && l <= 0.0f) << "sequence " << i << ": log mu " << l;
      ++tokens;
    }
  }
  EXPECT_EQ(nonfinite, 0);
  EXPECT_GE(tokens, static_cast<long long>(st.prompts.size()));
  // the mode has an effect: the first position's distributions (same prompt) differ, and so do the
  // rollouts (tokens or log mu)
  EXPECT_GT(first_position_mismatch(q, bf, st.c.model.vocab), 0.0);
  bool any_difference = q.response != bf.response;
  for (std::size_t i = 0; i < q.logmu.size() && !any_difference; ++i) any_difference = q.logmu[i] != bf.logmu[i];
  EXPECT_TRUE(any_difference);
  // determinism: a second engine, and the first engine's second generate (KV scales recalibrated)
  expect_same_bits(q, st.run(Precision::bf16, Fp8Format::e4m3), "second FP8 engine");
  auto e = rollout::make_rollout_engine(st.c.model, st.c.rollout, st.table, Precision::bf16, tasks::eos_id(),
                                        Fp8Format::e4m3);
  EXPECT_EQ(e->fp8(), Fp8Format::e4m3);
  e->load_weights(st.opt.master);
  rollout::RolloutOptions o;
  o.record_full_logprobs = true;
  const rollout::Rollout first = e->generate(st.prompts, st.ids, 99, 0, o);
  const rollout::Rollout again = e->generate(st.prompts, st.ids, 99, 0, o);
  expect_same_bits(q, first, "the same engine's first generate");
  expect_same_bits(first, again, "the same engine's second generate");
  // fp16 storage and E5M2 run too, finite
  for (const auto& [p, f] : {std::pair{Precision::fp16, Fp8Format::e4m3}, std::pair{Precision::bf16, Fp8Format::e5m2}}) {
    const rollout::Rollout r = st.run(p, f);
    for (std::size_t i = 0; i < r.logmu.size(); ++i) {
      EXPECT_FALSE(r.nonfinite[i]) << precision_name(p) << " " << fp8_format_name(f);
      for (float l : r.logmu[i]) EXPECT_TRUE(std::isfinite(l)) << precision_name(p) << " " << fp8_format_name(f);
    }
  }
}

TEST(Fp8Rollout, MismatchGrowsFromE4m3ToE5m2) {
  // Over 3 weight seeds: E5M2 has half E4M3's precision (u8 2^-3 vs 2^-4), so its rounding errors
  // are about twice as large, and so is the distribution's shift at the first position.
  for (std::uint64_t w : {17u, 23u, 31u}) {
    const Engines st(w);
    const rollout::Rollout bf = st.run(Precision::bf16, Fp8Format::none);
    const double m4 = first_position_mismatch(st.run(Precision::bf16, Fp8Format::e4m3), bf, st.c.model.vocab);
    const double m5 = first_position_mismatch(st.run(Precision::bf16, Fp8Format::e5m2), bf, st.c.model.vocab);
    std::printf("weights %llu: mean |log p_fp8 - log p_bf16| at the first position: e4m3 %.3e  e5m2 %.3e  (ratio %.2f)\n",
                static_cast<unsigned long long>(w), m4, m5, m5 / m4);
    EXPECT_GT(m4, 0.0);
    EXPECT_LT(m4, m5) << "weights " << w;
  }
}

TEST(Fp8Rollout, ConsistentModeIsRejected) {
  const Engines st;
  for (Fp8Format f : {Fp8Format::e4m3, Fp8Format::e5m2}) {
    auto e = rollout::make_rollout_engine(st.c.model, st.c.rollout, st.table, Precision::bf16, tasks::eos_id(), f);
    EXPECT_THROW(e->set_consistent(true), std::invalid_argument) << fp8_format_name(f);
    EXPECT_NO_THROW(e->set_consistent(false));
  }
  auto plain = rollout::make_rollout_engine(st.c.model, st.c.rollout, st.table, Precision::bf16, tasks::eos_id());
  EXPECT_NO_THROW(plain->set_consistent(true));
}

TEST(Fp8Rollout, NoneIsTheEngineAsBefore) {
  const Engines st;
  for (Precision p : {Precision::fp32, Precision::bf16, Precision::fp16}) {
    auto d = rollout::make_rollout_engine(st.c.model, st.c.rollout, st.table, p, tasks::eos_id());
    EXPECT_EQ(d->fp8(), Fp8Format::none);
    d->load_weights(st.opt.master);
    rollout::RolloutOptions o;
    o.record_full_logprobs = true;
    const rollout::Rollout a = d->generate(st.prompts, st.ids, 99, 0, o);
    expect_same_bits(a, st.run(p, Fp8Format::none), precision_name(p));
  }
}
