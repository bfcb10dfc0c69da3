#pragma once
// Causal multi-head attention with grouped-query heads over a packed batch of variable-length
// sequences: the TRAINING engine's attention (whole sequences at once, as flash-attention 2
// computes it on a tensor core), forward and backward. The rollout engine's KV-cache decode
// attention is a different code path with different rounding points, on purpose.
//
// Layout. qkv is [N, (H + 2*Hkv)*hd] row-major, N = every token of the packed batch; columns
// [0, H*hd) are q (head h at h*hd), then k of the Hkv kv heads, then v of the Hkv kv heads.
// Query head h reads kv head h / (H / Hkv). RoPE has already been applied to q and k.
// seq_offsets (S+1): sequence s owns rows [seq_offsets[s], seq_offsets[s+1]); precondition
// seq_offsets[0] == 0, non-decreasing, seq_offsets[S] == N (empty sequences are allowed).
// Attention is causal within a sequence: row i sees keys j = start(i) .. i of its own sequence.
//
// ---- Rounding points of the training engine (the rollout/decode engine differs from these) ----
// T is the storage type (float, bf16_t, fp16_t); round_T(x) = to_float(from_float<T>(x)) is
// round-to-nearest-even to T and is the identity for T = float. fp32 products and sums may be
// contracted into FMAs by the compiler (nvcc does; g++ does whenever the target has FMA, e.g. -march=native).
// Forward, query row i of head h, keys j = start(i) .. i, all in fp32 unless said otherwise:
//   F1  q, k, v are values of T, read exactly (the kernel widens them to fp32 once).
//   F2  s_ij = (sum_{d<hd} q_id k_jd) * scale, scale = fp32(1/sqrt(hd)). Every dot product of
//       length hd here (q.k, dout.v, dout.out) sums 8 interleaved fp32 partial sums
//       (detail::attention_dot), so that the CPU vectorises it.
//   F3  m_i = max_j s_ij; e_ij = exp(s_ij - m_i); l_i = sum_j e_ij of the UNROUNDED e (j ascending).
//       exp is the fp32 kmath::exp (FA2 uses exp2 of log2(e)-prescaled scores: same math, other bits).
//   F4  p_ij = round_T(e_ij): the unnormalised probabilities are rounded to T before they
//       multiply V (FA2's conversion of the P tile to T in front of the P V tensor-core GEMM).
//   F5  o_i = sum_j p_ij v_j (j ascending); out_i = round_T(o_i * (1 / l_i)): ONE rounding.
//   F6  lse_i = m_i + log(l_i), kept in fp32 (output `lse`, saved for the backward).
//   This is FA2 with the whole row in one key block: FA2 rescales with a running max between
//   key blocks of 64-128, here m_i is the row's final max, so results depend on no block size.
// Backward (FA2 style: P recomputed from the saved fp32 lse, no N x N matrix anywhere):
//   B1  P_ij = exp(s_ij - lse_i) in fp32 (s_ij as F2), normalised, NOT rounded.
//   B2  D_i = sum_d dout_id out_id over the T values of dout and out (same dot product as dP,
//       so a single-token sequence gets dP - D = 0 and dq = 0 exactly).
//   B3  dP_ij = sum_d dout_id v_jd; dS_ij = round_T(P_ij * (dP_ij - D_i)): fp32 P here, and dS
//       rounded to T (FA2 converts dS to T in front of the dQ and dK tensor-core GEMMs).
//   B4  dq_i = round_T(scale * sum_j dS_ij k_j)                          (j ascending)
//   B5  dk_j = round_T(scale * sum_{h in group} sum_{i>=j} dS_ij q_i)      (h, then i ascending)
//   B6  dv_j = round_T(sum_{h in group} sum_{i>=j} round_T(P_ij) dout_i)  (P rounded to T, as FA2's dV GEMM)
//   GQA: dk/dv of a kv head sum the contributions of all its query heads in fp32, then round
//   once (FA2 rounds per query head and sums the rounded values outside the kernel).
//   dqkv is written, not accumulated; every element of it is written.
//
// Parallelism: forward and dq over (token, query head); dk/dv over (token, kv head), each
// thread loops over its row's keys (or queries) and owns its outputs: no atomics, no races.
// head_dim <= attention_max_head_dim (per-thread fp32 accumulators of that length).
// Temporaries per call: for 16-bit T an fp32 copy of qkv (and of dout in the backward); D (N, H).
#include <cmath>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "mantissa/kernels/convert.hpp"
#include "mantissa/kernels/types.hpp"

namespace mantissa {

inline constexpr int attention_max_head_dim = 256;

// The softmax scale 1/sqrt(head_dim), computed in double and rounded once to fp32.
inline float attention_scale(int head_dim) { return static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim))); }

namespace detail {

// Throws std::invalid_argument unless the shapes agree with the layout above.
inline void check_attention_shapes(std::size_t qkv_cols, std::size_t n_offsets, int n_head,
                                   int n_kv_head, int head_dim) {
  const auto fail = [](const std::string& what) { throw std::invalid_argument("mantissa::attention: " + what); };
  if (n_head <= 0 || n_kv_head <= 0 || n_head % n_kv_head != 0)
    fail("n_head (" + std::to_string(n_head) + ") must be a positive multiple of n_kv_head (" +
         std::to_string(n_kv_head) + ")");
  if (head_dim <= 0 || head_dim > attention_max_head_dim)
    fail("head_dim " + std::to_string(head_dim) + " outside [1, " + std::to_string(attention_max_head_dim) + "]");
  if (qkv_cols != static_cast<std::size_t>(n_head + 2 * n_kv_head) * head_dim)
    fail("qkv has " + std::to_string(qkv_cols) + " columns, expected (n_head + 2 n_kv_head) head_dim = " +
         std::to_string((n_head + 2 * n_kv_head) * head_dim));
  if (n_offsets < 1) fail("seq_offsets needs S+1 >= 1 entries");
}
inline void check_extents(const char* name, std::size_t e0, std::size_t e1, std::size_t want0, std::size_t want1) {
  if (e0 != want0 || e1 != want1)
    throw std::invalid_argument(std::string("mantissa::attention: ") + name + " is (" + std::to_string(e0) + ", " +
                                std::to_string(e1) + "), expected (" + std::to_string(want0) + ", " +
                                std::to_string(want1) + ")");
}

// Sequence of token i: the s with off(s) <= i < off(s+1) (largest such s, so empty sequences
// are skipped). Requires off(0) <= i < off(S).
KOKKOS_INLINE_FUNCTION int attention_sequence_of(const ConstView1<int>& off, int i) {
  int lo = 0, hi = static_cast<int>(off.extent(0)) - 1;
  while (hi - lo > 1) {
    const int mid = lo + (hi - lo) / 2;
    if (off(mid) <= i)
      lo = mid;
    else
      hi = mid;
  }
  return lo;
}

// sum_d a[d] b[d] in fp32 over 8 interleaved partial sums (lane r takes d = r mod 8, d ascending),
// combined as ((s0+s4)+(s2+s6))+((s1+s5)+(s3+s7)). Independent lanes: the CPU vectorises it.
template <class A, class B>
KOKKOS_INLINE_FUNCTION float attention_dot(const A* a, const B* b, int n) {
  float s[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
  int d = 0;
  for (; d + 8 <= n; d += 8)
    for (int r = 0; r < 8; ++r) s[r] += to_float(a[d + r]) * to_float(b[d + r]);
  for (int r = 0; d + r < n; ++r) s[r] += to_float(a[d + r]) * to_float(b[d + r]);
  return ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
}

}  // namespace detail

// out[i, h*hd:(h+1)*hd] = sum_{j<=i, same seq} P[h,i,j] v[j, kvh(h)],  P = softmax_j(q_i . k_j * scale)
// qkv (N, (H+2Hkv)hd), seq_offsets (S+1) -> out (N, H*hd), lse (N, H) fp32 logsumexp of the scaled scores
template <class T, class Exec>
void attention_forward(const Exec& space, ConstView2<T> qkv, ConstView1<int> seq_offsets, int n_head, int n_kv_head,
                       int head_dim, View2<T> out, View2<float> lse) {
  const std::size_t n = qkv.extent(0);
  detail::check_attention_shapes(qkv.extent(1), seq_offsets.extent(0), n_head, n_kv_head, head_dim);
  detail::check_extents("out", out.extent(0), out.extent(1), n, static_cast<std::size_t>(n_head) * head_dim);
  detail::check_extents("lse", lse.extent(0), lse.extent(1), n, static_cast<std::size_t>(n_head));
  const ConstView2<float> x = widen_to_fp32<T>(space, qkv, "mantissa::attention::qkv_fp32");
  const int hd = head_dim, group = n_head / n_kv_head;
  const int k_col = n_head * hd, v_col = (n_head + n_kv_head) * hd;
  const float scale = attention_scale(hd);
  const std::size_t heads = static_cast<std::size_t>(n_head);
  Kokkos::parallel_for(
      "mantissa::attention::forward", Kokkos::RangePolicy<Exec>(space, 0, n * heads),
      KOKKOS_LAMBDA(const std::size_t idx) {
        const int i = static_cast<int>(idx / heads), h = static_cast<int>(idx % heads);
        const int start = seq_offsets(detail::attention_sequence_of(seq_offsets, i));
        const int kc = k_col + (h / group) * hd, vc = v_col + (h / group) * hd;
        const float* q = &x(i, h * hd);
        float m = detail::attention_dot(q, &x(start, kc), hd) * scale;  // F3: row max
        for (int j = start + 1; j <= i; ++j) m = kmax(m, detail::attention_dot(q, &x(j, kc), hd) * scale);
        float acc[attention_max_head_dim];
        for (int d = 0; d < hd; ++d) acc[d] = 0.0f;
        float l = 0.0f;
        for (int j = start; j <= i; ++j) {
          const float e = kmath::exp(detail::attention_dot(q, &x(j, kc), hd) * scale - m);
          l += e;                              // F3: unrounded
          const float p = round_to<T>(e);      // F4
          const float* v = &x(j, vc);
          for (int d = 0; d < hd; ++d) acc[d] += p * v[d];  // F5
        }
        const float inv_l = 1.0f / l;
        for (int d = 0; d < hd; ++d) out(i, h * hd + d) = from_float<T>(acc[d] * inv_l);
        lse(i, h) = m + kmath::log(l);  // F6
      });
}

// dqkv (written, not accumulated) from dout, using the saved fp32 lse (rounding points B1-B6).
// qkv (N, (H+2Hkv)hd), seq_offsets (S+1), out (N, H*hd), dout (N, H*hd), lse (N, H) -> dqkv (N, (H+2Hkv)hd)
template <class T, class Exec>
void attention_backward(const Exec& space, ConstView2<T> qkv, ConstView1<int> seq_offsets, int n_head, int n_kv_head,
                        int head_dim, ConstView2<T> out, ConstView2<T> dout, ConstView2<float> lse, View2<T> dqkv) {
  const std::size_t n = qkv.extent(0);
  detail::check_attention_shapes(qkv.extent(1), seq_offsets.extent(0), n_head, n_kv_head, head_dim);
  const std::size_t qcols = static_cast<std::size_t>(n_head) * head_dim;
  detail::check_extents("out", out.extent(0), out.extent(1), n, qcols);
  detail::check_extents("dout", dout.extent(0), dout.extent(1), n, qcols);
  detail::check_extents("lse", lse.extent(0), lse.extent(1), n, static_cast<std::size_t>(n_head));
  detail::check_extents("dqkv", dqkv.extent(0), dqkv.extent(1), n, qkv.extent(1));
  const int hd = head_dim, group = n_head / n_kv_head;
  const int k_col = n_head * hd, v_col = (n_head + n_kv_head) * hd;
  const float scale = attention_scale(hd);
  const std::size_t heads = static_cast<std::size_t>(n_head), kv_heads = static_cast<std::size_t>(n_kv_head);

  // B2: D (N, H)
  const View2<float> delta(Kokkos::view_alloc(std::string("mantissa::attention::delta"), Kokkos::WithoutInitializing),
                           n, heads);
  Kokkos::parallel_for(
      "mantissa::attention::backward_delta", Kokkos::RangePolicy<Exec>(space, 0, n * heads),
      KOKKOS_LAMBDA(const std::size_t idx) {
        const int i = static_cast<int>(idx / heads), h = static_cast<int>(idx % heads);
        delta(i, h) = detail::attention_dot(&dout(i, h * hd), &out(i, h * hd), hd);
      });
  const ConstView2<float> x = widen_to_fp32<T>(space, qkv, "mantissa::attention::qkv_fp32");
  const ConstView2<float> g = widen_to_fp32<T>(space, dout, "mantissa::attention::dout_fp32");

  // B4: dq, one thread per (query row i, query head h), looping over the row's keys j <= i.
  Kokkos::parallel_for(
      "mantissa::attention::backward_dq", Kokkos::RangePolicy<Exec>(space, 0, n * heads),
      KOKKOS_LAMBDA(const std::size_t idx) {
        const int i = static_cast<int>(idx / heads), h = static_cast<int>(idx % heads);
        const int start = seq_offsets(detail::attention_sequence_of(seq_offsets, i));
        const int kc = k_col + (h / group) * hd, vc = v_col + (h / group) * hd;
        const float* q = &x(i, h * hd);
        const float* go = &g(i, h * hd);
        const float lse_i = lse(i, h), d_i = delta(i, h);
        float acc[attention_max_head_dim];
        for (int d = 0; d < hd; ++d) acc[d] = 0.0f;
        for (int j = start; j <= i; ++j) {
          const float* k = &x(j, kc);
          const float p = kmath::exp(detail::attention_dot(q, k, hd) * scale - lse_i);             // B1
          const float ds = round_to<T>(p * (detail::attention_dot(go, &x(j, vc), hd) - d_i));  // B3
          for (int d = 0; d < hd; ++d) acc[d] += ds * k[d];
        }
        for (int d = 0; d < hd; ++d) dqkv(i, h * hd + d) = from_float<T>(scale * acc[d]);
      });

  // B5, B6: dk and dv, one thread per (key row j, kv head c), looping over the query heads of
  // the group and the sequence's queries i >= j.
  Kokkos::parallel_for(
      "mantissa::attention::backward_dkv", Kokkos::RangePolicy<Exec>(space, 0, n * kv_heads),
      KOKKOS_LAMBDA(const std::size_t idx) {
        const int j = static_cast<int>(idx / kv_heads), c = static_cast<int>(idx % kv_heads);
        const int end = seq_offsets(detail::attention_sequence_of(seq_offsets, j) + 1);
        const float* k = &x(j, k_col + c * hd);
        const float* v = &x(j, v_col + c * hd);
        float acc_k[attention_max_head_dim], acc_v[attention_max_head_dim];
        for (int d = 0; d < hd; ++d) acc_k[d] = acc_v[d] = 0.0f;
        for (int h = c * group; h < (c + 1) * group; ++h) {
          for (int i = j; i < end; ++i) {
            const float* q = &x(i, h * hd);
            const float* go = &g(i, h * hd);
            const float p = kmath::exp(detail::attention_dot(q, k, hd) * scale - lse(i, h));     // B1
            const float pt = round_to<T>(p);                                                     // B6
            const float ds = round_to<T>(p * (detail::attention_dot(go, v, hd) - delta(i, h)));  // B3
            for (int d = 0; d < hd; ++d) {
              acc_v[d] += pt * go[d];
              acc_k[d] += ds * q[d];
            }
          }
        }
        for (int d = 0; d < hd; ++d) {
          dqkv(j, k_col + c * hd + d) = from_float<T>(scale * acc_k[d]);
          dqkv(j, v_col + c * hd + d) = from_float<T>(acc_v[d]);
        }
      });
}

#define MANTISSA_ATTENTION_EXTERN(T)                                                                               \
  extern template void attention_forward<T, ExecSpace>(const ExecSpace&, ConstView2<T>, ConstView1<int>, int, int, \
                                                       int, View2<T>, View2<float>);                             \
  extern template void attention_backward<T, ExecSpace>(const ExecSpace&, ConstView2<T>, ConstView1<int>, int,     \
                                                        int, int, ConstView2<T>, ConstView2<T>, ConstView2<float>, \
                                                        View2<T>);
MANTISSA_ATTENTION_EXTERN(float)
MANTISSA_ATTENTION_EXTERN(fp16_t)
MANTISSA_ATTENTION_EXTERN(bf16_t)
#undef MANTISSA_ATTENTION_EXTERN

}  // namespace mantissa
