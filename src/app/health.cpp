#include "app/health.hpp"

#include <cmath>

#include "app/exit.hpp"

namespace mantissa::app {

MetricRow finite_row(MetricRow row) {
  double bad = 0.0;
  for (auto& kv : row) {
    if (!std::isfinite(kv.second)) {
      kv.second = 0.0;
      bad += 1.0;
    }
  }
  row.emplace_back("nonfinite_values", bad);
  return row;
}

void SkipWatch::record(const AppContext& ctx, long long attempted, long long skipped) {
  history_.emplace_back(attempted, skipped);
  // Keep the oldest entry that still spans the window (its counts are the baseline).
  while (history_.size() > 1 && attempted - history_[1].first >= window_) history_.pop_front();
  const long long n = attempted - history_.front().first, k = skipped - history_.front().second;
  if (n < window_) return;
  const double frac = static_cast<double>(k) / static_cast<double>(n);
  if (frac >= stop_) {
    throw Diverged(fmt::format(
        "{} diverged: {} of the last {} updates were skipped for non-finite gradients (fp16 overflow the loss scaler "
        "could not contain); lower the learning rate, or use bf16/fp32 storage. Metrics up to here are in "
        "metrics.h5",
        what_, k, n));
  }
  if (!warned_ && 2 * k >= n) {
    warned_ = true;
    say(ctx, "warning: {}: {} of the last {} updates were skipped for non-finite gradients; the run stops at {:.0f}%\n",
        what_, k, n, 100.0 * stop_);
  }
}

}  // namespace mantissa::app
