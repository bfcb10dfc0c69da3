#pragma once
// Labelled regions: RAII push/pop of a Kokkos Tools region (seen by kp_kernel_timer,
// space-time-stack, the NVTX connector under Nsight Systems) plus Mantissa's built-in timer,
// which works without any tools library. Labels read "mantissa::<component>::<op>"; they are
// stable strings (no step numbers) so that every tool aggregates by them.
// A region's end fences the device (Kokkos::fence) so that its time includes the device work it
// launched. Regions mark phases (an RL step, a generate call, a forward, an optimizer step), never
// per-token or per-layer code, so this is one pipeline drain per phase; MANTISSA_REGION_FENCE=0 in
// the environment turns it off (the phases then overlap, and region times are launch times).
#include <chrono>
#include <string>
#include <vector>

namespace mantissa {

struct RegionStats {
  std::string label;
  long long calls = 0;
  double seconds = 0.0;  // inclusive wall time, fenced at region end
};

// Process-wide timer behind ScopedRegion. Host code only.
class RegionTimer {
 public:
  static RegionTimer& instance();
  void add(const char* label, double seconds);
  std::vector<RegionStats> snapshot() const;  // sorted by descending time
  // A table: label, calls, total s, ms/call, % of `wall_seconds` (the caller's whole run).
  std::string report(double wall_seconds) const;

 private:
  std::vector<RegionStats> stats_;
};

// Whether ScopedRegion fences at its end (MANTISSA_REGION_FENCE, read once; default on).
bool region_fence_enabled();

class ScopedRegion {
 public:
  explicit ScopedRegion(const char* label);
  ~ScopedRegion();
  ScopedRegion(const ScopedRegion&) = delete;
  ScopedRegion& operator=(const ScopedRegion&) = delete;

 private:
  const char* label_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace mantissa
