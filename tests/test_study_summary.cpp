// The rules of `mantissa study`'s summary table (src/app/study_summary.hpp) on hand-made series: the
// window, the trailing moving average's peak, the two collapse rules ([study] collapse_drop, absolute;
// collapse_fraction, relative), the mismatch means over the first and last windows, and the skipped
// updates. Every input is a small dyadic rational and every window has w = 4 (12 steps), so each moving
// average and mean is exact in double: the expectations are exact (EXPECT_EQ), and the boundary cases
// of "more than collapse_drop" are decided on exact values.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

#include "app/study_summary.hpp"

using mantissa::app::finite_mean;
using mantissa::app::study_window;
using mantissa::app::StudyRow;
using mantissa::app::StudySeries;
using mantissa::app::summarize_study_series;

namespace {

std::vector<double> steps_times(int n, double k) {  // k, 2k, ..., nk
  std::vector<double> v;
  for (int i = 1; i <= n; ++i) v.push_back(k * i);
  return v;
}

// 12 steps numbered 10, 20, ..., 120 (as after a restart or with a step offset: the row's step is
// reported, not its index). Trailing 4-step averages from row 3 on:
//   row     3     4      5     6      7    8       9      10      11
//   ma    0.5  0.625  0.75  0.875  1.0  0.9375  0.875  0.8125  0.75
// peak 1.0 at row 7 (step 80); peak - ma after it: 0.0625, 0.125, 0.1875, 0.25.
StudySeries rise_and_fall() {
  StudySeries s;
  s.step = steps_times(12, 10.0);
  s.reward = {0.5, 0.5, 0.5, 0.5, 1, 1, 1, 1, 0.75, 0.75, 0.75, 0.75};
  return s;
}

}  // namespace

TEST(StudySummary, WindowIsMinTenAndAQuarterPlusOne) {
  EXPECT_EQ(study_window(0), 1);
  EXPECT_EQ(study_window(3), 1);
  EXPECT_EQ(study_window(4), 2);
  EXPECT_EQ(study_window(12), 4);
  EXPECT_EQ(study_window(35), 9);
  EXPECT_EQ(study_window(36), 10);
  EXPECT_EQ(study_window(1000), 10);
}

TEST(StudySummary, PeakAndCollapseByDropAfterThePeak) {
  const StudySeries s = rise_and_fall();
  const StudyRow r = summarize_study_series(s, 0.10, 0.5);
  EXPECT_EQ(r.steps, 12);
  EXPECT_EQ(r.window, 4);
  EXPECT_EQ(r.peak_reward, 1.0);
  EXPECT_EQ(r.peak_step, 80);
  EXPECT_EQ(r.final_reward, 0.75);
  EXPECT_EQ(r.collapse_step, 100) << "row 9: 1.0 - 0.875 = 0.125 > 0.10 (row 8's 0.0625 is not)";
  EXPECT_EQ(r.collapse_step_fraction, -1) << "never below 0.5 x peak";
  // "More than" the drop: a fall of exactly 0.125 is not a collapse, the next row's 0.1875 is.
  EXPECT_EQ(summarize_study_series(s, 0.125, 0.5).collapse_step, 110);
  // The largest fall is 0.25: a drop of 0.25 never collapses.
  EXPECT_EQ(summarize_study_series(s, 0.25, 0.5).collapse_step, -1);
  // The relative rule: 0.75 < 0.8 x 1.0 at row 11 only (0.8125 is not below 0.8).
  EXPECT_EQ(summarize_study_series(s, 0.10, 0.8).collapse_step_fraction, 120);
}

TEST(StudySummary, AFallBeforeThePeakIsNoCollapse) {
  // Falls by 0.5 early, then climbs to a higher peak at the end: no step after the peak, no collapse.
  StudySeries s;
  s.step = steps_times(12, 1.0);
  s.reward = {0.75, 0.75, 0.75, 0.75, 0.25, 0.25, 0.25, 0.25, 1, 1, 1, 1};
  StudyRow r = summarize_study_series(s, 0.10, 0.5);
  EXPECT_EQ(r.peak_reward, 1.0);
  EXPECT_EQ(r.peak_step, 12);
  EXPECT_EQ(r.collapse_step, -1);
  EXPECT_EQ(r.collapse_step_fraction, -1);
  // Equal averages: the first is the peak (rows 3 and 11), so a fall and recovery between them is a
  // collapse: the average 0.875 at row 4 (step 5) is 0.125 below it.
  s.reward = {1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5, 1, 1, 1, 1};
  r = summarize_study_series(s, 0.10, 0.5);
  EXPECT_EQ(r.peak_step, 4);
  EXPECT_EQ(r.collapse_step, 5);
  EXPECT_EQ(r.collapse_step_fraction, -1) << "the average's low is 0.5, not below 0.5 x 1.0";
  // A steadily rising series: the peak is the last step, nothing after it.
  s.reward = {0, 0, 0.125, 0.125, 0.25, 0.25, 0.375, 0.375, 0.5, 0.5, 0.625, 0.625};
  const StudyRow up = summarize_study_series(s, 0.10, 0.5);
  EXPECT_EQ(up.peak_step, 12);
  EXPECT_EQ(up.peak_reward, up.final_reward);
  EXPECT_EQ(up.collapse_step, -1);
  EXPECT_EQ(up.collapse_step_fraction, -1);
}

TEST(StudySummary, MismatchOverTheFirstAndLastWindows) {
  StudySeries s = rise_and_fall();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (int i = 1; i <= 12; ++i) s.exact_kl.push_back(i / 1024.0);
  s.abs_prob_diff = {1, 1, 1, 1, 2, 2, 2, 2, 4, 4, nan, 4};  // a non-finite entry is left out of its mean
  s.abs_logratio = {0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5};
  const StudyRow r = summarize_study_series(s, 0.10, 0.5);
  EXPECT_EQ(r.exact_kl_start, 2.5 / 1024.0);   // mean of 1..4
  EXPECT_EQ(r.exact_kl_end, 10.5 / 1024.0);    // mean of 9..12
  EXPECT_EQ(r.exact_kl, 6.5 / 1024.0);         // mean of 1..12
  EXPECT_EQ(r.abs_prob_diff_start, 1.0);
  EXPECT_EQ(r.abs_prob_diff_end, 4.0);
  EXPECT_EQ(r.abs_prob_diff, 24.0 / 11.0);     // (4 + 8 + 12) / 11 finite entries: exact sum, one rounding
  EXPECT_EQ(r.abs_logratio, 0.5);
  EXPECT_TRUE(std::isnan(r.seq_abs_logratio)) << "a missing column has no mean";
  EXPECT_TRUE(std::isnan(finite_mean({nan, nan}, 0, 2)));
  EXPECT_EQ(finite_mean({1, 2, 3}, 1, 10), 2.5) << "the end is clamped to the vector";
}

TEST(StudySummary, SkippedUpdatesAreTheSumOfTheStepsOrTheLastTotal) {
  StudySeries s = rise_and_fall();
  EXPECT_EQ(summarize_study_series(s, 0.1, 0.5).skipped, 0) << "no column: none recorded";
  s.skipped_total = {0, 0, 1, 1, 1, 3, 3, 3, 3, 3, 3, 3};
  EXPECT_EQ(summarize_study_series(s, 0.1, 0.5).skipped, 3) << "without skipped_updates: the last skipped_total";
  s.skipped_updates = {0, 0, 1, 0, 0, 2, 0, 0, 0, 0, 0, 1};
  EXPECT_EQ(summarize_study_series(s, 0.1, 0.5).skipped, 4) << "skipped_updates decide when present";
}

TEST(StudySummary, EmptyAndUnequalSeries) {
  const StudyRow r = summarize_study_series(StudySeries{}, 0.1, 0.5);
  EXPECT_EQ(r.steps, 0);
  EXPECT_TRUE(std::isnan(r.final_reward));
  EXPECT_TRUE(std::isnan(r.exact_kl_start));
  EXPECT_EQ(r.peak_step, -1);
  EXPECT_EQ(r.collapse_step, -1);
  StudySeries bad = rise_and_fall();
  bad.step.pop_back();
  EXPECT_THROW(summarize_study_series(bad, 0.1, 0.5), std::invalid_argument);
}
