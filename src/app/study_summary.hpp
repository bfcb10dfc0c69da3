#pragma once
// One row of `mantissa study`'s summary table computed from a configuration's per-step series (the
// columns of metrics.h5 /rl/<precision>/steps), without files, so that the rules can be tested on
// hand-made series (tests/test_study_summary.cpp). cmd_study.cpp reads the columns and adds what
// is not a per-step series (pass@1, Ljung-Box p, seconds).
#include <cstddef>
#include <limits>
#include <vector>

namespace mantissa::app {

// The per-step columns the summary uses; step[i] is row i's step number. A missing column is empty
// (its statistics are NaN, or 0 skipped updates).
struct StudySeries {
  std::vector<double> step, reward;          // step, reward_mean (lengths must match)
  std::vector<double> exact_kl;              // mm_exact_kl_mu_pi_token
  std::vector<double> abs_prob_diff;         // mm_mean_abs_prob_diff
  std::vector<double> abs_logratio;          // mm_mean_abs_logratio
  std::vector<double> seq_abs_logratio;      // mm_seq_logratio_abs_mean
  std::vector<double> skipped_updates;       // skipped_updates (per step)
  std::vector<double> skipped_total;         // skipped_total (cumulative; used only without skipped_updates)
};

struct StudyRow {
  static constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
  long long steps = 0;
  int window = 0;                          // w = study_window(steps)
  double final_reward = kNaN;              // trailing w-step average of the training reward at the last step
  double peak_reward = kNaN;               // max of that trailing average (the first one on ties)
  long long peak_step = -1;
  long long collapse_step = -1;            // first step after the peak where peak - average > collapse_drop
  long long collapse_step_fraction = -1;   // first step after the peak where average < collapse_fraction x peak
  double exact_kl = kNaN;                  // mean over steps of mm_exact_kl_mu_pi_token (finite entries)
  double exact_kl_start = kNaN, exact_kl_end = kNaN;            // its mean over the first / last w steps
  double abs_prob_diff = kNaN;             // mean over steps of mm_mean_abs_prob_diff
  double abs_prob_diff_start = kNaN, abs_prob_diff_end = kNaN;  // its mean over the first / last w steps
  double abs_logratio = kNaN;              // mean of mm_mean_abs_logratio
  double seq_abs_logratio = kNaN;          // mean of mm_seq_logratio_abs_mean
  long long skipped = 0;                   // sum of skipped_updates (else the last skipped_total)
};

// The summary's window: w = min(10, steps/4 + 1), at least 1.
int study_window(long long steps);

// Mean of the finite entries of v[begin, end) (clamped to v); NaN when there are none.
double finite_mean(const std::vector<double>& v, std::size_t begin, std::size_t end);

// The row of a configuration. Throws std::invalid_argument when step and reward differ in length.
StudyRow summarize_study_series(const StudySeries& s, double collapse_drop, double collapse_fraction);

}  // namespace mantissa::app
