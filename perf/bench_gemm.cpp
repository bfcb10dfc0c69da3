// GEMM throughput on the model's shapes, against a measured FP32 FMA peak of this machine.
//
//   gemm/<T>/<M>x<K>x<N>: C (M,N) = A (M,K) W^T, W (N,K): gemm<T,T,T>('N','T'), the forward of a
//   projection with M = 2048 tokens and (K, N) in {(d, d), (d, 4d), (4d, d)}, d = 128, 256, 768.
//   Counters: GFLOP/s (2MNK per call), peak (the one-core FMA peak measured right after the gemm
//   runs, as other load on a shared machine moves it) and %peak = GFLOP/s / peak. Rates are per
//   second of process CPU time (as Google Benchmark's CPU column), so they measure per-core efficiency
//   and stay meaningful on a shared, loaded machine; with a multi-threaded BLAS they are per core.
//   For 16-bit T the time includes widening A and W to fp32 and rounding C: the CPU route.
//
//   fma_peak: 12 independent chains of 8-wide fp32 FMAs (AVX2+FMA intrinsics). The binary is built
//   with the project's default flags (portable x86-64, no -march); the kernel gets AVX2+FMA from a
//   function target attribute, so it reaches the -march=native peak when the CPU has FMA (checked:
//   the same kernel built with -march=native measures the same within noise).
//
// Run briefly: bench_gemm --benchmark_min_time=0.2
#include <benchmark/benchmark.h>
#include <dlfcn.h>

#include <Kokkos_Core.hpp>
#include <cstdio>
#include <ctime>
#include <string>

#include "mantissa/kernels/host_simd.hpp"  // MANTISSA_HOST_SIMD
#include "mantissa/kernels/gemm.hpp"

#if defined(MANTISSA_HOST_SIMD)
#include <immintrin.h>
#endif

namespace {

using namespace mantissa;

constexpr int kChains = 12;  // > FMA latency (4 cycles) x FMA pipes (2) on Zen 3 / Skylake

#if defined(MANTISSA_HOST_SIMD)
// kChains independent 8-wide FMA chains; returns a value depending on all of them (no dead code).
__attribute__((target("avx2,fma"))) float fma_chains(long iterations) {
  __m256 acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = _mm256_set1_ps(1.0f + 0.01f * c);
  const __m256 a = _mm256_set1_ps(0.9999999f), b = _mm256_set1_ps(1e-7f);  // stays near 1: no overflow/subnormals
  for (long i = 0; i < iterations; ++i) {
    for (int c = 0; c < kChains; ++c) acc[c] = _mm256_fmadd_ps(acc[c], a, b);
  }
  __m256 s = acc[0];
  for (int c = 1; c < kChains; ++c) s = _mm256_add_ps(s, acc[c]);
  float out[8];
  _mm256_storeu_ps(out, s);
  return out[0] + out[7];
}
bool cpu_has_fma() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }
#else
float fma_chains(long) { return 0.0f; }
bool cpu_has_fma() { return false; }
#endif
constexpr double kFlopsPerChainIteration = kChains * 8 * 2.0;

double process_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

// Best-of-3 one-thread FMA throughput in GFLOP/s per second of this thread's CPU time.
double measure_fma_peak(long iterations) {
  double best = 0.0;
  for (int rep = 0; rep < 3; ++rep) {
    timespec t0{}, t1{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
    benchmark::DoNotOptimize(iterations);
    benchmark::DoNotOptimize(fma_chains(iterations));
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t1);
    const double s = static_cast<double>(t1.tv_sec - t0.tv_sec) + 1e-9 * static_cast<double>(t1.tv_nsec - t0.tv_nsec);
    best = std::max(best, iterations * kFlopsPerChainIteration / s * 1e-9);
  }
  return best;
}

// Threads OpenBLAS will use (1 if the BLAS is not OpenBLAS).
int blas_threads() {
  using fn_t = int (*)();
  if (auto fn = reinterpret_cast<fn_t>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"))) return fn();
  return 1;
}

double g_peak_gflops = 0.0;  // measured one-thread FMA peak

void fill(const View2<float>& v) {
  auto h = Kokkos::create_mirror_view(v);
  for (std::size_t i = 0; i < h.extent(0); ++i)
    for (std::size_t j = 0; j < h.extent(1); ++j) h(i, j) = 0.001f * static_cast<float>((i * 7 + j * 13) % 1000) - 0.5f;
  Kokkos::deep_copy(v, h);
}
template <class T>
View2<T> random_matrix(const char* label, int rows, int cols) {
  View2<float> f("f", rows, cols);
  fill(f);
  auto hf = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), f);
  View2<T> out(std::string(label), rows, cols);
  auto h = Kokkos::create_mirror_view(out);
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < cols; ++j) h(i, j) = from_float<T>(hf(i, j));
  Kokkos::deep_copy(out, h);
  return out;
}

template <class T>
void bm_gemm(benchmark::State& state, int m, int k, int n) {
  const ExecSpace space;
  const auto a = random_matrix<T>("A", m, k);
  const auto w = random_matrix<T>("W", n, k);
  View2<T> c("C", m, n);
  gemm<T, T, T>(space, 'N', 'T', 1.0f, a, w, 0.0f, c);  // warm: work buffers, BLAS threads
  space.fence();
  const double t0 = process_cpu_seconds();
  for (auto _ : state) {
    gemm<T, T, T>(space, 'N', 'T', 1.0f, a, w, 0.0f, c);
    space.fence();
  }
  const double seconds = process_cpu_seconds() - t0;
  const double gflops = 2.0 * m * n * k * 1e-9 * static_cast<double>(state.iterations()) / seconds;
  state.counters["GFLOP/s"] = gflops;
  // The peak again, right after: on a shared machine the attainable rate drifts with other load.
  const double peak = cpu_has_fma() ? measure_fma_peak(5'000'000) : g_peak_gflops;
  state.counters["%peak"] = 100.0 * gflops / peak;
  state.counters["peak"] = peak;
}

void bm_fma_peak(benchmark::State& state) {
  long iterations = 1'000'000;
  const double t0 = process_cpu_seconds();
  for (auto _ : state) {
    benchmark::DoNotOptimize(iterations);  // opaque: the call cannot be hoisted out of the loop
    benchmark::DoNotOptimize(fma_chains(iterations));
  }
  const double seconds = process_cpu_seconds() - t0;
  state.counters["GFLOP/s"] =
      iterations * kFlopsPerChainIteration * 1e-9 * static_cast<double>(state.iterations()) / seconds;
}

template <class T>
void register_gemm(const char* type_name) {
  for (int d : {128, 256, 768}) {
    const int shapes[3][2] = {{d, d}, {d, 4 * d}, {4 * d, d}};
    for (const auto& s : shapes) {
      const std::string name =
          std::string("gemm/") + type_name + "/2048x" + std::to_string(s[0]) + "x" + std::to_string(s[1]);
      const int k = s[0], n = s[1];
      benchmark::RegisterBenchmark(name.c_str(), [k, n](benchmark::State& st) {
        bm_gemm<T>(st, 2048, k, n);
      })->Unit(benchmark::kMillisecond);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  Kokkos::ScopeGuard kokkos(argc, argv);
  const int threads = blas_threads();
  if (!cpu_has_fma()) {
    std::printf("This CPU has no AVX2+FMA: no FMA peak measured, %%peak is not meaningful.\n");
    g_peak_gflops = 1.0;
  } else {
    g_peak_gflops = measure_fma_peak(20'000'000);
    std::printf(
        "Measured FP32 FMA peak (AVX2 FMA, %d chains, 1 thread, per CPU second): %.1f GFLOP/s; BLAS threads: %d\n",
        kChains, g_peak_gflops, threads);
  }
  benchmark::AddCustomContext("blas_threads", std::to_string(threads));
  benchmark::AddCustomContext("fma_peak_gflops", std::to_string(g_peak_gflops));
  benchmark::RegisterBenchmark("fma_peak/avx2_fma_1thread", bm_fma_peak);
  register_gemm<float>("fp32");
  register_gemm<bf16_t>("bf16");
  register_gemm<fp16_t>("fp16");
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
