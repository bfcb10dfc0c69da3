#pragma once
// The rollout engine's token sampler: temperature, top-k, top-p (nucleus), inverse-CDF draw from
// a counter-based uniform, and the log-probability log mu of the drawn token. Per row b of the
// logits (B,V), all in fp32 (sums that only pick the token are in double, see below):
//
//   z_v   = to_float(x_v) / temperature                     (one IEEE division, correctly rounded)
//   m     = max_v z_v,  d_v = z_v - m,  e_v = exp(d_v)
//   S     = sum_v e_v in ascending v (fp32),  log p_v = d_v - log S          (row_log_softmax)
//   order = z descending, ties by lower token id (a strict total order; equal z are equal probabilities)
//   top-k = the first min(k, V) tokens of the order                          (k = 0: all V)
//   top-p = the shortest prefix of the order within the top-k set whose mass reaches top_p times
//           the top-k set's mass (the distribution is renormalised over top-k first, as in vLLM and
//           HF transformers); masses are double sums of the fp32 e_v: the prefix in order, the
//           top-k set in ascending id; at least one token is always kept
//   draw  = u = uniform_open01(counter_hash(seed, step, seq_id[b], pos[b])); walk the kept tokens
//           in ascending id, c += e_v in double, token = first v with c > u * sum_kept e (double)
//   logmu = d_token - log(S_kept), S_kept = sum of e_v over the kept tokens in ascending id (fp32).
//
// When the kept set is the whole vocabulary (no truncation, or truncation that keeps everything)
// S_kept is S term for term, so logmu equals row_log_softmax's value at the token bit for bit:
// a training engine that calls row_log_softmax on the same logits reproduces log mu exactly.
// The draw walks double partial sums, so tokens far below fp32 resolution of the running sum keep
// their probability (an fp32 walk would round a token of probability < 6e-8 S to 0 or to 2^-24 S).
//
// temperature == 0 is greedy: token = argmax_v x_v (lowest id on ties), logmu = 0, and the
// full_logprobs row (if asked for) is the point mass actually sampled from: 0 at the token, -inf
// elsewhere. A row with a NaN logit, or whose largest tempered logit is +-inf (all -inf, an
// overflowed logit, or x/temperature overflowing), gets token -1, logmu NaN and a NaN
// full_logprobs row (loud). -inf logits elsewhere are fine (masked tokens, probability 0).
//
// Results depend only on (logits row, params, seed, step, seq_id[b], pos[b]): each row is one
// sequential computation (one thread), in a fixed order, so they do not depend on B, on the row
// order, on the MPI rank count, or on the thread count. Across backends they are identical up to
// the libm: exp and log of the device (CUDA expf, 2 ulp) may differ in the last bit from glibc's.
//
// Workspace: top-k/top-p select through a per-row binary heap of 64-bit keys
// (ordered bits of z << 32 | ~v) in a process-wide buffer of B*V keys that grows to the largest call
// and is reused (no allocation once warm); it is freed at Kokkos::finalize or by
// sampling_release_workspace(). Calls must therefore not run concurrently on different execution
// space instances. Cost per row: O(V) without truncation; O(V + n log V) with it, n the number of
// tokens taken from the heap (top_k, or the top-p prefix): O(V log V) at worst.
#include <cstdint>

#include "mantissa/kernels/rng.hpp"
#include "mantissa/kernels/types.hpp"

namespace mantissa {

struct SamplingParams {
  float temperature = 1.0f;  // >= 0 and finite; 0 = greedy
  int top_k = 0;             // >= 0; 0 = off (so is top_k >= V)
  float top_p = 1.0f;        // in (0, 1]; 1 = off
};

// Throws std::invalid_argument naming the parameter and its value (host only).
void validate_sampling_params(const SamplingParams& p);

// Frees the sampler's key buffer now (it is also freed at Kokkos::finalize).
void sampling_release_workspace();

namespace detail {
// The key buffer, grown to at least n keys (host only).
View1<std::uint64_t> sampling_workspace(std::size_t n);
}  // namespace detail

// ---- per-row building blocks, callable inside any kernel --------------------------------------

// Statistics of log_softmax(x / temperature) of one row.
struct RowSoftmaxStats {
  float max;          // m = max_v z_v
  float sum_exp;      // S = sum_v exp(z_v - m), ascending v, fp32
  float log_sum_exp;  // log S (the row's lse is m + log S)
  bool ok;            // false: a NaN, or m = +-inf (then sum_exp and log_sum_exp are NaN)
};

KOKKOS_INLINE_FUNCTION float nan_float() { return bits_float(0x7fc00000u); }
KOKKOS_INLINE_FUNCTION float neg_inf_float() { return bits_float(0xff800000u); }

// z = x / temperature in fp32 (temperature 1 leaves x exact).
template <class T>
KOKKOS_INLINE_FUNCTION float tempered_logit(const T& x, float temperature) {
  return to_float(x) / temperature;
}

namespace detail {
// row_softmax_stats, also accumulating the double sum of the same fp32 terms into *mass when
// mass != nullptr (the sampler's walk needs it; S is the same float sum either way).
template <class T>
KOKKOS_INLINE_FUNCTION RowSoftmaxStats row_softmax_stats(const T* row, int V, float temperature, double* mass) {
  float m = neg_inf_float();
  bool nan = false;
  for (int v = 0; v < V; ++v) {
    const float z = tempered_logit(row[v], temperature);
    if (z != z)
      nan = true;
    else
      m = kmax(m, z);
  }
  RowSoftmaxStats s{m, nan_float(), nan_float(), false};
  if (nan || !(m > neg_inf_float()) || !(m < -neg_inf_float())) return s;
  float sum = 0.0f;
  double sum_d = 0.0;
  for (int v = 0; v < V; ++v) {
    const float e = kmath::exp(tempered_logit(row[v], temperature) - m);
    sum += e;
    sum_d += static_cast<double>(e);
  }
  if (mass != nullptr) *mass = sum_d;
  s.sum_exp = sum;
  s.log_sum_exp = kmath::log(sum);
  s.ok = true;
  return s;
}
}  // namespace detail

// m, S = sum exp(z - m) in ascending index order, log S.                      row (V) -> stats
template <class T>
KOKKOS_INLINE_FUNCTION RowSoftmaxStats row_softmax_stats(const T* row, int V, float temperature) {
  return detail::row_softmax_stats(row, V, temperature, nullptr);
}

// log p_v of one token from the row's statistics: (z_v - m) - log S.
template <class T>
KOKKOS_INLINE_FUNCTION float row_logprob(const T& x, float temperature, const RowSoftmaxStats& s) {
  return (tempered_logit(x, temperature) - s.max) - s.log_sum_exp;
}

namespace detail {
template <class T>
KOKKOS_INLINE_FUNCTION void write_log_softmax(const T* row, int V, float temperature, const RowSoftmaxStats& s,
                                              float* out) {
  for (int v = 0; v < V; ++v) out[v] = s.ok ? row_logprob(row[v], temperature, s) : nan_float();
}
}  // namespace detail

// out[v] = log_softmax(x / temperature)[v] (NaN row when !ok); returns the stats.   row (V) -> out (V) fp32
// The sampler's full_logprobs and its untruncated logmu are exactly these values.
template <class T>
KOKKOS_INLINE_FUNCTION RowSoftmaxStats row_log_softmax(const T* row, int V, float temperature, float* out) {
  const RowSoftmaxStats s = row_softmax_stats(row, V, temperature);
  detail::write_log_softmax(row, V, temperature, s, out);
  return s;
}

namespace detail {
// Order-preserving map of a float to 32 bits (larger float -> larger integer); -0 is mapped as +0.
KOKKOS_INLINE_FUNCTION std::uint32_t ordered_bits(float z) {
  const std::uint32_t u = float_bits(z == 0.0f ? 0.0f : z);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
KOKKOS_INLINE_FUNCTION float from_ordered_bits(std::uint32_t k) {
  return bits_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}
// Sort key of token v: larger key = larger z, then lower id. Keys are distinct within a row.
KOKKOS_INLINE_FUNCTION std::uint64_t token_key(float z, int v) {
  return (static_cast<std::uint64_t>(ordered_bits(z)) << 32) | static_cast<std::uint64_t>(~static_cast<std::uint32_t>(v));
}
KOKKOS_INLINE_FUNCTION float key_logit(std::uint64_t key) { return from_ordered_bits(static_cast<std::uint32_t>(key >> 32)); }

// Max-heap on a[0, n).
KOKKOS_INLINE_FUNCTION void heap_sift_down(std::uint64_t* a, int i, int n) {
  const std::uint64_t x = a[i];
  for (;;) {
    int c = 2 * i + 1;
    if (c >= n) break;
    if (c + 1 < n && a[c + 1] > a[c]) ++c;
    if (!(a[c] > x)) break;
    a[i] = a[c];
    i = c;
  }
  a[i] = x;
}
KOKKOS_INLINE_FUNCTION void heap_make(std::uint64_t* a, int n) {
  for (int i = n / 2 - 1; i >= 0; --i) heap_sift_down(a, i, n);
}
// Moves the largest key of a[0, n) to a[n-1]; the heap is then a[0, n-1).
KOKKOS_INLINE_FUNCTION void heap_pop(std::uint64_t* a, int n) {
  const std::uint64_t top = a[0];
  a[0] = a[n - 1];
  a[n - 1] = top;
  heap_sift_down(a, 0, n - 1);
}
}  // namespace detail

struct SampledToken {
  int token;    // -1 for a row with non-finite logits
  float logmu;  // log probability of token under the distribution sampled from (fp32)
};

// One row: the whole sampler above. work: V keys (read only when top_k or top_p truncates);
// full: V floats or nullptr. u in (0, 1).                       row (V) -> token, logmu [, full (V)]
template <class T>
KOKKOS_INLINE_FUNCTION SampledToken sample_row(const T* row, int V, const SamplingParams& p, double u,
                                               std::uint64_t* work, float* full) {
  if (p.temperature == 0.0f) {  // greedy: argmax of x, lowest id on ties
    int best = -1;
    float best_x = 0.0f;
    bool nan = false;
    for (int v = 0; v < V; ++v) {
      const float x = to_float(row[v]);
      if (x != x)
        nan = true;
      else if (best < 0 || x > best_x) {
        best = v;
        best_x = x;
      }
    }
    const bool ok = !nan && best >= 0 && best_x > neg_inf_float() && best_x < -neg_inf_float();
    if (full != nullptr)
      for (int v = 0; v < V; ++v) full[v] = !ok ? nan_float() : (v == best ? 0.0f : neg_inf_float());
    return ok ? SampledToken{best, 0.0f} : SampledToken{-1, nan_float()};
  }

  const float t = p.temperature;
  double mass_all = 0.0;  // sum of the fp32 e_v in double, ascending id
  const RowSoftmaxStats s = detail::row_softmax_stats(row, V, t, &mass_all);
  if (full != nullptr) detail::write_log_softmax(row, V, t, s, full);
  if (!s.ok) return SampledToken{-1, nan_float()};
  const float m = s.max;

  // The kept set is {v : token_key(z_v, v) >= threshold}; threshold 0 keeps every token.
  std::uint64_t threshold = 0;
  const bool cut_k = p.top_k > 0 && p.top_k < V;
  const bool cut_p = p.top_p < 1.0f;
  if (cut_k || cut_p) {
    for (int v = 0; v < V; ++v) work[v] = detail::token_key(tempered_logit(row[v], t), v);
    detail::heap_make(work, V);
    // The i-th largest key goes to work[V-1-i] as it is popped.
    const int n_k = cut_k ? p.top_k : V;
    int popped = 0;
    if (cut_k) {
      for (; popped < n_k; ++popped) detail::heap_pop(work, V - popped);
      threshold = work[V - n_k];
    }
    if (cut_p) {
      double mass_k = mass_all;  // mass of the top-k set, ascending id
      if (cut_k) {
        mass_k = 0.0;
        for (int v = 0; v < V; ++v) {
          const float z = tempered_logit(row[v], t);
          if (detail::token_key(z, v) >= threshold) mass_k += static_cast<double>(kmath::exp(z - m));
        }
      }
      const double target = static_cast<double>(p.top_p) * mass_k;
      double mass = 0.0;  // mass of the prefix, in order
      for (int i = 0; i < n_k; ++i) {
        if (i == popped) detail::heap_pop(work, V - popped++);
        const std::uint64_t key = work[V - 1 - i];
        mass += static_cast<double>(kmath::exp(detail::key_logit(key) - m));
        if (mass >= target) {
          threshold = key;
          break;
        }
      }  // not reached by the whole top-k set only through double rounding: all of it is kept
    }
  }

  // Kept mass in ascending id: fp32 (for logmu; S itself when all are kept), double (the walk).
  float sum_kept = s.sum_exp;
  double mass_kept = mass_all;
  if (threshold != 0) {
    sum_kept = 0.0f;
    mass_kept = 0.0;
    for (int v = 0; v < V; ++v) {
      const float z = tempered_logit(row[v], t);
      if (detail::token_key(z, v) >= threshold) {
        const float e = kmath::exp(z - m);
        sum_kept += e;
        mass_kept += static_cast<double>(e);
      }
    }
  }
  // Inverse CDF; the arg-max token (e = 1) is always kept, so some token has e > 0.
  const double target = u * mass_kept;
  double c = 0.0;
  int token = -1, last_positive = -1;
  for (int v = 0; v < V; ++v) {
    const float z = tempered_logit(row[v], t);
    if (detail::token_key(z, v) < threshold) continue;
    const float e = kmath::exp(z - m);
    if (!(e > 0.0f)) continue;
    c += static_cast<double>(e);
    last_positive = v;
    if (c > target) {
      token = v;
      break;
    }
  }
  if (token < 0) token = last_positive;  // u * mass rounded up to the full mass
  const float log_kept = threshold == 0 ? s.log_sum_exp : kmath::log(sum_kept);  // = log S if all are kept
  return SampledToken{token, (tempered_logit(row[token], t) - m) - log_kept};
}

// ---- the batched sampler ------------------------------------------------------------------------

// Samples one token per row.  logits (B,V) T, seq_id (B), pos (B) -> token (B), logmu (B) fp32,
// full_logprobs (B,V) fp32 or extent 0 (skipped). Throws std::invalid_argument on bad params/shapes.
template <class T, class Exec>
void sample_tokens(const Exec& space, const ConstView2<T>& logits, const ConstView1<std::uint64_t>& seq_id,
                   const ConstView1<int>& pos, const SamplingParams& p, std::uint64_t seed, std::uint64_t step,
                   const View1<int>& token, const View1<float>& logmu, const View2<float>& full_logprobs);

#define MANTISSA_SAMPLING_DECLARE(EXTERN, T)                                                                   \
  EXTERN template void sample_tokens<T, ExecSpace>(                                                            \
      const ExecSpace&, const ConstView2<T>&, const ConstView1<std::uint64_t>&, const ConstView1<int>&,        \
      const SamplingParams&, std::uint64_t, std::uint64_t, const View1<int>&, const View1<float>&,             \
      const View2<float>&);
MANTISSA_SAMPLING_DECLARE(extern, float)
MANTISSA_SAMPLING_DECLARE(extern, fp16_t)
MANTISSA_SAMPLING_DECLARE(extern, bf16_t)

}  // namespace mantissa
