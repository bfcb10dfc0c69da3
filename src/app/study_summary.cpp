#include "app/study_summary.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace mantissa::app {

int study_window(long long steps) {
  return static_cast<int>(std::max<long long>(1, std::min<long long>(10, steps / 4 + 1)));
}

double finite_mean(const std::vector<double>& v, std::size_t begin, std::size_t end) {
  end = std::min(end, v.size());
  double s = 0.0;
  long long k = 0;
  for (std::size_t i = begin; i < end; ++i) {
    if (std::isfinite(v[i])) s += v[i], ++k;
  }
  return k > 0 ? s / static_cast<double>(k) : StudyRow::kNaN;
}

StudyRow summarize_study_series(const StudySeries& s, double collapse_drop, double collapse_fraction) {
  if (s.step.size() != s.reward.size()) throw std::invalid_argument("step and reward_mean differ in length");
  StudyRow r;
  const std::size_t n = s.reward.size();
  r.steps = static_cast<long long>(n);
  r.window = study_window(r.steps);
  if (n == 0) return r;
  const std::size_t w = static_cast<std::size_t>(r.window);  // <= n since w <= n/4 + 1
  // Trailing w-step average ma[i] = mean of reward[i-w+1 .. i], defined from row w-1 on (each window
  // summed afresh: w <= 10, and no running-sum rounding drift over long runs).
  std::vector<double> ma(n, StudyRow::kNaN);
  for (std::size_t i = w - 1; i < n; ++i) {
    double sum = 0.0;
    for (std::size_t k = i + 1 - w; k <= i; ++k) sum += s.reward[k];
    ma[i] = sum / static_cast<double>(w);
  }
  r.final_reward = ma[n - 1];
  std::size_t ipeak = w - 1;
  for (std::size_t i = w; i < n; ++i) {
    if (ma[i] > ma[ipeak]) ipeak = i;
  }
  r.peak_reward = ma[ipeak];
  r.peak_step = static_cast<long long>(s.step[ipeak]);
  for (std::size_t i = ipeak + 1; i < n; ++i) {
    if (r.collapse_step < 0 && r.peak_reward - ma[i] > collapse_drop) {
      r.collapse_step = static_cast<long long>(s.step[i]);
    }
    if (r.collapse_step_fraction < 0 && ma[i] < collapse_fraction * r.peak_reward) {
      r.collapse_step_fraction = static_cast<long long>(s.step[i]);
    }
  }
  const auto whole = [&](const std::vector<double>& v) { return finite_mean(v, 0, v.size()); };
  const auto first = [&](const std::vector<double>& v) { return finite_mean(v, 0, w); };
  const auto last = [&](const std::vector<double>& v) {
    return finite_mean(v, v.size() - std::min(v.size(), w), v.size());
  };
  r.exact_kl = whole(s.exact_kl);
  r.exact_kl_start = first(s.exact_kl);
  r.exact_kl_end = last(s.exact_kl);
  r.abs_prob_diff = whole(s.abs_prob_diff);
  r.abs_prob_diff_start = first(s.abs_prob_diff);
  r.abs_prob_diff_end = last(s.abs_prob_diff);
  r.abs_logratio = whole(s.abs_logratio);
  r.seq_abs_logratio = whole(s.seq_abs_logratio);
  if (!s.skipped_updates.empty()) {
    double sum = 0.0;
    for (double x : s.skipped_updates) sum += std::isfinite(x) ? x : 0.0;
    r.skipped = std::llround(sum);
  } else if (!s.skipped_total.empty() && std::isfinite(s.skipped_total.back())) {
    r.skipped = std::llround(s.skipped_total.back());
  }
  return r;
}

}  // namespace mantissa::app
