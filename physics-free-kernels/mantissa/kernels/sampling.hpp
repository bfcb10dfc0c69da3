#pragma once
// The rollout engine's token sampler: temperature, top-k, top-p (nucleus), inverse-CDF draw from
// a counter-based uniform, and the log-probability log mu of the drawn token. Per row b of the
// logits (B,V), in fp32, except the masses that only pick tokens, which are exact (see below):
//
//   z_v   = to_float(x_v) / temperature                     (one IEEE division, correctly rounded)
//   m     = max_v z_v (+0 when the maximum is a zero),  d_v = z_v - m,  e_v = exp(d_v)
//   S     = lane sum of the e_v (fp32, fixed shape, below),  log p_v = d_v - log S  (row_log_softmax)
//   E_v   = floor(e_v 2^63), an integer: the mass of token v (exactly e_v 2^63 for e_v >= 2^-40);
//           every mass below is an exact integer sum of E_v (128 bits), so no mass, and nothing
//           decided by one, depends on a summation order
//   order = z descending, ties by lower token id (a strict total order; equal z are equal probabilities)
//   top-k = the first min(k, V) tokens of the order                          (k = 0: all V)
//   top-p = the shortest prefix of the order within the top-k set whose mass reaches top_p times
//           the top-k set's mass, compared exactly (the distribution is renormalised over top-k first,
//           as in vLLM and HF transformers); at least one token is always kept
//   draw  = u = uniform_open01(counter_hash(seed, step, seq_id[b], pos[b])), used as j / 2^54 with
//           j = floor(u 2^54) (exact: uniform_open01 returns odd multiples of 2^-54); the token is
//           the first kept token in ascending id whose cumulative kept mass exceeds u M_kept exactly
//           (M_kept = the kept set's mass): token v is drawn with probability E_v / M_kept
//   logmu = d_token - log(S_kept), S_kept = lane sum of e_v over the kept tokens (fp32).
//
// The lane sum (fp32, its shape depends on V only): lane r in [0, 256) sums, from 0, the terms of
// v = r, r + 256, r + 512, ... in ascending v; then lane[i] += lane[i + w] for w = 128, 64, ..., 1,
// and the sum is lane[0]. It is what one thread or a team of any size computes, bit for bit.
// When the kept set is the whole vocabulary (no truncation, or truncation that keeps everything)
// S_kept is S term for term, so logmu equals row_log_softmax's value at the token bit for bit:
// a training engine that calls row_log_softmax / row_softmax_stats + row_logprob on the same logits
// (or team_row_softmax_stats, the same bits from a team) reproduces log mu exactly.
// The masses are exact to 2^-63 of the largest term, so tokens far below fp32 resolution of S keep
// their probability (an fp32 walk would round a token of probability < 6e-8 S to 0 or to 2^-24 S);
// only tokens with e_v < 2^-40 (probability < 1e-12) lose relative precision (< 2^-23 at 2^-40),
// and tokens with e_v < 2^-63 are never drawn. (Until the team path came, S was summed in ascending
// v and the masses in double, in order: logmu and full_logprobs then differed from today's in the last
// bits; tokens only where a double rounding decided a draw or a top-p boundary, or through E_v's floor.)
//
// temperature == 0 is greedy: token = argmax_v x_v (lowest id on ties), logmu = 0, and the
// full_logprobs row (if asked for) is the point mass actually sampled from: 0 at the token, -inf
// elsewhere. A row with a NaN logit, or whose largest tempered logit is +-inf (all -inf, an
// overflowed logit, or x/temperature overflowing), gets token -1, logmu NaN and a NaN
// full_logprobs row (loud). -inf logits elsewhere are fine (masked tokens, probability 0).
//
// Results depend only on (logits row, params, seed, step, seq_id[b], pos[b]), not on B, the row
// order, the MPI rank count, the thread count, the path or the team size. Two paths compute the
// definitions above, bit for bit the same:
//   per_row  one thread per row, serial over the vocabulary (RangePolicy over rows); top-k/top-p
//            select through a per-row binary heap of 64-bit keys (ordered bits of z << 32 | ~v).
//            The default where the execution space's memory is HostSpace.
//   team     one team per row (TeamPolicy, default team size min(256, the backend's maximum)),
//            threads over the vocabulary: max and S by team reductions and the lane sum, top-k and
//            top-p by a radix select on the same 64-bit keys (8 passes of 8-bit digits over the row,
//            counts for top-k, exact masses for top-p, histograms in team scratch), the draw by
//            per-thread chunk masses, their prefix, and a walk of the one chunk holding the target.
//            The default elsewhere (GPUs). detail::sample_tokens takes the path and the team size.
// Across backends results are identical up to the libm: exp and log of the device (CUDA expf, 2 ulp)
// may differ in the last bit from glibc's.
//
// Workspace: the per_row path's top-k/top-p heap lives in a process-wide buffer of B*V keys that
// grows to the largest call and is reused (no allocation once warm); it is freed at Kokkos::finalize
// or by sampling_release_workspace(). Per_row calls that truncate must therefore not run concurrently
// on different execution space instances. The team path allocates nothing: its scratch is per team
// (level 0, 5184 bytes + 16 per thread). Cost per row, per_row: O(V) without truncation;
// O(V + n log V) with it, n the number of tokens taken from the heap (top_k, or the top-p prefix):
// O(V log V) at worst. Team: 2 passes over the row (max, S) + 1 (draw) + 1 (kept sums) when
// truncating, + 8 for top-k (+ 1 for its mass when top-p also cuts) + 8 for top-p, each split over
// the team's threads, and a walk of at most ceil(V / team size) tokens.
#include <cstdint>
#include <type_traits>

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

// How sample_tokens parallelises (see the header comment); both give the same bits.
enum class SamplingPath { automatic, per_row, team };

namespace detail {
// The key buffer, grown to at least n keys (host only).
View1<std::uint64_t> sampling_workspace(std::size_t n);

// The path `automatic` picks for Exec: per_row where its memory is HostSpace, team elsewhere.
template <class Exec>
constexpr SamplingPath default_sampling_path() {
  return std::is_same<typename Exec::memory_space, Kokkos::HostSpace>::value ? SamplingPath::per_row
                                                                             : SamplingPath::team;
}

// ---- exact masses: 128-bit unsigned integers --------------------------------------------------
struct Mass128 {
  std::uint64_t hi, lo;
};
KOKKOS_INLINE_FUNCTION Mass128 mass_zero() { return Mass128{0, 0}; }
// E = floor(e 2^63) for e in [0, 1] (the product is exact in fp32; the conversion truncates).
KOKKOS_INLINE_FUNCTION std::uint64_t mass_term(float e) {
  return static_cast<std::uint64_t>(e * 9223372036854775808.0f);
}
KOKKOS_INLINE_FUNCTION void mass_add(Mass128& a, std::uint64_t x) {
  a.lo += x;
  a.hi += a.lo < x ? 1u : 0u;
}
KOKKOS_INLINE_FUNCTION void mass_add(Mass128& a, const Mass128& b) {
  a.lo += b.lo;
  a.hi += b.hi + (a.lo < b.lo ? 1u : 0u);
}
KOKKOS_INLINE_FUNCTION Mass128 mass_sub(const Mass128& a, const Mass128& b) {  // a >= b
  return Mass128{a.hi - b.hi - (a.lo < b.lo ? 1u : 0u), a.lo - b.lo};
}
KOKKOS_INLINE_FUNCTION bool mass_less(const Mass128& a, const Mass128& b) {
  return a.hi < b.hi || (a.hi == b.hi && a.lo < b.lo);
}
// Full 64 x 64 -> 128-bit product (portable: 32-bit halves).
KOKKOS_INLINE_FUNCTION Mass128 mul_64x64(std::uint64_t a, std::uint64_t b) {
  const std::uint64_t a0 = a & 0xffffffffu, a1 = a >> 32, b0 = b & 0xffffffffu, b1 = b >> 32;
  const std::uint64_t p00 = a0 * b0, p01 = a0 * b1, p10 = a1 * b0, p11 = a1 * b1;
  const std::uint64_t mid = (p00 >> 32) + (p01 & 0xffffffffu) + (p10 & 0xffffffffu);
  return Mass128{p11 + (p01 >> 32) + (p10 >> 32) + (mid >> 32), (mid << 32) | (p00 & 0xffffffffu)};
}
// floor(u M) exactly, u used as j / 2^54 with j = floor(u 2^54) (M < 2^94, the kept mass).
KOKKOS_INLINE_FUNCTION Mass128 mass_times_uniform(const Mass128& M, double u) {
  const std::uint64_t j = static_cast<std::uint64_t>(u * 18014398509481984.0);  // u 2^54, exact
  const Mass128 p_lo = mul_64x64(j, M.lo), p_hi = mul_64x64(j, M.hi);
  // The 192-bit product l2:l1:l0, shifted right by 54.
  const std::uint64_t l0 = p_lo.lo;
  const std::uint64_t l1 = p_lo.hi + p_hi.lo;
  const std::uint64_t l2 = p_hi.hi + (l1 < p_hi.lo ? 1u : 0u);
  return Mass128{(l1 >> 54) | (l2 << 10), (l0 >> 54) | (l1 << 10)};
}
// ceil(top_p M) exactly, top_p in (0, 1] (M < 2^94, the top-k mass).
KOKKOS_INLINE_FUNCTION Mass128 mass_times_top_p(const Mass128& M, float top_p) {
  const std::uint32_t bits = float_bits(top_p);
  const std::uint32_t biased = (bits >> 23) & 0xffu;
  // top_p = f 2^-s with f < 2^24 an integer, s >= 23 (top_p <= 1).
  const std::uint64_t f = biased == 0 ? (bits & 0x7fffffu) : ((bits & 0x7fffffu) | 0x800000u);
  const int s = biased == 0 ? 149 : 150 - static_cast<int>(biased);
  const Mass128 a = mul_64x64(f, M.lo), b = mul_64x64(f, M.hi);  // f M < 2^118: b.hi = 0
  Mass128 prod{a.hi + b.lo, a.lo};
  if (s >= 128) return Mass128{0, (prod.hi | prod.lo) != 0 ? 1u : 0u};
  Mass128 q;
  bool rem;
  if (s >= 64) {
    q = Mass128{0, s == 64 ? prod.hi : prod.hi >> (s - 64)};
    rem = prod.lo != 0 || (s > 64 && (prod.hi << (128 - s)) != 0);
  } else {
    q = Mass128{prod.hi >> s, (prod.lo >> s) | (prod.hi << (64 - s))};
    rem = (prod.lo << (64 - s)) != 0;
  }
  if (rem) mass_add(q, std::uint64_t(1));
  return q;
}

// ---- the lane sum ------------------------------------------------------------------------------
constexpr int kSumLanes = 256;
// The lanes a row of V tokens fills; the others stay +0.
KOKKOS_INLINE_FUNCTION int lanes_used(int V) { return V < kSumLanes ? V : kSumLanes; }
// lane[i] += lane[i + w] for w = 128, ..., 1; returns lane[0] (one thread). Only lane[0, n) is read:
// the lanes from n on are +0, and adding +0 to a lane (a sum of e >= 0 from +0) leaves its bits.
KOKKOS_INLINE_FUNCTION float lane_tree_sum(float* lane, int n) {
  for (int w = kSumLanes / 2; w >= 1; w /= 2) {
    for (int i = 0; i + w < n; ++i) lane[i] += lane[i + w];
    n = n < w ? n : w;
  }
  return lane[0];
}
}  // namespace detail

// ---- per-row building blocks, callable inside any kernel --------------------------------------

// Statistics of log_softmax(x / temperature) of one row.
struct RowSoftmaxStats {
  float max;          // m = max_v z_v (+0 for a zero maximum)
  float sum_exp;      // S = the lane sum of exp(z_v - m), fp32 (header comment)
  float log_sum_exp;  // log S (the row's lse is m + log S)
  bool ok;            // false: a NaN (then max is NaN too), or m = +-inf (then sum_exp and log_sum_exp are NaN)
};

KOKKOS_INLINE_FUNCTION float nan_float() { return bits_float(0x7fc00000u); }
KOKKOS_INLINE_FUNCTION float neg_inf_float() { return bits_float(0xff800000u); }

// z = x / temperature in fp32 (temperature 1 leaves x exact).
template <class T>
KOKKOS_INLINE_FUNCTION float tempered_logit(const T& x, float temperature) {
  return to_float(x) / temperature;
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
// ordered_bits, with NaN mapped above every number (a max reduction then flags it).
constexpr std::uint32_t kNanOrdered = 0xffffffffu;
KOKKOS_INLINE_FUNCTION std::uint32_t ordered_bits_nan_max(float z) { return z != z ? kNanOrdered : ordered_bits(z); }
// The row's m and ok from the maximum of ordered_bits_nan_max.
KOKKOS_INLINE_FUNCTION RowSoftmaxStats stats_from_max(std::uint32_t max_key) {
  const float m = from_ordered_bits(max_key);
  const bool ok = max_key != kNanOrdered && m > neg_inf_float() && m < -neg_inf_float();
  return RowSoftmaxStats{m, nan_float(), nan_float(), ok};
}

// row_softmax_stats, also accumulating the exact mass sum_v E_v into *mass when mass != nullptr
// (the sampler's draw needs it).
template <class T>
KOKKOS_INLINE_FUNCTION RowSoftmaxStats row_softmax_stats(const T* row, int V, float temperature, Mass128* mass) {
  std::uint32_t max_key = 0;
  for (int v = 0; v < V; ++v) max_key = kmax(max_key, ordered_bits_nan_max(tempered_logit(row[v], temperature)));
  RowSoftmaxStats s = stats_from_max(max_key);
  if (!s.ok) return s;
  const float m = s.max;
  float lane[kSumLanes];
  const int n_lanes = lanes_used(V);
  for (int r = 0; r < n_lanes; ++r) lane[r] = 0.0f;
  Mass128 sum_m = mass_zero();
  for (int v = 0; v < V; ++v) {
    const float e = kmath::exp(tempered_logit(row[v], temperature) - m);
    lane[v % kSumLanes] += e;
    if (mass != nullptr) mass_add(sum_m, mass_term(e));
  }
  if (mass != nullptr) *mass = sum_m;
  s.sum_exp = lane_tree_sum(lane, n_lanes);
  s.log_sum_exp = kmath::log(s.sum_exp);
  return s;
}
}  // namespace detail

// m, S (the lane sum of exp(z - m)), log S.                                   row (V) -> stats
template <class T>
KOKKOS_INLINE_FUNCTION RowSoftmaxStats row_softmax_stats(const T* row, int V, float temperature) {
  return detail::row_softmax_stats(row, V, temperature, static_cast<detail::Mass128*>(nullptr));
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

// One row: the whole sampler above (the per_row path). work: V keys (read only when top_k or top_p
// truncates); full: V floats or nullptr. u in (0, 1).          row (V) -> token, logmu [, full (V)]
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
  detail::Mass128 mass_all = detail::mass_zero();  // sum_v E_v
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
      detail::Mass128 mass_k = mass_all;  // mass of the top-k set
      if (cut_k) {
        mass_k = detail::mass_zero();
        for (int i = 0; i < n_k; ++i)
          detail::mass_add(mass_k, detail::mass_term(kmath::exp(detail::key_logit(work[V - 1 - i]) - m)));
      }
      const detail::Mass128 target = detail::mass_times_top_p(mass_k, p.top_p);  // <= mass_k
      detail::Mass128 mass = detail::mass_zero();  // mass of the prefix
      for (int i = 0; i < n_k; ++i) {
        if (i == popped) detail::heap_pop(work, V - popped++);
        const std::uint64_t key = work[V - 1 - i];
        detail::mass_add(mass, detail::mass_term(kmath::exp(detail::key_logit(key) - m)));
        if (!detail::mass_less(mass, target)) {
          threshold = key;
          break;
        }
      }  // always reached by i = n_k - 1 (the whole top-k set)
    }
  }

  // Kept sums: the fp32 lane sum (logmu; S itself when all are kept) and the exact mass (the draw).
  float sum_kept = s.sum_exp;
  detail::Mass128 mass_kept = mass_all;
  if (threshold != 0) {
    float lane[detail::kSumLanes];
    const int n_lanes = detail::lanes_used(V);
    for (int r = 0; r < n_lanes; ++r) lane[r] = 0.0f;
    mass_kept = detail::mass_zero();
    for (int v = 0; v < V; ++v) {
      const float z = tempered_logit(row[v], t);
      if (detail::token_key(z, v) >= threshold) {
        const float e = kmath::exp(z - m);
        lane[v % detail::kSumLanes] += e;
        detail::mass_add(mass_kept, detail::mass_term(e));
      }
    }
    sum_kept = detail::lane_tree_sum(lane, n_lanes);
  }
  // Inverse CDF: the first kept v whose cumulative mass exceeds floor(u M_kept) < M_kept.
  const detail::Mass128 target = detail::mass_times_uniform(mass_kept, u);
  detail::Mass128 c = detail::mass_zero();
  int token = -1;
  for (int v = 0; v < V; ++v) {
    const float z = tempered_logit(row[v], t);
    if (detail::token_key(z, v) < threshold) continue;
    detail::mass_add(c, detail::mass_term(kmath::exp(z - m)));
    if (detail::mass_less(target, c)) {
      token = v;
      break;
    }
  }
  const float log_kept = threshold == 0 ? s.log_sum_exp : kmath::log(sum_kept);  // = log S if all are kept
  return SampledToken{token, (tempered_logit(row[token], t) - m) - log_kept};
}

// ---- team building blocks (every thread of the team calls them; all get the same result) ----------

namespace detail {
// The team path's scratch, in 64-bit words: the lanes, per-thread masses, radix bins, broadcasts.
KOKKOS_INLINE_FUNCTION int sampling_team_scratch_words(int team_size) {
  return kSumLanes / 2 + 2 * team_size + 2 * 256 + 8;
}
struct SamplingTeamScratch {
  float* lane;           // kSumLanes
  std::uint64_t* part;   // 2 per thread: a mass (hi, lo)
  std::uint64_t* hist;   // 256 bins of high-half sums, then 256 of low-half sums
  std::uint64_t* bcast;  // 8 words
};
KOKKOS_INLINE_FUNCTION SamplingTeamScratch sampling_team_scratch(std::uint64_t* w, int team_size) {
  SamplingTeamScratch s;
  s.lane = reinterpret_cast<float*>(w);
  s.part = w + kSumLanes / 2;
  s.hist = s.part + 2 * team_size;
  s.bcast = s.hist + 2 * 256;
  return s;
}

// The sum of every thread's `mine` (exact, so in any order).
template <class Member>
KOKKOS_INLINE_FUNCTION Mass128 team_mass_total(const Member& team, std::uint64_t* part, const Mass128& mine) {
  const int r = team.team_rank(), n = team.team_size();
  part[2 * r] = mine.hi;
  part[2 * r + 1] = mine.lo;
  team.team_barrier();
  Mass128 total = mass_zero();
  for (int i = 0; i < n; ++i) mass_add(total, Mass128{part[2 * i], part[2 * i + 1]});
  team.team_barrier();  // part is reused
  return total;
}

// The lane sum of e_v = exp(z_v - m) over the tokens with key >= threshold (0: all), the lanes split
// over the team's threads; adds the same tokens' E_v to this thread's *mine (if not null).
template <class Member, class T>
KOKKOS_INLINE_FUNCTION float team_lane_sum(const Member& team, float* lane, const T* row, int V, float temperature,
                                           float m, std::uint64_t threshold, Mass128* mine) {
  const int r0 = team.team_rank(), n = team.team_size();
  int used = lanes_used(V);
  for (int r = r0; r < used; r += n) {
    float acc = 0.0f;
    for (int v = r; v < V; v += kSumLanes) {
      const float z = tempered_logit(row[v], temperature);
      if (token_key(z, v) < threshold) continue;
      const float e = kmath::exp(z - m);
      acc += e;
      if (mine != nullptr) mass_add(*mine, mass_term(e));
    }
    lane[r] = acc;
  }
  team.team_barrier();
  for (int w = kSumLanes / 2; w >= 1; w /= 2) {  // lane_tree_sum's adds, split over the threads
    for (int i = r0; i + w < used; i += n) lane[i] += lane[i + w];
    used = used < w ? used : w;
    team.team_barrier();
  }
  const float sum = lane[0];
  team.team_barrier();  // lane is reused
  return sum;
}

// team_row_softmax_stats, also adding this thread's share of sum_v E_v to *mine (if not null).
template <class Member, class T>
KOKKOS_INLINE_FUNCTION RowSoftmaxStats team_row_softmax_stats(const Member& team, const T* row, int V,
                                                              float temperature, float* lane, Mass128* mine) {
  std::uint32_t max_key = 0;
  Kokkos::parallel_reduce(
      Kokkos::TeamThreadRange(team, V),
      [&](const int v, std::uint32_t& acc) {
        acc = kmax(acc, ordered_bits_nan_max(tempered_logit(row[v], temperature)));
      },
      Kokkos::Max<std::uint32_t>(max_key));
  RowSoftmaxStats s = stats_from_max(max_key);
  if (!s.ok) return s;
  s.sum_exp = team_lane_sum(team, lane, row, V, temperature, s.max, 0, mine);
  s.log_sum_exp = kmath::log(s.sum_exp);
  return s;
}
}  // namespace detail

// row_softmax_stats from a team (threads over the vocabulary), the same bits. lane: kSumLanes
// (256) floats of team scratch (detail::kSumLanes).                            row (V) -> stats
template <class Member, class T>
KOKKOS_INLINE_FUNCTION RowSoftmaxStats team_row_softmax_stats(const Member& team, const T* row, int V,
                                                              float temperature, float* lane) {
  return detail::team_row_softmax_stats(team, row, V, temperature, lane, static_cast<detail::Mass128*>(nullptr));
}

namespace detail {
// Radix select on the keys >= floor: the key K of the row with  q(keys > K) < need <= q(keys >= K),
// q = the count (by_mass false) or the mass (by_mass true); need must be in (0, q(keys >= floor)].
// 8 passes of 8-bit digits from the top, each a histogram in team scratch.
template <class Member, class T>
KOKKOS_INLINE_FUNCTION std::uint64_t team_radix_select(const Member& team, const SamplingTeamScratch& w,
                                                       const T* row, int V, float temperature, float m,
                                                       std::uint64_t floor, Mass128 need, bool by_mass) {
  const int r0 = team.team_rank(), n = team.team_size();
  std::uint64_t prefix = 0;
  for (int shift = 56; shift >= 0; shift -= 8) {
    const std::uint64_t hi_mask = shift == 56 ? 0 : (~std::uint64_t(0) << (shift + 8));
    for (int i = r0; i < 2 * 256; i += n) w.hist[i] = 0;
    team.team_barrier();
    Kokkos::parallel_for(Kokkos::TeamThreadRange(team, V), [&](const int v) {
      const float z = tempered_logit(row[v], temperature);
      const std::uint64_t key = token_key(z, v);
      if (key < floor || (key & hi_mask) != prefix) return;
      const int d = static_cast<int>((key >> shift) & 0xffu);
      if (by_mass) {
        const std::uint64_t e = mass_term(kmath::exp(z - m));
        if (e == 0) return;
        Kokkos::atomic_add(&w.hist[d], e >> 32);
        Kokkos::atomic_add(&w.hist[256 + d], e & 0xffffffffu);
      } else {
        Kokkos::atomic_add(&w.hist[256 + d], std::uint64_t(1));
      }
    });
    team.team_barrier();
    Kokkos::single(Kokkos::PerTeam(team), [&]() {
      Mass128 left = need;
      int d = 255;
      for (; d > 0; --d) {
        Mass128 bin{w.hist[d] >> 32, w.hist[d] << 32};
        mass_add(bin, w.hist[256 + d]);
        if (!mass_less(bin, left)) break;
        left = mass_sub(left, bin);
      }
      w.bcast[0] = prefix | (static_cast<std::uint64_t>(d) << shift);
      w.bcast[1] = left.hi;
      w.bcast[2] = left.lo;
    });
    team.team_barrier();
    prefix = w.bcast[0];
    need = Mass128{w.bcast[1], w.bcast[2]};
  }
  team.team_barrier();  // bcast is reused
  return prefix;
}

// The mass of the tokens with key >= threshold.
template <class Member, class T>
KOKKOS_INLINE_FUNCTION Mass128 team_kept_mass(const Member& team, std::uint64_t* part, const T* row, int V,
                                              float temperature, float m, std::uint64_t threshold) {
  Mass128 mine = mass_zero();
  Kokkos::parallel_for(Kokkos::TeamThreadRange(team, V), [&](const int v) {
    const float z = tempered_logit(row[v], temperature);
    if (token_key(z, v) >= threshold) mass_add(mine, mass_term(kmath::exp(z - m)));
  });
  return team_mass_total(team, part, mine);
}

// The first v (ascending id) with key >= threshold whose cumulative mass exceeds target
// (target < the kept mass): per-thread masses of contiguous chunks of ids, their prefix, and a
// walk of the chunk that holds the target.
template <class Member, class T>
KOKKOS_INLINE_FUNCTION int team_draw(const Member& team, const SamplingTeamScratch& w, const T* row, int V,
                                     float temperature, float m, std::uint64_t threshold, const Mass128& target) {
  const int r = team.team_rank(), n = team.team_size();
  const long long chunk = (static_cast<long long>(V) + n - 1) / n;
  const int lo = static_cast<int>(kmin(static_cast<long long>(V), r * chunk));
  const int hi = static_cast<int>(kmin(static_cast<long long>(V), lo + chunk));
  Mass128 mine = mass_zero();
  for (int v = lo; v < hi; ++v) {
    const float z = tempered_logit(row[v], temperature);
    if (token_key(z, v) >= threshold) mass_add(mine, mass_term(kmath::exp(z - m)));
  }
  w.part[2 * r] = mine.hi;
  w.part[2 * r + 1] = mine.lo;
  team.team_barrier();
  Mass128 c = mass_zero();  // the mass of the chunks before this one
  for (int i = 0; i < r; ++i) mass_add(c, Mass128{w.part[2 * i], w.part[2 * i + 1]});
  Mass128 after = c;
  mass_add(after, mine);
  if (!mass_less(target, c) && mass_less(target, after)) {  // exactly one thread
    for (int v = lo; v < hi; ++v) {
      const float z = tempered_logit(row[v], temperature);
      if (token_key(z, v) < threshold) continue;
      mass_add(c, mass_term(kmath::exp(z - m)));
      if (mass_less(target, c)) {
        w.bcast[3] = static_cast<std::uint64_t>(v);
        break;
      }
    }
  }
  team.team_barrier();
  const int token = static_cast<int>(w.bcast[3]);
  team.team_barrier();
  return token;
}

// sample_row from a team (the team path): the same bits. w: sampling_team_scratch_words words of
// team scratch; full: V floats or nullptr.
template <class Member, class T>
KOKKOS_INLINE_FUNCTION SampledToken team_sample_row(const Member& team, const SamplingTeamScratch& w, const T* row,
                                                    int V, const SamplingParams& p, double u, float* full) {
  if (p.temperature == 0.0f) {  // greedy: the largest key of x (lowest id on ties); NaN above all
    std::uint64_t best = 0;
    Kokkos::parallel_reduce(
        Kokkos::TeamThreadRange(team, V),
        [&](const int v, std::uint64_t& acc) {
          const float x = to_float(row[v]);
          acc = kmax(acc, x != x ? ~std::uint64_t(0) : token_key(x, v));
        },
        Kokkos::Max<std::uint64_t>(best));
    const float best_x = key_logit(best);
    const bool ok = best != ~std::uint64_t(0) && best_x > neg_inf_float() && best_x < -neg_inf_float();
    const int token = static_cast<int>(~static_cast<std::uint32_t>(best));
    if (full != nullptr)
      Kokkos::parallel_for(Kokkos::TeamThreadRange(team, V), [&](const int v) {
        full[v] = !ok ? nan_float() : (v == token ? 0.0f : neg_inf_float());
      });
    return ok ? SampledToken{token, 0.0f} : SampledToken{-1, nan_float()};
  }

  const float t = p.temperature;
  Mass128 mine = mass_zero();
  const RowSoftmaxStats s = team_row_softmax_stats(team, row, V, t, w.lane, &mine);
  if (full != nullptr)
    Kokkos::parallel_for(Kokkos::TeamThreadRange(team, V), [&](const int v) {
      full[v] = s.ok ? row_logprob(row[v], t, s) : nan_float();
    });
  if (!s.ok) return SampledToken{-1, nan_float()};
  const Mass128 mass_all = team_mass_total(team, w.part, mine);
  const float m = s.max;

  std::uint64_t threshold = 0;
  const bool cut_k = p.top_k > 0 && p.top_k < V;
  const bool cut_p = p.top_p < 1.0f;
  if (cut_k)
    threshold = team_radix_select(team, w, row, V, t, m, 0, Mass128{0, static_cast<std::uint64_t>(p.top_k)}, false);
  if (cut_p) {
    const Mass128 mass_k = cut_k ? team_kept_mass(team, w.part, row, V, t, m, threshold) : mass_all;
    threshold = team_radix_select(team, w, row, V, t, m, threshold, mass_times_top_p(mass_k, p.top_p), true);
  }

  float sum_kept = s.sum_exp;
  Mass128 mass_kept = mass_all;
  if (threshold != 0) {
    Mass128 kept_mine = mass_zero();
    sum_kept = team_lane_sum(team, w.lane, row, V, t, m, threshold, &kept_mine);
    mass_kept = team_mass_total(team, w.part, kept_mine);
  }
  const int token = team_draw(team, w, row, V, t, m, threshold, mass_times_uniform(mass_kept, u));
  const float log_kept = threshold == 0 ? s.log_sum_exp : kmath::log(sum_kept);
  return SampledToken{token, (tempered_logit(row[token], t) - m) - log_kept};
}
}  // namespace detail

// ---- the batched sampler ------------------------------------------------------------------------

// Samples one token per row.  logits (B,V) T, seq_id (B), pos (B) -> token (B), logmu (B) fp32,
// full_logprobs (B,V) fp32 or extent 0 (skipped). Throws std::invalid_argument on bad params/shapes.
// The path is detail::default_sampling_path<Exec>().
template <class T, class Exec>
void sample_tokens(const Exec& space, const ConstView2<T>& logits, const ConstView1<std::uint64_t>& seq_id,
                   const ConstView1<int>& pos, const SamplingParams& p, std::uint64_t seed, std::uint64_t step,
                   const View1<int>& token, const View1<float>& logmu, const View2<float>& full_logprobs);

namespace detail {
// sample_tokens on a chosen path (automatic: default_sampling_path<Exec>()). team_size (team path
// only): 0 = min(256, the backend's maximum for this kernel); otherwise exactly that many threads
// per team, and std::invalid_argument ("team size ... exceeds ...") where the backend refuses it.
template <class T, class Exec>
void sample_tokens(const Exec& space, const ConstView2<T>& logits, const ConstView1<std::uint64_t>& seq_id,
                   const ConstView1<int>& pos, const SamplingParams& p, std::uint64_t seed, std::uint64_t step,
                   const View1<int>& token, const View1<float>& logmu, const View2<float>& full_logprobs,
                   SamplingPath path, int team_size);
}  // namespace detail

#define MANTISSA_SAMPLING_DECLARE(EXTERN, T)                                                                   \
  EXTERN template void sample_tokens<T, ExecSpace>(                                                            \
      const ExecSpace&, const ConstView2<T>&, const ConstView1<std::uint64_t>&, const ConstView1<int>&,        \
      const SamplingParams&, std::uint64_t, std::uint64_t, const View1<int>&, const View1<float>&,             \
      const View2<float>&);                                                                                    \
  EXTERN template void detail::sample_tokens<T, ExecSpace>(                                                    \
      const ExecSpace&, const ConstView2<T>&, const ConstView1<std::uint64_t>&, const ConstView1<int>&,        \
      const SamplingParams&, std::uint64_t, std::uint64_t, const View1<int>&, const View1<float>&,             \
      const View2<float>&, SamplingPath, int);
MANTISSA_SAMPLING_DECLARE(extern, float)
MANTISSA_SAMPLING_DECLARE(extern, fp16_t)
MANTISSA_SAMPLING_DECLARE(extern, bf16_t)

}  // namespace mantissa
