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
//   F1  q, k, v are values of T, read exactly (each item converts its sequence's k and v to fp32 once).
//   F2  s_ij = (sum_{d<hd} q_id k_jd) * scale, scale = fp32(1/sqrt(hd)). Every dot product of
//       length hd here (q.k, dout.v, dout.out) sums 8 interleaved fp32 partial sums
//       (detail::attention_dot: lane r takes d = r mod 8 ascending, lanes combined as
//       ((s0+s4)+(s2+s6))+((s1+s5)+(s3+s7))). The kernels compute 8 keys at a time with exactly
//       these operations per key (detail::attention_dots_t, vectorised across keys).
//   F3  m_i = max_j s_ij; e_ij = exp(s_ij - m_i); l_i = sum_j e_ij of the UNROUNDED e (j ascending).
//       exp is exp_fp32 (exp.hpp: <= 1 ulp, vectorisable, portable bits; FA2 uses
//       exp2 of log2(e)-prescaled scores: same math, other bits).
//   F4  p_ij = round_T(e_ij): the unnormalised probabilities are rounded to T before they
//       multiply V (FA2's conversion of the P tile to T in front of the P V tensor-core GEMM).
//   F5  o_i = sum_j p_ij v_j (j ascending); out_i = round_T(o_i * (1 / l_i)): ONE rounding.
//   F6  lse_i = m_i + log(l_i), kept in fp32 (output `lse`, saved for the backward).
//   This is FA2 with the whole row in one key block: FA2 rescales with a running max between
//   key blocks of 64-128, here m_i is the row's final max, so results depend on no block size.
//   The item path computes each s_ij once (a per-row buffer holds it for the max and the exp);
//   the team path computes it twice (one sweep for m_i, one for l_i and o_i) with the same bits.
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
//   The item path computes P_ij, dP_ij and dS_ij once per (i, j, h) for dq_i, dk_j and dv_j; the
//   team path computes them in its dq kernel and again in its dk/dv kernel, with the same bits.
//   dqkv is written, not accumulated; every element of it is written.
//
// Parallelism. Two paths, the same bits (detail::TrainAttentionPath; automatic = item on host
// memory spaces, team on device memory spaces such as CUDA; test_attention checks both, with
// several team and tile sizes, against one host emulation bit for bit):
//  item: one work item (a Kokkos team of one thread) per (sequence, query head) in the forward
//   and per (sequence, kv head) in the backward. The backward item loops over the group's query
//   heads h, then the queries i ascending, then the keys j = start .. i; it writes dq_i when row i
//   is done and dk_j, dv_j (fp32 accumulators in its scratch) at the end. On x86-64 hosts with AVX
//   (asked at run time) the items run compiled for AVX (target "avx,f16c", never FMA: the same
//   products and sums, rounded the same way, as the generic build).
//  team (flash-attention style; what a GPU runs): a team of R threads (R = team size, default
//   64, else 32 or 16 where the scratch needs it, at most the backend's limit) owns a tile of R
//   rows of one sequence, one row per thread, and walks the other side of the causal triangle in
//   tiles of K rows (K = 64, 32, 16 or 8, the largest whose scratch fits level 0; see
//   attention_team_tiling) that the whole team stages into team scratch, converted to fp32. Forward: one team per (sequence, query head,
//   query tile); thread i sweeps the key tiles twice (m_i, then l_i and o_i, keys ascending).
//   Backward, after the D kernel: dq, one team per (sequence, query head, query tile), thread i
//   over keys j = start .. i ascending; then dk/dv, one team per (sequence, kv head, key tile),
//   thread j over the group's query heads h ascending, then the queries i = j .. end ascending in
//   tiles, into one fp32 accumulator per element (the item's order). Teams whose tile starts past
//   the end of their sequence return at once (the league covers the longest sequence).
// Each item or thread owns its outputs: no atomics, no races. head_dim <= attention_max_head_dim
// (per-thread fp32 accumulators of that length).
// Temporaries per call: D (N, H) fp32 in the backward; Kokkos team scratch per team, reused
// between calls by the backend. Item path (L = longest sequence rounded up to 8 keys): forward
// L (2 hd + 2) + hd floats, backward L (5 hd + 4) + 2 hd floats. Team path (R rows, K-row tiles;
// the thread-owned rows hd + 1 floats apart): forward R (hd + 1) + 2K hd floats, dq
// 2R (hd + 1) + 2K hd, dk/dv 2R (hd + 1) + 2K hd + 2K; level 1 where level 0 is too small,
// std::invalid_argument where level 1 is too. No fp32 copy of qkv or dout.
#include <cmath>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "mantissa/kernels/convert.hpp"
#include "mantissa/kernels/exp.hpp"
#include "mantissa/kernels/types.hpp"

// Host x86-64 builds (MANTISSA_HOST_SIMD, host_simd.hpp): the per-item loops also compiled for AVX,
// chosen at run time.
#include "mantissa/kernels/host_simd.hpp"

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

namespace detail {

// Keys are processed in blocks of this many (register tiles across keys); the per-item key
// buffers are padded with zeros to a multiple of it.
inline constexpr int attention_key_block = 8;

// s[t] = attention_dot(a, column t of kt, hd) for t in [0, n_pad), n_pad a multiple of
// attention_key_block: kt is hd rows of ld floats (the keys transposed, column t = key t). Every
// s[t] is computed with exactly attention_dot's operations (lane r sums d = r mod 8 ascending from
// 0, lanes combined as ((s0+s4)+(s2+s6))+((s1+s5)+(s3+s7))), but 8 keys at a time: the loops over
// the block's keys are independent, so the compiler vectorises across keys with no horizontal sum.
KOKKOS_INLINE_FUNCTION void attention_dots_t(const float* a, const float* kt, int ld, int hd, int n_pad, float* s) {
  constexpr int B = attention_key_block;
  for (int t0 = 0; t0 < n_pad; t0 += B) {
    float lane[8][B];
    for (int r = 0; r < 8; ++r) {
      float acc[B];
      for (int u = 0; u < B; ++u) acc[u] = 0.0f;
      for (int d = r; d < hd; d += 8) {
        const float ad = a[d];
        const float* k = kt + static_cast<std::size_t>(d) * ld + t0;
        for (int u = 0; u < B; ++u) acc[u] += ad * k[u];
      }
      for (int u = 0; u < B; ++u) lane[r][u] = acc[u];
    }
    for (int u = 0; u < B; ++u)
      s[t0 + u] = ((lane[0][u] + lane[4][u]) + (lane[2][u] + lane[6][u])) +
                  ((lane[1][u] + lane[5][u]) + (lane[3][u] + lane[7][u]));
  }
}

// The longest sequence of seq_offsets (0 if none), and that length rounded up to the key block.
template <class Exec>
int attention_max_len(const Exec& space, const ConstView1<int>& off) {
  const int n_seq = static_cast<int>(off.extent(0)) - 1;
  int max_len = 0;
  if (n_seq > 0)
    Kokkos::parallel_reduce(
        "mantissa::attention::max_len", Kokkos::RangePolicy<Exec>(space, 0, n_seq),
        KOKKOS_LAMBDA(const int s, int& m) { m = kmax(m, off(s + 1) - off(s)); }, Kokkos::Max<int>(max_len));
  return max_len;
}
KOKKOS_INLINE_FUNCTION int attention_pad(int len) {
  return (len + attention_key_block - 1) / attention_key_block * attention_key_block;
}

#if defined(MANTISSA_HOST_SIMD)
// attention_dots_t with GCC vector extensions for AVX: one 8-wide register per lane r holds that
// lane's partial sums for 8 keys; the same products, sums and lane combination, element by element.
typedef float attention_v8 __attribute__((vector_size(32)));
__attribute__((target("avx,f16c"))) inline void attention_dots_t_avx(const float* a, const float* kt, int ld, int hd,
                                                                     int n_pad, float* s) {
  static_assert(attention_key_block == 8, "one AVX register of keys");
  for (int t0 = 0; t0 < n_pad; t0 += 8) {
    attention_v8 lane[8];
    for (int r = 0; r < 8; ++r) {
      attention_v8 acc = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
      for (int d = r; d < hd; d += 8) {
        attention_v8 k;
        __builtin_memcpy(&k, kt + static_cast<std::size_t>(d) * ld + t0, sizeof k);
        acc += a[d] * k;
      }
      lane[r] = acc;
    }
    const attention_v8 sum = ((lane[0] + lane[4]) + (lane[2] + lane[6])) + ((lane[1] + lane[5]) + (lane[3] + lane[7]));
    __builtin_memcpy(s + t0, &sum, sizeof sum);
  }
}
#endif

// attention_dots_t, or its AVX twin inside the AVX-compiled items.
template <bool HostAvx>
KOKKOS_INLINE_FUNCTION void attention_dots(const float* a, const float* kt, int ld, int hd, int n_pad, float* s) {
#if defined(MANTISSA_HOST_SIMD)
  if constexpr (HostAvx) {
    attention_dots_t_avx(a, kt, ld, hd, n_pad, s);
    return;
  }
#endif
  attention_dots_t(a, kt, ld, hd, n_pad, s);
}

}  // namespace detail

namespace detail {

// The per-item work of attention_forward / attention_backward (below), as functions so that the
// host can run the same code compiled for AVX. buf is the item's fp32 scratch (sizes below).
template <class T>
struct AttentionForwardArgs {
  ConstView2<T> qkv;
  ConstView1<int> off;
  View2<T> out;
  View2<float> lse;
  int heads, group, k_col, v_col, ld;
  float scale;
};
// Forward scratch floats: K transposed (hd x ld), V (ld x hd), the row's scores / probabilities (2 ld), q_i (hd).
inline std::size_t attention_forward_scratch(int ld, int hd) {
  return static_cast<std::size_t>(ld) * (2 * hd + 2) + static_cast<std::size_t>(hd);
}

// Sequence s, query head h: every query row of the sequence (F1-F6).
template <class T, bool HostAvx = false>
KOKKOS_INLINE_FUNCTION void attention_forward_item(const AttentionForwardArgs<T>& a, int s, int h, float* buf,
                                                   const int hd) {
  const int start = a.off(s), len = a.off(s + 1) - start, ld = a.ld;
  if (len <= 0) return;
  const int kc = a.k_col + (h / a.group) * hd, vc = a.v_col + (h / a.group) * hd;
  float* const kt = buf;                                      // [d][t]
  float* const vr = kt + static_cast<std::size_t>(hd) * ld;   // [t][d]
  float* const sc = vr + static_cast<std::size_t>(ld) * hd;   // scores, then e
  float* const pr = sc + ld;                                  // round_T(e)
  float* const qr = pr + ld;                                  // q_i
  const int len_pad = attention_pad(len);
  for (int d = 0; d < hd; ++d) {
    float* const row = kt + static_cast<std::size_t>(d) * ld;
    for (int t = 0; t < len; ++t) row[t] = to_float(a.qkv(start + t, kc + d));  // F1
    for (int t = len; t < len_pad; ++t) row[t] = 0.0f;
  }
  for (int t = 0; t < len; ++t)
    for (int d = 0; d < hd; ++d) vr[t * hd + d] = to_float(a.qkv(start + t, vc + d));
  for (int t = 0; t < len; ++t) {
    const int i = start + t, n_keys = t + 1;
    for (int d = 0; d < hd; ++d) qr[d] = to_float(a.qkv(i, h * hd + d));
    attention_dots<HostAvx>(qr, kt, ld, hd, attention_pad(n_keys), sc);  // F2
    for (int u = 0; u < n_keys; ++u) sc[u] *= a.scale;
    float m = sc[0];  // F3: row max
    for (int u = 1; u < n_keys; ++u) m = kmax(m, sc[u]);
    for (int u = 0; u < n_keys; ++u) sc[u] = exp_fp32(sc[u] - m);
    float l = 0.0f;
    for (int u = 0; u < n_keys; ++u) l += sc[u];                  // F3: unrounded, keys ascending
    for (int u = 0; u < n_keys; ++u) pr[u] = round_to<T>(sc[u]);  // F4
    float acc[attention_max_head_dim];
    for (int d = 0; d < hd; ++d) acc[d] = 0.0f;
    for (int u = 0; u < n_keys; ++u) {  // F5, keys ascending
      const float p = pr[u];
      const float* const v = vr + u * hd;
      for (int d = 0; d < hd; ++d) acc[d] += p * v[d];
    }
    const float inv_l = 1.0f / l;
    for (int d = 0; d < hd; ++d) a.out(i, h * hd + d) = from_float<T>(acc[d] * inv_l);
    a.lse(i, h) = m + kmath::log(l);  // F6
  }
}

template <class T>
struct AttentionBackwardArgs {
  ConstView2<T> qkv, dout;
  ConstView1<int> off;
  ConstView2<float> lse, delta;
  View2<T> dqkv;
  int group, k_col, v_col, ld;
  float scale;
};
// Backward scratch floats: K and V transposed (hd x ld each), K, dk, dv (ld x hd each), P, dP, dS,
// round_T(P) of the row (ld each), q_i and dout_i (hd each).
inline std::size_t attention_backward_scratch(int ld, int hd) {
  return static_cast<std::size_t>(ld) * (5 * hd + 4) + 2 * static_cast<std::size_t>(hd);
}

// Sequence s, kv head c: every query head h of c's group, every query row i ascending, every key
// j = start .. i; P_ij and dS_ij once per pair (B1-B6).
template <class T, bool HostAvx = false>
KOKKOS_INLINE_FUNCTION void attention_backward_item(const AttentionBackwardArgs<T>& a, int s, int c, float* buf,
                                                    const int hd) {
  const int start = a.off(s), len = a.off(s + 1) - start, ld = a.ld;
  if (len <= 0) return;
  const int kc = a.k_col + c * hd, vc = a.v_col + c * hd;
  const float scale = a.scale;
  const std::size_t mat = static_cast<std::size_t>(hd) * ld;
  float* const kt = buf;       // [d][t]
  float* const vt = kt + mat;  // [d][t]
  float* const kr = vt + mat;  // [t][d]
  float* const dk = kr + mat;  // [t][d]
  float* const dv = dk + mat;  // [t][d]
  float* const pr = dv + mat;  // scores, then P_ij
  float* const dp = pr + ld;   // dP_ij
  float* const ds = dp + ld;   // dS_ij
  float* const pt = ds + ld;   // round_T(P_ij)
  float* const qr = pt + ld;   // q_i
  float* const gr = qr + hd;   // dout_i
  const int len_pad = attention_pad(len);
  for (int d = 0; d < hd; ++d) {
    float* const krow = kt + static_cast<std::size_t>(d) * ld;
    float* const vrow = vt + static_cast<std::size_t>(d) * ld;
    for (int t = 0; t < len; ++t) {
      krow[t] = to_float(a.qkv(start + t, kc + d));
      vrow[t] = to_float(a.qkv(start + t, vc + d));
    }
    for (int t = len; t < len_pad; ++t) krow[t] = vrow[t] = 0.0f;
  }
  for (int t = 0; t < len; ++t)
    for (int d = 0; d < hd; ++d) {
      kr[t * hd + d] = kt[static_cast<std::size_t>(d) * ld + t];
      dk[t * hd + d] = 0.0f;
      dv[t * hd + d] = 0.0f;
    }
  for (int h = c * a.group; h < (c + 1) * a.group; ++h) {
    for (int t = 0; t < len; ++t) {
      const int i = start + t, n_keys = t + 1, n_pad = attention_pad(n_keys);
      for (int d = 0; d < hd; ++d) {
        qr[d] = to_float(a.qkv(i, h * hd + d));
        gr[d] = to_float(a.dout(i, h * hd + d));
      }
      attention_dots<HostAvx>(qr, kt, ld, hd, n_pad, pr);  // F2
      attention_dots<HostAvx>(gr, vt, ld, hd, n_pad, dp);  // B3: dP
      const float lse_i = a.lse(i, h), d_i = a.delta(i, h);
      for (int u = 0; u < n_keys; ++u) pr[u] = exp_fp32(pr[u] * scale - lse_i);  // B1
      for (int u = 0; u < n_keys; ++u) {
        ds[u] = round_to<T>(pr[u] * (dp[u] - d_i));  // B3
        pt[u] = round_to<T>(pr[u]);                  // B6
      }
      float acc[attention_max_head_dim];
      for (int d = 0; d < hd; ++d) acc[d] = 0.0f;
      for (int u = 0; u < n_keys; ++u) {  // B4: keys ascending
        const float g = ds[u];
        const float* const k = kr + u * hd;
        for (int d = 0; d < hd; ++d) acc[d] += g * k[d];
      }
      for (int d = 0; d < hd; ++d) a.dqkv(i, h * hd + d) = from_float<T>(scale * acc[d]);
      for (int u = 0; u < n_keys; ++u) {  // B5, B6: this query's contribution to every key
        const float g = ds[u], p = pt[u];
        float* const dkr = dk + u * hd;
        float* const dvr = dv + u * hd;
        for (int d = 0; d < hd; ++d) {
          dkr[d] += g * qr[d];
          dvr[d] += p * gr[d];
        }
      }
    }
  }
  for (int t = 0; t < len; ++t)
    for (int d = 0; d < hd; ++d) {
      a.dqkv(start + t, kc + d) = from_float<T>(scale * dk[t * hd + d]);
      a.dqkv(start + t, vc + d) = from_float<T>(dv[t * hd + d]);
    }
}

// Tests set it to false to run the generic items on an AVX host (both paths give the same bits).
inline bool& attention_allow_host_avx() {
  static bool allow = true;
  return allow;
}

#if defined(MANTISSA_HOST_SIMD)
// AVX and F16C usable (host_avx_f16c) and allowed.
inline bool attention_host_avx() { return host_avx_f16c() && attention_allow_host_avx(); }
// The items above compiled for AVX (8-wide vectors; no FMA, so every product and sum is rounded
// as in the generic build), with head_dim 32 and 64 as compile-time constants.
template <class T>
__attribute__((target("avx,f16c"), flatten)) void attention_forward_item_avx(const AttentionForwardArgs<T>& a, int s,
                                                                             int h, float* buf, int hd) {
  if (hd == 32)
    attention_forward_item<T, true>(a, s, h, buf, 32);
  else if (hd == 64)
    attention_forward_item<T, true>(a, s, h, buf, 64);
  else
    attention_forward_item<T, true>(a, s, h, buf, hd);
}
template <class T>
__attribute__((target("avx,f16c"), flatten)) void attention_backward_item_avx(const AttentionBackwardArgs<T>& a,
                                                                              int s, int c, float* buf, int hd) {
  if (hd == 32)
    attention_backward_item<T, true>(a, s, c, buf, 32);
  else if (hd == 64)
    attention_backward_item<T, true>(a, s, c, buf, 64);
  else
    attention_backward_item<T, true>(a, s, c, buf, hd);
}
#else
inline bool attention_host_avx() { return false; }
#endif

}  // namespace detail

namespace detail {

// ---- The team-parallel ("device-shaped") path: flash-attention style tiles, the same bits ----
// Every team owns a tile of `rows` = team size consecutive rows of one sequence (query rows in the
// forward and dq kernels, key rows in the dk/dv kernel), one row per thread (team_rank), and walks
// the other side of the causal triangle in tiles of `keys` rows staged, converted to fp32 (F1),
// into team scratch by the whole team. Every s_ij, P_ij, dP_ij, dS_ij is computed with exactly the
// operations of the items above (attention_dot, the same scale, exp_fp32 and rounding), and every
// fp32 sum adds its terms in the same order, so both paths give the same bits for any tile size.

// Team scratch of the team kernels, in floats.
// The rows a thread owns are stored hd + 1 floats apart (attention_team_row_stride): the threads of a
// warp then read them from different shared-memory banks; the key tiles, which all threads read at
// the same address (a broadcast), are stored hd apart.
KOKKOS_INLINE_FUNCTION int attention_team_row_stride(int hd) { return hd + 1; }
inline std::size_t attention_team_forward_scratch(int rows, int keys, int hd) {
  // q of the rows; K and V of a key tile
  return static_cast<std::size_t>(rows) * attention_team_row_stride(hd) + static_cast<std::size_t>(2 * keys) * hd;
}
inline std::size_t attention_team_dq_scratch(int rows, int keys, int hd) {
  // q, dout of the rows; K, V of a key tile
  return static_cast<std::size_t>(2 * rows) * attention_team_row_stride(hd) + static_cast<std::size_t>(2 * keys) * hd;
}
inline std::size_t attention_team_dkdv_scratch(int rows, int keys, int hd) {
  // k, v of the rows (keys); q, dout, lse, D of a tile of query rows
  return static_cast<std::size_t>(2 * rows) * attention_team_row_stride(hd) +
         static_cast<std::size_t>(2 * keys) * hd + 2 * static_cast<std::size_t>(keys);
}

// What every team kernel shares: the sequence layout and the tiling. league rank -> (outer, tile),
// the tile index descending so that the longest tiles (the last rows of the causal triangle) start first.
struct AttentionTeamTiling {
  ConstView1<int> off;
  int hd = 1, group = 1, k_col = 0, v_col = 0;
  int rows = 1, keys = 8, n_tiles = 1, level = 0;
  std::size_t n_scratch = 0;
  float scale = 1.0f;

  // Where the team of league rank `rank` works: tile n_tiles-1-(rank mod n_tiles) (the longest causal
  // tiles first) of the (sequence s, head) pair rank / n_tiles, `heads` heads per sequence; its rows
  // start + r0 .. start + r0 + nr - 1 (nr = 0: the tile starts past the sequence's end).
  struct Place {
    int s, head, start, len, r0, nr;
  };
  KOKKOS_INLINE_FUNCTION Place place(int rank, int heads) const {
    const int tile = n_tiles - 1 - rank % n_tiles, pair = rank / n_tiles;
    Place p{pair / heads, pair % heads, 0, 0, tile * rows, 0};
    p.start = off(p.s), p.len = off(p.s + 1) - p.start;
    p.nr = p.r0 < p.len ? kmin(rows, p.len - p.r0) : 0;
    return p;
  }
};

// Forward, one team per (sequence, query head h, tile of `rows` query rows), F1-F6. Two sweeps
// over the key tiles: the first computes the row max m_i (scores j ascending, as the item), the
// second recomputes the same s_ij and accumulates l_i and o_i over j ascending.
template <class T, class Exec, int HD = 0>
struct AttentionTeamForward {
  using policy = Kokkos::TeamPolicy<Exec>;
  using member = typename policy::member_type;
  using scratch_view =
      Kokkos::View<float*, typename Exec::scratch_memory_space, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
  ConstView2<T> qkv;
  View2<T> out;
  View2<float> lse;
  AttentionTeamTiling g;
  int heads = 1;

  KOKKOS_INLINE_FUNCTION void operator()(const member& team) const {
    const int hd = HD > 0 ? HD : g.hd, rows = g.rows, keys = g.keys, ld = attention_team_row_stride(hd);
    const AttentionTeamTiling::Place at = g.place(team.league_rank(), heads);
    if (at.nr == 0) return;  // the whole team: no barrier is skipped by some threads only
    const int h = at.head, start = at.start, r0 = at.r0, nr = at.nr, kend = r0 + nr;  // keys 0 .. kend-1
    const int kc = g.k_col + (h / g.group) * hd, vc = g.v_col + (h / g.group) * hd, qc = h * hd;
    scratch_view buf(team.team_scratch(g.level), g.n_scratch);
    float* const qs = buf.data();                                // [row][d], rows ld apart
    float* const ks = qs + static_cast<std::size_t>(rows) * ld;  // [key][d]
    float* const vs = ks + static_cast<std::size_t>(keys) * hd;  // [key][d]
    const ConstView2<T> x = qkv;
    Kokkos::parallel_for(Kokkos::TeamThreadRange(team, nr * hd), [&](const int e) {
      qs[e / hd * ld + e % hd] = to_float(x(start + r0 + e / hd, qc + e % hd));  // F1
    });
    const int t = r0 + team.team_rank();  // this thread's row, relative to start
    const bool active = team.team_rank() < nr;
    const float* const q = qs + static_cast<std::size_t>(team.team_rank()) * ld;
    const float scale = g.scale;
    float m = 0.0f;
    for (int k0 = 0; k0 < kend; k0 += keys) {  // sweep 1: F2, F3 (max)
      const int nk = kmin(keys, kend - k0);
      team.team_barrier();
      Kokkos::parallel_for(Kokkos::TeamThreadRange(team, nk * hd), [&](const int e) {
        ks[e] = to_float(x(start + k0 + e / hd, kc + e % hd));
      });
      team.team_barrier();
      if (active) {
        const int mine = kmin(nk, t - k0 + 1);
        for (int u = 0; u < mine; ++u) {
          const float sc = attention_dot(q, ks + static_cast<std::size_t>(u) * hd, hd) * scale;
          m = k0 + u == 0 ? sc : kmax(m, sc);
        }
      }
    }
    float acc[HD > 0 ? HD : attention_max_head_dim];
    for (int d = 0; d < hd; ++d) acc[d] = 0.0f;
    float l = 0.0f;
    for (int k0 = 0; k0 < kend; k0 += keys) {  // sweep 2: F2-F5
      const int nk = kmin(keys, kend - k0);
      team.team_barrier();
      Kokkos::parallel_for(Kokkos::TeamThreadRange(team, nk * hd), [&](const int e) {
        ks[e] = to_float(x(start + k0 + e / hd, kc + e % hd));
        vs[e] = to_float(x(start + k0 + e / hd, vc + e % hd));
      });
      team.team_barrier();
      if (active) {
        const int mine = kmin(nk, t - k0 + 1);
        for (int u = 0; u < mine; ++u) {
          const float* const kr = ks + static_cast<std::size_t>(u) * hd;
          const float* const vr = vs + static_cast<std::size_t>(u) * hd;
          const float e = exp_fp32(attention_dot(q, kr, hd) * scale - m);
          l += e;                        // F3: unrounded, keys ascending
          const float p = round_to<T>(e);  // F4
          for (int d = 0; d < hd; ++d) acc[d] += p * vr[d];  // F5, keys ascending
        }
      }
    }
    if (active) {
      const float inv_l = 1.0f / l;
      for (int d = 0; d < hd; ++d) out(start + t, qc + d) = from_float<T>(acc[d] * inv_l);
      lse(start + t, h) = m + kmath::log(l);  // F6
    }
  }
};

// Backward dq (B1-B4), one team per (sequence, query head h, tile of `rows` query rows): keys
// j = start .. i ascending, in key tiles.
template <class T, class Exec, int HD = 0>
struct AttentionTeamDq {
  using policy = Kokkos::TeamPolicy<Exec>;
  using member = typename policy::member_type;
  using scratch_view =
      Kokkos::View<float*, typename Exec::scratch_memory_space, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
  ConstView2<T> qkv, dout;
  ConstView2<float> lse, delta;
  View2<T> dqkv;
  AttentionTeamTiling g;
  int heads = 1;

  KOKKOS_INLINE_FUNCTION void operator()(const member& team) const {
    const int hd = HD > 0 ? HD : g.hd, rows = g.rows, keys = g.keys, ld = attention_team_row_stride(hd);
    const AttentionTeamTiling::Place at = g.place(team.league_rank(), heads);
    if (at.nr == 0) return;
    const int h = at.head, start = at.start, r0 = at.r0, nr = at.nr, kend = r0 + nr;
    const int kc = g.k_col + (h / g.group) * hd, vc = g.v_col + (h / g.group) * hd, qc = h * hd;
    scratch_view buf(team.team_scratch(g.level), g.n_scratch);
    float* const qs = buf.data();                                // [row][d], rows ld apart
    float* const gs = qs + static_cast<std::size_t>(rows) * ld;  // dout [row][d], rows ld apart
    float* const ks = gs + static_cast<std::size_t>(rows) * ld;  // [key][d]
    float* const vs = ks + static_cast<std::size_t>(keys) * hd;  // [key][d]
    const ConstView2<T> x = qkv, go = dout;
    Kokkos::parallel_for(Kokkos::TeamThreadRange(team, nr * hd), [&](const int e) {
      qs[e / hd * ld + e % hd] = to_float(x(start + r0 + e / hd, qc + e % hd));
      gs[e / hd * ld + e % hd] = to_float(go(start + r0 + e / hd, qc + e % hd));
    });
    const int t = r0 + team.team_rank();
    const bool active = team.team_rank() < nr;
    const float* const q = qs + static_cast<std::size_t>(team.team_rank()) * ld;
    const float* const gr = gs + static_cast<std::size_t>(team.team_rank()) * ld;
    const float scale = g.scale;
    const float lse_i = active ? lse(start + t, h) : 0.0f, d_i = active ? delta(start + t, h) : 0.0f;
    float acc[HD > 0 ? HD : attention_max_head_dim];
    for (int d = 0; d < hd; ++d) acc[d] = 0.0f;
    for (int k0 = 0; k0 < kend; k0 += keys) {
      const int nk = kmin(keys, kend - k0);
      team.team_barrier();
      Kokkos::parallel_for(Kokkos::TeamThreadRange(team, nk * hd), [&](const int e) {
        ks[e] = to_float(x(start + k0 + e / hd, kc + e % hd));
        vs[e] = to_float(x(start + k0 + e / hd, vc + e % hd));
      });
      team.team_barrier();
      if (active) {
        const int mine = kmin(nk, t - k0 + 1);
        for (int u = 0; u < mine; ++u) {
          const float* const kr = ks + static_cast<std::size_t>(u) * hd;
          const float p = exp_fp32(attention_dot(q, kr, hd) * scale - lse_i);  // B1
          const float dp = attention_dot(gr, vs + static_cast<std::size_t>(u) * hd, hd);
          const float ds = round_to<T>(p * (dp - d_i));  // B3
          for (int d = 0; d < hd; ++d) acc[d] += ds * kr[d];  // B4, keys ascending
        }
      }
    }
    if (active)
      for (int d = 0; d < hd; ++d) dqkv(start + t, qc + d) = from_float<T>(scale * acc[d]);
  }
};

// Backward dk, dv (B1, B3, B5, B6), one team per (sequence, kv head c, tile of `rows` keys): the
// group's query heads h ascending, then the queries i = j .. end ascending in tiles of `keys`
// rows; one fp32 accumulator per element over (h, i), as the item.
template <class T, class Exec, int HD = 0>
struct AttentionTeamDkDv {
  using policy = Kokkos::TeamPolicy<Exec>;
  using member = typename policy::member_type;
  using scratch_view =
      Kokkos::View<float*, typename Exec::scratch_memory_space, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
  ConstView2<T> qkv, dout;
  ConstView2<float> lse, delta;
  View2<T> dqkv;
  AttentionTeamTiling g;
  int kv_heads = 1;

  KOKKOS_INLINE_FUNCTION void operator()(const member& team) const {
    const int hd = HD > 0 ? HD : g.hd, rows = g.rows, keys = g.keys, ld = attention_team_row_stride(hd);
    const AttentionTeamTiling::Place at = g.place(team.league_rank(), kv_heads);
    if (at.nr == 0) return;
    const int c = at.head, start = at.start, len = at.len, r0 = at.r0, nr = at.nr;
    const int kc = g.k_col + c * hd, vc = g.v_col + c * hd;
    scratch_view buf(team.team_scratch(g.level), g.n_scratch);
    float* const ks = buf.data();                                // k of the rows [row][d], rows ld apart
    float* const vs = ks + static_cast<std::size_t>(rows) * ld;  // v of the rows [row][d], rows ld apart
    float* const qs = vs + static_cast<std::size_t>(rows) * ld;  // q of a query tile [query][d]
    float* const gs = qs + static_cast<std::size_t>(keys) * hd;  // dout of a query tile [query][d]
    float* const ls = gs + static_cast<std::size_t>(keys) * hd;  // lse of a query tile
    float* const ds_ = ls + keys;                                // D of a query tile
    const ConstView2<T> x = qkv, go = dout;
    const ConstView2<float> lv = lse, dv_ = delta;
    Kokkos::parallel_for(Kokkos::TeamThreadRange(team, nr * hd), [&](const int e) {
      ks[e / hd * ld + e % hd] = to_float(x(start + r0 + e / hd, kc + e % hd));
      vs[e / hd * ld + e % hd] = to_float(x(start + r0 + e / hd, vc + e % hd));
    });
    const int j = r0 + team.team_rank();  // this thread's key, relative to start
    const bool active = team.team_rank() < nr;
    const float* const kr = ks + static_cast<std::size_t>(team.team_rank()) * ld;
    const float* const vr = vs + static_cast<std::size_t>(team.team_rank()) * ld;
    const float scale = g.scale;
    float acc_k[HD > 0 ? HD : attention_max_head_dim], acc_v[HD > 0 ? HD : attention_max_head_dim];
    for (int d = 0; d < hd; ++d) acc_k[d] = acc_v[d] = 0.0f;
    for (int h = c * g.group; h < (c + 1) * g.group; ++h) {
      const int qc = h * hd;
      for (int q0 = r0; q0 < len; q0 += keys) {  // queries r0 .. len-1 (those of the tile's keys)
        const int nq = kmin(keys, len - q0);
        team.team_barrier();
        Kokkos::parallel_for(Kokkos::TeamThreadRange(team, nq * hd), [&](const int e) {
          qs[e] = to_float(x(start + q0 + e / hd, qc + e % hd));
          gs[e] = to_float(go(start + q0 + e / hd, qc + e % hd));
        });
        Kokkos::parallel_for(Kokkos::TeamThreadRange(team, nq), [&](const int u) {
          ls[u] = lv(start + q0 + u, h);
          ds_[u] = dv_(start + q0 + u, h);
        });
        team.team_barrier();
        if (active)
          for (int u = kmax(0, j - q0); u < nq; ++u) {  // i = q0 + u >= j, ascending
            const float* const q = qs + static_cast<std::size_t>(u) * hd;
            const float* const gr = gs + static_cast<std::size_t>(u) * hd;
            const float p = exp_fp32(attention_dot(q, kr, hd) * scale - ls[u]);  // B1
            const float dp = attention_dot(gr, vr, hd);                           // B3
            const float dsv = round_to<T>(p * (dp - ds_[u]));                    // B3
            const float pt = round_to<T>(p);                                     // B6
            for (int d = 0; d < hd; ++d) {
              acc_k[d] += dsv * q[d];  // B5
              acc_v[d] += pt * gr[d];  // B6
            }
          }
      }
    }
    if (active)
      for (int d = 0; d < hd; ++d) {
        dqkv(start + j, kc + d) = from_float<T>(scale * acc_k[d]);
        dqkv(start + j, vc + d) = from_float<T>(acc_v[d]);
      }
  }
};

// Which code computes attention_forward / attention_backward (both give the same bits).
// automatic: item on host memory spaces (with the AVX-compiled items where the CPU has AVX and
// attention_allow_host_avx()), team on device memory spaces. Tests name the others to compare them.
enum class TrainAttentionPath { automatic, item, team };

// Default team size (= rows per tile) of the team path, the smaller ones it falls back to when
// the scratch does not fit level 0, and the key-tile sizes it tries (largest first).
inline constexpr int attention_team_default_rows = 64;
inline constexpr int attention_team_fallback_rows[] = {64, 32, 16};
inline constexpr int attention_team_key_tiles[] = {64, 32, 16, 8};

template <class Exec>
constexpr bool attention_host_space() {
  return std::is_same<typename Exec::memory_space, Kokkos::HostSpace>::value;
}

// The team kernels are compiled with these head dims as constants (accumulators in registers on
// a GPU, loops unrolled; the same operations in the same order) and with a run-time head_dim for
// the others. run(std::integral_constant<int, HD>) with HD = head_dim or 0.
template <class Run>
void attention_team_head_dim(int head_dim, const Run& run) {
  switch (head_dim) {
    case 16: run(std::integral_constant<int, 16>()); break;
    case 32: run(std::integral_constant<int, 32>()); break;
    case 64: run(std::integral_constant<int, 64>()); break;
    default: run(std::integral_constant<int, 0>()); break;
  }
}

// The largest team size the backend allows for each of the three team kernels of this head_dim
// (the smallest of the three).
template <class T, class Exec>
int attention_team_size_max(const Exec& space, int head_dim) {
  using policy = Kokkos::TeamPolicy<Exec>;
  const policy p(space, 1, 1);
  int m = 0;
  attention_team_head_dim(head_dim, [&](auto hd_c) {
    constexpr int HD = decltype(hd_c)::value;
    const int a = p.team_size_max(AttentionTeamForward<T, Exec, HD>{}, Kokkos::ParallelForTag());
    const int b = p.team_size_max(AttentionTeamDq<T, Exec, HD>{}, Kokkos::ParallelForTag());
    const int c = p.team_size_max(AttentionTeamDkDv<T, Exec, HD>{}, Kokkos::ParallelForTag());
    m = kmin(a, kmin(b, c));
  });
  return m;
}

// Team size (rows per tile), key tile and scratch level of one team kernel. Chosen (team_size 0
// and/or key_tile 0): the first (rows, keys) whose scratch fits level 0, rows from
// attention_team_fallback_rows (clamped to what the backend allows), keys from
// attention_team_key_tiles, trying keys >= 16 with every row count before 8-key tiles; if none
// fits, the largest rows with 32-key tiles in level 1. Throws std::invalid_argument for a team
// size the backend refuses or scratch that fits no level.
template <class Exec, class ScratchFloats>
AttentionTeamTiling attention_team_tiling(const char* kernel, int team_size, int key_tile, int ts_max, int hd,
                                          ScratchFloats scratch_floats) {
  using policy = Kokkos::TeamPolicy<Exec>;
  using scratch_view =
      Kokkos::View<float*, typename Exec::scratch_memory_space, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
  const auto fail = [&](const std::string& what) {
    throw std::invalid_argument(std::string("mantissa::attention::") + kernel + ": " + what);
  };
  if (team_size < 0 || key_tile < 0) fail("team_size and key_tile must be >= 0 (0 = choose)");
  if (team_size > ts_max)
    fail("team_size " + std::to_string(team_size) + " exceeds the backend's limit " + std::to_string(ts_max));
  const auto bytes = [&](int rows, int keys) { return scratch_view::shmem_size(scratch_floats(rows, keys, hd)); };
  const std::size_t max0 = static_cast<std::size_t>(policy::scratch_size_max(0));
  const std::size_t max1 = static_cast<std::size_t>(policy::scratch_size_max(1));
  AttentionTeamTiling t;
  t.rows = 0;
  for (const bool small_keys : {false, true})
    for (const int r : attention_team_fallback_rows) {
      const int rows = team_size > 0 ? team_size : kmax(1, kmin(r, ts_max));
      for (const int k : attention_team_key_tiles) {
        const int keys = key_tile > 0 ? key_tile : k;
        if (t.rows == 0 && (keys >= 16) != small_keys && bytes(rows, keys) <= max0) {
          t.rows = rows;
          t.keys = keys;
          t.level = 0;
        }
      }
    }
  if (t.rows == 0) {
    t.rows = team_size > 0 ? team_size : kmax(1, kmin(attention_team_default_rows, ts_max));
    t.keys = key_tile > 0 ? key_tile : 32;
    t.level = 1;
    if (bytes(t.rows, t.keys) > max1)
      fail("team scratch of " + std::to_string(bytes(t.rows, t.keys)) + " bytes (" + std::to_string(t.rows) +
           " rows, " + std::to_string(t.keys) + "-row tiles, head_dim " + std::to_string(hd) +
           ") exceeds level 0 (" + std::to_string(max0) + " bytes) and level 1 (" + std::to_string(max1) + " bytes)");
  }
  t.n_scratch = scratch_floats(t.rows, t.keys, hd);
  return t;
}

// attention_forward (below) with the code path named; team_size and key_tile apply to the team
// path (0 = choose; see attention_team_tiling).
template <class T, class Exec>
void attention_forward_path(const Exec& space, ConstView2<T> qkv, ConstView1<int> seq_offsets, int n_head,
                            int n_kv_head, int head_dim, View2<T> out, View2<float> lse, TrainAttentionPath path,
                            int team_size = 0, int key_tile = 0) {
  const std::size_t n = qkv.extent(0);
  detail::check_attention_shapes(qkv.extent(1), seq_offsets.extent(0), n_head, n_kv_head, head_dim);
  detail::check_extents("out", out.extent(0), out.extent(1), n, static_cast<std::size_t>(n_head) * head_dim);
  detail::check_extents("lse", lse.extent(0), lse.extent(1), n, static_cast<std::size_t>(n_head));
  constexpr bool host = attention_host_space<Exec>();
  const bool team = path == TrainAttentionPath::team || (path == TrainAttentionPath::automatic && !host);
  using policy = Kokkos::TeamPolicy<Exec>;
  AttentionTeamTiling tiling;
  if (team)  // checked before the early return, so that a bad team size is reported on any input
    tiling = attention_team_tiling<Exec>("forward", team_size, key_tile, attention_team_size_max<T>(space, head_dim), head_dim,
                                         attention_team_forward_scratch);
  const int n_seq = static_cast<int>(seq_offsets.extent(0)) - 1;
  if (n == 0 || n_seq <= 0) return;
  const int hd = head_dim, heads = n_head;
  const int max_len = detail::attention_max_len(space, seq_offsets);
  if (team) {
    tiling.off = seq_offsets;
    tiling.hd = hd;
    tiling.group = n_head / n_kv_head;
    tiling.k_col = n_head * hd;
    tiling.v_col = (n_head + n_kv_head) * hd;
    tiling.scale = attention_scale(hd);
    tiling.n_tiles = kmax(1, (max_len + tiling.rows - 1) / tiling.rows);
    using scratch_view = typename AttentionTeamForward<T, Exec>::scratch_view;
    const policy pol = policy(space, n_seq * heads * tiling.n_tiles, tiling.rows)
                           .set_scratch_size(tiling.level, Kokkos::PerTeam(scratch_view::shmem_size(tiling.n_scratch)));
    attention_team_head_dim(hd, [&](auto hd_c) {
      constexpr int HD = decltype(hd_c)::value;
      Kokkos::parallel_for("mantissa::attention::forward_team", pol,
                           AttentionTeamForward<T, Exec, HD>{qkv, out, lse, tiling, heads});
    });
    return;
  }
  const int ld = detail::attention_pad(max_len);
  const detail::AttentionForwardArgs<T> args{qkv, seq_offsets, out, lse, heads, n_head / n_kv_head, n_head * hd,
                                             (n_head + n_kv_head) * hd, ld, attention_scale(hd)};
  using member = typename policy::member_type;
  using scratch_view =
      Kokkos::View<float*, typename Exec::scratch_memory_space, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
  const std::size_t n_scratch = detail::attention_forward_scratch(ld, hd);
  const std::size_t scratch_bytes = scratch_view::shmem_size(n_scratch);
  const int level = static_cast<int>(scratch_bytes) <= policy::scratch_size_max(0) ? 0 : 1;
  const bool avx = host && detail::attention_host_avx();
  (void)avx;
  Kokkos::parallel_for(
      "mantissa::attention::forward",
      policy(space, n_seq * heads, 1).set_scratch_size(level, Kokkos::PerTeam(scratch_bytes)),
      KOKKOS_LAMBDA(const member& team) {
        const int s = team.league_rank() / heads, h = team.league_rank() % heads;
        scratch_view buf(team.team_scratch(level), n_scratch);
#if defined(MANTISSA_HOST_SIMD)
        if constexpr (host) {
          if (avx) {
            detail::attention_forward_item_avx(args, s, h, buf.data(), hd);
            return;
          }
        }
#endif
        detail::attention_forward_item(args, s, h, buf.data(), hd);
      });
}

// attention_backward (below) with the code path named; team_size and key_tile apply to the team
// path (0 = choose; see attention_team_tiling), for both of its kernels.
template <class T, class Exec>
void attention_backward_path(const Exec& space, ConstView2<T> qkv, ConstView1<int> seq_offsets, int n_head,
                             int n_kv_head, int head_dim, ConstView2<T> out, ConstView2<T> dout, ConstView2<float> lse,
                             View2<T> dqkv, TrainAttentionPath path, int team_size = 0, int key_tile = 0) {
  const std::size_t n = qkv.extent(0);
  detail::check_attention_shapes(qkv.extent(1), seq_offsets.extent(0), n_head, n_kv_head, head_dim);
  const std::size_t qcols = static_cast<std::size_t>(n_head) * head_dim;
  detail::check_extents("out", out.extent(0), out.extent(1), n, qcols);
  detail::check_extents("dout", dout.extent(0), dout.extent(1), n, qcols);
  detail::check_extents("lse", lse.extent(0), lse.extent(1), n, static_cast<std::size_t>(n_head));
  detail::check_extents("dqkv", dqkv.extent(0), dqkv.extent(1), n, qkv.extent(1));
  constexpr bool host = attention_host_space<Exec>();
  const bool team = path == TrainAttentionPath::team || (path == TrainAttentionPath::automatic && !host);
  using policy = Kokkos::TeamPolicy<Exec>;
  AttentionTeamTiling tq, tkv;
  if (team) {
    const int ts_max = attention_team_size_max<T>(space, head_dim);
    tq = attention_team_tiling<Exec>("backward_dq", team_size, key_tile, ts_max, head_dim, attention_team_dq_scratch);
    tkv = attention_team_tiling<Exec>("backward_dkdv", team_size, key_tile, ts_max, head_dim,
                                      attention_team_dkdv_scratch);
  }
  const int n_seq = static_cast<int>(seq_offsets.extent(0)) - 1;
  if (n == 0 || n_seq <= 0) return;
  const int hd = head_dim, kv_heads = n_kv_head;
  const std::size_t heads = static_cast<std::size_t>(n_head);

  // B2: D (N, H)
  const View2<float> delta(Kokkos::view_alloc(std::string("mantissa::attention::delta"), Kokkos::WithoutInitializing),
                           n, heads);
  Kokkos::parallel_for(
      "mantissa::attention::backward_delta", Kokkos::RangePolicy<Exec>(space, 0, n * heads),
      KOKKOS_LAMBDA(const std::size_t idx) {
        const int i = static_cast<int>(idx / heads), h = static_cast<int>(idx % heads);
        delta(i, h) = detail::attention_dot(&dout(i, h * hd), &out(i, h * hd), hd);
      });
  const int max_len = detail::attention_max_len(space, seq_offsets);

  if (team) {  // B1-B6: dq by query tiles, then dk, dv by key tiles
    for (AttentionTeamTiling* t : {&tq, &tkv}) {
      t->off = seq_offsets;
      t->hd = hd;
      t->group = n_head / n_kv_head;
      t->k_col = n_head * hd;
      t->v_col = (n_head + n_kv_head) * hd;
      t->scale = attention_scale(hd);
      t->n_tiles = kmax(1, (max_len + t->rows - 1) / t->rows);
    }
    using scratch_view = typename AttentionTeamDq<T, Exec>::scratch_view;
    const policy pq = policy(space, n_seq * n_head * tq.n_tiles, tq.rows)
                          .set_scratch_size(tq.level, Kokkos::PerTeam(scratch_view::shmem_size(tq.n_scratch)));
    const policy pkv = policy(space, n_seq * kv_heads * tkv.n_tiles, tkv.rows)
                           .set_scratch_size(tkv.level, Kokkos::PerTeam(scratch_view::shmem_size(tkv.n_scratch)));
    attention_team_head_dim(hd, [&](auto hd_c) {
      constexpr int HD = decltype(hd_c)::value;
      Kokkos::parallel_for("mantissa::attention::backward_dq_team", pq,
                           AttentionTeamDq<T, Exec, HD>{qkv, dout, lse, delta, dqkv, tq, n_head});
      Kokkos::parallel_for("mantissa::attention::backward_dkdv_team", pkv,
                           AttentionTeamDkDv<T, Exec, HD>{qkv, dout, lse, delta, dqkv, tkv, kv_heads});
    });
    return;
  }

  // B1-B6: one team of one thread per (sequence, kv head), attention_backward_item.
  const int ld = detail::attention_pad(max_len);
  const detail::AttentionBackwardArgs<T> args{qkv, dout, seq_offsets, lse, delta, dqkv, n_head / n_kv_head,
                                              n_head * hd, (n_head + n_kv_head) * hd, ld, attention_scale(hd)};
  using member = typename policy::member_type;
  using scratch_view =
      Kokkos::View<float*, typename Exec::scratch_memory_space, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
  const std::size_t n_scratch = detail::attention_backward_scratch(ld, hd);
  const std::size_t scratch_bytes = scratch_view::shmem_size(n_scratch);
  const int level = static_cast<int>(scratch_bytes) <= policy::scratch_size_max(0) ? 0 : 1;
  const bool avx = host && detail::attention_host_avx();
  (void)avx;
  Kokkos::parallel_for(
      "mantissa::attention::backward",
      policy(space, n_seq * kv_heads, 1).set_scratch_size(level, Kokkos::PerTeam(scratch_bytes)),
      KOKKOS_LAMBDA(const member& team) {
        const int s = team.league_rank() / kv_heads, c = team.league_rank() % kv_heads;
        scratch_view buf(team.team_scratch(level), n_scratch);
#if defined(MANTISSA_HOST_SIMD)
        if constexpr (host) {
          if (avx) {
            detail::attention_backward_item_avx(args, s, c, buf.data(), hd);
            return;
          }
        }
#endif
        detail::attention_backward_item(args, s, c, buf.data(), hd);
      });
}

}  // namespace detail

// out[i, h*hd:(h+1)*hd] = sum_{j<=i, same seq} P[h,i,j] v[j, kvh(h)],  P = softmax_j(q_i . k_j * scale)
// qkv (N, (H+2Hkv)hd), seq_offsets (S+1) -> out (N, H*hd), lse (N, H) fp32 logsumexp of the scaled scores
template <class T, class Exec>
void attention_forward(const Exec& space, ConstView2<T> qkv, ConstView1<int> seq_offsets, int n_head, int n_kv_head,
                       int head_dim, View2<T> out, View2<float> lse) {
  detail::attention_forward_path<T>(space, qkv, seq_offsets, n_head, n_kv_head, head_dim, out, lse,
                                    detail::TrainAttentionPath::automatic);
}

// dqkv (written, not accumulated) from dout, using the saved fp32 lse (rounding points B1-B6).
// qkv (N, (H+2Hkv)hd), seq_offsets (S+1), out (N, H*hd), dout (N, H*hd), lse (N, H) -> dqkv (N, (H+2Hkv)hd)
template <class T, class Exec>
void attention_backward(const Exec& space, ConstView2<T> qkv, ConstView1<int> seq_offsets, int n_head, int n_kv_head,
                        int head_dim, ConstView2<T> out, ConstView2<T> dout, ConstView2<float> lse, View2<T> dqkv) {
  detail::attention_backward_path<T>(space, qkv, seq_offsets, n_head, n_kv_head, head_dim, out, dout, lse, dqkv,
                                     detail::TrainAttentionPath::automatic);
}

#define MANTISSA_ATTENTION_DECLARE(EXTERN, T)                                                                        \
  EXTERN template void attention_forward<T, ExecSpace>(const ExecSpace&, ConstView2<T>, ConstView1<int>, int, int, \
                                                       int, View2<T>, View2<float>);                               \
  EXTERN template void attention_backward<T, ExecSpace>(const ExecSpace&, ConstView2<T>, ConstView1<int>, int,     \
                                                        int, int, ConstView2<T>, ConstView2<T>, ConstView2<float>, \
                                                        View2<T>);                                                 \
  EXTERN template void detail::attention_forward_path<T, ExecSpace>(                                               \
      const ExecSpace&, ConstView2<T>, ConstView1<int>, int, int, int, View2<T>, View2<float>,                     \
      detail::TrainAttentionPath, int, int);                                                                       \
  EXTERN template void detail::attention_backward_path<T, ExecSpace>(                                              \
      const ExecSpace&, ConstView2<T>, ConstView1<int>, int, int, int, ConstView2<T>, ConstView2<T>,               \
      ConstView2<float>, View2<T>, detail::TrainAttentionPath, int, int);                                          \
  EXTERN template int detail::attention_team_size_max<T, ExecSpace>(const ExecSpace&, int);
MANTISSA_ATTENTION_DECLARE(extern, float)
MANTISSA_ATTENTION_DECLARE(extern, fp16_t)
MANTISSA_ATTENTION_DECLARE(extern, bf16_t)

}  // namespace mantissa
