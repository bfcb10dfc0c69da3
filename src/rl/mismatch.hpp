#pragma once
// Training-inference mismatch metrics (mission.md section 5): the rollout engine's log-probs
// log mu(y_t) against the training engine's log pi(y_t) on the same sampled response tokens, plus
// (when both engines' full next-token distributions are given) the exact per-token KL over the
// vocabulary. Host-only, no Kokkos: the callers copy their per-token log-probs to the host first.
// Everything is accumulated in double.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace mantissa::rl {

// Logs of importance weights are clamped to [-kLogWeightClamp, +kLogWeightClamp] before exp.
inline constexpr double kLogWeightClamp = 20.0;
// A position is "near-certain" when the rollout engine's largest next-token probability is >= this.
inline constexpr double kNearCertainProb = 0.99;

// exp(r) - r - 1 (Schulman's k3 term with r = log pi - log mu), computed stably for every double r:
// a series for |r| < 1 (relative error a few ulps, also for tiny r where exp(r) - 1 - r cancels),
// expm1(r) - r otherwise; +Inf only when the true value overflows in double. No clamp.
double k3_estimator(double r);

struct MismatchInput {
  std::vector<float> logmu, logpi;  // [n_tokens] per response token, concatenated over sequences
  std::vector<int> seq_offsets;     // [S+1] sequence s = tokens [off[s], off[s+1]); off[0] = 0, off[S] = n_tokens
  // Optional, both empty or both [n_tokens * vocab] (row t = position of token t): each engine's full
  // next-token log-probabilities at every response position, for the exact KL over the vocabulary.
  std::vector<float> full_logmu, full_logpi;
  int vocab = 0;
};

// Per token d_t = log mu(y_t) - log pi(y_t); per sequence s_i = sum_t (log pi - log mu) = -sum_t d_t;
// w_t = exp(clamp(log pi - log mu)), rho_i = exp(clamp(s_i)).
// Every field is 0 (false) when there is nothing to average over; no field is ever NaN for finite inputs
// (k3 is +Inf when some pi/mu = exp(-d_t) overflows in double, i.e. -d_t > ~709.78).
struct MismatchMetrics {
  std::int64_t tokens = 0;     // n_tokens
  std::int64_t sequences = 0;  // S
  // Sampled-token KL(mu||pi) estimators (Schulman's k1, k2, k3 with d_t = log mu - log pi).
  double k1 = 0.0;  // mean d_t
  double k2 = 0.0;  // mean d_t^2 / 2
  double k3 = 0.0;  // mean (exp(-d_t) + d_t - 1), the true value (k3_estimator; no clamp)
  double mean_abs_logratio = 0.0;   // mean |log pi - log mu|
  double mean_abs_prob_diff = 0.0;  // mean |pi - mu| with pi = exp(log pi), mu = exp(log mu)
  double max_prob_diff = 0.0;       // max_t (pi - mu)
  double min_prob_diff = 0.0;       // min_t (pi - mu)
  // Sequence log-ratio s_i.
  double seq_logratio_mean = 0.0;
  double seq_logratio_abs_mean = 0.0;
  double seq_logratio_min = 0.0;
  double seq_logratio_max = 0.0;
  double seq_kl = 0.0;  // mean_i (-s_i), the sampled sequence-level KL(mu||pi)
  // Least-squares fit s_i = a + b L_i (L_i = response length in tokens): slope_per_1k = 1000 b in
  // nats per 1000 tokens, slope_per_1k_stderr its standard error (needs S >= 3; 0 for S = 2).
  // slope_valid is false (and both are 0) when S < 2 or all lengths are equal.
  double slope_per_1k = 0.0;
  double slope_per_1k_stderr = 0.0;
  bool slope_valid = false;
  // Importance weights.
  double chi2_token = 0.0;  // mean(w^2) - 1
  double chi2_seq = 0.0;    // mean(rho^2) - 1
  double ess_token = 0.0;   // 1 / E[(w / E[w])^2] = E[w]^2 / E[w^2], in (0, 1]
  double ess_seq = 0.0;     // same over rho
  double clip_c = 0.0;                 // the C passed to compute_mismatch
  double frac_tokens_w_above_c = 0.0;  // fraction of tokens with w > C
  double frac_seqs_rho_above_c = 0.0;  // fraction of sequences with rho > C
  // Exact measures over the vocabulary (only when full distributions are given: has_exact).
  // Each position's log-probs are renormalised in double (log-softmax of the given values) first, so
  // the fp32 normalisation error of an engine's log-softmax does not leak into the KL;
  // exact_max_norm_error reports that error: max over positions and engines of |sum_v exp(logp_v) - 1|.
  bool has_exact = false;
  double exact_kl_mu_pi_token = 0.0;  // mean over positions of KL(mu||pi) = sum_v mu_v (log mu_v - log pi_v)
  double exact_kl_pi_mu_token = 0.0;  // mean over positions of KL(pi||mu)
  double exact_kl_seq = 0.0;          // mean over sequences of sum over its positions of KL(mu||pi)
  double exact_uncertain_token_frac = 0.0;  // share of positions with max_v mu_v < kNearCertainProb
  double exact_uncertain_kl_share = 0.0;    // share of total KL(mu||pi) carried by those positions
  double exact_max_norm_error = 0.0;
  std::vector<double> exact_kl_per_token;  // KL(mu||pi) at each position (has_exact; not a row column)
};

// Throws std::invalid_argument when sizes are inconsistent (logmu/logpi lengths differ, offsets not
// [0, ..., n_tokens] non-decreasing, full arrays not both empty or both n_tokens*vocab, vocab < 0)
// or C <= 0. Empty input (no tokens, no sequences) gives all zeros.
MismatchMetrics compute_mismatch(const MismatchInput& in, double C = 2.0);

// (name, value) pairs in declaration order, names equal to the MismatchMetrics field names;
// integers and flags as doubles (flags 0/1).
std::vector<std::pair<std::string, double>> to_row(const MismatchMetrics& m);

// Fraction of tokens whose weight w_t lies outside [c_lo, c_hi] (w < c_lo or w > c_hi), and the
// same for sequence weights rho_i: the share a token/sequence mask with these bounds would drop.
// 0 for no tokens/sequences. Same validation as compute_mismatch, plus c_lo <= c_hi.
double frac_tokens_w_outside(const MismatchInput& in, double c_lo, double c_hi);
double frac_seqs_rho_outside(const MismatchInput& in, double c_lo, double c_hi);

// Ljung-Box portmanteau test for autocorrelation of a series (e.g. the per-step sequence log-ratio):
// Q = n (n+2) sum_{k=1..h} r_k^2 / (n-k), p = P(chi^2_h > Q). A constant series gives q = 0, p = 1.
struct LjungBox {
  double q = 0.0;
  int lags = 0;
  double p_value = 1.0;
};
// Throws std::invalid_argument unless 1 <= lags < series.size().
LjungBox ljung_box(const std::vector<double>& series, int lags);

// Regularised upper incomplete gamma Q(a, x) = Gamma(a, x) / Gamma(a) for a > 0, x >= 0
// (series for x < a + 1, Lentz continued fraction otherwise; relative accuracy ~1e-14).
double gamma_q(double a, double x);
// Chi-square survival function P(chi^2_dof > x) = Q(dof/2, x/2); 1 for x <= 0.
double chi2_sf(double x, int dof);

}  // namespace mantissa::rl
