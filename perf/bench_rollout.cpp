// Rollout-engine throughput (KV-cached sampling: 64 sequences, 16-token prompts, 128 new tokens,
// temperature 1, no early stop) per storage precision, in the default mode (decode_gemm where the CPU
// has AVX-512, else linear_decode) and in consistent mode (linear_decode: what the default mode ran
// before issue 16), and the cost of consistent mode for the training engine: the
// training engine's forward (64 x 144 tokens) in default mode vs through the rollout engine's
// batch-invariant kernels. Models: "tiny" (4 layers, d_model 128) and "small" (8 layers, d_model 256),
// vocab 64. 1 rank. Build used: whatever preset built this binary (release: portable x86-64).
#include "bench_main.hpp"

#include <cstdio>
#include <random>

#include "mantissa/kernels/decode_gemm.hpp"
#include "model/optimizer.hpp"
#include "model/training_engine.hpp"
#include "rollout/rollout_batch.hpp"
#include "rollout/rollout_engine.hpp"

using namespace mantissa;

namespace {

config::ModelConfig model_config(int which) {
  config::ModelConfig m;
  m.vocab = 64;
  m.max_seq = 160;
  if (which == 0) {
    m.d_model = 128, m.n_layer = 4, m.n_head = 4, m.n_kv_head = 4, m.d_ff = 352;
  } else {
    m.d_model = 256, m.n_layer = 8, m.n_head = 8, m.n_kv_head = 8, m.d_ff = 688;
  }
  return m;
}

std::vector<std::vector<int>> random_prompts(int n, int len, int vocab) {
  std::mt19937 rng(5);
  std::vector<std::vector<int>> p(n, std::vector<int>(len));
  for (auto& s : p) {
    for (auto& t : s) t = static_cast<int>(rng() % vocab);
  }
  return p;
}

const char* config_name(int which) { return which == 0 ? "tiny" : "small"; }

void BM_Rollout(benchmark::State& state) {
  const int which = static_cast<int>(state.range(0));
  const auto p = static_cast<Precision>(state.range(1));
  const bool consistent = state.range(2) != 0;  // consistent mode: linear_decode (the default before issue 16)
  const config::ModelConfig m = model_config(which);
  config::RolloutConfig rc;
  rc.max_new_tokens = 128;
  model::ParamTable table(m);
  model::Optimizer opt(table, {}, {}, p);
  opt.init_weights(1);
  auto engine = rollout::make_rollout_engine(m, rc, table, p, /*eos_id=*/-1);  // never stops early
  engine->set_consistent(consistent);
  engine->load_weights(opt.master);
  const auto prompts = random_prompts(64, 16, m.vocab);
  std::vector<std::uint64_t> ids(prompts.size());
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = i;
  long long generated = 0;
  std::uint64_t step = 0;
  for (auto _ : state) {
    const rollout::Rollout r = engine->generate(prompts, ids, 1, step++, {});
    for (const auto& x : r.response) generated += static_cast<long long>(x.size());
  }
  state.counters["new_tokens/s"] = benchmark::Counter(static_cast<double>(generated), benchmark::Counter::kIsRate);
  state.SetLabel(std::string(config_name(which)) + " " + std::string(precision_name(p)) +
                 (consistent ? " consistent" : ""));
  // Which kernel ran the linear layers (perf/compare_pytorch.py reads this line from stderr).
  std::fprintf(stderr, "mantissa decode linear layers (%s): %s\n", std::string(precision_name(p)).c_str(),
               !consistent && decode_gemm_available() ? "decode_gemm (AVX-512 FMA tiles, packed fp32 weights)"
                                                      : "linear_decode (split-K, batch-invariant)");
}

void BM_TrainForward(benchmark::State& state) {
  const int which = static_cast<int>(state.range(0));
  const auto p = static_cast<Precision>(state.range(1));
  const bool consistent = state.range(2) != 0;
  const config::ModelConfig m = model_config(which);
  model::ParamTable table(m);
  model::Optimizer opt(table, {}, {}, p);
  opt.init_weights(1);
  auto engine = model::make_training_engine(m, table, p);
  engine->set_consistent(consistent, 64, 16);
  engine->load_weights(opt.master);
  model::PackedBatch b;
  for (const auto& s : random_prompts(64, 144, m.vocab)) b.add_sequence(s, 16);
  b.upload();
  for (auto _ : state) engine->forward(b);
  state.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(b.n_tokens()) * state.iterations(), benchmark::Counter::kIsRate);
  state.SetLabel(std::string(config_name(which)) + " " + std::string(precision_name(p)) +
                 (consistent ? " consistent" : " default"));
}

}  // namespace

BENCHMARK(BM_Rollout)
    ->ArgsProduct({{0, 1}, {0, 1, 2}, {0, 1}})
    ->ArgNames({"config", "precision", "consistent"})
    ->Unit(benchmark::kSecond);
BENCHMARK(BM_TrainForward)
    ->ArgsProduct({{0, 1}, {0, 1, 2}, {0, 1}})
    ->ArgNames({"config", "precision", "consistent"})
    ->Unit(benchmark::kMillisecond);

MANTISSA_BENCHMARK_MAIN()
