#pragma once
// Overflow contained: what the commands do with fp16 overflow that the loss scaler skipped.
//   finite_row    no NaN or Inf ever reaches a metrics file: a non-finite value is stored as 0 and
//                 counted in the row's `nonfinite_values` column (present in every row, 0 normally),
//                 so a reader sees that the step's measures were not defined.
//   SkipWatch     a run whose updates are mostly skipped has diverged: a warning once half of the
//                 last `window` updates were skipped, and Diverged (exit status 5) at `stop_fraction`.
#include <cstddef>
#include <deque>
#include <string>
#include <utility>
#include <vector>

#include "app/app.hpp"

namespace mantissa::app {

using MetricRow = std::vector<std::pair<std::string, double>>;

MetricRow finite_row(MetricRow row);

class SkipWatch {
 public:
  explicit SkipWatch(std::string what, long long window = 50, double stop_fraction = 0.8)
      : what_(std::move(what)), window_(window), stop_(stop_fraction) {}
  // After each step: the cumulative counts of attempted and skipped updates. Prints the warning
  // (rank 0) and throws Diverged when the last `window` updates cross the thresholds.
  void record(const AppContext& ctx, long long attempted, long long skipped);

 private:
  std::string what_;
  long long window_;
  double stop_;
  bool warned_ = false;
  std::deque<std::pair<long long, long long>> history_;  // (attempted, skipped), oldest first
};

}  // namespace mantissa::app
