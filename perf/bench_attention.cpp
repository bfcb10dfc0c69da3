// Training-engine attention (mantissa/kernels/attention.hpp): forward and backward time and
// tokens/s for a packed batch of 16 sequences x 128 tokens, 4 query heads (4 kv heads), head_dim
// 32, per storage precision, on the path the execution space runs by default (automatic: the
// items on a host) and on the team-parallel path (what a GPU runs; on a host, team size = the
// backend's limit). Prints a table; asserts nothing about speed.
#include "bench_main.hpp"

#include <Kokkos_Core.hpp>
#include <random>
#include <string>

#include "mantissa/kernels/attention.hpp"

namespace {

using namespace mantissa;

constexpr int kSeqs = 16, kSeqLen = 128, kHeads = 4, kKvHeads = 4, kHeadDim = 32;

template <class T>
struct Problem {
  static constexpr int n = kSeqs * kSeqLen;  // tokens
  View2<T> qkv, out, dout, dqkv;
  View2<float> lse;
  View1<int> offsets;

  Problem()
      : qkv(std::string("mantissa::bench::qkv"), n, (kHeads + 2 * kKvHeads) * kHeadDim),
        out(std::string("mantissa::bench::out"), n, kHeads * kHeadDim),
        dout(std::string("mantissa::bench::dout"), n, kHeads * kHeadDim),
        dqkv(std::string("mantissa::bench::dqkv"), n, (kHeads + 2 * kKvHeads) * kHeadDim),
        lse(std::string("mantissa::bench::lse"), n, kHeads),
        offsets(std::string("mantissa::bench::seq_offsets"), kSeqs + 1) {
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    const auto fill = [&](const View2<T>& v) {
      auto m = Kokkos::create_mirror_view(v);
      for (std::size_t r = 0; r < v.extent(0); ++r)
        for (std::size_t c = 0; c < v.extent(1); ++c) m(r, c) = from_float<T>(dist(rng));
      Kokkos::deep_copy(v, m);
    };
    fill(qkv);
    fill(dout);
    auto off = Kokkos::create_mirror_view(offsets);
    for (int s = 0; s <= kSeqs; ++s) off(s) = s * kSeqLen;
    Kokkos::deep_copy(offsets, off);
  }
  void forward(const ExecSpace& space, detail::TrainAttentionPath path) {
    detail::attention_forward_path<T>(space, qkv, offsets, kHeads, kKvHeads, kHeadDim, out, lse, path);
  }
  void backward(const ExecSpace& space, detail::TrainAttentionPath path) {
    detail::attention_backward_path<T>(space, qkv, offsets, kHeads, kKvHeads, kHeadDim, out, dout, lse, dqkv, path);
  }
};

template <class T, detail::TrainAttentionPath Path = detail::TrainAttentionPath::automatic>
void BM_attention_forward(benchmark::State& state) {
  Problem<T> p;
  const ExecSpace space;
  for (auto _ : state) {
    p.forward(space, Path);
    space.fence();
  }
  state.counters["tokens/s"] = benchmark::Counter(p.n, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::string(precision_traits<T>::name) + (Path == detail::TrainAttentionPath::team ? " team" : ""));
}

template <class T, detail::TrainAttentionPath Path = detail::TrainAttentionPath::automatic>
void BM_attention_backward(benchmark::State& state) {
  Problem<T> p;
  const ExecSpace space;
  p.forward(space, detail::TrainAttentionPath::automatic);
  space.fence();
  for (auto _ : state) {
    p.backward(space, Path);
    space.fence();
  }
  state.counters["tokens/s"] = benchmark::Counter(p.n, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::string(precision_traits<T>::name) + (Path == detail::TrainAttentionPath::team ? " team" : ""));
}

BENCHMARK_TEMPLATE(BM_attention_forward, float)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_attention_forward, bf16_t)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_attention_forward, fp16_t)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_attention_backward, float)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_attention_backward, bf16_t)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_attention_backward, fp16_t)->Unit(benchmark::kMillisecond)->UseRealTime();
constexpr detail::TrainAttentionPath kTeam = detail::TrainAttentionPath::team;
BENCHMARK_TEMPLATE(BM_attention_forward, float, kTeam)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_attention_forward, bf16_t, kTeam)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_attention_backward, float, kTeam)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_attention_backward, bf16_t, kTeam)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

MANTISSA_BENCHMARK_MAIN()
