#include "mantissa/kernels/sampling.hpp"

#include <charconv>
#include <cmath>
#include <stdexcept>
#include <string>

namespace mantissa {

namespace {

// The shortest text that reads back as the same float ("0.2", "1.0000001", "nan", "inf").
std::string float_text(float x) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, x);
  return std::string(buf, r.ptr);
}

[[noreturn]] void bad_param(const char* name, const char* expected, const std::string& value) {
  throw std::invalid_argument(std::string("mantissa::sample_tokens: ") + name + " must be " + expected + ", got " +
                              value);
}

View1<std::uint64_t>& workspace() {
  static View1<std::uint64_t> w;
  return w;
}
bool& finalize_hook_registered() {
  static bool registered = false;
  return registered;
}

}  // namespace

void validate_sampling_params(const SamplingParams& p) {
  if (!(p.temperature >= 0.0f) || !std::isfinite(p.temperature))
    bad_param("temperature", "finite and >= 0 (0 = greedy)", float_text(p.temperature));
  if (p.top_k < 0) bad_param("top_k", ">= 0 (0 = off)", std::to_string(p.top_k));
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) bad_param("top_p", "in (0, 1] (1 = off)", float_text(p.top_p));
}

void sampling_release_workspace() { workspace() = View1<std::uint64_t>(); }

View1<std::uint64_t> detail::sampling_workspace(std::size_t n) {
  if (!finalize_hook_registered()) {  // Views must die before Kokkos::finalize
    Kokkos::push_finalize_hook([] {
      sampling_release_workspace();
      finalize_hook_registered() = false;
    });
    finalize_hook_registered() = true;
  }
  View1<std::uint64_t>& w = workspace();
  if (w.extent(0) < n) {
    w = View1<std::uint64_t>();  // free the old buffer first: the peak is the new size only
    w = make_uninit<View1<std::uint64_t>>("mantissa::sampling::workspace", n);
  }
  return w;
}

template <class T, class Exec>
void sample_tokens(const Exec& space, const ConstView2<T>& logits, const ConstView1<std::uint64_t>& seq_id,
                   const ConstView1<int>& pos, const SamplingParams& p, std::uint64_t seed, std::uint64_t step,
                   const View1<int>& token, const View1<float>& logmu, const View2<float>& full_logprobs) {
  validate_sampling_params(p);
  const std::size_t n_rows = logits.extent(0);
  const std::size_t vocab = logits.extent(1);
  const bool write_full = full_logprobs.extent(0) != 0;
  if (seq_id.extent(0) != n_rows || pos.extent(0) != n_rows || token.extent(0) != n_rows ||
      logmu.extent(0) != n_rows || (write_full && (full_logprobs.extent(0) != n_rows || full_logprobs.extent(1) != vocab)))
    throw std::invalid_argument(
        "mantissa::sample_tokens: expected logits (B,V), seq_id/pos/token/logmu (B), full_logprobs (B,V) or extent 0");
  if (n_rows == 0) return;
  if (vocab == 0 || vocab > 0x7fffffffu)
    throw std::invalid_argument("mantissa::sample_tokens: vocabulary size must be in [1, 2^31), got " +
                                std::to_string(vocab));
  const int V = static_cast<int>(vocab);
  const bool truncates = p.temperature != 0.0f && ((p.top_k > 0 && p.top_k < V) || p.top_p < 1.0f);
  const View1<std::uint64_t> work = truncates ? detail::sampling_workspace(n_rows * vocab) : View1<std::uint64_t>();
  const SamplingParams params = p;
  Kokkos::parallel_for(
      "mantissa::sampling::sample", Kokkos::RangePolicy<Exec>(space, 0, n_rows), KOKKOS_LAMBDA(const std::size_t b) {
        const double u = uniform_open01(counter_hash(seed, step, seq_id(b), static_cast<std::uint64_t>(pos(b))));
        std::uint64_t* w = truncates ? work.data() + b * vocab : nullptr;
        float* full = write_full ? &full_logprobs(b, 0) : nullptr;
        const SampledToken r = sample_row(&logits(b, 0), V, params, u, w, full);
        token(b) = r.token;
        logmu(b) = r.logmu;
      });
}

MANTISSA_SAMPLING_DECLARE(, float)
MANTISSA_SAMPLING_DECLARE(, fp16_t)
MANTISSA_SAMPLING_DECLARE(, bf16_t)

}  // namespace mantissa
