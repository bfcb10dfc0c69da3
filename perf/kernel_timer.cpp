// libmantissa_kernel_timer.so: a Kokkos Tools library that times every kernel (parallel_for,
// parallel_reduce, parallel_scan) and every profile region by its label and prints a table at
// Kokkos::finalize, so any Mantissa binary or benchmark shows where its time goes, per kernel:
//
//   KOKKOS_PROFILE_LIBRARY=build/release/perf/libmantissa_kernel_timer.so  (then, on the same line:)
//     build/release/perf/bench_training --benchmark_filter='config:0/precision:0'
//   (Kokkos >= 4 also reads KOKKOS_TOOLS_LIBS; both are set by the loader's environment.)
//
// The table (stderr, from each process; under MPI prefix it with the rank yourself or run 1 rank):
// label, calls, total seconds, microseconds per call, share of all kernel time, and regions
// (inclusive, nested) below; then Kokkos-allocated memory: the peak of all live View allocations
// and, per label, the largest total of its live allocations (what the activations, KV cache,
// weights and work buffers hold, in each precision). MANTISSA_KERNEL_TIMER_TOP=N limits the rows (default 30).
// Kernels are timed from begin to end callback: exact for host backends (Serial, OpenMP: the call
// returns when the kernel is done); on CUDA set CUDA_LAUNCH_BLOCKING=1, or the times are launch
// times. Nothing here is Mantissa-specific beyond the table's wording; no Kokkos headers needed.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

struct Stat {
  long long calls = 0;
  double seconds = 0.0;
};

struct Mem {
  std::uint64_t live = 0, peak = 0;
};

struct State {
  std::unordered_map<std::string, Stat> kernels, regions;
  std::unordered_map<std::string, Mem> memory;  // per allocation label
  std::unordered_map<const void*, std::pair<std::string, std::uint64_t>> allocations;
  std::uint64_t live_bytes = 0, peak_bytes = 0;
  std::vector<std::pair<std::string, Clock::time_point>> open_kernels;  // indexed by kernel id
  std::vector<std::pair<std::string, Clock::time_point>> region_stack;
  Clock::time_point start = Clock::now();
};
State& state() {
  static State s;
  return s;
}

void begin_kernel(const char* name, std::uint64_t* id) {
  State& s = state();
  *id = s.open_kernels.size();
  s.open_kernels.emplace_back(name, Clock::now());
}
void end_kernel(std::uint64_t id) {
  State& s = state();
  const auto now = Clock::now();
  if (id >= s.open_kernels.size()) return;
  Stat& st = s.kernels[s.open_kernels[id].first];
  ++st.calls;
  st.seconds += std::chrono::duration<double>(now - s.open_kernels[id].second).count();
  if (id + 1 == s.open_kernels.size()) s.open_kernels.pop_back();  // kernels nest only on the host
}

void print_table(const char* title, const std::unordered_map<std::string, Stat>& m, double denominator,
                 std::size_t top) {
  std::vector<std::pair<std::string, Stat>> rows(m.begin(), m.end());
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.seconds > b.second.seconds; });
  std::fprintf(stderr, "%-52s %10s %10s %12s %7s\n", title, "calls", "total s", "us/call", "share");
  for (std::size_t i = 0; i < rows.size() && i < top; ++i) {
    const Stat& st = rows[i].second;
    std::fprintf(stderr, "%-52s %10lld %10.3f %12.1f %6.1f%%\n", rows[i].first.c_str(), st.calls, st.seconds,
                 st.calls ? 1e6 * st.seconds / static_cast<double>(st.calls) : 0.0,
                 denominator > 0 ? 100.0 * st.seconds / denominator : 0.0);
  }
  if (rows.size() > top) std::fprintf(stderr, "(%zu more rows; MANTISSA_KERNEL_TIMER_TOP=N shows more)\n", rows.size() - top);
}

}  // namespace

extern "C" {

void kokkosp_init_library(const int, const std::uint64_t, const std::uint32_t, void*) { state().start = Clock::now(); }

void kokkosp_finalize_library() {
  State& s = state();
  const double wall = std::chrono::duration<double>(Clock::now() - s.start).count();
  double kernel_total = 0.0;
  for (const auto& kv : s.kernels) kernel_total += kv.second.seconds;
  std::size_t top = 30;
  if (const char* env = std::getenv("MANTISSA_KERNEL_TIMER_TOP")) top = static_cast<std::size_t>(std::max(1, std::atoi(env)));
  std::fprintf(stderr, "\n== mantissa kernel timer: %.3f s in kernels of %.3f s between Kokkos initialize and finalize ==\n",
               kernel_total, wall);
  print_table("kernel (share of all kernel time)", s.kernels, kernel_total, top);
  if (!s.regions.empty()) {
    std::fprintf(stderr, "\n");
    print_table("region (inclusive; share of the wall time)", s.regions, wall, top);
  }
  std::vector<std::pair<std::string, Mem>> mem(s.memory.begin(), s.memory.end());
  std::sort(mem.begin(), mem.end(), [](const auto& a, const auto& b) { return a.second.peak > b.second.peak; });
  std::fprintf(stderr, "\nKokkos allocations: peak %.2f MiB live at once\n%-52s %12s\n", s.peak_bytes / 1048576.0,
               "allocation label (largest live total)", "MiB");
  for (std::size_t i = 0; i < mem.size() && i < top; ++i)
    std::fprintf(stderr, "%-52s %12.3f\n", mem[i].first.c_str(), mem[i].second.peak / 1048576.0);
}

struct SpaceHandle {
  char name[64];
};
void kokkosp_allocate_data(const SpaceHandle, const char* label, const void* const ptr, const std::uint64_t size) {
  State& s = state();
  s.allocations[ptr] = {label, size};
  Mem& m = s.memory[label];
  m.live += size;
  m.peak = std::max(m.peak, m.live);
  s.live_bytes += size;
  s.peak_bytes = std::max(s.peak_bytes, s.live_bytes);
}
void kokkosp_deallocate_data(const SpaceHandle, const char*, const void* const ptr, const std::uint64_t) {
  State& s = state();
  const auto it = s.allocations.find(ptr);
  if (it == s.allocations.end()) return;
  s.memory[it->second.first].live -= it->second.second;
  s.live_bytes -= it->second.second;
  s.allocations.erase(it);
}

void kokkosp_begin_parallel_for(const char* name, const std::uint32_t, std::uint64_t* id) { begin_kernel(name, id); }
void kokkosp_end_parallel_for(const std::uint64_t id) { end_kernel(id); }
void kokkosp_begin_parallel_reduce(const char* name, const std::uint32_t, std::uint64_t* id) { begin_kernel(name, id); }
void kokkosp_end_parallel_reduce(const std::uint64_t id) { end_kernel(id); }
void kokkosp_begin_parallel_scan(const char* name, const std::uint32_t, std::uint64_t* id) { begin_kernel(name, id); }
void kokkosp_end_parallel_scan(const std::uint64_t id) { end_kernel(id); }

void kokkosp_push_profile_region(const char* name) { state().region_stack.emplace_back(name, Clock::now()); }
void kokkosp_pop_profile_region() {
  State& s = state();
  if (s.region_stack.empty()) return;
  Stat& st = s.regions[s.region_stack.back().first];
  ++st.calls;
  st.seconds += std::chrono::duration<double>(Clock::now() - s.region_stack.back().second).count();
  s.region_stack.pop_back();
}

}  // extern "C"
