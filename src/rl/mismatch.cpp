#include "rl/mismatch.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <stdexcept>
#include <string>

namespace mantissa::rl {

namespace {

double clamp_log(double x) { return std::min(std::max(x, -kLogWeightClamp), kLogWeightClamp); }

// 1/(k+2)! for k = 0..17: the series of k3_estimator's small branch.
constexpr double kInvFact[18] = {
    1.0 / 2,
    1.0 / 6,
    1.0 / 24,
    1.0 / 120,
    1.0 / 720,
    1.0 / 5040,
    1.0 / 40320,
    1.0 / 362880,
    1.0 / 3628800,
    1.0 / 39916800,
    1.0 / 479001600,
    1.0 / 6227020800.0,
    1.0 / 87178291200.0,
    1.0 / 1307674368000.0,
    1.0 / 20922789888000.0,
    1.0 / 355687428096000.0,
    1.0 / 6402373705728000.0,
    1.0 / 121645100408832000.0,
};

// Sizes and offsets; returns S (number of sequences).
std::size_t validate(const MismatchInput& in) {
  const std::size_t n = in.logmu.size();
  if (in.logpi.size() != n) {
    throw std::invalid_argument("mismatch: logmu has " + std::to_string(n) + " tokens but logpi has " +
                                std::to_string(in.logpi.size()));
  }
  if (in.seq_offsets.empty()) {
    if (n != 0) {
      throw std::invalid_argument("mismatch: " + std::to_string(n) + " tokens but no seq_offsets (need S+1 >= 1 entries)");
    }
  } else {
    if (in.seq_offsets.front() != 0) throw std::invalid_argument("mismatch: seq_offsets[0] must be 0");
    if (static_cast<std::size_t>(in.seq_offsets.back()) != n || in.seq_offsets.back() < 0) {
      throw std::invalid_argument("mismatch: seq_offsets.back() = " + std::to_string(in.seq_offsets.back()) +
                                  " but there are " + std::to_string(n) + " tokens");
    }
    for (std::size_t s = 1; s < in.seq_offsets.size(); ++s) {
      if (in.seq_offsets[s] < in.seq_offsets[s - 1]) {
        throw std::invalid_argument("mismatch: seq_offsets decrease at index " + std::to_string(s));
      }
    }
  }
  if (in.vocab < 0) throw std::invalid_argument("mismatch: vocab < 0");
  const bool mu_full = !in.full_logmu.empty();
  const bool pi_full = !in.full_logpi.empty();
  if (mu_full != pi_full) {
    throw std::invalid_argument("mismatch: full_logmu and full_logpi must both be given or both be empty");
  }
  if (mu_full) {
    const std::size_t want = n * static_cast<std::size_t>(in.vocab);
    if (in.vocab == 0 || in.full_logmu.size() != want || in.full_logpi.size() != want) {
      throw std::invalid_argument("mismatch: full_logmu/full_logpi have " + std::to_string(in.full_logmu.size()) + "/" +
                                  std::to_string(in.full_logpi.size()) + " entries, expected n_tokens*vocab = " +
                                  std::to_string(n) + "*" + std::to_string(in.vocab));
    }
  }
  return in.seq_offsets.empty() ? 0 : in.seq_offsets.size() - 1;
}

// s_i = sum_t (log pi - log mu) of every sequence.
std::vector<double> sequence_logratios(const MismatchInput& in, std::size_t S) {
  std::vector<double> s(S, 0.0);
  for (std::size_t i = 0; i < S; ++i) {
    double acc = 0.0;
    for (int t = in.seq_offsets[i]; t < in.seq_offsets[i + 1]; ++t) {
      acc += static_cast<double>(in.logpi[t]) - static_cast<double>(in.logmu[t]);
    }
    s[i] = acc;
  }
  return s;
}

// Log-softmax of row[0..V) in double, written to out; returns sum_v exp(row_v) (the given
// distribution's total mass) for the normalisation-error report.
double normalise_row(const float* row, int V, std::vector<double>& out) {
  double mx = -std::numeric_limits<double>::infinity();
  for (int v = 0; v < V; ++v) mx = std::max(mx, static_cast<double>(row[v]));
  double sum = 0.0;
  double mass = 0.0;
  for (int v = 0; v < V; ++v) {
    sum += std::exp(static_cast<double>(row[v]) - mx);
    mass += std::exp(static_cast<double>(row[v]));
  }
  const double lse = mx + std::log(sum);
  for (int v = 0; v < V; ++v) out[v] = static_cast<double>(row[v]) - lse;
  return mass;
}

// KL(p||q) = sum_v p_v (log p_v - log q_v) over normalised log-probs; a zero-probability p_v adds 0.
double kl_row(const std::vector<double>& lp, const std::vector<double>& lq) {
  double kl = 0.0;
  for (std::size_t v = 0; v < lp.size(); ++v) {
    const double p = std::exp(lp[v]);
    if (p > 0.0) kl += p * (lp[v] - lq[v]);
  }
  return kl;
}

}  // namespace

double k3_estimator(double r) {
  if (std::fabs(r) < 1.0) {
    // r^2 sum_{k>=0} r^k / (k+2)!: no cancellation. Truncated after k = 17: the rest is below
    // 2 |r|^18 / 20! < 2^-59 relative to the sum (>= e^-1 for |r| < 1).
    double sum = 0.0;
    for (int k = 17; k >= 0; --k) sum = sum * r + kInvFact[k];
    return r * r * sum;
  }
  // |r| >= 1: expm1(r) and -r cancel by at most a factor (1 + e^-1) / e^-1 < 4.
  return std::expm1(r) - r;
}

MismatchMetrics compute_mismatch(const MismatchInput& in, double C) {
  if (!(C > 0.0)) throw std::invalid_argument("mismatch: C must be > 0, got " + std::to_string(C));
  const std::size_t S = validate(in);
  const std::size_t n = in.logmu.size();

  MismatchMetrics m;
  m.tokens = static_cast<std::int64_t>(n);
  m.sequences = static_cast<std::int64_t>(S);
  m.clip_c = C;

  // ---- per-token sampled metrics ----
  if (n > 0) {
    double sum_d = 0.0, sum_d2 = 0.0, sum_k3 = 0.0, sum_abs = 0.0, sum_abs_p = 0.0;
    double sum_w = 0.0, sum_w2 = 0.0;
    std::size_t above = 0;
    double max_dp = -std::numeric_limits<double>::infinity();
    double min_dp = std::numeric_limits<double>::infinity();
    for (std::size_t t = 0; t < n; ++t) {
      const double lmu = in.logmu[t];
      const double lpi = in.logpi[t];
      const double d = lmu - lpi;
      const double w = std::exp(clamp_log(-d));
      sum_d += d;
      sum_d2 += d * d;
      sum_k3 += k3_estimator(-d);
      sum_abs += std::abs(d);
      const double dp = std::exp(lpi) - std::exp(lmu);
      sum_abs_p += std::abs(dp);
      max_dp = std::max(max_dp, dp);
      min_dp = std::min(min_dp, dp);
      sum_w += w;
      sum_w2 += w * w;
      if (w > C) ++above;
    }
    const double inv_n = 1.0 / static_cast<double>(n);
    m.k1 = sum_d * inv_n;
    m.k2 = 0.5 * sum_d2 * inv_n;
    m.k3 = sum_k3 * inv_n;
    m.mean_abs_logratio = sum_abs * inv_n;
    m.mean_abs_prob_diff = sum_abs_p * inv_n;
    m.max_prob_diff = max_dp;
    m.min_prob_diff = min_dp;
    const double ew = sum_w * inv_n;
    const double ew2 = sum_w2 * inv_n;
    m.chi2_token = ew2 - 1.0;
    m.ess_token = ew * ew / ew2;  // w >= e^-20 > 0, so ew2 > 0
    m.frac_tokens_w_above_c = static_cast<double>(above) * inv_n;
  }

  // ---- per-sequence sampled metrics ----
  if (S > 0) {
    const std::vector<double> s = sequence_logratios(in, S);
    const double inv_S = 1.0 / static_cast<double>(S);
    double sum_s = 0.0, sum_abs = 0.0, sum_rho = 0.0, sum_rho2 = 0.0;
    double mn = std::numeric_limits<double>::infinity();
    double mx = -std::numeric_limits<double>::infinity();
    std::size_t above = 0;
    for (double si : s) {
      sum_s += si;
      sum_abs += std::abs(si);
      mn = std::min(mn, si);
      mx = std::max(mx, si);
      const double rho = std::exp(clamp_log(si));
      sum_rho += rho;
      sum_rho2 += rho * rho;
      if (rho > C) ++above;
    }
    m.seq_logratio_mean = sum_s * inv_S;
    m.seq_logratio_abs_mean = sum_abs * inv_S;
    m.seq_logratio_min = mn;
    m.seq_logratio_max = mx;
    m.seq_kl = -m.seq_logratio_mean;
    const double er = sum_rho * inv_S;
    const double er2 = sum_rho2 * inv_S;
    m.chi2_seq = er2 - 1.0;
    m.ess_seq = er * er / er2;
    m.frac_seqs_rho_above_c = static_cast<double>(above) * inv_S;

    // Least squares s = a + b L, centred (two passes) for accuracy.
    if (S >= 2) {
      double mean_L = 0.0;
      for (std::size_t i = 0; i < S; ++i) mean_L += in.seq_offsets[i + 1] - in.seq_offsets[i];
      mean_L *= inv_S;
      const double mean_s = m.seq_logratio_mean;
      double sxx = 0.0, sxy = 0.0;
      for (std::size_t i = 0; i < S; ++i) {
        const double dx = static_cast<double>(in.seq_offsets[i + 1] - in.seq_offsets[i]) - mean_L;
        sxx += dx * dx;
        sxy += dx * (s[i] - mean_s);
      }
      if (sxx > 0.0) {
        const double b = sxy / sxx;
        m.slope_valid = true;
        m.slope_per_1k = 1000.0 * b;
        if (S >= 3) {
          double ssr = 0.0;
          for (std::size_t i = 0; i < S; ++i) {
            const double dx = static_cast<double>(in.seq_offsets[i + 1] - in.seq_offsets[i]) - mean_L;
            const double r = (s[i] - mean_s) - b * dx;
            ssr += r * r;
          }
          m.slope_per_1k_stderr = 1000.0 * std::sqrt(ssr / static_cast<double>(S - 2) / sxx);
        }
      }
    }
  }

  // ---- exact measures over the vocabulary ----
  if (n > 0 && !in.full_logmu.empty()) {
    m.has_exact = true;
    const int V = in.vocab;
    std::vector<double> lmu(V), lpi(V);
    std::vector<double> kl_pos(n);
    double sum_mu_pi = 0.0, sum_pi_mu = 0.0, sum_unc_kl = 0.0, norm_err = 0.0;
    std::size_t unc = 0;
    for (std::size_t t = 0; t < n; ++t) {
      const float* rmu = in.full_logmu.data() + t * static_cast<std::size_t>(V);
      const float* rpi = in.full_logpi.data() + t * static_cast<std::size_t>(V);
      norm_err = std::max(norm_err, std::abs(normalise_row(rmu, V, lmu) - 1.0));
      norm_err = std::max(norm_err, std::abs(normalise_row(rpi, V, lpi) - 1.0));
      const double kmp = kl_row(lmu, lpi);
      const double kpm = kl_row(lpi, lmu);
      kl_pos[t] = kmp;
      sum_mu_pi += kmp;
      sum_pi_mu += kpm;
      const double max_mu = std::exp(*std::max_element(lmu.begin(), lmu.end()));
      if (max_mu < kNearCertainProb) {
        ++unc;
        sum_unc_kl += kmp;
      }
    }
    const double inv_n = 1.0 / static_cast<double>(n);
    m.exact_kl_mu_pi_token = sum_mu_pi * inv_n;
    m.exact_kl_pi_mu_token = sum_pi_mu * inv_n;
    m.exact_uncertain_token_frac = static_cast<double>(unc) * inv_n;
    m.exact_uncertain_kl_share = sum_mu_pi > 0.0 ? sum_unc_kl / sum_mu_pi : 0.0;
    m.exact_max_norm_error = norm_err;
    double sum_seq = 0.0;
    for (std::size_t i = 0; i < S; ++i) {
      for (int t = in.seq_offsets[i]; t < in.seq_offsets[i + 1]; ++t) sum_seq += kl_pos[t];
    }
    m.exact_kl_seq = S > 0 ? sum_seq / static_cast<double>(S) : 0.0;
    m.exact_kl_per_token = std::move(kl_pos);
  }
  return m;
}

std::vector<std::pair<std::string, double>> to_row(const MismatchMetrics& m) {
  auto b = [](bool f) { return f ? 1.0 : 0.0; };
  return {
      {"tokens", static_cast<double>(m.tokens)},
      {"sequences", static_cast<double>(m.sequences)},
      {"k1", m.k1},
      {"k2", m.k2},
      {"k3", m.k3},
      {"mean_abs_logratio", m.mean_abs_logratio},
      {"mean_abs_prob_diff", m.mean_abs_prob_diff},
      {"max_prob_diff", m.max_prob_diff},
      {"min_prob_diff", m.min_prob_diff},
      {"seq_logratio_mean", m.seq_logratio_mean},
      {"seq_logratio_abs_mean", m.seq_logratio_abs_mean},
      {"seq_logratio_min", m.seq_logratio_min},
      {"seq_logratio_max", m.seq_logratio_max},
      {"seq_kl", m.seq_kl},
      {"slope_per_1k", m.slope_per_1k},
      {"slope_per_1k_stderr", m.slope_per_1k_stderr},
      {"slope_valid", b(m.slope_valid)},
      {"chi2_token", m.chi2_token},
      {"chi2_seq", m.chi2_seq},
      {"ess_token", m.ess_token},
      {"ess_seq", m.ess_seq},
      {"clip_c", m.clip_c},
      {"frac_tokens_w_above_c", m.frac_tokens_w_above_c},
      {"frac_seqs_rho_above_c", m.frac_seqs_rho_above_c},
      {"has_exact", b(m.has_exact)},
      {"exact_kl_mu_pi_token", m.exact_kl_mu_pi_token},
      {"exact_kl_pi_mu_token", m.exact_kl_pi_mu_token},
      {"exact_kl_seq", m.exact_kl_seq},
      {"exact_uncertain_token_frac", m.exact_uncertain_token_frac},
      {"exact_uncertain_kl_share", m.exact_uncertain_kl_share},
      {"exact_max_norm_error", m.exact_max_norm_error},
  };
}

namespace {
void check_bounds(double c_lo, double c_hi) {
  if (!(c_lo <= c_hi)) {
    throw std::invalid_argument("mismatch: need c_lo <= c_hi, got " + std::to_string(c_lo) + " > " +
                                std::to_string(c_hi));
  }
}
bool outside(double w, double c_lo, double c_hi) { return w < c_lo || w > c_hi; }
}  // namespace

double frac_tokens_w_outside(const MismatchInput& in, double c_lo, double c_hi) {
  check_bounds(c_lo, c_hi);
  validate(in);
  const std::size_t n = in.logmu.size();
  if (n == 0) return 0.0;
  std::size_t cnt = 0;
  for (std::size_t t = 0; t < n; ++t) {
    const double w = std::exp(clamp_log(static_cast<double>(in.logpi[t]) - static_cast<double>(in.logmu[t])));
    if (outside(w, c_lo, c_hi)) ++cnt;
  }
  return static_cast<double>(cnt) / static_cast<double>(n);
}

double frac_seqs_rho_outside(const MismatchInput& in, double c_lo, double c_hi) {
  check_bounds(c_lo, c_hi);
  const std::size_t S = validate(in);
  if (S == 0) return 0.0;
  std::size_t cnt = 0;
  for (double si : sequence_logratios(in, S)) {
    if (outside(std::exp(clamp_log(si)), c_lo, c_hi)) ++cnt;
  }
  return static_cast<double>(cnt) / static_cast<double>(S);
}

// ---------------------------------------------------------------------------------------------
// Ljung-Box and the chi-square survival function.

namespace {

constexpr double kGammaEps = 1e-16;
constexpr int kGammaMaxIter = 100000;

// Regularised lower incomplete gamma P(a, x) by its series (converges fast for x < a + 1):
// P = x^a e^-x / Gamma(a+1) * sum_k x^k / ((a+1)...(a+k)).
double gamma_p_series(double a, double x) {
  double term = 1.0 / a;
  double sum = term;
  double ap = a;
  for (int k = 0; k < kGammaMaxIter; ++k) {
    ap += 1.0;
    term *= x / ap;
    sum += term;
    if (std::abs(term) < std::abs(sum) * kGammaEps) break;
  }
  return sum * std::exp(-x + a * std::log(x) - std::lgamma(a));
}

// Regularised upper incomplete gamma Q(a, x) by its continued fraction (modified Lentz; x >= a + 1).
double gamma_q_cf(double a, double x) {
  constexpr double tiny = 1e-300;
  double b = x + 1.0 - a;
  double c = 1.0 / tiny;
  double d = 1.0 / b;
  double h = d;
  for (int i = 1; i < kGammaMaxIter; ++i) {
    const double an = -i * (i - a);
    b += 2.0;
    d = an * d + b;
    if (std::abs(d) < tiny) d = tiny;
    c = b + an / c;
    if (std::abs(c) < tiny) c = tiny;
    d = 1.0 / d;
    const double delta = d * c;
    h *= delta;
    if (std::abs(delta - 1.0) < kGammaEps) break;
  }
  return std::exp(-x + a * std::log(x) - std::lgamma(a)) * h;
}

}  // namespace

double gamma_q(double a, double x) {
  if (!(a > 0.0) || !(x >= 0.0)) {
    throw std::invalid_argument("gamma_q: need a > 0 and x >= 0, got a = " + std::to_string(a) +
                                ", x = " + std::to_string(x));
  }
  if (x == 0.0) return 1.0;
  if (std::isinf(x)) return 0.0;
  if (x < a + 1.0) return 1.0 - gamma_p_series(a, x);
  return gamma_q_cf(a, x);
}

double chi2_sf(double x, int dof) {
  if (dof < 1) throw std::invalid_argument("chi2_sf: dof must be >= 1, got " + std::to_string(dof));
  if (!(x > 0.0)) return 1.0;
  return gamma_q(0.5 * dof, 0.5 * x);
}

LjungBox ljung_box(const std::vector<double>& series, int lags) {
  const std::size_t n = series.size();
  if (lags < 1 || static_cast<std::size_t>(lags) >= n) {
    throw std::invalid_argument("ljung_box: need 1 <= lags < n, got lags = " + std::to_string(lags) +
                                ", n = " + std::to_string(n));
  }
  LjungBox out;
  out.lags = lags;
  double mean = 0.0;
  for (double x : series) mean += x;
  mean /= static_cast<double>(n);
  std::vector<double> c(n);
  double c0 = 0.0;
  for (std::size_t t = 0; t < n; ++t) {
    c[t] = series[t] - mean;
    c0 += c[t] * c[t];
  }
  if (!(c0 > 0.0)) return out;  // constant series: no autocorrelation to speak of, q = 0, p = 1
  const double nd = static_cast<double>(n);
  double q = 0.0;
  for (int k = 1; k <= lags; ++k) {
    double ck = 0.0;
    for (std::size_t t = static_cast<std::size_t>(k); t < n; ++t) ck += c[t] * c[t - k];
    const double r = ck / c0;
    q += r * r / (nd - k);
  }
  out.q = nd * (nd + 2.0) * q;
  out.p_value = chi2_sf(out.q, lags);
  return out;
}

}  // namespace mantissa::rl
