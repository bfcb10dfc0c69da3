// Tests of the training-inference mismatch metrics (mission.md section 5), the Ljung-Box drift test
// with its chi-square survival function, and the probe plotting script src/app/plot_probe.py.
// Expected values are worked out by hand in the comments; all inputs are exactly representable in
// float, so the only error is double rounding in the accumulation (tolerances 1e-12 or tighter
// unless a reason is given).

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <unistd.h>

#include "rl/mismatch.hpp"
#include "mantissa_test_paths.hpp"  // MANTISSA_SOURCE_DIR, MANTISSA_EXE

namespace rl = mantissa::rl;

namespace {

constexpr double kPi = 3.14159265358979323846;

// Splitmix64 + Box-Muller: a normal stream fixed by the seed on every platform (std::normal_distribution
// is implementation-defined).
class Normal {
 public:
  explicit Normal(std::uint64_t seed) : s_(seed) {}
  double operator()() {
    const double u1 = (static_cast<double>(next() >> 11) + 0.5) * 0x1.0p-53;  // (0, 1)
    const double u2 = static_cast<double>(next() >> 11) * 0x1.0p-53;
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * kPi * u2);
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

 private:
  std::uint64_t next() {
    std::uint64_t z = (s_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  std::uint64_t s_;
};

// Relative-or-absolute closeness for values that span many magnitudes.
::testing::AssertionResult close_rel(double got, double want, double rel) {
  const double err = std::abs(got - want);
  if (err <= rel * std::max(std::abs(want), 1e-300)) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "got " << got << " want " << want << " (rel err "
                                       << err / std::abs(want) << " > " << rel << ")";
}

void expect_no_nan(const rl::MismatchMetrics& m) {
  for (const auto& [name, v] : rl::to_row(m)) EXPECT_FALSE(std::isnan(v)) << name;
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// Sampled-token and sequence metrics

// Two sequences, tokens [0,2) and [2,3):
//   logmu = {-1, -0.5, -2}, logpi = {-1.5, -0.5, -1}; d = logmu - logpi = {0.5, 0, -1}.
TEST(Mismatch, TwoSequencesByHand) {
  rl::MismatchInput in;
  in.logmu = {-1.0f, -0.5f, -2.0f};
  in.logpi = {-1.5f, -0.5f, -1.0f};
  in.seq_offsets = {0, 2, 3};
  const rl::MismatchMetrics m = rl::compute_mismatch(in, 2.0);
  const double e = std::exp(1.0);
  constexpr double tol = 1e-14;  // three-term double sums of O(1) values

  EXPECT_EQ(m.tokens, 3);
  EXPECT_EQ(m.sequences, 2);
  // k1 = (0.5 + 0 - 1)/3 = -1/6
  EXPECT_NEAR(m.k1, -1.0 / 6.0, tol);
  // k2 = (0.25 + 0 + 1)/2/3 = 1.25/6
  EXPECT_NEAR(m.k2, 1.25 / 6.0, tol);
  // k3 = [(e^-0.5 + 0.5 - 1) + (1 + 0 - 1) + (e^1 - 1 - 1)]/3
  EXPECT_NEAR(m.k3, (std::exp(-0.5) - 0.5 + e - 2.0) / 3.0, tol);
  // |d| = {0.5, 0, 1} -> 0.5
  EXPECT_NEAR(m.mean_abs_logratio, 0.5, tol);
  // pi - mu = {e^-1.5 - e^-1, 0, e^-1 - e^-2}
  const double dp0 = std::exp(-1.5) - std::exp(-1.0), dp2 = std::exp(-1.0) - std::exp(-2.0);
  EXPECT_NEAR(m.mean_abs_prob_diff, (std::abs(dp0) + std::abs(dp2)) / 3.0, tol);
  EXPECT_NEAR(m.max_prob_diff, dp2, tol);  // +0.2325
  EXPECT_NEAR(m.min_prob_diff, dp0, tol);  // -0.1447
  // s = {(-1.5 + 1) + 0, -1 + 2} = {-0.5, 1}
  EXPECT_NEAR(m.seq_logratio_mean, 0.25, tol);
  EXPECT_NEAR(m.seq_logratio_abs_mean, 0.75, tol);
  EXPECT_NEAR(m.seq_logratio_min, -0.5, tol);
  EXPECT_NEAR(m.seq_logratio_max, 1.0, tol);
  EXPECT_NEAR(m.seq_kl, -0.25, tol);
  // Two points (L=2, s=-0.5), (L=1, s=1): slope -1.5 nats/token = -1500 per 1K; no dof left for a stderr.
  EXPECT_TRUE(m.slope_valid);
  EXPECT_NEAR(m.slope_per_1k, -1500.0, 1e-11);
  EXPECT_EQ(m.slope_per_1k_stderr, 0.0);
  // w = exp(-d) = {e^-0.5, 1, e}: chi2 = (e^-1 + 1 + e^2)/3 - 1; ess = mean(w)^2 / mean(w^2)
  const double ew = (std::exp(-0.5) + 1.0 + e) / 3.0, ew2 = (std::exp(-1.0) + 1.0 + e * e) / 3.0;
  EXPECT_NEAR(m.chi2_token, ew2 - 1.0, tol);
  EXPECT_NEAR(m.ess_token, ew * ew / ew2, tol);
  EXPECT_NEAR(m.frac_tokens_w_above_c, 1.0 / 3.0, tol);  // only w = e > 2
  // rho = exp(s) = {e^-0.5, e}: chi2_seq = (e^-1 + e^2)/2 - 1
  const double er = (std::exp(-0.5) + e) / 2.0, er2 = (std::exp(-1.0) + e * e) / 2.0;
  EXPECT_NEAR(m.chi2_seq, er2 - 1.0, tol);
  EXPECT_NEAR(m.ess_seq, er * er / er2, tol);
  EXPECT_NEAR(m.frac_seqs_rho_above_c, 0.5, tol);  // only rho = e > 2
  EXPECT_EQ(m.clip_c, 2.0);
  // A larger C: nothing is above e = 2.718 < 3.
  const rl::MismatchMetrics m3 = rl::compute_mismatch(in, 3.0);
  EXPECT_EQ(m3.frac_tokens_w_above_c, 0.0);
  EXPECT_EQ(m3.frac_seqs_rho_above_c, 0.0);
  // Outside [0.7, 2]: w = e^-0.5 = 0.607 (below) and e (above) -> 2/3; rho likewise -> 2/2.
  EXPECT_NEAR(rl::frac_tokens_w_outside(in, 0.7, 2.0), 2.0 / 3.0, tol);
  EXPECT_NEAR(rl::frac_seqs_rho_outside(in, 0.7, 2.0), 1.0, tol);
  // Outside [0.5, 3]: none.
  EXPECT_EQ(rl::frac_tokens_w_outside(in, 0.5, 3.0), 0.0);
  EXPECT_EQ(rl::frac_seqs_rho_outside(in, 0.5, 3.0), 0.0);
  EXPECT_FALSE(m.has_exact);
  EXPECT_EQ(m.exact_kl_mu_pi_token, 0.0);
  EXPECT_EQ(m.exact_kl_seq, 0.0);
}

TEST(Mismatch, IdenticalEnginesGiveZeroMismatch) {
  Normal rng(7);
  rl::MismatchInput in;
  in.seq_offsets = {0};
  const int V = 11;
  for (int s = 0; s < 6; ++s) {
    const int len = 3 + 4 * s;
    for (int t = 0; t < len; ++t) {
      const float lp = static_cast<float>(-std::abs(rng()) * 3.0);
      in.logmu.push_back(lp);
      in.logpi.push_back(lp);
      for (int v = 0; v < V; ++v) in.full_logmu.push_back(static_cast<float>(rng()));
    }
    in.seq_offsets.push_back(static_cast<int>(in.logmu.size()));
  }
  in.full_logpi = in.full_logmu;
  in.vocab = V;
  const rl::MismatchMetrics m = rl::compute_mismatch(in);
  // Every difference is exactly 0, so every sum is exactly 0 and every weight exactly 1.
  EXPECT_EQ(m.k1, 0.0);
  EXPECT_EQ(m.k2, 0.0);
  EXPECT_EQ(m.k3, 0.0);
  EXPECT_EQ(m.mean_abs_logratio, 0.0);
  EXPECT_EQ(m.mean_abs_prob_diff, 0.0);
  EXPECT_EQ(m.max_prob_diff, 0.0);
  EXPECT_EQ(m.min_prob_diff, 0.0);
  EXPECT_EQ(m.seq_logratio_mean, 0.0);
  EXPECT_EQ(m.seq_logratio_abs_mean, 0.0);
  EXPECT_EQ(m.seq_kl, 0.0);
  EXPECT_TRUE(m.slope_valid);
  EXPECT_EQ(m.slope_per_1k, 0.0);
  EXPECT_EQ(m.slope_per_1k_stderr, 0.0);
  EXPECT_EQ(m.chi2_token, 0.0);
  EXPECT_EQ(m.chi2_seq, 0.0);
  EXPECT_EQ(m.ess_token, 1.0);
  EXPECT_EQ(m.ess_seq, 1.0);
  EXPECT_EQ(m.frac_tokens_w_above_c, 0.0);
  EXPECT_EQ(m.frac_seqs_rho_above_c, 0.0);
  EXPECT_TRUE(m.has_exact);
  EXPECT_EQ(m.exact_kl_mu_pi_token, 0.0);
  EXPECT_EQ(m.exact_kl_pi_mu_token, 0.0);
  EXPECT_EQ(m.exact_kl_seq, 0.0);
  EXPECT_EQ(m.exact_uncertain_kl_share, 0.0);  // no KL at all: share defined as 0
  // Random logits over 11 classes are far from near-certain.
  EXPECT_EQ(m.exact_uncertain_token_frac, 1.0);
  expect_no_nan(m);
}

// s_i = 0.3 + 0.002 L_i: the first token of each sequence carries 0.302, the others 0.002
// (log pi - log mu, with log mu = 0). The slope is 2.0 nats per 1K tokens up to the float rounding of
// 0.002f (relative 5e-8); the intercept does not enter the slope; the fit is exact so the stderr is
// rounding noise.
TEST(Mismatch, SlopeOfLinearDrift) {
  rl::MismatchInput in;
  in.seq_offsets = {0};
  const std::vector<int> lengths = {10, 20, 50, 100, 300, 37};
  for (int L : lengths) {
    for (int t = 0; t < L; ++t) {
      in.logmu.push_back(0.0f);
      in.logpi.push_back(t == 0 ? 0.302f : 0.002f);
    }
    in.seq_offsets.push_back(static_cast<int>(in.logmu.size()));
  }
  // The first-token value 0.302f - 0.002f is 0.3 only up to float rounding too, which makes the
  // points lie on s = c + b L exactly, with b = 0.002f (every token carries 0.002f, plus a constant).
  const double b = static_cast<double>(0.002f);
  const rl::MismatchMetrics m = rl::compute_mismatch(in);
  EXPECT_TRUE(m.slope_valid);
  EXPECT_NEAR(m.slope_per_1k, 2.0, 1e-6);  // 1000 * |0.002f - 0.002| = 9.5e-8
  // Against the float-exact slope: sums of up to 300 doubles, relative 300 * 2^-53 ~ 3e-14.
  EXPECT_TRUE(close_rel(m.slope_per_1k, 1000.0 * b, 1e-12));
  EXPECT_LT(m.slope_per_1k_stderr, 1e-9);  // residuals are double rounding only (~1e-15 nats)
  EXPECT_GE(m.slope_per_1k_stderr, 0.0);
}

// Three sequences of lengths 1, 2, 3 with s = {0, 1, 0}: mean L = 2, mean s = 1/3, Sxx = 2,
// Sxy = (-1)(-1/3) + 0 + (1)(-1/3) = 0 -> slope 0; residuals {-1/3, 2/3, -1/3}, SSR = 2/3;
// stderr = sqrt(SSR/(S-2)/Sxx) = sqrt(1/3) nats/token = 1000/sqrt(3) per 1K.
TEST(Mismatch, SlopeStandardErrorByHand) {
  rl::MismatchInput in;
  in.logmu = {-1.0f, -1.0f, -1.0f, -1.0f, -1.0f, -1.0f};
  in.logpi = {-1.0f, -0.5f, -0.5f, -1.0f, -1.0f, -1.0f};
  in.seq_offsets = {0, 1, 3, 6};
  const rl::MismatchMetrics m = rl::compute_mismatch(in);
  EXPECT_TRUE(m.slope_valid);
  EXPECT_NEAR(m.slope_per_1k, 0.0, 1e-12);
  EXPECT_NEAR(m.slope_per_1k_stderr, 1000.0 / std::sqrt(3.0), 1e-10);
}

TEST(Mismatch, DegenerateSlopeIsFlagged) {
  rl::MismatchInput in;
  in.logmu = {-1.0f, -2.0f, -1.0f, -3.0f};
  in.logpi = {-1.5f, -1.0f, -1.0f, -1.0f};
  in.seq_offsets = {0, 2, 4};  // both lengths 2
  rl::MismatchMetrics m = rl::compute_mismatch(in);
  EXPECT_FALSE(m.slope_valid);
  EXPECT_EQ(m.slope_per_1k, 0.0);
  EXPECT_EQ(m.slope_per_1k_stderr, 0.0);
  in.seq_offsets = {0, 4};  // S = 1
  m = rl::compute_mismatch(in);
  EXPECT_FALSE(m.slope_valid);
  EXPECT_EQ(m.slope_per_1k, 0.0);
  expect_no_nan(m);
}

// log w = log pi - log mu = +30 on token 0 and -30 on token 1 (one token per sequence): both logs are
// clamped to +-20 before exp.
// k3_estimator(r) = exp(r) - r - 1 without a clamp, stable near 0. References in long double
// (64-bit significand, 11 bits more than double): for |r| <= 2^-4 the Taylor series r^2/2 + ... +
// r^11/11! (the rest is below 2^-68 relative); beyond, expm1l(r) - r, whose cancellation
// (|expm1 r| + |r|) / k3 < 2^6 leaves it accurate to 2^-58. Tolerance 8 ulps of double: Horner's
// rounding over 18 terms of a convergent series (|r| < 1), the two final products, the reference.
// The old formula exp(clamp(r)) - r - 1 lost all accuracy near 0 (at r = 1e-8, exp(r) rounds
// within 1.1e-16 of 1 + r, against a true k3 of 5e-17) and was wrong beyond |r| = 20.
TEST(Mismatch, K3EstimatorIsTheTrueValueAndStable) {
  const double tol = 8 * 0x1.0p-53;
  auto reference = [](double r) {
    const long double x = r;
    if (std::fabs(r) <= 0x1.0p-4) {
      long double term = x * x / 2, sum = 0;
      for (int k = 3; k <= 12; ++k) {
        sum += term;
        term *= x / k;
      }
      return static_cast<double>(sum);
    }
    return static_cast<double>(std::expm1l(x) - x);
  };
  for (double r : {0x1.0p-20, -0x1.0p-20, 1e-8, -1e-8, 1e-3, -1e-3, 0x1.0p-5, -0x1.0p-5, 0.3, -0.3, 0.999, -0.999,
                   1.0, -1.0, 1.5, -1.5, 7.0, -7.0, 25.0, -25.0, 30.0, -30.0, 300.0, -300.0, 709.0, -800.0}) {
    const double want = reference(r), got = rl::k3_estimator(r);
    EXPECT_TRUE(close_rel(got, want, tol)) << "r = " << r << ": got " << got << ", want " << want;
    EXPECT_GE(got, 0.0) << r;
  }
  EXPECT_EQ(rl::k3_estimator(0.0), 0.0);
  // The old formula near 0 (for the record: what the test guards against).
  const double r = 1e-8, old = std::exp(r) + (-r) - 1.0;
  EXPECT_FALSE(close_rel(old, reference(r), 0.1)) << old;
  // Overflow only where the true value overflows: e^709.78 is the largest finite double.
  EXPECT_TRUE(std::isfinite(rl::k3_estimator(709.7)));
  EXPECT_EQ(rl::k3_estimator(710.0), std::numeric_limits<double>::infinity());
  EXPECT_EQ(rl::k3_estimator(-1e30), 1e30 - 1.0);
  // Through compute_mismatch: d = log mu - log pi = -2^-20 (floats -1 and -1 + 2^-20), r = 2^-20.
  rl::MismatchInput in;
  in.logmu = {-1.0f};
  in.logpi = {-1.0f + 0x1.0p-20f};
  in.seq_offsets = {0, 1};
  const double d = static_cast<double>(in.logmu[0]) - static_cast<double>(in.logpi[0]);
  EXPECT_TRUE(close_rel(rl::compute_mismatch(in).k3, reference(-d), tol));
  // A ratio pi/mu that overflows in double: k3 = +Inf, and nothing is NaN.
  in.logmu = {-1000.0f, -1.0f};
  in.logpi = {-1.0f, -1.0f};
  in.seq_offsets = {0, 2};
  const rl::MismatchMetrics m = rl::compute_mismatch(in);
  EXPECT_EQ(m.k3, std::numeric_limits<double>::infinity());
  EXPECT_FALSE(std::isnan(m.chi2_token));
}

TEST(Mismatch, LogWeightClampAt20) {
  rl::MismatchInput in;
  in.logmu = {-30.0f, 0.0f};
  in.logpi = {0.0f, -30.0f};
  in.seq_offsets = {0, 1, 2};
  const rl::MismatchMetrics m = rl::compute_mismatch(in);
  const double e20 = std::exp(20.0), em20 = std::exp(-20.0);
  // chi2 = (e^40 + e^-40)/2 - 1, for tokens and for sequences (s_i = +30, -30 clamp the same way).
  EXPECT_TRUE(close_rel(m.chi2_token, (e20 * e20 + em20 * em20) / 2.0 - 1.0, 1e-14));
  EXPECT_TRUE(close_rel(m.chi2_seq, (e20 * e20 + em20 * em20) / 2.0 - 1.0, 1e-14));
  // ess = ((e^20 + e^-20)/2)^2 / ((e^40 + e^-40)/2) ~ 1/2
  const double ew = (e20 + em20) / 2.0, ew2 = (e20 * e20 + em20 * em20) / 2.0;
  EXPECT_TRUE(close_rel(m.ess_token, ew * ew / ew2, 1e-14));
  EXPECT_TRUE(close_rel(m.ess_seq, ew * ew / ew2, 1e-14));
  // k3 is not clamped: with d = {-30, +30}, (e^30 - 30 - 1) + (e^-30 + 30 - 1), halved.
  EXPECT_TRUE(close_rel(m.k3, ((std::exp(30.0) - 31.0) + (std::exp(-30.0) + 29.0)) / 2.0, 1e-14));
  // Unclamped metrics still see 30: k2 = 900/2, mean |log ratio| = 30.
  EXPECT_NEAR(m.k2, 450.0, 1e-12);
  EXPECT_NEAR(m.mean_abs_logratio, 30.0, 1e-12);
  EXPECT_NEAR(m.seq_logratio_min, -30.0, 1e-12);
  EXPECT_NEAR(m.seq_logratio_max, 30.0, 1e-12);
  EXPECT_EQ(m.frac_tokens_w_above_c, 0.5);
  EXPECT_EQ(m.frac_seqs_rho_above_c, 0.5);
  EXPECT_EQ(rl::frac_tokens_w_outside(in, 0.5, 2.0), 1.0);
  // The clamped weights are exactly e^+-20: a mask [e^-20, e^20] keeps both (bounds inclusive).
  EXPECT_EQ(rl::frac_tokens_w_outside(in, em20, e20), 0.0);
  EXPECT_EQ(rl::frac_seqs_rho_outside(in, em20, e20), 0.0);
  // A clamp far beyond exp's range stays finite: log w = +-1000.
  in.logmu = {-1000.0f, 0.0f};
  in.logpi = {0.0f, -1000.0f};
  const rl::MismatchMetrics big = rl::compute_mismatch(in);
  EXPECT_TRUE(close_rel(big.chi2_token, m.chi2_token, 1e-14));
  expect_no_nan(big);
}

// Exact KL of small known distributions, one position each (vocab 2):
//   pos 0: mu = {0.995, 0.005}, pi = {0.99, 0.01}   (near-certain: max mu >= 0.99)
//   pos 1: mu = {0.5, 0.5},     pi = {0.25, 0.75}   KL(mu||pi) = 0.5 ln 2 + 0.5 ln(2/3) = 0.5 ln(4/3)
//                                                    KL(pi||mu) = 0.25 ln 0.5 + 0.75 ln 1.5
//   pos 2: mu = pi = {0.7, 0.3}                      KL = 0
// sequences {pos 0, pos 1}, {pos 2}.
TEST(Mismatch, ExactKLOfKnownDistributions) {
  const std::vector<std::vector<double>> mu = {{0.995, 0.005}, {0.5, 0.5}, {0.7, 0.3}};
  const std::vector<std::vector<double>> pi = {{0.99, 0.01}, {0.25, 0.75}, {0.7, 0.3}};
  rl::MismatchInput in;
  in.vocab = 2;
  in.seq_offsets = {0, 2, 3};
  for (int t = 0; t < 3; ++t) {
    in.logmu.push_back(static_cast<float>(std::log(mu[t][0])));  // sampled token: class 0
    in.logpi.push_back(static_cast<float>(std::log(pi[t][0])));
    for (int v = 0; v < 2; ++v) {
      in.full_logmu.push_back(static_cast<float>(std::log(mu[t][v])));
      in.full_logpi.push_back(static_cast<float>(std::log(pi[t][v])));
    }
  }
  auto kl = [](const std::vector<double>& p, const std::vector<double>& q) {
    return p[0] * std::log(p[0] / q[0]) + p[1] * std::log(p[1] / q[1]);
  };
  const double kl0 = kl(mu[0], pi[0]), kl1 = kl(mu[1], pi[1]);
  EXPECT_NEAR(kl1, 0.5 * std::log(4.0 / 3.0), 1e-15);  // the hand value above
  const rl::MismatchMetrics m = rl::compute_mismatch(in);
  ASSERT_TRUE(m.has_exact);
  // The inputs are float log-probs: each log carries a relative rounding of 2^-24 (|log p| <= 5.3, so
  // <= 3.2e-7 absolute), which moves each KL by at most ~sum_v p_v |delta_v| (first order) ~ 3e-7
  // before renormalisation; 1e-6 covers it.
  constexpr double tol = 1e-6;
  EXPECT_NEAR(m.exact_kl_mu_pi_token, (kl0 + kl1) / 3.0, tol);
  EXPECT_NEAR(m.exact_kl_pi_mu_token, (kl(pi[0], mu[0]) + 0.25 * std::log(0.5) + 0.75 * std::log(1.5)) / 3.0, tol);
  EXPECT_NEAR(m.exact_kl_seq, (kl0 + kl1 + 0.0) / 2.0, tol);
  // Position 0 is near-certain (0.995 >= 0.99), positions 1 and 2 are not.
  EXPECT_NEAR(m.exact_uncertain_token_frac, 2.0 / 3.0, 1e-15);
  EXPECT_NEAR(m.exact_uncertain_kl_share, kl1 / (kl0 + kl1), tol);
  // The given distributions sum to 1 up to the float rounding of the logs.
  EXPECT_LT(m.exact_max_norm_error, 1e-6);
  // KL(mu||pi) != KL(pi||mu) here: the test can tell them apart.
  EXPECT_GT(std::abs(m.exact_kl_mu_pi_token - m.exact_kl_pi_mu_token), 100 * tol);
  expect_no_nan(m);
}

// Unnormalised inputs (logits shifted by a constant) give the KL of the normalised distributions, and the
// normalisation defect is reported. A zero-probability class of mu (log = -inf) contributes 0 to
// KL(mu||pi) (0 log 0 = 0).
TEST(Mismatch, ExactKLRenormalisesAndHandlesZeroProbability) {
  rl::MismatchInput in;
  in.vocab = 3;
  in.seq_offsets = {0, 1};
  in.logmu = {static_cast<float>(std::log(0.5))};
  in.logpi = {static_cast<float>(std::log(0.25))};
  // mu = {0.5, 0.5, 0}, pi = {0.25, 0.25, 0.5}: KL(mu||pi) = 2 * 0.5 ln 2 = ln 2.
  // The pi row is given as log-probs + 1 (total mass e, defect e - 1).
  in.full_logmu = {static_cast<float>(std::log(0.5)), static_cast<float>(std::log(0.5)),
                   -std::numeric_limits<float>::infinity()};
  in.full_logpi = {static_cast<float>(std::log(0.25) + 1.0), static_cast<float>(std::log(0.25) + 1.0),
                   static_cast<float>(std::log(0.5) + 1.0)};
  const rl::MismatchMetrics m = rl::compute_mismatch(in);
  ASSERT_TRUE(m.has_exact);
  EXPECT_NEAR(m.exact_kl_mu_pi_token, std::log(2.0), 1e-6);  // float logs, as in the test above
  EXPECT_NEAR(m.exact_max_norm_error, std::exp(1.0) - 1.0, 1e-6);
  EXPECT_NEAR(m.exact_kl_seq, std::log(2.0), 1e-6);
  // pi has mass where mu has none: KL(pi||mu) is infinite, reported as such.
  EXPECT_TRUE(std::isinf(m.exact_kl_pi_mu_token));
}

TEST(Mismatch, EmptyInputIsAllZeros) {
  for (const rl::MismatchInput& in : {rl::MismatchInput{}, rl::MismatchInput{{}, {}, {0}, {}, {}, 5}}) {
    const rl::MismatchMetrics m = rl::compute_mismatch(in);
    for (const auto& [name, v] : rl::to_row(m)) {
      if (name == "clip_c") {
        EXPECT_EQ(v, 2.0);  // the C that was passed, not a metric
      } else {
        EXPECT_EQ(v, 0.0) << name;
      }
    }
    EXPECT_EQ(rl::frac_tokens_w_outside(in, 0.5, 2.0), 0.0);
    EXPECT_EQ(rl::frac_seqs_rho_outside(in, 0.5, 2.0), 0.0);
  }
}

TEST(Mismatch, InconsistentSizesThrow) {
  rl::MismatchInput good;
  good.logmu = {-1.0f, -2.0f, -3.0f};
  good.logpi = {-1.0f, -2.0f, -3.0f};
  good.seq_offsets = {0, 1, 3};
  EXPECT_NO_THROW(rl::compute_mismatch(good));

  auto expect_throw = [](const rl::MismatchInput& in, const char* why) {
    EXPECT_THROW(rl::compute_mismatch(in), std::invalid_argument) << why;
    EXPECT_THROW(rl::frac_tokens_w_outside(in, 0.5, 2.0), std::invalid_argument) << why;
    EXPECT_THROW(rl::frac_seqs_rho_outside(in, 0.5, 2.0), std::invalid_argument) << why;
  };
  rl::MismatchInput in = good;
  in.logpi.pop_back();
  expect_throw(in, "logpi shorter");
  in = good;
  in.seq_offsets = {0, 1, 2};
  expect_throw(in, "offsets end before n_tokens");
  in = good;
  in.seq_offsets = {0, 1, 4};
  expect_throw(in, "offsets end past n_tokens");
  in = good;
  in.seq_offsets = {1, 3};
  expect_throw(in, "offsets do not start at 0");
  in = good;
  in.seq_offsets = {0, 2, 1, 3};
  expect_throw(in, "offsets decrease");
  in = good;
  in.seq_offsets = {};
  expect_throw(in, "tokens without offsets");
  in = good;
  in.vocab = 2;
  in.full_logmu.assign(6, -0.7f);
  expect_throw(in, "only one full distribution");
  in.full_logpi.assign(5, -0.7f);
  expect_throw(in, "full_logpi wrong size");
  in.full_logpi.assign(6, -0.7f);
  in.vocab = 3;
  expect_throw(in, "vocab does not match");
  in.vocab = 0;
  expect_throw(in, "full arrays with vocab 0");
  in = good;
  in.vocab = -1;
  expect_throw(in, "negative vocab");
  EXPECT_THROW(rl::compute_mismatch(good, 0.0), std::invalid_argument);
  EXPECT_THROW(rl::frac_tokens_w_outside(good, 2.0, 0.5), std::invalid_argument);
}

TEST(Mismatch, RowNamesAreTheFieldNames) {
  rl::MismatchInput in;
  in.logmu = {-1.0f, -0.5f, -2.0f};
  in.logpi = {-1.5f, -0.5f, -1.0f};
  in.seq_offsets = {0, 2, 3};
  const rl::MismatchMetrics m = rl::compute_mismatch(in);
  const auto row = rl::to_row(m);
  const std::vector<std::string> want = {
      "tokens", "sequences", "k1", "k2", "k3", "mean_abs_logratio", "mean_abs_prob_diff", "max_prob_diff",
      "min_prob_diff", "seq_logratio_mean", "seq_logratio_abs_mean", "seq_logratio_min", "seq_logratio_max",
      "seq_kl", "slope_per_1k", "slope_per_1k_stderr", "slope_valid", "chi2_token", "chi2_seq", "ess_token",
      "ess_seq", "clip_c", "frac_tokens_w_above_c", "frac_seqs_rho_above_c", "has_exact",
      "exact_kl_mu_pi_token", "exact_kl_pi_mu_token", "exact_kl_seq", "exact_uncertain_token_frac",
      "exact_uncertain_kl_share", "exact_max_norm_error"};
  ASSERT_EQ(row.size(), want.size());
  std::set<std::string> seen;
  for (std::size_t i = 0; i < row.size(); ++i) {
    EXPECT_EQ(row[i].first, want[i]);
    EXPECT_TRUE(seen.insert(row[i].first).second) << "duplicate " << row[i].first;
    for (char c : row[i].first) EXPECT_TRUE((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_');
  }
  // Spot-check that values travel with their names.
  auto value = [&](const std::string& name) {
    for (const auto& [n, v] : row)
      if (n == name) return v;
    return std::numeric_limits<double>::quiet_NaN();
  };
  EXPECT_EQ(value("tokens"), 3.0);
  EXPECT_EQ(value("sequences"), 2.0);
  EXPECT_EQ(value("k1"), m.k1);
  EXPECT_EQ(value("k3"), m.k3);
  EXPECT_EQ(value("min_prob_diff"), m.min_prob_diff);
  EXPECT_EQ(value("seq_logratio_max"), m.seq_logratio_max);
  EXPECT_EQ(value("slope_per_1k"), m.slope_per_1k);
  EXPECT_EQ(value("slope_valid"), 1.0);
  EXPECT_EQ(value("chi2_seq"), m.chi2_seq);
  EXPECT_EQ(value("ess_seq"), m.ess_seq);
  EXPECT_EQ(value("frac_seqs_rho_above_c"), m.frac_seqs_rho_above_c);
  EXPECT_EQ(value("has_exact"), 0.0);
}

// Small mismatches: the quadratic estimators k2, k3 and the exact KL agree (all ~ E[d^2]/2 to leading
// order), which is why mission.md says k2/k3 track the exact KL.
TEST(Mismatch, K2K3TrackExactKLForSmallPerturbations) {
  Normal rng(11);
  const int V = 16, n = 4000;
  rl::MismatchInput in;
  in.vocab = V;
  in.seq_offsets = {0};
  std::vector<double> lmu(V), lpi(V);
  for (int t = 0; t < n; ++t) {
    double zmu = 0.0, zpi = 0.0;
    for (int v = 0; v < V; ++v) {
      const double logit = 2.0 * rng();
      lmu[v] = logit;
      lpi[v] = logit + 1e-2 * rng();  // a 1% logit perturbation
      zmu += std::exp(lmu[v]);
      zpi += std::exp(lpi[v]);
    }
    for (int v = 0; v < V; ++v) {
      lmu[v] -= std::log(zmu);
      lpi[v] -= std::log(zpi);
      in.full_logmu.push_back(static_cast<float>(lmu[v]));
      in.full_logpi.push_back(static_cast<float>(lpi[v]));
    }
    // Sample y ~ mu by inversion.
    double u = rng.uniform(), c = 0.0;
    int y = V - 1;
    for (int v = 0; v < V; ++v) {
      c += std::exp(lmu[v]);
      if (u < c) {
        y = v;
        break;
      }
    }
    in.logmu.push_back(static_cast<float>(lmu[y]));
    in.logpi.push_back(static_cast<float>(lpi[y]));
    if ((t + 1) % 100 == 0) in.seq_offsets.push_back(t + 1);
  }
  const rl::MismatchMetrics m = rl::compute_mismatch(in);
  ASSERT_TRUE(m.has_exact);
  // KL ~ 0.5 Var_mu(delta logit) ~ 0.5e-4. Sampled k2, k3 are Monte-Carlo estimates of it from 4000
  // tokens; their relative standard error is ~ sqrt(2/4000) ~ 2% (chi-square-like d^2), so 20% is a
  // > 5-sigma bound. k3 - k2 ~ -E[d^3]/6, relative ~ |d|/3 ~ 0.3%.
  std::printf("exact KL(mu||pi) %.4g, KL(pi||mu) %.4g, k2 %.4g, k3 %.4g, k1 %.3g, uncertain frac %.3f share %.4f\n",
              m.exact_kl_mu_pi_token, m.exact_kl_pi_mu_token, m.k2, m.k3, m.k1, m.exact_uncertain_token_frac,
              m.exact_uncertain_kl_share);
  EXPECT_GT(m.exact_kl_mu_pi_token, 1e-5);
  EXPECT_TRUE(close_rel(m.k2, m.exact_kl_mu_pi_token, 0.2));
  EXPECT_TRUE(close_rel(m.k3, m.exact_kl_mu_pi_token, 0.2));
  EXPECT_TRUE(close_rel(m.k3, m.k2, 0.02));
  // KL is symmetric to second order.
  EXPECT_TRUE(close_rel(m.exact_kl_pi_mu_token, m.exact_kl_mu_pi_token, 0.02));
  // 40 sequences of 100 positions: the sequence KL is 100 times the token KL.
  EXPECT_TRUE(close_rel(m.exact_kl_seq, 100.0 * m.exact_kl_mu_pi_token, 1e-12));
  expect_no_nan(m);
}

// ------------------------------------------------------------------------------------------------
// Chi-square survival function and Ljung-Box

TEST(LjungBox, ChiSquareSurvivalKnownQuantiles) {
  // The 95% quantiles of chi^2_1 and chi^2_10 (tabulated; both re-derived from the closed forms below).
  EXPECT_NEAR(rl::chi2_sf(3.841458820694124, 1), 0.05, 1e-12);
  EXPECT_NEAR(rl::chi2_sf(18.307038053275146, 10), 0.05, 1e-12);
  EXPECT_NEAR(rl::chi2_sf(6.6348966010212145, 1), 0.01, 1e-12);
  EXPECT_EQ(rl::chi2_sf(0.0, 3), 1.0);
  EXPECT_EQ(rl::chi2_sf(-1.0, 3), 1.0);
  EXPECT_THROW(rl::chi2_sf(1.0, 0), std::invalid_argument);
  EXPECT_THROW(rl::gamma_q(0.0, 1.0), std::invalid_argument);
}

// Closed forms, independent of the series/continued fraction:
//   dof 1: sf = erfc(sqrt(x/2));  dof 3: sf = erfc(sqrt(y)) + 2 sqrt(y/pi) e^-y  (y = x/2);
//   even dof 2m: sf = e^-y sum_{k<m} y^k / k!.
// Relative 1e-10 over x in [1e-3, 300], i.e. down to sf ~ 1e-60 (where 1 - P would lose everything).
TEST(LjungBox, ChiSquareSurvivalMatchesClosedForms) {
  double worst = 0.0;
  for (double x = 1e-3; x < 300.0; x *= 1.07) {
    const double y = 0.5 * x;
    std::vector<std::pair<int, double>> ref = {
        {1, std::erfc(std::sqrt(y))},
        {3, std::erfc(std::sqrt(y)) + 2.0 * std::sqrt(y / kPi) * std::exp(-y)},
    };
    for (int m : {1, 2, 5, 10, 20}) {
      double sum = 0.0, term = 1.0;
      for (int k = 0; k < m; ++k) {
        sum += term;
        term *= y / (k + 1);
      }
      ref.push_back({2 * m, std::exp(-y) * sum});
    }
    for (const auto& [dof, want] : ref) {
      if (want < 1e-280) continue;  // the closed forms themselves underflow
      const double got = rl::chi2_sf(x, dof);
      const double rel = std::abs(got - want) / want;
      worst = std::max(worst, rel);
      EXPECT_LT(rel, 1e-10) << "x=" << x << " dof=" << dof << " got " << got << " want " << want;
    }
  }
  std::printf("chi2_sf: worst relative error vs closed forms %.3g (tolerance 1e-10)\n", worst);
}

// Series {1, 2, 3, 4}: mean 2.5, deviations {-1.5, -0.5, 0.5, 1.5}, c0 = 5,
// c1 = 0.75 - 0.25 + 0.75 = 1.25 (r1 = 0.25), c2 = -0.75 - 0.75 = -1.5 (r2 = -0.3).
//   h = 1: Q = 4*6 * 0.0625/3 = 0.5,              p = erfc(sqrt(0.25)) = erfc(0.5)
//   h = 2: Q = 24 * (0.0625/3 + 0.09/2) = 1.58,   p = exp(-0.79)
TEST(LjungBox, SmallSeriesByHand) {
  const std::vector<double> x = {1.0, 2.0, 3.0, 4.0};
  const rl::LjungBox a = rl::ljung_box(x, 1);
  EXPECT_EQ(a.lags, 1);
  EXPECT_NEAR(a.q, 0.5, 1e-14);
  EXPECT_NEAR(a.p_value, std::erfc(0.5), 1e-13);
  const rl::LjungBox b = rl::ljung_box(x, 2);
  EXPECT_NEAR(b.q, 1.58, 1e-14);
  EXPECT_NEAR(b.p_value, std::exp(-0.79), 1e-13);
}

TEST(LjungBox, ConstantSeries) {
  const rl::LjungBox lb = rl::ljung_box(std::vector<double>(50, 3.25), 10);
  EXPECT_EQ(lb.q, 0.0);
  EXPECT_EQ(lb.p_value, 1.0);
  EXPECT_EQ(lb.lags, 10);
}

TEST(LjungBox, InvalidLagsThrow) {
  const std::vector<double> x = {1.0, 2.0, 3.0};
  EXPECT_THROW(rl::ljung_box(x, 0), std::invalid_argument);
  EXPECT_THROW(rl::ljung_box(x, 3), std::invalid_argument);
  EXPECT_THROW(rl::ljung_box({}, 1), std::invalid_argument);
  EXPECT_NO_THROW(rl::ljung_box(x, 2));
}

// AR(1) x_t = 0.8 x_{t-1} + e_t has r_k ~ 0.8^k: Q(10) ~ 500*502*sum 0.64^k/(500-k) ~ 900, p ~ 1e-180.
// White noise: Q(10) ~ chi^2_10, so p ~ U(0,1); with the fixed seed it is far from 0.01 (printed).
TEST(LjungBox, DetectsAutocorrelatedDriftNotWhiteNoise) {
  Normal rng(2025);
  const int n = 500;
  std::vector<double> ar(n), white(n);
  double prev = 0.0;
  for (int t = 0; t < n; ++t) {
    prev = 0.8 * prev + rng();
    ar[t] = prev;
    white[t] = rng();
  }
  const rl::LjungBox lb_ar = rl::ljung_box(ar, 10);
  const rl::LjungBox lb_w = rl::ljung_box(white, 10);
  std::printf("Ljung-Box(10): AR(1) phi=0.8 Q=%.4g p=%.3g; white noise Q=%.4g p=%.3g\n", lb_ar.q, lb_ar.p_value,
              lb_w.q, lb_w.p_value);
  EXPECT_LT(lb_ar.p_value, 1e-6);
  EXPECT_GT(lb_w.p_value, 0.01);
  EXPECT_GE(lb_ar.p_value, 0.0);
  EXPECT_LE(lb_w.p_value, 1.0);
}

// ------------------------------------------------------------------------------------------------
// src/app/plot_probe.py

namespace {

const char* kPython = "/usr/bin/python3";

bool python_has_plot_modules() {
  const std::string cmd = std::string(kPython) + " -c 'import h5py, numpy, matplotlib' >/dev/null 2>&1";
  return std::system(cmd.c_str()) == 0;
}

std::string slurp(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// A fresh directory removed at scope exit.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    static int counter = 0;
    path = std::filesystem::temp_directory_path() /
           ("mantissa_test_mismatch_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

// Writes probe.h5 with the given precision groups. Per group: 40 sequences of lengths 20..215 (step 5);
// token log-probs random; logratio_sum = intercept + slope * L exactly (so the fitted slope is known).
void write_probe_file(const std::filesystem::path& dir, const std::string& groups_py) {
  const std::string script = R"PY(
import sys
import h5py, numpy as np
rng = np.random.default_rng(3)
groups = )PY" + groups_py + R"PY(
with h5py.File(sys.argv[1], "w") as f:
    for prec, (intercept, slope, noise) in groups.items():
        g = f.create_group("probe/" + prec)
        L = np.arange(20, 220, 5, dtype=np.int32)
        n = int(L.sum())
        logmu = -rng.exponential(0.5, n)
        logpi = np.minimum(logmu + noise * rng.standard_normal(n), 0.0)
        g["tokens/logmu"] = logmu.astype(np.float32)
        g["tokens/logpi"] = logpi.astype(np.float32)
        g["sequences/length"] = L
        g["sequences/logratio_sum"] = (intercept + slope * L).astype(np.float64)
)PY";
  std::ofstream(dir / "make_probe.py") << script;
  const std::string cmd =
      std::string(kPython) + " " + (dir / "make_probe.py").string() + " " + (dir / "probe.h5").string();
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
}

int run_plot(const std::filesystem::path& dir, const std::filesystem::path& out) {
  const std::string script = std::string(MANTISSA_SOURCE_DIR) + "/src/app/plot_probe.py";
  const std::string cmd = std::string(kPython) + " " + script + " " + (dir / "probe.h5").string() + " " +
                          out.string() + " >" + (dir / "stdout.txt").string() + " 2>" + (dir / "stderr.txt").string();
  return std::system(cmd.c_str());
}

// The slope printed for `prec` ("probe <prec>: ... slope_per_1k=<v>"), NaN when absent.
double printed_slope(const std::string& out, const std::string& prec) {
  std::istringstream ss(out);
  std::string line;
  while (std::getline(ss, line)) {
    if (line.rfind("probe " + prec + ":", 0) != 0) continue;
    const auto pos = line.find("slope_per_1k=");
    if (pos == std::string::npos) break;
    return std::strtod(line.c_str() + pos + 13, nullptr);
  }
  return std::numeric_limits<double>::quiet_NaN();
}

void expect_png(const std::filesystem::path& p) {
  ASSERT_TRUE(std::filesystem::exists(p)) << p;
  const std::string bytes = slurp(p);
  EXPECT_GT(bytes.size(), 1000u) << p;  // a real figure, not an empty file
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8)) << p;
}

}  // namespace

TEST(PlotProbe, WritesBothFiguresWithTheFittedSlopes) {
  if (!python_has_plot_modules()) GTEST_SKIP() << kPython << " cannot import h5py/numpy/matplotlib";
  TempDir tmp;
  // (intercept, slope per token, token noise): slopes 2.0, -1.01, -0.07 nats/1K tokens.
  write_probe_file(tmp.path, R"({"fp32": (0.0, 0.002, 1e-7), "bf16": (0.05, -0.00101, 3e-3), "fp16": (-0.01, -0.00007, 4e-4)})");
  const auto out = tmp.path / "figs";  // created by the script
  ASSERT_EQ(run_plot(tmp.path, out), 0) << slurp(tmp.path / "stderr.txt");
  expect_png(out / "probe_token_probs.png");
  expect_png(out / "probe_seq_logratio.png");
  const std::string printed = slurp(tmp.path / "stdout.txt");
  std::printf("%s", printed.c_str());
  // s = a + b L exactly in float64: the fit recovers b to rounding (sums of 40 O(100) terms).
  EXPECT_NEAR(printed_slope(printed, "fp32"), 2.0, 1e-8);
  EXPECT_NEAR(printed_slope(printed, "bf16"), -1.01, 1e-8);
  EXPECT_NEAR(printed_slope(printed, "fp16"), -0.07, 1e-8);
}

TEST(PlotProbe, SubsetOfPrecisionsAndMissingGroups) {
  if (!python_has_plot_modules()) GTEST_SKIP() << kPython << " cannot import h5py/numpy/matplotlib";
  {
    TempDir tmp;
    write_probe_file(tmp.path, R"({"fp16": (0.0, 0.002, 4e-4)})");
    ASSERT_EQ(run_plot(tmp.path, tmp.path), 0) << slurp(tmp.path / "stderr.txt");
    expect_png(tmp.path / "probe_token_probs.png");
    expect_png(tmp.path / "probe_seq_logratio.png");
    const std::string printed = slurp(tmp.path / "stdout.txt");
    EXPECT_NEAR(printed_slope(printed, "fp16"), 2.0, 1e-8);
    EXPECT_TRUE(std::isnan(printed_slope(printed, "bf16")));  // absent group: not plotted
  }
  {
    TempDir tmp;
    write_probe_file(tmp.path, "{}");  // a file without /probe
    EXPECT_NE(run_plot(tmp.path, tmp.path), 0);
    EXPECT_NE(slurp(tmp.path / "stderr.txt").find("no /probe"), std::string::npos);
    EXPECT_FALSE(std::filesystem::exists(tmp.path / "probe_token_probs.png"));
  }
}
