// gpu_bench: both engines' throughput at GPU-sized models, one JSON line per measurement (stdout) and
// a table (stderr), for perf/gpu_bench.sh, which runs it alternately with the same models in PyTorch
// (perf/gpu_torch.py) and prints the ratios. Plain C++ on the engines (no Google Benchmark, no MPI,
// HDF5 or deck): a bare GPU node builds it with MANTISSA_KERNELS_ONLY.
//
// Models (Llama-style as src/model/params.hpp, head_dim 64, n_kv_head = n_head / 4, vocab 32000,
// d_ff = 8/3 d_model rounded up to 64, untied head):
//   tiny  d_model 128,  2 layers (CPU smoke runs)    512  d_model 512,  8 layers
//   1024  d_model 1024, 16 layers                      2048 d_model 2048, 24 layers
// Measurements:
//   train    forward + backward + AdamW step over S sequences of T tokens (default 8 x 1024), tokens/s
//            and model FLOP utilisation: FLOPs per token = 6 P + 6 L (H hd) T, P the parameters of every
//            linear layer and the head, L layers, H hd the attention width, T the sequence length (causal
//            attention: half of full attention's 12 L H hd T), against --peak-tflops (default: H200 SXM
//            dense 989 TFLOP/s for bf16/fp16 tensor cores, 67 for fp32 without TF32).
//   rollout  KV-cached sampling, temperature 1, no early stop (eos never sampled), B sequences with
//            16-token prompts and N new tokens (default 1024): new tokens/s; default and consistent mode.
//   forward  the training engine's forward, default vs consistent mode (the consistent-mode cost).
// Each measurement: one warm-up, then repeats until --seconds (default 3) have passed (at least 1).
// A configuration that does not fit the device prints {"skipped": "..."} and the run goes on.
//
//   gpu_bench [--sizes 512,1024,2048] [--precisions fp32,bf16,fp16] [--only train,rollout,forward]
//             [--train-seqs 8] [--train-len 1024] [--batches 64,256,512] [--new-tokens 1024]
//             [--rollout-precisions bf16] [--seconds 3] [--peak-tflops X]
#include <Kokkos_Core.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "mantissa/kernels/gemm.hpp"
#include "model/batch.hpp"
#include "model/optimizer.hpp"
#include "model/params.hpp"
#include "model/training_engine.hpp"
#include "rollout/rollout_engine.hpp"

using namespace mantissa;

namespace {

struct Args {
  std::vector<std::string> sizes{"512", "1024", "2048"}, precisions{"fp32", "bf16", "fp16"},
      only{"train", "rollout", "forward"}, rollout_precisions{"bf16"};
  std::vector<int> batches{64, 256, 512};
  int train_seqs = 8, train_len = 1024, new_tokens = 1024, prompt_len = 16;
  double seconds = 3.0, peak_tflops = 0.0;
};

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string x; std::getline(ss, x, ',');)
    if (!x.empty()) out.push_back(x);
  return out;
}

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr, "gpu_bench: %s\n(see the head of perf/gpu_bench.cpp for the options)\n", why.c_str());
  std::exit(2);
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (k.rfind("--kokkos", 0) == 0) continue;
    if (i + 1 >= argc) usage("option " + k + " needs a value");
    const std::string v = argv[++i];
    try {
      if (k == "--sizes") a.sizes = split(v);
      else if (k == "--precisions") a.precisions = split(v);
      else if (k == "--rollout-precisions") a.rollout_precisions = split(v);
      else if (k == "--only") a.only = split(v);
      else if (k == "--batches") {
        a.batches.clear();
        for (const auto& b : split(v)) a.batches.push_back(std::stoi(b));
      } else if (k == "--train-seqs") a.train_seqs = std::stoi(v);
      else if (k == "--train-len") a.train_len = std::stoi(v);
      else if (k == "--new-tokens") a.new_tokens = std::stoi(v);
      else if (k == "--seconds") a.seconds = std::stod(v);
      else if (k == "--peak-tflops") a.peak_tflops = std::stod(v);
      else usage("unknown option " + k);
    } catch (const std::logic_error&) {
      usage("option " + k + ": not a number: " + v);
    }
  }
  return a;
}

bool has(const std::vector<std::string>& v, const std::string& x) {
  for (const auto& y : v)
    if (y == x) return true;
  return false;
}

config::ModelConfig model_config(const std::string& size, int max_seq) {
  config::ModelConfig m;
  int d = 0, layers = 0;
  if (size == "tiny") d = 128, layers = 2;
  else if (size == "512") d = 512, layers = 8;
  else if (size == "1024") d = 1024, layers = 16;
  else if (size == "2048") d = 2048, layers = 24;
  else usage("unknown size " + size + " (tiny, 512, 1024, 2048)");
  m.vocab = 32000;
  m.d_model = d;
  m.n_layer = layers;
  m.n_head = d / 64;
  m.n_kv_head = d / 64 >= 4 ? d / 256 : 1;
  m.d_ff = (8 * d / 3 + 63) / 64 * 64;
  m.max_seq = max_seq;
  m.tied_embeddings = false;
  return m;
}

Precision precision_of(const std::string& s) {
  if (s == "fp32") return Precision::fp32;
  if (s == "bf16") return Precision::bf16;
  if (s == "fp16") return Precision::fp16;
  usage("unknown precision " + s);
}

// Parameters that multiply activations (every linear layer and the head): the 6 P of the FLOP count.
double matmul_params(const config::ModelConfig& m) {
  const double d = m.d_model, hd = m.head_dim(), H = m.n_head, Hkv = m.n_kv_head, F = m.d_ff;
  const double per_layer = (H + 2 * Hkv) * hd * d + d * H * hd + 2 * F * d + d * F;
  return m.n_layer * per_layer + static_cast<double>(m.vocab) * d;
}

double peak(const Args& a, Precision p) {
  if (a.peak_tflops > 0) return a.peak_tflops;
  return p == Precision::fp32 ? 67.0 : 989.0;  // H200 SXM dense: fp32 (no TF32), bf16/fp16 tensor cores
}

using clock_type = std::chrono::steady_clock;

// Runs f once (warm-up), then until `seconds` have passed; returns seconds per call.
template <class F>
double time_calls(double seconds, F&& f, int& calls) {
  f();
  Kokkos::fence();
  calls = 0;
  const auto t0 = clock_type::now();
  double el = 0.0;
  do {
    f();
    Kokkos::fence();
    ++calls;
    el = std::chrono::duration<double>(clock_type::now() - t0).count();
  } while (el < seconds);
  return el / calls;
}

std::vector<std::vector<int>> random_tokens(int n, int len, int vocab, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<std::vector<int>> out(n, std::vector<int>(len));
  for (auto& s : out)
    for (auto& t : s) t = static_cast<int>(rng() % static_cast<unsigned>(vocab));
  return out;
}

void emit(const std::string& json) {
  std::printf("%s\n", json.c_str());
  std::fflush(stdout);
}

std::string head(const char* what, const std::string& size, const std::string& prec) {
  return std::string("{\"engine\": \"mantissa\", \"what\": \"") + what + "\", \"size\": \"" + size +
         "\", \"precision\": \"" + prec + "\"";
}

void bench_train(const Args& a, const std::string& size, const std::string& prec) {
  const Precision p = precision_of(prec);
  const config::ModelConfig m = model_config(size, a.train_len);
  const std::string h = head("train", size, prec);
  try {
    model::ParamTable table(m);
    model::Optimizer opt(table, {}, {}, p);
    opt.init_weights(1);
    auto engine = model::make_training_engine(m, table, p);
    model::PackedBatch b;
    for (const auto& s : random_tokens(a.train_seqs, a.train_len, m.vocab, 3)) b.add_sequence(s, 0);
    b.upload();
    View1<float> dlogp("mantissa::bench::dlogp", b.n_tokens());
    Kokkos::deep_copy(dlogp, -1.0f / static_cast<float>(b.n_tokens()));
    int calls = 0;
    const double s = time_calls(a.seconds, [&] {
      engine->load_weights(opt.master);
      engine->forward(b);
      opt.zero_grad();
      engine->backward(b, dlogp, opt.grads);
      opt.step();
    }, calls);
    const double tokens = static_cast<double>(b.n_tokens());
    const double flops_per_token =
        6.0 * matmul_params(m) + 6.0 * m.n_layer * m.n_head * m.head_dim() * static_cast<double>(a.train_len);
    const double mfu = flops_per_token * tokens / s / (peak(a, p) * 1e12);
    char line[512];
    std::snprintf(line, sizeof line,
                  ", \"params\": %zu, \"tokens\": %.0f, \"calls\": %d, \"s_per_step\": %.6f, \"tokens_per_s\": %.1f, "
                  "\"mfu\": %.4f, \"peak_tflops\": %.1f, \"gemm\": \"%s\"}",
                  table.total(), tokens, calls, s, tokens / s, mfu, peak(a, p), gemm_implementations_used().c_str());
    emit(h + line);
    std::fprintf(stderr, "train   %-5s %-5s %10.0f tokens/s  MFU %5.1f%%  (%d steps, %.3f s/step)\n", size.c_str(),
                 prec.c_str(), tokens / s, 100 * mfu, calls, s);
  } catch (const std::exception& e) {
    emit(h + ", \"skipped\": \"" + std::string(e.what()).substr(0, 200) + "\"}");
    std::fprintf(stderr, "train   %-5s %-5s skipped: %s\n", size.c_str(), prec.c_str(), e.what());
  }
}

void bench_rollout(const Args& a, const std::string& size, const std::string& prec, int batch, bool consistent) {
  const Precision p = precision_of(prec);
  const config::ModelConfig m = model_config(size, a.prompt_len + a.new_tokens + 1);
  std::string h = head("rollout", size, prec) + ", \"batch\": " + std::to_string(batch) +
                  ", \"consistent\": " + (consistent ? "true" : "false");
  try {
    config::RolloutConfig rc;
    rc.max_new_tokens = a.new_tokens;
    model::ParamTable table(m);
    model::Optimizer opt(table, {}, {}, p);
    opt.init_weights(1);
    auto engine = rollout::make_rollout_engine(m, rc, table, p, /*eos_id=*/-1);
    engine->set_consistent(consistent);
    engine->load_weights(opt.master);
    const auto prompts = random_tokens(batch, a.prompt_len, m.vocab, 5);
    std::vector<std::uint64_t> ids(prompts.size());
    for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = i;
    long long generated = 0;
    std::uint64_t step = 0;
    int calls = 0;
    const double s = time_calls(a.seconds, [&] {
      const rollout::Rollout r = engine->generate(prompts, ids, 1, step++, {});
      generated = 0;
      for (const auto& x : r.response) generated += static_cast<long long>(x.size());
    }, calls);
    char line[256];
    std::snprintf(line, sizeof line, ", \"new_tokens\": %lld, \"calls\": %d, \"s_per_call\": %.6f, \"tokens_per_s\": %.1f}",
                  generated, calls, s, static_cast<double>(generated) / s);
    emit(h + line);
    std::fprintf(stderr, "rollout %-5s %-5s B=%-4d %s %10.0f new tokens/s  (%d calls, %.3f s each)\n", size.c_str(),
                 prec.c_str(), batch, consistent ? "consistent" : "default   ", static_cast<double>(generated) / s,
                 calls, s);
  } catch (const std::exception& e) {
    emit(h + ", \"skipped\": \"" + std::string(e.what()).substr(0, 200) + "\"}");
    std::fprintf(stderr, "rollout %-5s %-5s B=%-4d skipped: %s\n", size.c_str(), prec.c_str(), batch, e.what());
  }
}

void bench_forward(const Args& a, const std::string& size, const std::string& prec) {
  const Precision p = precision_of(prec);
  const config::ModelConfig m = model_config(size, a.train_len);
  const std::string h = head("forward", size, prec);
  try {
    model::ParamTable table(m);
    model::Optimizer opt(table, {}, {}, p);
    opt.init_weights(1);
    auto engine = model::make_training_engine(m, table, p);
    engine->load_weights(opt.master);
    model::PackedBatch b;
    for (const auto& s : random_tokens(a.train_seqs, a.train_len, m.vocab, 7)) b.add_sequence(s, 16);
    b.upload();
    double sec[2];
    int calls[2];
    for (int c = 0; c < 2; ++c) {
      engine->set_consistent(c == 1, 64, 16);
      sec[c] = time_calls(a.seconds, [&] { engine->forward(b); }, calls[c]);
    }
    const double tokens = static_cast<double>(b.n_tokens());
    char line[256];
    std::snprintf(line, sizeof line,
                  ", \"tokens\": %.0f, \"default_tokens_per_s\": %.1f, \"consistent_tokens_per_s\": %.1f, "
                  "\"consistent_cost\": %.3f}",
                  tokens, tokens / sec[0], tokens / sec[1], sec[1] / sec[0]);
    emit(h + line);
    std::fprintf(stderr, "forward %-5s %-5s default %10.0f tokens/s, consistent %10.0f tokens/s (%.2fx the time)\n",
                 size.c_str(), prec.c_str(), tokens / sec[0], tokens / sec[1], sec[1] / sec[0]);
  } catch (const std::exception& e) {
    emit(h + ", \"skipped\": \"" + std::string(e.what()).substr(0, 200) + "\"}");
    std::fprintf(stderr, "forward %-5s %-5s skipped: %s\n", size.c_str(), prec.c_str(), e.what());
  }
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
  Kokkos::ScopeGuard kokkos(argc, argv);
  std::fprintf(stderr, "gpu_bench: Kokkos %d, execution space %s, concurrency %d\n", KOKKOS_VERSION,
               ExecSpace::name(), ExecSpace().concurrency());
  for (const auto& size : a.sizes) {
    if (has(a.only, "train"))
      for (const auto& prec : a.precisions) bench_train(a, size, prec);
    if (has(a.only, "forward"))
      for (const auto& prec : a.precisions) bench_forward(a, size, prec);
    if (has(a.only, "rollout"))
      for (const auto& prec : a.rollout_precisions)
        for (const int batch : a.batches)
          for (const bool consistent : {false, true}) {
            if (consistent && batch != a.batches.back()) continue;  // the consistent-mode cost at one batch
            bench_rollout(a, size, prec, batch, consistent);
          }
  }
  return 0;
}
