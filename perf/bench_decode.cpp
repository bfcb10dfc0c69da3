// Rollout-engine decode kernels (mantissa/kernels/decode.hpp), per storage precision:
//  - linear_decode on the linear layers of the "tiny" (d_model 128, d_ff 352: QKV 384 x 128,
//    O 128 x 128, gate/up 704 x 128, down 128 x 352, head 64 x 128) and "small" (d_model 256,
//    d_ff 688: 768 x 256, 256 x 256, 1376 x 256, 256 x 688, 64 x 256) models at R = 1, 16 and 64
//    rows (sequences decoded per step), split_k 64, as FLOP/s (2 R K N per call); the training
//    engine's gemm (x W^T through the BLAS) on the same shapes in fp32, for comparison (run with
//    OPENBLAS_NUM_THREADS=1 to compare one core with one core: the decode kernels run on one
//    thread with Kokkos Serial);
//  - attention_decode for 64 slots x 128 cached tokens, 4 query heads (4 kv heads), head_dim 32,
//    kv_split 16 and 128, as time per call and rows/s;
//  - muladd_peak: this core's fp32 peak for separate products and sums (8 chains of 8-wide AVX
//    mul + add, per CPU second), the ceiling of linear_decode, which must not fuse them (FMA
//    would change its bits); on this machine's CPUs (2 mul + 2 add pipes) it equals the FMA peak.
// Arguments of the linear benchmarks: (R, N, K). Prints a table; asserts nothing about speed.
// Rates: the FLOP/s counters of linear_decode/gemm divide by wall time; on a loaded machine the
// CPU-time column is the fairer one (2 R K N / CPU time).
#include "mantissa/kernels/host_simd.hpp"  // MANTISSA_HOST_SIMD
#include "bench_main.hpp"

#include <Kokkos_Core.hpp>
#include <random>
#include <utility>
#include <string>

#include "mantissa/kernels/decode.hpp"
#include "mantissa/kernels/gemm.hpp"

namespace {

using namespace mantissa;

constexpr int kSplitK = 64;
constexpr int kSlots = 64, kCached = 128, kHeads = 4, kKvHeads = 4, kHeadDim = 32;

template <class V>
void fill_random(const V& v, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  auto m = Kokkos::create_mirror_view(v);
  auto* p = m.data();
  for (std::size_t i = 0; i < m.span(); ++i) p[i] = from_float<typename V::non_const_value_type>(dist(rng));
  Kokkos::deep_copy(v, m);
}

// The name of a (N, K) shape of the tiny/small models.
std::string shape_name(int n, int k) {
  const int d = k == 352 || k == 688 ? (k == 352 ? 128 : 256) : k;  // d_model
  const char* model = d == 128 ? "tiny" : "small";
  const char* layer = n == 3 * d ? "qkv" : n == d && k == d ? "o" : n == d ? "down" : n == 64 ? "head" : "gate_up";
  return std::string(model) + " " + layer;
}

template <class T>
void BM_linear_decode(benchmark::State& state) {
  const int rows = static_cast<int>(state.range(0)), n = static_cast<int>(state.range(1)),
            k = static_cast<int>(state.range(2));
  View2<T> x(std::string("mantissa::bench::x"), rows, k), w(std::string("mantissa::bench::w"), n, k);
  View2<T> y(std::string("mantissa::bench::y"), rows, n);
  fill_random(x, 1);
  fill_random(w, 2);
  const ExecSpace space;
  for (auto _ : state) {
    linear_decode<T>(space, x, w, View2<T>(), y, kSplitK);
    space.fence();
  }
  state.counters["FLOP/s"] =
      benchmark::Counter(2.0 * rows * k * n, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
  state.SetLabel(std::string(precision_traits<T>::name) + " " + shape_name(n, k) + " split_k " + std::to_string(kSplitK));
}

template <class T>
void BM_gemm_training(benchmark::State& state) {
  const int rows = static_cast<int>(state.range(0)), n = static_cast<int>(state.range(1)),
            k = static_cast<int>(state.range(2));
  View2<T> x(std::string("mantissa::bench::x"), rows, k), w(std::string("mantissa::bench::w"), n, k);
  View2<T> y(std::string("mantissa::bench::y"), rows, n);
  fill_random(x, 1);
  fill_random(w, 2);
  const ExecSpace space;
  for (auto _ : state) {
    gemm<T, T, T>(space, 'N', 'T', 1.0f, x, w, 0.0f, y);
    space.fence();
  }
  state.counters["FLOP/s"] =
      benchmark::Counter(2.0 * rows * k * n, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
  state.SetLabel(std::string(precision_traits<T>::name) + " " + shape_name(n, k) + " (training engine: BLAS)");
}

// (R, N, K) of every linear layer of the tiny and small models at R = 1, 16, 64.
void linear_shapes(benchmark::internal::Benchmark* b) {
  for (int d : {128, 256}) {
    const int ff = d == 128 ? 352 : 688;
    for (int rows : {1, 16, 64})
      for (const auto& [n, k] : {std::pair<int, int>{3 * d, d}, {d, d}, {2 * ff, d}, {d, ff}, {64, d}})
        b->Args({rows, n, k});
  }
}

template <class T>
void BM_attention_decode(benchmark::State& state) {
  const int kv_split = static_cast<int>(state.range(0));
  const int width = (kHeads + 2 * kKvHeads) * kHeadDim;
  View2<T> qkv(std::string("mantissa::bench::qkv"), kSlots, width);
  View3<T> ck(std::string("mantissa::bench::cache_k"), kSlots, kCached, kKvHeads * kHeadDim);
  View3<T> cv(std::string("mantissa::bench::cache_v"), kSlots, kCached, kKvHeads * kHeadDim);
  View2<T> out(std::string("mantissa::bench::out"), kSlots, kHeads * kHeadDim);
  View2<float> lse(std::string("mantissa::bench::lse"), kSlots, kHeads);
  View1<int> slot(std::string("mantissa::bench::slot"), kSlots), len(std::string("mantissa::bench::len"), kSlots);
  fill_random(qkv, 3);
  fill_random(ck, 4);
  fill_random(cv, 5);
  auto hs = Kokkos::create_mirror_view(slot);
  auto hl = Kokkos::create_mirror_view(len);
  for (int r = 0; r < kSlots; ++r) {
    hs(r) = r;
    hl(r) = kCached;
  }
  Kokkos::deep_copy(slot, hs);
  Kokkos::deep_copy(len, hl);
  const ExecSpace space;
  for (auto _ : state) {
    attention_decode<T>(space, qkv, ck, cv, slot, len, kHeads, kKvHeads, kHeadDim, kv_split, out, lse);
    space.fence();
  }
  state.counters["rows/s"] = benchmark::Counter(kSlots, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::string(precision_traits<T>::name) + " kv_split " + std::to_string(kv_split));
}

#if defined(MANTISSA_HOST_SIMD)
// n iterations of 8 independent chains acc += x * y (8-wide, AVX, no FMA): 128 flops each.
__attribute__((target("avx"), noipa)) float muladd_chains(long n) {
  using v8 = float __attribute__((vector_size(32)));
  v8 acc[8] = {};
  const v8 x[4] = {v8{} + 1.1f, v8{} + 1.5f, v8{} - 0.7f, v8{} + 0.3f};
  v8 y0 = v8{} + 1e-30f, y1 = v8{} - 1e-30f;
  for (long i = 0; i < n; ++i) {
    __asm__("" : "+x"(y0), "+x"(y1));  // opaque: the products are computed every iteration
    for (int c = 0; c < 4; ++c) {
      acc[c] += x[c] * y0;
      acc[c + 4] += x[c] * y1;
    }
  }
  float s = 0.0f;
  for (const v8& a : acc)
    for (int l = 0; l < 8; ++l) s += a[l];
  return s;
}

void BM_muladd_peak(benchmark::State& state) {
  if (!__builtin_cpu_supports("avx")) {
    state.SkipWithError("no AVX");
    return;
  }
  constexpr long n = 1'000'000;
  for (auto _ : state) {
    long m = n;
    benchmark::DoNotOptimize(m);
    benchmark::DoNotOptimize(muladd_chains(m));
  }
  state.counters["FLOP/s"] =
      benchmark::Counter(128.0 * n, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
  state.SetLabel("fp32 AVX mul + add, 8 chains, 1 thread (per CPU second)");
}
BENCHMARK(BM_muladd_peak)->Unit(benchmark::kMillisecond);
#endif

BENCHMARK_TEMPLATE(BM_linear_decode, float)->Apply(linear_shapes)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_linear_decode, bf16_t)->Apply(linear_shapes)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_linear_decode, fp16_t)->Apply(linear_shapes)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_gemm_training, float)->Apply(linear_shapes)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_attention_decode, float)->Arg(16)->Arg(128)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_attention_decode, bf16_t)->Arg(16)->Arg(128)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_attention_decode, fp16_t)->Arg(16)->Arg(128)->Unit(benchmark::kMicrosecond)->UseRealTime();

}  // namespace

MANTISSA_BENCHMARK_MAIN()
