// Rollout-engine token sampler (mantissa/kernels/sampling.hpp): rows/s for B = 64 rows of V = 40
// and V = 32000 logits, untruncated (top_p = 1), top_p = 0.9, and top_k = 50 with top_p = 0.9, for
// fp32 and bf16 logits, temperature 1, full_logprobs skipped. The logits are N(0, 3^2) (a peaked
// but not near-certain next-token distribution: top_p = 0.9 keeps ~1 to 2 thousand of 32000 tokens).
// On host builds each row is one sequential computation (one thread per row, the per-row path);
// device builds run the team path (one team per row, sampling.hpp). Asserts nothing about speed.
//
//   sample/<T>/V:<V>/top_p_x1000:<p>/top_k:<k>   counters: rows/s
#include "bench_main.hpp"

#include <Kokkos_Core.hpp>
#include <random>
#include <string>

#include "mantissa/kernels/sampling.hpp"

namespace {

using namespace mantissa;

constexpr int kRows = 64;

template <class T>
void BM_sample(benchmark::State& state) {
  const int V = static_cast<int>(state.range(0));
  SamplingParams p;
  p.top_p = static_cast<float>(state.range(1)) / 1000.0f;
  p.top_k = static_cast<int>(state.range(2));
  const View2<T> logits(std::string("mantissa::bench::logits"), kRows, V);
  const View1<std::uint64_t> seq_id(std::string("mantissa::bench::seq_id"), kRows);
  const View1<int> pos(std::string("mantissa::bench::pos"), kRows), token(std::string("mantissa::bench::token"), kRows);
  const View1<float> logmu(std::string("mantissa::bench::logmu"), kRows);
  {
    std::mt19937 rng(1);
    std::normal_distribution<float> dist(0.0f, 3.0f);
    auto h = Kokkos::create_mirror_view(logits);
    for (int b = 0; b < kRows; ++b)
      for (int v = 0; v < V; ++v) h(b, v) = from_float<T>(dist(rng));
    Kokkos::deep_copy(logits, h);
    auto hs = Kokkos::create_mirror_view(seq_id);
    for (int b = 0; b < kRows; ++b) hs(b) = static_cast<std::uint64_t>(b);
    Kokkos::deep_copy(seq_id, hs);
  }
  const ExecSpace space;
  std::uint64_t step = 0;
  for (auto _ : state) {
    sample_tokens<T>(space, logits, seq_id, pos, p, 42, step++, token, logmu, View2<float>());
    space.fence();
  }
  state.counters["rows/s"] = benchmark::Counter(kRows, benchmark::Counter::kIsIterationInvariantRate);
}

void shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"V", "top_p_x1000", "top_k"});
  for (int V : {40, 32000}) {
    b->Args({V, 1000, 0});
    b->Args({V, 900, 0});
  }
  b->Args({32000, 900, 50});
}

BENCHMARK_TEMPLATE(BM_sample, float)->Apply(shapes)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_sample, bf16_t)->Apply(shapes)->Unit(benchmark::kMicrosecond)->UseRealTime();

}  // namespace

MANTISSA_BENCHMARK_MAIN()
