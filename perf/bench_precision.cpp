// Conversions per second, float -> fp16/bf16 (round to nearest even) and back, on host arrays
// (the scalar code every kernel inlines) and through the Kokkos conversion kernel on Views.
// Build: whatever preset built this binary (release: portable x86-64, no -march=native).
#include "bench_main.hpp"

#include <random>
#include <vector>

#include "mantissa/kernels/convert.hpp"
#include "mantissa/kernels/precision.hpp"

using namespace mantissa;

namespace {

std::vector<float> random_floats(std::size_t n) {
  std::vector<float> v(n);
  std::mt19937 rng(1);
  std::normal_distribution<float> d(0.0f, 10.0f);
  for (auto& x : v) x = d(rng);
  return v;
}

template <class T>
void BM_EncodeHost(benchmark::State& state) {
  const auto x = random_floats(1 << 16);
  std::vector<T> y(x.size());
  for (auto _ : state) {
    for (std::size_t i = 0; i < x.size(); ++i) y[i] = from_float<T>(x[i]);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.counters["conversions/s"] = benchmark::Counter(static_cast<double>(x.size()) * state.iterations(),
                                                       benchmark::Counter::kIsRate);
}

template <class T>
void BM_DecodeHost(benchmark::State& state) {
  const auto x = random_floats(1 << 16);
  std::vector<T> y(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) y[i] = from_float<T>(x[i]);
  std::vector<float> z(x.size());
  for (auto _ : state) {
    for (std::size_t i = 0; i < y.size(); ++i) z[i] = to_float(y[i]);
    benchmark::DoNotOptimize(z.data());
    benchmark::ClobberMemory();
  }
  state.counters["conversions/s"] = benchmark::Counter(static_cast<double>(x.size()) * state.iterations(),
                                                       benchmark::Counter::kIsRate);
}

template <class TIn, class TOut>
void BM_ConvertKernel(benchmark::State& state) {
  const std::size_t n = 1 << 20;
  View1<TIn> x("mantissa::bench::x", n);
  View1<TOut> y("mantissa::bench::y", n);
  ExecSpace space;
  for (auto _ : state) {
    convert<TIn, TOut>(space, x, y);
    space.fence();
  }
  state.counters["conversions/s"] =
      benchmark::Counter(static_cast<double>(n) * state.iterations(), benchmark::Counter::kIsRate);
}

}  // namespace

BENCHMARK(BM_EncodeHost<fp16_t>)->Name("host float->fp16");
BENCHMARK(BM_EncodeHost<bf16_t>)->Name("host float->bf16");
BENCHMARK(BM_DecodeHost<fp16_t>)->Name("host fp16->float");
BENCHMARK(BM_DecodeHost<bf16_t>)->Name("host bf16->float");
BENCHMARK(BM_ConvertKernel<float, fp16_t>)->Name("kernel float->fp16 (1M)");
BENCHMARK(BM_ConvertKernel<float, bf16_t>)->Name("kernel float->bf16 (1M)");
BENCHMARK(BM_ConvertKernel<fp16_t, float>)->Name("kernel fp16->float (1M)");
BENCHMARK(BM_ConvertKernel<bf16_t, float>)->Name("kernel bf16->float (1M)");

MANTISSA_BENCHMARK_MAIN()
