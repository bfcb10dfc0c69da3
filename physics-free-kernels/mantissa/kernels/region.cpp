#include "mantissa/kernels/region.hpp"

#include <Kokkos_Core.hpp>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace mantissa {

RegionTimer& RegionTimer::instance() {
  static RegionTimer timer;
  return timer;
}

void RegionTimer::add(const char* label, double seconds) {
  for (auto& s : stats_) {
    if (s.label == label) {
      s.calls += 1;
      s.seconds += seconds;
      return;
    }
  }
  stats_.push_back(RegionStats{label, 1, seconds});
}

std::vector<RegionStats> RegionTimer::snapshot() const {
  std::vector<RegionStats> out = stats_;
  std::sort(out.begin(), out.end(), [](const RegionStats& a, const RegionStats& b) { return a.seconds > b.seconds; });
  return out;
}

std::string RegionTimer::report(double wall_seconds) const {
  std::string out;
  char line[256];
  std::snprintf(line, sizeof line, "%-44s %8s %11s %11s %7s\n", "region (inclusive)", "calls", "total [s]", "ms/call",
                "% wall");
  out += line;
  for (const auto& s : snapshot()) {
    std::snprintf(line, sizeof line, "%-44s %8lld %11.3f %11.3f %7.1f\n", s.label.c_str(), s.calls, s.seconds,
                  1e3 * s.seconds / static_cast<double>(std::max(1LL, s.calls)),
                  wall_seconds > 0 ? 100.0 * s.seconds / wall_seconds : 0.0);
    out += line;
  }
  std::snprintf(line, sizeof line, "%-44s %8s %11.3f\n", "wall time", "", wall_seconds);
  out += line;
  return out;
}

ScopedRegion::ScopedRegion(const char* label) : label_(label), start_(std::chrono::steady_clock::now()) {
  Kokkos::Profiling::pushRegion(label_);
}

bool region_fence_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("MANTISSA_REGION_FENCE");
    return v == nullptr || std::strcmp(v, "0") != 0;
  }();
  return on;
}

ScopedRegion::~ScopedRegion() {
  if (region_fence_enabled()) Kokkos::fence();  // attribute asynchronous device work to the region that launched it
  const auto stop = std::chrono::steady_clock::now();
  Kokkos::Profiling::popRegion();
  RegionTimer::instance().add(label_, std::chrono::duration<double>(stop - start_).count());
}

}  // namespace mantissa
