// Rollout-engine decode kernels (mantissa/kernels/decode.hpp), per storage precision:
//  - linear_decode for R = 64 rows (one decode step of 64 sequences), K = N = 128 and 256,
//    split_k 64, as FLOP/s (2 R K N per call); the training engine's gemm on the same shape
//    (x W^T through the BLAS) for comparison;
//  - attention_decode for 64 slots x 128 cached tokens, 4 query heads (4 kv heads), head_dim 32,
//    kv_split 16 and 128, as time per call and rows/s.
// Prints a table; asserts nothing about speed.
#include "bench_main.hpp"

#include <Kokkos_Core.hpp>
#include <random>
#include <string>

#include "mantissa/kernels/decode.hpp"
#include "mantissa/kernels/gemm.hpp"

namespace {

using namespace mantissa;

constexpr int kRows = 64, kSplitK = 64;
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

template <class T>
void BM_linear_decode(benchmark::State& state) {
  const int k = static_cast<int>(state.range(0)), n = k;
  View2<T> x(std::string("mantissa::bench::x"), kRows, k), w(std::string("mantissa::bench::w"), n, k);
  View2<T> y(std::string("mantissa::bench::y"), kRows, n);
  fill_random(x, 1);
  fill_random(w, 2);
  const ExecSpace space;
  for (auto _ : state) {
    linear_decode<T>(space, x, w, View2<T>(), y, kSplitK);
    space.fence();
  }
  state.counters["FLOP/s"] =
      benchmark::Counter(2.0 * kRows * k * n, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
  state.SetLabel(std::string(precision_traits<T>::name) + " split_k " + std::to_string(kSplitK));
}

template <class T>
void BM_gemm_training(benchmark::State& state) {
  const int k = static_cast<int>(state.range(0)), n = k;
  View2<T> x(std::string("mantissa::bench::x"), kRows, k), w(std::string("mantissa::bench::w"), n, k);
  View2<T> y(std::string("mantissa::bench::y"), kRows, n);
  fill_random(x, 1);
  fill_random(w, 2);
  const ExecSpace space;
  for (auto _ : state) {
    gemm<T, T, T>(space, 'N', 'T', 1.0f, x, w, 0.0f, y);
    space.fence();
  }
  state.counters["FLOP/s"] =
      benchmark::Counter(2.0 * kRows * k * n, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
  state.SetLabel(std::string(precision_traits<T>::name) + " (training engine: BLAS)");
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

BENCHMARK_TEMPLATE(BM_linear_decode, float)->Arg(128)->Arg(256)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_linear_decode, bf16_t)->Arg(128)->Arg(256)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_linear_decode, fp16_t)->Arg(128)->Arg(256)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_gemm_training, float)->Arg(128)->Arg(256)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_gemm_training, bf16_t)->Arg(128)->Arg(256)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_gemm_training, fp16_t)->Arg(128)->Arg(256)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_attention_decode, float)->Arg(16)->Arg(128)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_attention_decode, bf16_t)->Arg(16)->Arg(128)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_attention_decode, fp16_t)->Arg(16)->Arg(128)->Unit(benchmark::kMicrosecond)->UseRealTime();

}  // namespace

MANTISSA_BENCHMARK_MAIN()
