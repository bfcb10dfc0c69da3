// Tests of the policy losses (mission.md section 3, src/rl/losses.hpp): hand-worked cases of every
// loss and every filter, a finite-difference check of dlogp against an independent double
// reference of L(log pi_theta) with the stop-gradient quantities frozen, the unbiasedness of the
// sequence-level importance-sampled policy gradient on an enumerable categorical policy, the group
// advantages, and the deck names.
//
// Tolerances. Inputs are fp32 values; the implementation computes in double and rounds dlogp to
// fp32 once, so a dlogp element is within kU32 * |exact| of the exact value (plus double roundoff,
// ~1e-16 relative, covered by kDbl below). The loss is accumulated in double: a sum of n terms is
// within n * 2^-53 * sum|terms| of the exact sum (kDbl).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "kernel_test_util.hpp"
#include "rl/losses.hpp"

namespace rl = mantissa::rl;
using mantissa::test::kU32;

namespace {

constexpr double kDbl = 0x1.0p-53;  // unit roundoff of double
constexpr double kClampLog = 20.0;  // mission.md: logs of weights clamped at +-20

// A packed mini-batch on the host. Values are stored as fp32 and read back as doubles, so the
// test's formulas see exactly the values the kernels read.
struct Batch {
  std::vector<float> logp, logp_old, logmu, adv;
  std::vector<int> mask, off{0};
  // Appends a sequence of rows; mask 0 rows are prompt rows.
  void add(float a, const std::vector<int>& m, const std::vector<float>& lp, const std::vector<float>& lo,
           const std::vector<float>& lm) {
    adv.push_back(a);
    mask.insert(mask.end(), m.begin(), m.end());
    logp.insert(logp.end(), lp.begin(), lp.end());
    logp_old.insert(logp_old.end(), lo.begin(), lo.end());
    logmu.insert(logmu.end(), lm.begin(), lm.end());
    off.push_back(static_cast<int>(mask.size()));
  }
  int rows() const { return static_cast<int>(mask.size()); }
  int seqs() const { return static_cast<int>(adv.size()); }
};

mantissa::View1<float> float_view(const char* label, const std::vector<float>& v) {
  mantissa::View1<float> d(std::string(label), v.size());
  auto h = Kokkos::create_mirror_view(d);
  for (std::size_t i = 0; i < v.size(); ++i) h(i) = v[i];
  Kokkos::deep_copy(d, h);
  return d;
}

struct Result {
  rl::LossCounts counts;
  rl::LossStats stats;
  std::vector<double> dlogp;
};

rl::LossInput make_input(const Batch& b) {
  rl::LossInput in;
  in.logp = float_view("mantissa::test::logp", b.logp);
  in.logp_old = float_view("mantissa::test::logp_old", b.logp_old);
  in.logmu = float_view("mantissa::test::logmu", b.logmu);
  in.mask = mantissa::test::make_int_view("mantissa::test::mask", b.mask);
  in.seq_offsets = mantissa::test::make_int_view("mantissa::test::off", b.off);
  in.advantage = float_view("mantissa::test::adv", b.adv);
  return in;
}

// loss_counts, then loss_and_grad with those counts (one rank: local = global).
Result run(const rl::LossSpec& spec, const Batch& b, float scale = 1.0f) {
  const rl::LossInput in = make_input(b);
  mantissa::View1<float> dlogp("mantissa::test::dlogp", b.logp.size());
  Kokkos::deep_copy(dlogp, 12345.0f);  // every row must be written
  Result r;
  r.counts = rl::loss_counts(spec, in);
  r.stats = rl::loss_and_grad(spec, in, r.counts, scale, dlogp);
  r.dlogp = mantissa::test::to_host(dlogp);
  return r;
}

rl::LossSpec make_spec(rl::LossKind k, rl::LossAgg agg, double max_len = 1.0,
                       rl::LossDenominator den = rl::LossDenominator::batch) {
  rl::LossSpec s;
  s.kind = k;
  s.agg = agg;
  s.max_len = max_len;
  s.denominator = den;
  return s;
}

constexpr rl::LossDenominator kBothDenominators[] = {rl::LossDenominator::batch, rl::LossDenominator::surviving};
bool surviving(rl::LossDenominator d) { return d == rl::LossDenominator::surviving; }

// dlogp against the expected values: one fp32 rounding of the exact value.
void expect_dlogp(const std::string& what, const std::vector<double>& got, const std::vector<double>& want) {
  std::vector<double> tol(want.size());
  for (std::size_t i = 0; i < want.size(); ++i) tol[i] = (kU32 + 8 * kDbl) * std::fabs(want[i]);
  mantissa::test::expect_close(what, got, want, tol);
  for (double g : got) EXPECT_TRUE(std::isfinite(g)) << what;
}
// Loss of a few terms: double roundoff only.
void expect_loss(const Result& r, double want, double sum_abs_terms) {
  EXPECT_NEAR(r.stats.loss, want, 64 * kDbl * sum_abs_terms) << "loss";
  EXPECT_TRUE(std::isfinite(r.stats.loss));
}

double f64(float x) { return static_cast<double>(x); }

}  // namespace

// ------------------------------------------------------------------------------------------------
// Hand-worked cases

// pg: l_t = -A log pi. Three sequences: seq 0 has a prompt row and 3 response rows, seq 1 a prompt
// row and 1 response row, seq 2 only prompt rows (no response token: not in B', not in T').
// Live: T' = 4, B' = 2, L'_0 = 3, L'_1 = 1. With L_max = 4 and scale 2:
//   dr_grpo              dlogp = 2 * (-A_i) / (2 * 4)
//   token_mean           dlogp = 2 * (-A_i) / 4
//   seq_mean_token_mean  dlogp = 2 * (-A_i) / (2 * L'_i)
TEST(LossesHand, PgAllAggregationsAndNonResponseRows) {
  Batch b;
  b.add(0.5f, {0, 1, 1, 1}, {-9.0f, -0.25f, -1.5f, -0.75f}, {-1, -1, -1, -1}, {-1, -1, -1, -1});
  b.add(-1.5f, {0, 1}, {-7.0f, -2.0f}, {-1, -1}, {-1, -1});
  b.add(2.0f, {0, 0}, {-3.0f, -4.0f}, {-1, -1}, {-1, -1});
  const double A0 = 0.5, A1 = -1.5;
  const double sum0 = -0.25 - 1.5 - 0.75, lp5 = -2.0;
  struct Agg {
    rl::LossAgg agg;
    double d0, d1;  // the denominators of seq 0's and seq 1's tokens
  };
  for (const Agg& a : {Agg{rl::LossAgg::dr_grpo, 2.0 * 4, 2.0 * 4}, Agg{rl::LossAgg::token_mean, 4, 4},
                       Agg{rl::LossAgg::seq_mean_token_mean, 2.0 * 3, 2.0 * 1}}) {
    SCOPED_TRACE(rl::loss_agg_name(a.agg));
    const Result r = run(make_spec(rl::LossKind::pg, a.agg, 4.0), b, 2.0f);
    EXPECT_EQ(r.counts.tokens, 4.0);
    EXPECT_EQ(r.counts.sequences, 2.0);
    const double g0 = 2.0 * -A0 / a.d0, g1 = 2.0 * -A1 / a.d1;
    expect_dlogp("pg dlogp", r.dlogp, {0, g0, g0, g0, 0, g1, 0, 0});
    expect_loss(r, -A0 * sum0 / a.d0 - A1 * lp5 / a.d1, 10.0);
    EXPECT_EQ(r.stats.tokens, 4.0);
    EXPECT_EQ(r.stats.sequences, 2.0);
    EXPECT_EQ(r.stats.live_tokens, 4.0);
    EXPECT_EQ(r.stats.live_sequences, 2.0);
    EXPECT_EQ(r.stats.weight_sum, 2.0);  // plain loss: weight 1 per live sequence
    EXPECT_EQ(r.stats.clipped_tokens, 0.0);
  }
}

// grpo, eps 0.2/0.28, token_mean over T' = 7 tokens. r_t = exp(log pi - log pi_old) with log pi_old = -1:
//   A = +1: r = 1.5  -> -A r = -1.5 < -A*1.28 = -1.28: clipped (loss -1.28, gradient 0)
//           r = 0.5  -> -0.5 > -0.8: unclipped, gradient -A r
//           r = 1    -> tie (-1 = -1): the unclipped gradient -A
//           r = 1.1  -> inside the range: -A r
//   A = -1: r = 1.5  -> 1.5 > 1.28: unclipped, gradient +r
//           r = 0.5  -> 0.5 < 0.8: clipped (loss 0.8, gradient 0)
//           r = 0.9  -> inside: gradient +r
TEST(LossesHand, GrpoClipBothSignsOfTheAdvantage) {
  const std::vector<double> ratios = {1.5, 0.5, 1.0, 1.1, 1.5, 0.5, 0.9};
  std::vector<float> lp, lo(7, -1.0f), lm(7, -1.0f);
  for (double x : ratios) lp.push_back(static_cast<float>(-1.0 + std::log(x)));
  Batch b;
  b.add(1.0f, {1, 1, 1, 1}, {lp[0], lp[1], lp[2], lp[3]}, {lo.begin(), lo.begin() + 4}, {lm.begin(), lm.begin() + 4});
  b.add(-1.0f, {1, 1, 1}, {lp[4], lp[5], lp[6]}, {lo.begin() + 4, lo.end()}, {lm.begin() + 4, lm.end()});
  std::vector<double> r(7);
  for (int t = 0; t < 7; ++t) r[t] = std::exp(f64(lp[t]) + 1.0);  // the ratios of the stored floats
  EXPECT_EQ(r[2], 1.0);
  rl::LossSpec spec = make_spec(rl::LossKind::grpo, rl::LossAgg::token_mean);
  spec.eps_hi = 0.28;
  const Result res = run(spec, b);
  const double T = 7;
  expect_dlogp("grpo dlogp", res.dlogp, {0.0, -r[1] / T, -1.0 / T, -r[3] / T, r[4] / T, 0.0, r[6] / T});
  expect_loss(res, (-1.28 - r[1] - 1.0 - r[3] + r[4] + 0.8 + r[6]) / T, 8.0);
  EXPECT_EQ(res.stats.clipped_tokens, 2.0);
  double rsum = 0.0;
  for (double x : r) rsum += x;
  EXPECT_NEAR(res.stats.ratio_mean_sum, rsum, 64 * kDbl * rsum);
}

// grpo_token_tis, C = 2, r = 1 (log pi = log pi_old), A = 1, dr_grpo with L_max = 3, B' = 1:
// l_t = -min(w_t, C), w = {0.5, 3 (capped to 2), exp(50) -> exp(20) by the clamp -> capped to 2}.
TEST(LossesHand, TokenTisCapsTheWeight) {
  Batch b;
  const float lo0 = -1.0f, lo1 = static_cast<float>(-1.0 + std::log(3.0)), lo2 = -1.0f;
  const std::vector<float> lm = {static_cast<float>(-1.0 - std::log(0.5)), -1.0f, -51.0f};
  b.add(1.0f, {1, 1, 1}, {lo0, lo1, lo2}, {lo0, lo1, lo2}, lm);
  rl::LossSpec spec = make_spec(rl::LossKind::grpo_token_tis, rl::LossAgg::dr_grpo, 3.0);
  spec.cap = 2.0;
  const Result r = run(spec, b);
  const double w0 = std::exp(f64(lo0) - f64(lm[0]));
  expect_dlogp("token-tis dlogp", r.dlogp, {-w0 / 3, -2.0 / 3, -2.0 / 3});
  expect_loss(r, (-w0 - 2.0 - 2.0) / 3, 5.0);
  EXPECT_EQ(r.stats.capped_tokens, 2.0);
  EXPECT_EQ(r.stats.live_tokens, 3.0);
}

// grpo_token_mis, C = 2, r = 1, A = -1 (seq 0) and 2 (seq 1).
// seq 0: w = {0.5, 4 (masked), 1.5, exp(-50) -> exp(-20)}; seq 1: w = {3} (masked: no live token).
// surviving: token_mean T' = 3; seq_mean_token_mean B' = 1, L'_0 = 3 (masked tokens leave both).
// batch: token_mean T = 5; seq_mean_token_mean B = 2, L_0 = 4 (masked tokens are zero terms).
TEST(LossesHand, TokenMisMasksTokensAndTheirDenominators) {
  Batch b;
  const std::vector<double> logw = {std::log(0.5), std::log(4.0), std::log(1.5), -50.0};
  std::vector<float> lm;
  for (double x : logw) lm.push_back(static_cast<float>(-2.0 - x));
  b.add(-1.0f, {1, 1, 1, 1}, {-2, -2, -2, -2}, {-2, -2, -2, -2}, lm);
  b.add(2.0f, {0, 1}, {-1, -1}, {-1, -1}, {-1, static_cast<float>(-1.0 - std::log(3.0))});
  std::vector<double> w;
  for (float m : lm) w.push_back(std::exp(std::max(-kClampLog, std::min(kClampLog, -2.0 - f64(m)))));
  EXPECT_EQ(w[3], std::exp(-20.0));
  for (rl::LossDenominator dn : kBothDenominators)
  for (rl::LossAgg agg : {rl::LossAgg::token_mean, rl::LossAgg::seq_mean_token_mean}) {
    SCOPED_TRACE(std::string(rl::loss_agg_name(agg)) + " " + rl::loss_denominator_name(dn));
    rl::LossSpec spec = make_spec(rl::LossKind::grpo_token_mis, agg, 1.0, dn);
    spec.cap = 2.0;
    const Result r = run(spec, b);
    // surviving: T' = 3, and B' * L'_0 = 1 * 3; batch: T = 5, and B * L_0 = 2 * 4
    const double den = surviving(dn) ? 3.0 : agg == rl::LossAgg::token_mean ? 5.0 : 8.0;
    EXPECT_EQ(r.counts.tokens, 3.0);
    EXPECT_EQ(r.counts.sequences, 1.0);
    EXPECT_EQ(r.counts.batch_tokens, 5.0);
    EXPECT_EQ(r.counts.batch_sequences, 2.0);
    // A = -1, r = 1: l = +w_t, dl = +w_t
    expect_dlogp("token-mis dlogp", r.dlogp, {w[0] / den, 0.0, w[2] / den, w[3] / den, 0.0, 0.0});
    expect_loss(r, (w[0] + w[2] + w[3]) / den, 3.0);
    EXPECT_EQ(r.stats.masked_tokens, 2.0);
    EXPECT_EQ(r.stats.tokens, 5.0);
    EXPECT_EQ(r.stats.sequences, 2.0);
    EXPECT_EQ(r.stats.live_sequences, 1.0);
  }
}

// Sequence weights. Two sequences of two response tokens, A = {1, -0.5}, dr_grpo with L_max = 2.
// log(pi_old/mu) sums: seq 0: log 1.5 (rho_old = 1.5), seq 1: log 3 (rho_old = 3).
// log(pi_theta/pi_old) per token: seq 0 {log 2, 0} -> rho_cur_0 = 3; seq 1 {-log 2, 0} -> rho_cur_1 = 1.5.
// With C = 2:
//   grpo_seq_mis: seq 1 masked (rho_old 3 > 2): B' = 1 (B = 2); seq 0 weight 1.5
//   grpo_seq_tis: weights {1.5, min(3, 2) = 2}, B' = 2
//   pg_seq_is:    weights rho_cur {3, 1.5}, B' = 2 (uses the CURRENT log pi, not pi_old)
//   pg_seq_tis:   weights {min(3, 2) = 2, 1.5}
//   pg_seq_mis:   seq 0 masked (rho_cur 3 > 2): B' = 1 (B = 2); seq 1 weight 1.5
// The MIS cases run with both denominators: dr_grpo divides by B * L_max (batch) or B' * L_max.
// grpo ratios r: seq 0 {2 (A = 1: clipped at 1.2, gradient 0), 1}; seq 1 {0.5 (A < 0: clipped at 0.8), 1}.
TEST(LossesHand, SequenceWeightsTisMisAndCurrentVersusOldPolicy) {
  Batch b;
  const float l2 = static_cast<float>(std::log(2.0));
  const float a = static_cast<float>(std::log(1.5)), c = static_cast<float>(std::log(3.0));
  // seq 0: logp_old = {-1, -1}, logmu = {-1 - a, -1}; logp = {-1 + l2, -1}
  b.add(1.0f, {1, 1}, {-1.0f + l2, -1.0f}, {-1, -1}, {-1.0f - a, -1.0f});
  // seq 1: logp_old = {-1, -1}, logmu = {-1, -1 - c}; logp = {-1 - l2, -1}
  b.add(-0.5f, {1, 1}, {-1.0f - l2, -1.0f}, {-1, -1}, {-1.0f, -1.0f - c});
  const double lp[4] = {f64(-1.0f + l2), -1.0, f64(-1.0f - l2), -1.0};
  const double rho_old0 = std::exp(f64(-1.0f) - f64(-1.0f - a)), rho_old1 = std::exp(f64(-1.0f) - f64(-1.0f - c));
  const double rho_cur0 = std::exp(lp[0] - f64(-1.0f - a) + 0.0), rho_cur1 = std::exp(lp[2] + 1.0 - 1.0 - f64(-1.0f - c));
  const double r00 = std::exp(lp[0] + 1.0), r10 = std::exp(lp[2] + 1.0);
  ASSERT_GT(r00, 1.2);
  ASSERT_GT(rho_old1, 2.0);  // the masked / capped ones
  ASSERT_GT(rho_cur0, 2.0);
  ASSERT_LT(r10, 0.8);
  const double Lmax = 2.0;
  // grpo token terms: seq 0 (A = 1): {clipped: -1.2, gradient 0}, {r = 1: -1, gradient -1};
  //                   seq 1 (A = -0.5): {clipped: 0.5*0.8, gradient 0}, {r = 1: 0.5, gradient 0.5}
  for (rl::LossDenominator dn : kBothDenominators) {
    SCOPED_TRACE(rl::loss_denominator_name(dn));
    rl::LossSpec s = make_spec(rl::LossKind::grpo_seq_mis, rl::LossAgg::dr_grpo, Lmax, dn);
    s.cap = 2.0;
    const Result r = run(s, b);
    EXPECT_EQ(r.counts.sequences, 1.0);
    EXPECT_EQ(r.counts.batch_sequences, 2.0);
    const double d = (surviving(dn) ? 1.0 : 2.0) * Lmax;
    expect_dlogp("grpo_seq_mis", r.dlogp, {0.0, -rho_old0 / d, 0.0, 0.0});
    expect_loss(r, rho_old0 * (-1.2 - 1.0) / d, 10.0);
    EXPECT_EQ(r.stats.masked_sequences, 1.0);
    EXPECT_EQ(r.stats.clipped_tokens, 1.0);
    EXPECT_NEAR(r.stats.weight_sum, rho_old0, 8 * kDbl);
  }
  {
    rl::LossSpec s = make_spec(rl::LossKind::grpo_seq_tis, rl::LossAgg::dr_grpo, Lmax);
    s.cap = 2.0;
    const Result r = run(s, b);
    EXPECT_EQ(r.counts.sequences, 2.0);
    const double d = 2.0 * Lmax;
    expect_dlogp("grpo_seq_tis", r.dlogp, {0.0, -rho_old0 / d, 0.0, 2.0 * 0.5 / d});
    expect_loss(r, (rho_old0 * (-1.2 - 1.0) + 2.0 * (0.4 + 0.5)) / d, 10.0);
    EXPECT_EQ(r.stats.capped_sequences, 1.0);
    EXPECT_NEAR(r.stats.weight_sum, rho_old0 + 2.0, 8 * kDbl);
  }
  // pg family: l_t = -weight * A * log pi_theta
  {
    const Result r = run(make_spec(rl::LossKind::pg_seq_is, rl::LossAgg::dr_grpo, Lmax), b);
    const double d = 2.0 * Lmax;
    expect_dlogp("pg_seq_is", r.dlogp, {-rho_cur0 / d, -rho_cur0 / d, 0.5 * rho_cur1 / d, 0.5 * rho_cur1 / d});
    expect_loss(r, (-rho_cur0 * (lp[0] + lp[1]) + 0.5 * rho_cur1 * (lp[2] + lp[3])) / d, 20.0);
  }
  {
    rl::LossSpec s = make_spec(rl::LossKind::pg_seq_tis, rl::LossAgg::dr_grpo, Lmax);
    s.cap = 2.0;
    const Result r = run(s, b);
    const double d = 2.0 * Lmax;
    expect_dlogp("pg_seq_tis", r.dlogp, {-2.0 / d, -2.0 / d, 0.5 * rho_cur1 / d, 0.5 * rho_cur1 / d});
    expect_loss(r, (-2.0 * (lp[0] + lp[1]) + 0.5 * rho_cur1 * (lp[2] + lp[3])) / d, 20.0);
    EXPECT_EQ(r.stats.capped_sequences, 1.0);
  }
  for (rl::LossDenominator dn : kBothDenominators) {
    SCOPED_TRACE(rl::loss_denominator_name(dn));
    rl::LossSpec s = make_spec(rl::LossKind::pg_seq_mis, rl::LossAgg::dr_grpo, Lmax, dn);
    s.cap = 2.0;
    const Result r = run(s, b);
    EXPECT_EQ(r.counts.sequences, 1.0);
    const double d = (surviving(dn) ? 1.0 : 2.0) * Lmax;
    expect_dlogp("pg_seq_mis", r.dlogp, {0.0, 0.0, 0.5 * rho_cur1 / d, 0.5 * rho_cur1 / d});
    expect_loss(r, 0.5 * rho_cur1 * (lp[2] + lp[3]) / d, 20.0);
    EXPECT_EQ(r.stats.masked_sequences, 1.0);
  }
}

// The +-20 clamp: log weights of +-50 give exp(+-20), never inf or NaN. One response token per
// sequence, token_mean over T' = 2, A = {1, -1}.
//   pg_seq_is: rho = exp(+50 -> 20), exp(-50 -> -20)
//   grpo_seq_tis with C = 3: min(exp(20), 3) = 3, exp(-20)
//   grpo with log r = +50 and A = -1: -A r = exp(20) (unclipped); log r = -50 with A = 1:
//     r = exp(-20), unclipped -r = -exp(-20) > clipped -0.8. Both gradients are 0: the clamp of
//     log r is active, and torch.clamp passes no gradient outside its range (the old rule gave
//     exp(20) and -exp(-20)). At log r = +-20 exactly (bounds included) the gradient is -A r.
TEST(LossesHand, LogWeightClampAtTwenty) {
  const double e20 = std::exp(20.0), em20 = std::exp(-20.0);
  {
    Batch b;  // logp - logmu = +50 / -50
    b.add(1.0f, {1}, {-1.0f}, {-1.0f}, {-51.0f});
    b.add(-1.0f, {1}, {-60.0f}, {-60.0f}, {-10.0f});
    const Result r = run(make_spec(rl::LossKind::pg_seq_is, rl::LossAgg::token_mean), b);
    expect_dlogp("pg_seq_is clamp", r.dlogp, {-e20 / 2, em20 / 2});
    expect_loss(r, (e20 * 1.0 + em20 * -60.0) / 2, e20);
    rl::LossSpec s = make_spec(rl::LossKind::grpo_seq_tis, rl::LossAgg::token_mean);
    s.cap = 3.0;
    const Result t = run(s, b);  // r = 1: l = -A * weight
    expect_dlogp("grpo_seq_tis clamp", t.dlogp, {-3.0 / 2, em20 / 2});
    expect_loss(t, (-3.0 + em20) / 2, 4.0);
  }
  {
    Batch b;
    b.add(-1.0f, {1}, {-1.0f}, {-51.0f}, {-51.0f});  // log r = +50
    b.add(1.0f, {1}, {-51.0f}, {-1.0f}, {-1.0f});    // log r = -50
    const Result r = run(make_spec(rl::LossKind::grpo, rl::LossAgg::token_mean), b);
    EXPECT_EQ(r.dlogp, std::vector<double>({0.0, 0.0})) << "no gradient through an active clamp";
    expect_loss(r, (e20 - em20) / 2, e20);
    EXPECT_EQ(r.stats.clipped_tokens, 0.0);
    EXPECT_NEAR(r.stats.ratio_mean_sum, e20 + em20, 4 * kDbl * e20);
    // The same by central differences of L(x) = sum_t -A_t exp(clamp(x_t - log pi_old)) / 2 (the
    // torch formula): flat at x - log pi_old = +-50.
    for (int t = 0; t < 2; ++t) {
      auto L = [&](double dx) {
        const double lr = f64(b.logp[t]) + dx - f64(b.logp_old[t]);
        return -f64(b.adv[t]) * std::exp(std::max(-kClampLog, std::min(kClampLog, lr))) / 2;
      };
      EXPECT_EQ((L(1e-3) - L(-1e-3)) / 2e-3, 0.0) << t;
    }
  }
  {
    Batch b;
    b.add(-1.0f, {1}, {-1.0f}, {-21.0f}, {-21.0f});  // log r = +20 exactly
    b.add(1.0f, {1}, {-21.0f}, {-1.0f}, {-1.0f});    // log r = -20 exactly
    const Result r = run(make_spec(rl::LossKind::grpo, rl::LossAgg::token_mean), b);
    expect_dlogp("grpo at the clamp bounds", r.dlogp, {e20 / 2, -em20 / 2});
  }
  {
    // GSPO: s = exp(clamp(mean log r)); mean log r = 30 (clamped: no gradient) and 15 (gradient
    // -A s per token / (B L)). A = -1, so -A s > -A clip(s): unclipped.
    Batch b;
    b.add(-1.0f, {1, 1}, {-1.0f, -1.0f}, {-31.0f, -31.0f}, {-1.0f, -1.0f});
    b.add(-1.0f, {1, 1}, {-1.0f, -1.0f}, {-16.0f, -16.0f}, {-1.0f, -1.0f});
    const Result r = run(make_spec(rl::LossKind::gspo, rl::LossAgg::seq_mean_token_mean), b);
    const double e15 = std::exp(15.0);
    expect_dlogp("gspo clamp", r.dlogp, {0.0, 0.0, e15 / 4, e15 / 4});
    expect_loss(r, (e20 + e15) / 2, e20);
  }
}

// Geometric rejection [0.999, 1.001] and token veto 1e-4 drop whole sequences (they leave B', not B).
// grpo with r = 1, A = 1, dr_grpo with L_max = 2, so a live token has dlogp = -1 / (2 B') with the
// surviving denominator and -1 / (2 B) = -1 / 6 with the batch one.
//   seq 0: log w = {5e-4, -3e-4} -> exp(mean) = exp(1e-4): kept
//   seq 1: log w = {1e-2, 0}     -> exp(5e-3) > 1.001: rejected
//   seq 2: log w = {-10, 10}     -> exp(0) = 1 (geo keeps it), but w_0 = exp(-10) < 1e-4: vetoed
TEST(LossesHand, GeometricRejectionAndTokenVetoDropSequences) {
  Batch b;
  auto seq = [&](double lw0, double lw1) {
    b.add(1.0f, {0, 1, 1}, {-2, -1, -1}, {-2, -1, -1},
          {-2, static_cast<float>(-1.0 - lw0), static_cast<float>(-1.0 - lw1)});
  };
  seq(5e-4, -3e-4);
  seq(1e-2, 0.0);
  seq(-10.0, 10.0);
  struct Variant {
    bool geo;
    double veto;
    std::vector<int> live;  // live sequences
    double rejected, vetoed;
  };
  for (rl::LossDenominator dn : kBothDenominators)
  for (const Variant& v : {Variant{false, 0.0, {0, 1, 2}, 0, 0}, Variant{true, 0.0, {0, 2}, 1, 0},
                           Variant{false, 1e-4, {0, 1}, 0, 1}, Variant{true, 1e-4, {0}, 1, 1}}) {
    SCOPED_TRACE("geo " + std::to_string(v.geo) + " veto " + std::to_string(v.veto) + " " +
                 rl::loss_denominator_name(dn));
    rl::LossSpec s = make_spec(rl::LossKind::grpo, rl::LossAgg::dr_grpo, 2.0, dn);
    s.geo_reject = v.geo;
    s.token_veto = v.veto;
    const Result r = run(s, b);
    const double Bp = static_cast<double>(v.live.size()), den = surviving(dn) ? Bp : 3.0;
    EXPECT_EQ(r.counts.sequences, Bp);
    EXPECT_EQ(r.counts.tokens, 2 * Bp);
    EXPECT_EQ(r.counts.batch_sequences, 3.0);
    EXPECT_EQ(r.counts.batch_tokens, 6.0);
    std::vector<double> want(9, 0.0);
    for (int i : v.live) want[3 * i + 1] = want[3 * i + 2] = -1.0 / (2.0 * den);
    expect_dlogp("filters dlogp", r.dlogp, want);
    expect_loss(r, -Bp / den, 4.0);  // every live token: l = -1, and there are 2 B' of them over 2 den
    EXPECT_EQ(r.stats.rejected_sequences, v.rejected);
    EXPECT_EQ(r.stats.vetoed_sequences, v.vetoed);
    EXPECT_EQ(r.stats.sequences, 3.0);
  }
}

// The filters compare unclamped logs, so thresholds beyond e^-+20 fire (the old comparison of the
// clamped weight exp(max(log w, -20)) >= e^-20 ~ 2.1e-9 never went below a 1e-10 veto).
// grpo, r = 1, A = 1, token_mean (batch: T = 6 over three sequences of two tokens):
// veto 1e-10 (log -23.03) alone, then geo_reject [1e-10, 1e10] (logs -+23.03) alone:
//   seq 0: log w = {-30, 0}   -> w_0 = e^-30 ~ 9e-14 < 1e-10: vetoed; mean -15: geo keeps it
//   seq 1: log w = {-22, 0}   -> w_0 = e^-22 ~ 2.8e-10 >= 1e-10: kept; mean -11: kept
//   seq 2: log w = {50, 10}   -> mean 30 > 23.03: rejected (the clamped e^20 ~ 4.9e8 < 1e10 was not)
//   seq 3: log w = {-50, -10} -> vetoed, and mean -30 < -23.03: rejected
TEST(LossesHand, FiltersCompareUnclampedLogs) {
  Batch b;
  auto seq = [&](double lw0, double lw1) {
    b.add(1.0f, {1, 1}, {-1, -1}, {-1, -1}, {static_cast<float>(-1.0 - lw0), static_cast<float>(-1.0 - lw1)});
  };
  seq(-30.0, 0.0);
  seq(-22.0, 0.0);
  seq(50.0, 10.0);
  seq(-50.0, -10.0);
  rl::LossSpec s = make_spec(rl::LossKind::grpo, rl::LossAgg::token_mean);
  s.token_veto = 1e-10;
  const Result veto = run(s, b);
  EXPECT_EQ(veto.stats.vetoed_sequences, 2.0);  // seq 0 and seq 3
  EXPECT_EQ(veto.counts.sequences, 2.0);
  expect_dlogp("veto dlogp", veto.dlogp, {0, 0, -1.0 / 8, -1.0 / 8, -1.0 / 8, -1.0 / 8, 0, 0});
  s.token_veto = 0.0;
  s.geo_reject = true;
  s.geo_lo = 1e-10;
  s.geo_hi = 1e10;
  const Result geo = run(s, b);
  EXPECT_EQ(geo.stats.rejected_sequences, 2.0);  // seq 2 and seq 3
  expect_dlogp("geo dlogp", geo.dlogp, {-1.0 / 8, -1.0 / 8, -1.0 / 8, -1.0 / 8, 0, 0, 0, 0});
}

// The IS caps compare unclamped logs too: a cap C = 1e10 (log 23.03), above the clamp's e^20 ~ 4.9e8,
// masks a token or a sequence whose log weight is 30 (the clamped weight e^20 < C never did).
//   seq 0: log w = {30, 0}  -> token-MIS masks token 0; seq-MIS masks the sequence (sum 30)
//   seq 1: log w = {22, 0}  -> below log C: kept by both
TEST(LossesHand, CapsCompareUnclampedLogs) {
  Batch b;
  auto seq = [&](double lw0, double lw1) {
    b.add(1.0f, {1, 1}, {-1, -1}, {-1, -1}, {static_cast<float>(-1.0 - lw0), static_cast<float>(-1.0 - lw1)});
  };
  seq(30.0, 0.0);
  seq(22.0, 0.0);
  rl::LossSpec s = make_spec(rl::LossKind::grpo_token_mis, rl::LossAgg::token_mean);
  s.cap = 1e10;
  const Result tok = run(s, b);
  EXPECT_EQ(tok.stats.masked_tokens, 1.0);
  s = make_spec(rl::LossKind::grpo_seq_mis, rl::LossAgg::token_mean);
  s.cap = 1e10;
  const Result sq = run(s, b);
  EXPECT_EQ(sq.stats.masked_sequences, 1.0);
  s = make_spec(rl::LossKind::grpo_token_tis, rl::LossAgg::token_mean);
  s.cap = 1e10;
  EXPECT_EQ(run(s, b).stats.capped_tokens, 1.0);
}

// GSPO (seq_mean_token_mean, eps 3e-4/4e-4): s_i = exp(mean over live tokens of log(pi/pi_old)),
// every token of sequence i has ratio value s_i and d ratio / d log pi = s_i; l = max(-A s, -A clip(s)).
//   seq 0: A = 1,  log ratios {1e-4, -1e-4, 0} -> s = 1 (approximately): inside, dlogp = -s/(B' L'_0)
//   seq 1: A = 1,  log ratios {2e-3, 0}        -> s = e^1e-3 > 1.0004: clipped, dlogp 0, l = -1.0004
//   seq 2: A = -2, log ratios {2e-3, 0}        -> -A s > -A * 1.0004: unclipped, dlogp = 2 s / (B' L'_2)
//   seq 3: A = -2, log ratios {-2e-3, 0}       -> clipped at 1 - 3e-4: l = 2 * 0.9997, dlogp 0
// B' = 4 (auto aggregation of gspo: seq_mean_token_mean).
TEST(LossesHand, GspoSequenceRatioAndClip) {
  Batch b;
  auto seq = [&](float A, const std::vector<double>& lr) {
    std::vector<int> m(lr.size() + 1, 1);
    m[0] = 0;
    std::vector<float> lp{-3.0f}, lo{-3.0f}, lm{-3.0f};
    for (double x : lr) {
      lo.push_back(-1.0f);
      lp.push_back(static_cast<float>(-1.0 + x));
      lm.push_back(-1.0f);
    }
    b.add(A, m, lp, lo, lm);
  };
  seq(1.0f, {1e-4, -1e-4, 0.0});
  seq(1.0f, {2e-3, 0.0});
  seq(-2.0f, {2e-3, 0.0});
  seq(-2.0f, {-2e-3, 0.0});
  // s_i from the stored floats
  std::vector<double> s;
  for (int i = 0; i < 4; ++i) {
    double sum = 0.0;
    int n = 0;
    for (int row = b.off[i]; row < b.off[i + 1]; ++row)
      if (b.mask[row]) {
        sum += f64(b.logp[row]) - f64(b.logp_old[row]);
        ++n;
      }
    s.push_back(std::exp(sum / n));
  }
  ASSERT_LT(std::fabs(s[0] - 1.0), 3e-4);
  ASSERT_GT(s[1], 1.0004);
  ASSERT_LT(s[3], 0.9997);
  rl::LossSpec spec = make_spec(rl::LossKind::gspo, rl::parse_loss_agg("auto", rl::LossKind::gspo));
  const Result r = run(spec, b);
  const double B = 4;
  expect_dlogp("gspo dlogp", r.dlogp,
               {0, -s[0] / (B * 3), -s[0] / (B * 3), -s[0] / (B * 3), 0, 0, 0, 0, 2 * s[2] / (B * 2),
                2 * s[2] / (B * 2), 0, 0, 0});
  // seq_mean_token_mean: each sequence contributes its token mean, which is its one l value
  expect_loss(r, (-s[0] - 1.0004 + 2 * s[2] + 2 * 0.9997) / B, 8.0);
  EXPECT_EQ(r.stats.clipped_tokens, 4.0);
}

// ------------------------------------------------------------------------------------------------
// Finite differences against an independent double reference of L(log pi_theta)

namespace {

// Everything stop-gradient, evaluated at the base point: which rows are live, each live row's
// coefficient (token weight * sequence weight / aggregation denominator) and, for GSPO, s_i.
struct Frozen {
  std::vector<int> live;       // per row
  std::vector<double> coef;    // per row
  std::vector<double> gspo_s;  // per row: s of the row's sequence
  double tokens = 0, sequences = 0, rejected = 0, vetoed = 0;  // T', B'
  double batch_tokens = 0, batch_sequences = 0;                 // T, B
};

double clampd(double x) { return std::max(-kClampLog, std::min(kClampLog, x)); }

bool pg_family(rl::LossKind k) {
  return k == rl::LossKind::pg || k == rl::LossKind::pg_seq_is || k == rl::LossKind::pg_seq_tis ||
         k == rl::LossKind::pg_seq_mis;
}

Frozen freeze(const rl::LossSpec& sp, const Batch& b) {
  using K = rl::LossKind;
  const int N = b.rows(), S = b.seqs();
  Frozen f;
  f.live.assign(N, 0);
  f.coef.assign(N, 0.0);
  f.gspo_s.assign(N, 1.0);
  std::vector<double> seq_w(S, 1.0);
  std::vector<int> seq_live(S, 0), seq_resp(S, 0);
  for (int i = 0; i < S; ++i) {
    double slw = 0, slpmu = 0;
    int n = 0;
    bool veto = false;
    for (int t = b.off[i]; t < b.off[i + 1]; ++t) {
      if (!b.mask[t]) continue;
      ++n;
      const double lw = f64(b.logp_old[t]) - f64(b.logmu[t]);
      slw += lw;
      slpmu += f64(b.logp[t]) - f64(b.logmu[t]);
      if (sp.token_veto > 0 && lw < std::log(sp.token_veto)) veto = true;
    }
    if (n == 0) continue;
    seq_resp[i] = n;
    f.batch_tokens += n;
    f.batch_sequences += 1;
    bool drop = false;
    if (sp.geo_reject) {
      const double g = slw / n;
      if (g < std::log(sp.geo_lo) || g > std::log(sp.geo_hi)) {
        drop = true;
        f.rejected += 1;
      }
    }
    if (veto) {
      drop = true;
      f.vetoed += 1;
    }
    if (drop) continue;
    const double rho_old = std::exp(clampd(slw)), rho_cur = std::exp(clampd(slpmu));
    switch (sp.kind) {
      case K::grpo_seq_tis: seq_w[i] = std::min(rho_old, sp.cap); break;
      case K::grpo_seq_mis: seq_w[i] = rho_old; drop = rho_old > sp.cap; break;
      case K::pg_seq_is: seq_w[i] = rho_cur; break;
      case K::pg_seq_tis: seq_w[i] = std::min(rho_cur, sp.cap); break;
      case K::pg_seq_mis: seq_w[i] = rho_cur; drop = rho_cur > sp.cap; break;
      default: break;
    }
    if (drop) continue;
    double slr = 0;
    for (int t = b.off[i]; t < b.off[i + 1]; ++t) {
      if (!b.mask[t]) continue;
      const double w = std::exp(clampd(f64(b.logp_old[t]) - f64(b.logmu[t])));
      if (sp.kind == K::grpo_token_mis && w > sp.cap) continue;
      f.live[t] = 1;
      f.coef[t] = sp.kind == K::grpo_token_tis ? std::min(w, sp.cap) : sp.kind == K::grpo_token_mis ? w : 1.0;
      ++seq_live[i];
      slr += f64(b.logp[t]) - f64(b.logp_old[t]);
    }
    if (seq_live[i] == 0) continue;
    f.tokens += seq_live[i];
    f.sequences += 1;
    const double s = std::exp(clampd(slr / seq_live[i]));
    for (int t = b.off[i]; t < b.off[i + 1]; ++t) f.gspo_s[t] = s;
  }
  for (int i = 0; i < S; ++i)
    for (int t = b.off[i]; t < b.off[i + 1]; ++t) {
      if (!f.live[t]) continue;
      const bool surv = sp.denominator == rl::LossDenominator::surviving;
      const double B = surv ? f.sequences : f.batch_sequences, T = surv ? f.tokens : f.batch_tokens;
      const double den = sp.agg == rl::LossAgg::dr_grpo     ? B * sp.max_len
                         : sp.agg == rl::LossAgg::token_mean ? T
                                                              : B * (surv ? seq_live[i] : seq_resp[i]);
      f.coef[t] *= seq_w[i] / den;
    }
  return f;
}

// l_t of row t (of sequence seq) at log pi_theta = x, everything else frozen at the base point.
double ref_term(const rl::LossSpec& sp, const Batch& b, const Frozen& f, int seq, int t, double x) {
  const double A = b.adv[seq];
  if (pg_family(sp.kind)) return -A * x;
  const bool gspo = sp.kind == rl::LossKind::gspo;
  // GSPO: sg(s) pi / sg(pi); the others: pi / pi_old
  const double ratio = gspo ? f.gspo_s[t] * std::exp(x - f64(b.logp[t])) : std::exp(x - f64(b.logp_old[t]));
  const double lo = 1 - (gspo ? sp.gspo_eps_lo : sp.eps_lo), hi = 1 + (gspo ? sp.gspo_eps_hi : sp.eps_hi);
  return std::max(-A * ratio, -A * std::min(std::max(ratio, lo), hi));
}

struct RefEval {
  double loss = 0, sum_abs = 0;
};
RefEval ref_loss(const rl::LossSpec& sp, const Batch& b, const Frozen& f, int row = -1, double dx = 0) {
  RefEval e;
  for (int i = 0; i < b.seqs(); ++i)
    for (int t = b.off[i]; t < b.off[i + 1]; ++t) {
      if (!f.live[t]) continue;
      const double x = f64(b.logp[t]) + (t == row ? dx : 0.0);
      const double term = f.coef[t] * ref_term(sp, b, f, i, t, x);
      e.loss += term;
      e.sum_abs += std::fabs(term);
    }
  return e;
}

// Distance (in log pi units) of a live row from the nearest kink of its PPO/GSPO max.
double kink_distance(const rl::LossSpec& sp, const Batch& b, const Frozen& f) {
  double d = INFINITY;
  if (pg_family(sp.kind)) return d;
  const bool gspo = sp.kind == rl::LossKind::gspo;
  for (int t = 0; t < b.rows(); ++t) {
    if (!f.live[t]) continue;
    const double lx = gspo ? std::log(f.gspo_s[t]) : f64(b.logp[t]) - f64(b.logp_old[t]);
    const double lo = std::log(1 - (gspo ? sp.gspo_eps_lo : sp.eps_lo));
    const double hi = std::log(1 + (gspo ? sp.gspo_eps_hi : sp.eps_hi));
    d = std::min({d, std::fabs(lx - lo), std::fabs(lx - hi)});
  }
  return d;
}

// A random mini-batch: 6 sequences of 1-2 prompt rows and 0-6 response rows (sequence 2 has none),
// |log(pi_old/mu)| < 0.5, |log(pi/pi_old)| < 0.35 (GSPO: the sequence's tokens share a common
// offset of +-0.02 or ~0 so that both sides of its narrow clip range occur).
Batch random_batch(std::uint64_t seed, bool gspo) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  auto uni = [&](double lo, double hi) { return lo + (hi - lo) * u(rng); };
  Batch b;
  for (int i = 0; i < 6; ++i) {
    const int prompt = 1 + static_cast<int>(u(rng) * 2), resp = i == 2 ? 0 : 1 + static_cast<int>(u(rng) * 6);
    const double seq_off = gspo ? (i % 3 == 0 ? 0.0 : (i % 3 == 1 ? 0.02 : -0.02)) : 0.0;
    std::vector<int> m;
    std::vector<float> lp, lo, lm;
    for (int t = 0; t < prompt + resp; ++t) {
      m.push_back(t >= prompt);
      const double o = uni(-3.0, -0.05);
      lo.push_back(static_cast<float>(o));
      lm.push_back(static_cast<float>(o - uni(-0.5, 0.5)));
      lp.push_back(static_cast<float>(o + (gspo ? seq_off + uni(-1e-5, 1e-5) : uni(-0.35, 0.35))));
    }
    b.add(static_cast<float>(uni(-1.5, 1.5)), m, lp, lo, lm);
  }
  return b;
}

}  // namespace

// For every loss, aggregation and filter setting: dlogp / scale equals the central difference of
// the reference L, and the returned loss equals the reference at the base point.
// Error budget of the central difference with step h: truncation h^2/6 |L'''| <= h^2 |g| (every
// term is linear or c exp(x), whose third derivative equals its first), roundoff of the two
// evaluations 2 * n * 2^-53 * sum|terms| / (2h); plus one fp32 rounding of dlogp (kU32 |g|).
TEST(LossesFiniteDifference, EveryLossAggregationAndFilter) {
  constexpr double h = 1e-5;
  constexpr float scale = 0.75f;
  int checked = 0, nonzero = 0;
  for (const std::string& name : rl::loss_names()) {
    const rl::LossKind kind = rl::parse_loss(name);
    for (rl::LossAgg agg : {rl::LossAgg::dr_grpo, rl::LossAgg::token_mean, rl::LossAgg::seq_mean_token_mean}) {
      for (int variant = 0; variant < 6; ++variant) {  // 3 filter settings x 2 denominators
        rl::LossSpec sp = make_spec(kind, agg, 7.0, variant < 3 ? rl::LossDenominator::batch
                                                                : rl::LossDenominator::surviving);
        sp.cap = 1.3;  // some token and sequence weights fall above it
        sp.eps_hi = 0.28;
        if (variant % 3 == 1) {
          sp.geo_reject = true;
          sp.geo_lo = 0.85;
          sp.geo_hi = 1.15;
        }
        if (variant % 3 == 2) sp.token_veto = 0.65;
        // the first seed whose live rows are all > 10 h from a kink of the PPO/GSPO max
        Batch b;
        Frozen f;
        std::uint64_t seed = 1000 * static_cast<std::uint64_t>(kind) + 10 * (variant % 3);
        for (;; ++seed) {
          b = random_batch(seed, kind == rl::LossKind::gspo);
          f = freeze(sp, b);
          if (kink_distance(sp, b, f) > 10 * h) break;
        }
        SCOPED_TRACE(name + " " + rl::loss_agg_name(agg) + " variant " + std::to_string(variant) + " seed " +
                     std::to_string(seed));
        const Result r = run(sp, b, scale);
        EXPECT_EQ(r.counts.tokens, f.tokens);
        EXPECT_EQ(r.counts.sequences, f.sequences);
        EXPECT_EQ(r.counts.batch_tokens, f.batch_tokens);
        EXPECT_EQ(r.counts.batch_sequences, f.batch_sequences);
        EXPECT_EQ(r.stats.live_tokens, f.tokens);
        EXPECT_EQ(r.stats.rejected_sequences, f.rejected);
        EXPECT_EQ(r.stats.vetoed_sequences, f.vetoed);
        const RefEval base = ref_loss(sp, b, f);
        const double n = b.rows();
        EXPECT_NEAR(r.stats.loss, base.loss, 16 * n * kDbl * base.sum_abs + 1e-300) << "loss at the base point";
        std::vector<double> want(b.rows()), tol(b.rows());
        for (int t = 0; t < b.rows(); ++t) {
          const double fd = (ref_loss(sp, b, f, t, h).loss - ref_loss(sp, b, f, t, -h).loss) / (2 * h);
          want[t] = scale * fd;
          tol[t] = scale * ((kU32 + h * h) * std::fabs(fd) + 2 * n * kDbl * base.sum_abs / h);
          nonzero += r.dlogp[t] != 0.0;
        }
        mantissa::test::expect_close(name + " " + rl::loss_agg_name(agg) + " v" + std::to_string(variant), r.dlogp,
                                     want, tol);
        ++checked;
      }
    }
  }
  EXPECT_EQ(checked, 10 * 3 * 6);
  std::printf("  %d non-zero dlogp rows checked\n", nonzero);
  EXPECT_GT(nonzero, 1000);  // the comparison is not vacuous
}

// ------------------------------------------------------------------------------------------------
// Unbiasedness of the sequence-level IS policy gradient (pg_seq_is)
//
// pi = softmax(theta) over K = 4 categories, a response is T = 3 independent tokens, R(y) = 1 when
// sum_t y_t is even. The exact gradient g* = E_{y~pi}[R(y) grad_theta log pi(y)] with
// grad_theta log pi(y) = sum_t (e_{y_t} - pi) is enumerated over all K^T responses. Samples come
// from mu = softmax(theta + delta). pg_seq_is with A_i = R(y_i), log pi = log pi_old = log pi(y_t),
// log mu(y_t), dr_grpo with L_max = T over B' = M sequences gives
//   dlogp_{i,t} = -rho_i R_i / (M T),
// so X_i = -(M T) sum_t dlogp_{i,t} (e_{y_t} - pi) = rho_i R_i grad log pi(y_i): a per-sample estimate of
// g* whose mean must match g* within a few standard errors. The plain pg loss on the same samples
// (X_i = R_i grad log pi(y_i), no weight) estimates E_mu[...] != g*: its mean must miss g* by many
// standard errors (the check can fail).
TEST(LossesUnbiased, SequenceImportanceWeightCorrectsTheSampler) {
  const auto t0 = std::chrono::steady_clock::now();
  constexpr int K = 4, T = 3, M = 40000;
  const double theta[K] = {0.3, -0.2, 0.5, 0.0}, delta[K] = {0.5, -0.4, -0.3, 0.2};
  double pi[K], mu[K];
  auto softmax = [](const double* x, double* p) {
    double z = 0;
    for (int k = 0; k < K; ++k) z += std::exp(x[k]);
    for (int k = 0; k < K; ++k) p[k] = std::exp(x[k]) / z;
  };
  softmax(theta, pi);
  double tm[K];
  for (int k = 0; k < K; ++k) tm[k] = theta[k] + delta[k];
  softmax(tm, mu);
  auto reward = [](const int* y) { return (y[0] + y[1] + y[2]) % 2 == 0 ? 1.0 : 0.0; };

  double gstar[K] = {0, 0, 0, 0};
  for (int c = 0; c < K * K * K; ++c) {
    const int y[T] = {c % K, (c / K) % K, c / (K * K)};
    const double p = pi[y[0]] * pi[y[1]] * pi[y[2]], R = reward(y);
    for (int t = 0; t < T; ++t)
      for (int k = 0; k < K; ++k) gstar[k] += p * R * ((y[t] == k) - pi[k]);
  }

  std::mt19937_64 rng(20240607);
  std::discrete_distribution<int> draw(mu, mu + K);
  Batch b;
  std::vector<int> ys(M * T);
  for (int i = 0; i < M; ++i) {
    std::vector<float> lp(T), lm(T);
    for (int t = 0; t < T; ++t) {
      ys[i * T + t] = draw(rng);
      lp[t] = static_cast<float>(std::log(pi[ys[i * T + t]]));
      lm[t] = static_cast<float>(std::log(mu[ys[i * T + t]]));
    }
    b.add(static_cast<float>(reward(&ys[i * T])), std::vector<int>(T, 1), lp, lp, lm);
  }

  // max over components of |mean X - g*| / standard error
  auto z_score = [&](rl::LossKind kind) {
    const Result r = run(make_spec(kind, rl::LossAgg::dr_grpo, T), b);
    EXPECT_EQ(r.counts.sequences, M);
    double sum[K] = {0, 0, 0, 0}, sumsq[K] = {0, 0, 0, 0};
    for (int i = 0; i < M; ++i) {
      for (int k = 0; k < K; ++k) {
        double x = 0;
        for (int t = 0; t < T; ++t) x += -static_cast<double>(M) * T * r.dlogp[i * T + t] * ((ys[i * T + t] == k) - pi[k]);
        sum[k] += x;
        sumsq[k] += x * x;
      }
    }
    double worst = 0;
    for (int k = 0; k < K; ++k) {
      const double mean = sum[k] / M, var = (sumsq[k] - M * mean * mean) / (M - 1);
      const double z = (mean - gstar[k]) / std::sqrt(var / M);
      std::printf("  %-10s component %d: mean %+.5f  g* %+.5f  z %+.2f\n", rl::loss_name(kind), k, mean, gstar[k], z);
      worst = std::max(worst, std::fabs(z));
    }
    return worst;
  };
  EXPECT_LT(z_score(rl::LossKind::pg_seq_is), 4.5);  // 4.5 sigma: false-alarm rate ~1e-5 per component
  EXPECT_GT(z_score(rl::LossKind::pg), 20.0);        // expected ~50-70 sigma for this delta
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("  unbiasedness test: %.3f s\n", secs);
}

// ------------------------------------------------------------------------------------------------
// Group advantages

// Two groups of G = 4 (rewards exact in float):
//   {1, 0, 0, 1}: mean 0.5, unbiased var = 4 * 0.25 / 3 = 1/3 -> grpo A = +-0.5 / (sqrt(1/3) + eps)
//   {0, 0, 0, 1}: mean 0.25, unbiased var = (3 * 0.0625 + 0.5625) / 3 = 0.25, std 0.5
TEST(LossesAdvantages, GrpoAndDrGrpoByHand) {
  const std::vector<float> R = {1, 0, 0, 1, 0, 0, 0, 1};
  const double eps = 1e-6;
  const double s1 = std::sqrt(1.0 / 3.0) + eps, s2 = 0.5 + eps;
  const std::vector<double> grpo = {0.5 / s1, -0.5 / s1, -0.5 / s1, 0.5 / s1, -0.25 / s2, -0.25 / s2, -0.25 / s2, 0.75 / s2};
  const std::vector<double> dr = {0.5, -0.5, -0.5, 0.5, -0.25, -0.25, -0.25, 0.75};
  auto as_double = [](const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); };
  expect_dlogp("grpo advantages", as_double(rl::group_advantages(R, 4, rl::AdvantageKind::grpo, eps)), grpo);
  expect_dlogp("dr_grpo advantages", as_double(rl::group_advantages(R, 4, rl::AdvantageKind::dr_grpo, eps)), dr);
  // G = 2 groups: unbiased std of {3, 1} is sqrt(2)
  const std::vector<float> a = rl::group_advantages({3, 1}, 2, rl::AdvantageKind::grpo, 0.0);
  expect_dlogp("G=2", as_double(a), {1.0 / std::sqrt(2.0), -1.0 / std::sqrt(2.0)});
}

TEST(LossesAdvantages, ConstantGroupGivesZeroNotNaN) {
  for (double eps : {0.0, 1e-6}) {
    for (auto kind : {rl::AdvantageKind::grpo, rl::AdvantageKind::dr_grpo}) {
      const std::vector<float> a = rl::group_advantages({0.1f, 0.1f, 0.1f, 1, 1, 1}, 3, kind, eps);
      for (float x : a) EXPECT_EQ(x, 0.0f) << "eps " << eps;
    }
  }
}

TEST(LossesAdvantages, BadSizesThrow) {
  EXPECT_THROW(rl::group_advantages({1, 2, 3}, 2, rl::AdvantageKind::grpo, 1e-6), std::invalid_argument);
  EXPECT_THROW(rl::group_advantages({1, 2}, 1, rl::AdvantageKind::dr_grpo, 1e-6), std::invalid_argument);
  EXPECT_THROW(rl::group_advantages({1, 2}, 0, rl::AdvantageKind::dr_grpo, 1e-6), std::invalid_argument);
  EXPECT_TRUE(rl::group_advantages({}, 4, rl::AdvantageKind::grpo, 1e-6).empty());
}

// ------------------------------------------------------------------------------------------------
// Names and validation

namespace {
void expect_throw_naming(const std::function<void()>& f, const std::vector<std::string>& choices) {
  try {
    f();
    ADD_FAILURE() << "no exception";
  } catch (const std::invalid_argument& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("bogus"), std::string::npos) << msg;
    for (const auto& c : choices) EXPECT_NE(msg.find(c), std::string::npos) << msg << " lacks " << c;
  }
}
}  // namespace

TEST(LossesNames, RoundTripAndTableOrder) {
  const std::vector<std::string> want = {"pg",           "grpo",      "grpo_token_tis", "grpo_token_mis", "grpo_seq_tis",
                                         "grpo_seq_mis", "pg_seq_is", "pg_seq_tis",     "pg_seq_mis",     "gspo"};
  EXPECT_EQ(rl::loss_names(), want);
  for (const auto& n : rl::loss_names()) EXPECT_EQ(rl::loss_name(rl::parse_loss(n)), n);
  expect_throw_naming([] { rl::parse_loss("bogus"); }, want);
  for (const char* a : {"dr_grpo", "token_mean", "seq_mean_token_mean"})
    EXPECT_STREQ(rl::loss_agg_name(rl::parse_loss_agg(a, rl::LossKind::gspo)), a);
  EXPECT_EQ(rl::parse_loss_agg("auto", rl::LossKind::gspo), rl::LossAgg::seq_mean_token_mean);
  for (const auto& n : rl::loss_names())
    if (n != "gspo") {
      EXPECT_EQ(rl::parse_loss_agg("auto", rl::parse_loss(n)), rl::LossAgg::dr_grpo) << n;
    }
  expect_throw_naming([] { rl::parse_loss_agg("bogus", rl::LossKind::pg); },
                      {"auto", "dr_grpo", "token_mean", "seq_mean_token_mean"});
  for (const char* d : {"batch", "surviving"})
    EXPECT_STREQ(rl::loss_denominator_name(rl::parse_loss_denominator(d)), d);
  expect_throw_naming([] { rl::parse_loss_denominator("bogus"); }, {"batch", "surviving"});
  EXPECT_EQ(rl::LossSpec{}.denominator, rl::LossDenominator::batch) << "the default is the paper code's";
  EXPECT_EQ(rl::parse_advantage("grpo"), rl::AdvantageKind::grpo);
  EXPECT_EQ(rl::parse_advantage("dr_grpo"), rl::AdvantageKind::dr_grpo);
  expect_throw_naming([] { rl::parse_advantage("bogus"); }, {"grpo", "dr_grpo"});
}

// The deck's [rl] loss choices (documented as "one of a, b, ...") are exactly loss_names().
TEST(LossesNames, DeckChoicesEqualLossNames) {
  bool found = false;
  for (const auto& k : mantissa::config::document_keys()) {
    if (k.block != "rl" || k.key != "loss") continue;
    found = true;
    const std::string prefix = "one of ";
    ASSERT_EQ(k.allowed.rfind(prefix, 0), 0u) << k.allowed;
    std::vector<std::string> choices;
    std::string rest = k.allowed.substr(prefix.size());
    for (std::size_t p; (p = rest.find(", ")) != std::string::npos; rest = rest.substr(p + 2))
      choices.push_back(rest.substr(0, p));
    choices.push_back(rest);
    EXPECT_EQ(choices, rl::loss_names());
    for (const auto& c : choices) EXPECT_NO_THROW(rl::parse_loss(c)) << c;
  }
  EXPECT_TRUE(found) << "no [rl] loss key in the deck documentation";
}

// [rl] loss_denominator: default "batch", choices exactly what parse_loss_denominator accepts.
TEST(LossesNames, DeckLossDenominatorKey) {
  bool found = false;
  for (const auto& k : mantissa::config::document_keys()) {
    if (k.block != "rl" || k.key != "loss_denominator") continue;
    found = true;
    EXPECT_EQ(k.default_value, "\"batch\"");
    EXPECT_EQ(k.allowed, "one of batch, surviving");
  }
  EXPECT_TRUE(found) << "no [rl] loss_denominator key in the deck documentation";
  EXPECT_EQ(mantissa::config::RlConfig{}.loss_denominator, "batch");
}

TEST(LossesValidation, InconsistentSizesAndBadSpecThrow) {
  Batch b;
  b.add(1.0f, {1, 1}, {-1, -1}, {-1, -1}, {-1, -1});
  rl::LossInput in = make_input(b);
  const rl::LossSpec ok;
  EXPECT_NO_THROW(rl::loss_counts(ok, in));
  in.logp_old = float_view("mantissa::test::logp_old", {-1.0f});  // wrong size
  EXPECT_THROW(rl::loss_counts(ok, in), std::invalid_argument);
  in.logp_old = float_view("mantissa::test::logp_old", b.logp_old);
  mantissa::View1<float> small("mantissa::test::small", 1);
  EXPECT_THROW(rl::loss_and_grad(ok, in, {2, 1}, 1.0f, small), std::invalid_argument);
  rl::LossSpec bad = ok;
  bad.cap = 0.0;
  EXPECT_THROW(rl::loss_counts(bad, in), std::invalid_argument);
  bad = ok;
  bad.max_len = 0.0;
  EXPECT_THROW(rl::loss_counts(bad, in), std::invalid_argument);
  in.advantage = float_view("mantissa::test::adv", {1.0f, 2.0f});  // S + 1 offsets but 2 advantages
  EXPECT_THROW(rl::loss_counts(ok, in), std::invalid_argument);
}

// LossStats::values / from_values (the trainer's one allreduce of the step's sums) round-trip in
// to_row's order, and a wrong count throws.
TEST(LossesValidation, StatsValuesRoundTrip) {
  rl::LossStats st;
  st.loss = 1.5;
  st.tokens = 7;
  st.weight_sum = -2.25;
  st.vetoed_sequences = 3;
  const std::vector<double> v = st.values();
  ASSERT_EQ(v.size(), rl::LossStats::kNumFields);
  const auto row = st.to_row();
  ASSERT_EQ(row.size(), v.size());
  for (std::size_t i = 0; i < v.size(); ++i) EXPECT_EQ(row[i].second, v[i]) << row[i].first;
  EXPECT_EQ(rl::LossStats::from_values(v).values(), v);
  EXPECT_THROW(rl::LossStats::from_values(std::vector<double>(v.size() - 1)), std::invalid_argument);
  EXPECT_THROW(rl::LossStats::from_values(std::vector<double>(v.size() + 1)), std::invalid_argument);
}

// Every kernel these functions launch is labelled "mantissa::rl::..." (or is Kokkos' own).
namespace {
std::set<std::string>& seen_labels() {
  static std::set<std::string> s;
  return s;
}
void record_label(const char* name, const std::uint32_t, std::uint64_t* id) {
  *id = 0;
  seen_labels().insert(name);
}
}  // namespace

TEST(LossesLabels, KernelsCarryTheRlPrefix) {
  if (std::getenv("KOKKOS_TOOLS_LIBS") || std::getenv("KOKKOS_PROFILE_LIBRARY"))
    GTEST_SKIP() << "a Kokkos Tools library is loaded";
  Batch b;
  b.add(1.0f, {0, 1, 1}, {-1, -1, -1}, {-1, -1, -1}, {-1, -1, -1});
  namespace kt = Kokkos::Tools::Experimental;
  kt::set_begin_parallel_for_callback(record_label);
  kt::set_begin_parallel_reduce_callback(record_label);
  kt::set_begin_parallel_scan_callback(record_label);
  seen_labels().clear();
  run(make_spec(rl::LossKind::grpo_seq_mis, rl::LossAgg::dr_grpo), b);
  kt::set_begin_parallel_for_callback(nullptr);
  kt::set_begin_parallel_reduce_callback(nullptr);
  kt::set_begin_parallel_scan_callback(nullptr);
  EXPECT_TRUE(seen_labels().count("mantissa::rl::loss_counts"));
  EXPECT_TRUE(seen_labels().count("mantissa::rl::loss_and_grad"));
  for (const auto& l : seen_labels())
    EXPECT_TRUE(l.rfind("mantissa::", 0) == 0 || l.rfind("Kokkos::", 0) == 0) << l;
}
