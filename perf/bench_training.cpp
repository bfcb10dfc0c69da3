// Training-engine throughput: forward + backward + AdamW step, tokens/s per storage precision for
// the "small" (8 layers, d_model 256) and "medium" (12 layers, d_model 768) configurations
// (and "tiny", 4 layers d_model 128), 16 sequences of 128 tokens per step, 1 rank.
// Prints a table; build used: whatever preset built this binary (release: portable x86-64).
#include "bench_main.hpp"

#include <cstdio>
#include <random>

#include "mantissa/kernels/gemm.hpp"
#include "model/optimizer.hpp"
#include "model/training_engine.hpp"

using namespace mantissa;
using namespace mantissa::model;

namespace {

config::ModelConfig model_config(int which) {
  config::ModelConfig m;
  m.vocab = 64;
  m.max_seq = 128;
  if (which == 0) {  // tiny
    m.d_model = 128, m.n_layer = 4, m.n_head = 4, m.n_kv_head = 4, m.d_ff = 352;
  } else if (which == 1) {  // small
    m.d_model = 256, m.n_layer = 8, m.n_head = 8, m.n_kv_head = 8, m.d_ff = 688;
  } else {  // medium
    m.d_model = 768, m.n_layer = 12, m.n_head = 12, m.n_kv_head = 12, m.d_ff = 2048;
  }
  return m;
}

void BM_TrainStep(benchmark::State& state) {
  const int which = static_cast<int>(state.range(0));
  const auto p = static_cast<Precision>(state.range(1));
  const config::ModelConfig m = model_config(which);
  ParamTable table(m);
  config::OptimizerConfig oc;
  config::LossScaleConfig lc;
  Optimizer opt(table, oc, lc, p);
  opt.init_weights(1);
  auto engine = make_training_engine(m, table, p);
  PackedBatch b;
  std::mt19937 rng(3);
  const int S = 16, T = 128;
  for (int s = 0; s < S; ++s) {
    std::vector<int> ids(T);
    for (auto& x : ids) x = static_cast<int>(rng() % m.vocab);
    b.add_sequence(ids, 0);
  }
  b.upload();
  View1<float> dlogp("mantissa::bench::dlogp", b.n_tokens());
  Kokkos::deep_copy(dlogp, -1.0f / b.n_tokens());
  for (auto _ : state) {
    engine->load_weights(opt.master);
    engine->forward(b);
    opt.zero_grad();
    engine->backward(b, dlogp, opt.grads);
    opt.step();
  }
  state.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(b.n_tokens()) * state.iterations(), benchmark::Counter::kIsRate);
  state.counters["params"] = static_cast<double>(table.total());
  state.SetLabel(std::string(which == 0 ? "tiny " : which == 1 ? "small " : "medium ") +
                 std::string(precision_name(p)));
  // Which GEMM implementations ran (perf/compare_pytorch.py reads this line from stderr).
  std::fprintf(stderr, "mantissa gemm route (%s, %s): %s\n", gemm_route_name(gemm_route()),
               std::string(precision_name(p)).c_str(), gemm_implementations_used().c_str());
}

}  // namespace

BENCHMARK(BM_TrainStep)
    ->ArgsProduct({{0, 1, 2}, {0, 1, 2}})
    ->ArgNames({"config", "precision"})
    ->Unit(benchmark::kMillisecond)
    ->MinTime(2.0);

MANTISSA_BENCHMARK_MAIN()
