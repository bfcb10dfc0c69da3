#pragma once
// The ROLLOUT (inference) engine's kernels for KV-cached decoding: the linear layers
// (linear_decode), the KV cache (kv_cache_append) and decode attention (attention_decode).
// They compute the same functions as the training engine's kernels (gemm.hpp, attention.hpp,
// elementwise residual adds) with their own reduction orders and rounding points, as
// production inference engines (vLLM: split-K GEMV, fused epilogues, flash-decoding) do.
// The policy mismatch mu vs pi that Mantissa measures comes from exactly these differences.
//
// ==== How these kernels differ from the training engine ====================================
// (This is the one place the differences are written down. T is the storage type; round_T is
// round-to-nearest-even to T, the identity for T = float; "fp32" means every product and sum.)
//
// Linear layers, y = x W^T (+ residual):
//  D1  Reduction order. Training: gemm() (gemm.hpp) hands the fp32 product to the BLAS
//      (OpenBLAS sgemm on CPUs, cublasGemmEx on GPUs) whose order over K is the library's own,
//      chosen by its blocking and kernels for the shape (M, N, K) and the CPU, so a row's result
//      may depend on how many rows are in the call. Rollout: a fixed split-K order
//      (detail::decode_split_k_dot): K is cut into consecutive chunks of split_k elements;
//      inside a chunk 8 interleaved fp32 lanes (lane l takes the chunk's elements l, l+8,
//      l+16, ... in ascending order), combined as ((s0+s4)+(s2+s6))+((s1+s5)+(s3+s7)); the
//      chunk partials are added in fp32 in chunk order to an accumulator that starts at 0.
//  D2  Residual add fused into the epilogue. Training: t = round_T(x W^T), then the residual
//      add y = round_T(t + residual) (two roundings to T). Rollout: y = round_T(acc + residual)
//      with the fp32 accumulator (one rounding).
//  D3  Batch invariance. Rollout: every output element is one fixed sequence of fp32
//      operations on (x row, W row, split_k); which code path computes it (a block of
//      decode_linear_block columns or the last partial block) depends on its column only, and
//      both paths run the same operations. So a row's result does not depend on the number of
//      rows in the call or on its position. The training gemm gives no such guarantee.
//
// Attention, query row i (head h) over keys/values j = 0 .. L-1 (decode: L = len[r], the
// positions held in the row's cache slot; training: the causal prefix of the packed sequence):
//  D4  Same scores. F1/F2 of attention.hpp hold unchanged: s_j = dot(q, k_j) * scale with
//      scale = attention_scale(hd) and the dot product in attention_dot's 8-lane order
//      (detail::decode_dot), so the scores are bit-identical to the training engine's for the
//      same q and k. k and v are read from the KV cache, which holds the values of T exactly
//      (kv_cache_append copies them), so the cache itself changes nothing.
//  D5  Split softmax (flash-decoding). Training (F3): one block per row, m = max_j s_j,
//      e_j = exp(s_j - m), l = sum_j e_j over all j ascending. Rollout: the positions are cut
//      into consecutive chunks of kv_split; chunk c has its own max m_c, e_j = exp(s_j - m_c),
//      l_c = sum_{j in c} e_j (j ascending); the chunks are combined in chunk order with the
//      weights w_c = exp(m_c - m), m = max_c m_c (= max_j s_j): l = sum_c l_c w_c,
//      o = sum_c o_c w_c. The exponentials are taken of other arguments and multiplied by w_c,
//      and l is summed in another order: other bits. With kv_split >= L there is one chunk,
//      w_0 = exp(0) = 1, and e_j, l and lse are bit-identical to the training engine's.
//  D6  Probabilities NOT rounded. Training (F4): p_j = round_T(e_j) multiplies V (FA2's
//      conversion of the P tile to T before the P V tensor-core GEMM). Rollout: the fp32 e_j
//      multiplies V: o_c = sum_{j in c} e_j v_j in fp32 (j ascending). For T = float both are
//      the same.
//  D7  Normalisation. Training (F5): out = round_T(o * (1/l)) (reciprocal, then product: two
//      fp32 roundings before the one to T). Rollout: out = round_T(o / l) (one fp32 division).
//  D8  lse = m + log(l) in fp32 in both (F6), with the l of D5.
//  D9  Shape of the computation. Training: all queries of a packed sequence at once, k and v
//      from the same qkv tensor. Rollout: one query row per active sequence (or per prompt
//      token in a prefill), attending over its cache slot; rows of different sequences share a
//      call. Each (row, head) is one thread with a fixed operation sequence, so results are
//      batch-invariant: a pure function of (q, the slot's cache contents in [0, len), kv_split).
//
// What is the same: F1 (inputs read exactly), F2 (scores), exp/log (the fp32 kmath functions),
// the storage type T of every activation, fp32 for every product, sum and statistic, one
// rounding of every output. Operations not in this file (embedding, RMSNorm, RoPE, SwiGLU,
// log-softmax of the logits) are not covered by this list: a rollout-specific variant of any of
// them adds its difference here.
//
// FMA contraction: like the training kernels, these are written as separate fp32 products and
// sums; a compiler may contract them into FMAs (nvcc does by default; g++ does for C++ whenever
// the target has FMA, e.g. -march=native, even with -std=c++17). The orders above still hold and
// the results stay batch-invariant (one code path per element), but the bits then differ from a
// build without FMA; the tests' bit-for-bit emulations assume no contraction.
// =============================================================================================
//
// KV cache. cache_k and cache_v are [slots, max_seq, n_kv_head * head_dim] (LayoutRight): slot s
// holds one sequence, position p its p-th token, columns c*hd .. c*hd+hd-1 kv head c (the same
// column order as the k and v parts of a qkv row, see attention.hpp). Decoding one step for the
// active rows: qkv = linear(...); rope_forward(qkv, pos); kv_cache_append(qkv, slot, pos);
// attention_decode(qkv, cache, slot, len = pos + 1). A prefill of a prompt is the same pair of
// calls with one row per prompt token (each row's len = its position + 1).
//
// Argument checks. Shapes are checked on the host (std::invalid_argument). The slot, pos and len
// values live in device memory: one small parallel_reduce per call checks they are in range
// before any cache element is read or written (it synchronises the execution space instance).
//
// Work space per call: linear_decode, for 16-bit T, fp32 copies of x and W (exact); for all T,
// attention_decode an fp32 score buffer of R * n_head * max(len) (each (row, head) writes its
// scores once and reads them per chunk, instead of recomputing the dot products).
#include <climits>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "mantissa/kernels/attention.hpp"
#include "mantissa/kernels/convert.hpp"
#include "mantissa/kernels/types.hpp"

namespace mantissa {

// Output columns per work item of linear_decode (one x row against this many W rows at once, so
// the x row is loaded once per block; every element still runs the same operations, D3).
inline constexpr int decode_linear_block = 8;

// Positions ahead of the current one whose cache slice attention_decode prefetches (host builds).
inline constexpr int decode_prefetch_ahead = 16;

namespace detail {

[[noreturn]] inline void decode_fail(const char* who, const std::string& what) {
  throw std::invalid_argument(std::string("mantissa::") + who + ": " + what);
}
inline std::string decode_extents(std::size_t a, std::size_t b) {
  return "(" + std::to_string(a) + ", " + std::to_string(b) + ")";
}
inline void decode_check_heads(const char* who, std::size_t qkv_cols, int n_head, int n_kv_head, int head_dim) {
  if (n_head <= 0 || n_kv_head <= 0 || n_head % n_kv_head != 0)
    decode_fail(who, "n_head (" + std::to_string(n_head) + ") must be a positive multiple of n_kv_head (" +
                         std::to_string(n_kv_head) + ")");
  if (head_dim <= 0 || head_dim > attention_max_head_dim)
    decode_fail(who, "head_dim " + std::to_string(head_dim) + " outside [1, " +
                         std::to_string(attention_max_head_dim) + "]");
  if (qkv_cols != static_cast<std::size_t>(n_head + 2 * n_kv_head) * head_dim)
    decode_fail(who, "qkv has " + std::to_string(qkv_cols) + " columns, expected (n_head + 2 n_kv_head) head_dim = " +
                         std::to_string((n_head + 2 * n_kv_head) * head_dim));
}
template <class T>
void decode_check_cache(const char* who, const ConstView3<T>& cache_k, const ConstView3<T>& cache_v, int n_kv_head,
                        int head_dim) {
  const std::size_t cols = static_cast<std::size_t>(n_kv_head) * head_dim;
  if (cache_k.extent(2) != cols || cache_v.extent(0) != cache_k.extent(0) ||
      cache_v.extent(1) != cache_k.extent(1) || cache_v.extent(2) != cols)
    decode_fail(who, "cache_k and cache_v must both be [slots, max_seq, n_kv_head * head_dim = " +
                         std::to_string(cols) + "]");
  if (cache_k.extent(0) > static_cast<std::size_t>(INT_MAX) || cache_k.extent(1) >= static_cast<std::size_t>(INT_MAX))
    decode_fail(who, "cache extents must fit an int");
}

// to_float(x), exactly (bit for bit, NaN payloads included), without branches for fp16 so that
// the compiler vectorises the cache reads (precision.hpp's conversion normalises subnormals in a
// loop). Normal values: exponent rebiased by 112; Inf/NaN: by 224 (to 255), payload kept;
// zero/subnormal: 2^-14 (1 + m 2^-10) - 2^-14 = m 2^-24, an exact fp32 subtraction (Sterbenz),
// no subnormal arithmetic; then the sign. Tested against to_float on all 2^16 inputs.
KOKKOS_INLINE_FUNCTION float decode_load(float x) { return x; }
KOKKOS_INLINE_FUNCTION float decode_load(bf16_t x) { return to_float(x); }
KOKKOS_INLINE_FUNCTION float decode_load(fp16_t x) {
  const std::uint32_t h = x.bits;
  const std::uint32_t o = (h & 0x7fffu) << 13;  // exponent and mantissa at their fp32 places
  const std::uint32_t e = o & 0x0f800000u;
  const std::uint32_t inf_nan = 0u - static_cast<std::uint32_t>(e == 0x0f800000u);  // all ones or zero
  const std::uint32_t zero_sub = 0u - static_cast<std::uint32_t>(e == 0u);
  const std::uint32_t normal = o + 0x38000000u + (inf_nan & 0x38000000u);
  const std::uint32_t sub = float_bits(bits_float(o + 0x38800000u) - 6.103515625e-05f);
  return bits_float((sub & zero_sub) | (normal & ~zero_sub) | ((h & 0x8000u) << 16));
}

// sum_d a[d] b[d] in fp32 in the order of attention_dot (attention.hpp, F2): lane l sums
// d = l mod 8 ascending, the lanes combined as ((s0+s4)+(s2+s6))+((s1+s5)+(s3+s7)).
template <class B>
KOKKOS_INLINE_FUNCTION float decode_dot(const float* a, const B* b, int n) {
  float s[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
  int d = 0;
  for (; d + 8 <= n; d += 8)
    for (int l = 0; l < 8; ++l) s[l] += a[d + l] * decode_load(b[d + l]);
  if (d < n)
    for (int l = 0; l < 8; ++l)
      if (d + l < n) s[l] += a[d + l] * decode_load(b[d + l]);
  return ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
}

// out[b] = sum_{d<n} x[d] w[b*ldw + d] for b < NB (NB rows of W), each in the order of D1 and of
// attention_dot (attention.hpp): lane l sums d = l mod 8 ascending, the lanes are combined as
// ((s0+s4)+(s2+s6))+((s1+s5)+(s3+s7)). NB = 1 and NB > 1 give the same bits per row.
template <int NB>
KOKKOS_INLINE_FUNCTION void decode_dot_block(const float* x, const float* w, std::size_t ldw, int n, float* out) {
  // (The tail loop has a fixed trip count with a guard instead of a variable one, so every index
  // into s is a compile-time constant once unrolled and s need not live in memory.)
  float s[NB][8];
  for (int b = 0; b < NB; ++b)
    for (int l = 0; l < 8; ++l) s[b][l] = 0.0f;
  int d = 0;
  for (; d + 8 <= n; d += 8)
    for (int b = 0; b < NB; ++b)
      for (int l = 0; l < 8; ++l) s[b][l] += x[d + l] * w[b * ldw + d + l];
  if (d < n)
    for (int b = 0; b < NB; ++b)
      for (int l = 0; l < 8; ++l)
        if (d + l < n) s[b][l] += x[d + l] * w[b * ldw + d + l];
  for (int b = 0; b < NB; ++b)
    out[b] = ((s[b][0] + s[b][4]) + (s[b][2] + s[b][6])) + ((s[b][1] + s[b][5]) + (s[b][3] + s[b][7]));
}

// acc[b] = sum over the split_k chunks of K (chunk order) of decode_dot_block   (D1)
template <int NB>
KOKKOS_INLINE_FUNCTION void decode_split_k_dot(const float* x, const float* w, std::size_t ldw, int k, int split_k,
                                               float* acc) {
  for (int b = 0; b < NB; ++b) acc[b] = 0.0f;
  for (int c0 = 0; c0 < k;) {
    const int c1 = k - c0 <= split_k ? k : c0 + split_k;  // no int overflow for split_k near INT_MAX
    float part[NB];
    decode_dot_block<NB>(x + c0, w + c0, ldw, c1 - c0, part);
    for (int b = 0; b < NB; ++b) acc[b] += part[b];
    c0 = c1;
  }
}

// Host builds: asks the CPU to fetch the head's slice of a cache row a few positions ahead. A
// (row, head) walks the cache with a stride of a whole row (n_kv_head * head_dim elements), which
// the hardware prefetchers do not follow; without the hint the walk is bound by memory latency.
// No effect on any value; compiled out of device code.
template <class T>
KOKKOS_INLINE_FUNCTION void decode_prefetch(const T* p, int n) {
#if defined(__GNUC__) && !defined(__CUDA_ARCH__) && !defined(__HIP_DEVICE_COMPILE__) && !defined(__SYCL_DEVICE_ONLY__)
  const char* c = reinterpret_cast<const char*>(p);
  for (std::size_t b = 0; b < n * sizeof(T); b += 64) __builtin_prefetch(c + b);
#else
  (void)p;
  (void)n;
#endif
}

}  // namespace detail

// y[r,n] = round_T( sum_k x[r,k] W[n,k] (+ residual[r,n]) ), split-K order D1, one rounding (D2)
// x (R,K), W (Nout,K), residual (R,Nout) or empty (extent 0: no residual) -> y (R,Nout)
// residual may be the same View as y (each element is read before it is written, by the same
// thread); x and W must not overlap y. split_k >= 1 (split_k >= K: one chunk).
template <class T, class Exec>
void linear_decode(const Exec& space, ConstView2<T> x, ConstView2<T> W, ConstView2<T> residual, View2<T> y,
                   int split_k) {
  const std::size_t rows = x.extent(0), kdim = x.extent(1), nout = W.extent(0);
  const char* who = "linear_decode";
  if (split_k < 1) detail::decode_fail(who, "split_k must be >= 1, got " + std::to_string(split_k));
  if (W.extent(1) != kdim)
    detail::decode_fail(who, "W is " + detail::decode_extents(W.extent(0), W.extent(1)) + ", expected (Nout, K = " +
                                 std::to_string(kdim) + ")");
  if (kdim > static_cast<std::size_t>(INT_MAX)) detail::decode_fail(who, "K must fit an int");
  if (y.extent(0) != rows || y.extent(1) != nout)
    detail::decode_fail(who, "y is " + detail::decode_extents(y.extent(0), y.extent(1)) + ", expected " +
                                 detail::decode_extents(rows, nout));
  const bool has_residual = residual.extent(0) != 0;
  if (has_residual && (residual.extent(0) != rows || residual.extent(1) != nout))
    detail::decode_fail(who, "residual is " + detail::decode_extents(residual.extent(0), residual.extent(1)) +
                                 ", expected " + detail::decode_extents(rows, nout) + " or empty");
  if (rows == 0 || nout == 0) return;
  const ConstView2<float> xf = widen_to_fp32<T>(space, x, "mantissa::decode::x_fp32");
  const ConstView2<float> wf = widen_to_fp32<T>(space, W, "mantissa::decode::w_fp32");
  constexpr int nb = decode_linear_block;
  const std::size_t blocks = (nout + nb - 1) / nb;
  const int k = static_cast<int>(kdim);
  Kokkos::parallel_for(
      "mantissa::decode::linear", Kokkos::RangePolicy<Exec>(space, 0, rows * blocks),
      KOKKOS_LAMBDA(const std::size_t idx) {
        const std::size_t r = idx / blocks, n0 = (idx % blocks) * nb;
        const float* xr = xf.data() + r * xf.stride(0);
        const std::size_t ldw = wf.stride(0);
        float acc[nb];
        int count = nb;
        if (n0 + nb <= nout) {
          detail::decode_split_k_dot<nb>(xr, wf.data() + n0 * ldw, ldw, k, split_k, acc);
        } else {  // the last, partial block: one W row at a time, the same operations per element
          count = static_cast<int>(nout - n0);
          for (int b = 0; b < count; ++b)
            detail::decode_split_k_dot<1>(xr, wf.data() + (n0 + b) * ldw, ldw, k, split_k, acc + b);
        }
        for (int b = 0; b < count; ++b)
          y(r, n0 + b) = from_float<T>(has_residual ? acc[b] + to_float(residual(r, n0 + b)) : acc[b]);
      });
}

// cache_k[slot[r], pos[r], :] = k part of qkv row r, cache_v likewise with the v part (exact copies)
// qkv (R, (H+2Hkv)hd), slot (R), pos (R) -> cache_k, cache_v [slots, max_seq, Hkv*hd]
// Precondition: no two rows name the same (slot, pos). slot and pos out of range throw.
template <class T, class Exec>
void kv_cache_append(const Exec& space, ConstView2<T> qkv, ConstView1<int> slot, ConstView1<int> pos, int n_head,
                     int n_kv_head, int head_dim, View3<T> cache_k, View3<T> cache_v) {
  const char* who = "kv_cache_append";
  const std::size_t rows = qkv.extent(0);
  detail::decode_check_heads(who, qkv.extent(1), n_head, n_kv_head, head_dim);
  detail::decode_check_cache<T>(who, cache_k, cache_v, n_kv_head, head_dim);
  if (slot.extent(0) != rows || pos.extent(0) != rows)
    detail::decode_fail(who, "slot and pos need one entry per qkv row (" + std::to_string(rows) + ")");
  if (rows == 0) return;
  const int n_slots = static_cast<int>(cache_k.extent(0)), max_seq = static_cast<int>(cache_k.extent(1));
  int bad = 0;
  Kokkos::parallel_reduce(
      "mantissa::decode::append_check", Kokkos::RangePolicy<Exec>(space, 0, rows),
      KOKKOS_LAMBDA(const std::size_t r, int& count) {
        count += (slot(r) < 0 || slot(r) >= n_slots || pos(r) < 0 || pos(r) >= max_seq) ? 1 : 0;
      },
      bad);
  if (bad != 0)
    detail::decode_fail(who, std::to_string(bad) + " rows have slot outside [0, " + std::to_string(n_slots) +
                                 ") or pos outside [0, " + std::to_string(max_seq) + ")");
  const std::size_t cols = static_cast<std::size_t>(n_kv_head) * head_dim;
  const std::size_t k_col = static_cast<std::size_t>(n_head) * head_dim, v_col = k_col + cols;
  Kokkos::parallel_for(
      "mantissa::decode::append", Kokkos::RangePolicy<Exec>(space, 0, rows * cols),
      KOKKOS_LAMBDA(const std::size_t e) {
        const std::size_t r = e / cols, c = e % cols;
        cache_k(slot(r), pos(r), c) = qkv(r, k_col + c);
        cache_v(slot(r), pos(r), c) = qkv(r, v_col + c);
      });
}

// out[r, h*hd:(h+1)*hd] = sum_{j<len[r]} P[r,h,j] v[slot[r], j, kvh(h)],  P = softmax_j(q . k_j * scale)
// computed as D4-D8 (flash-decoding over chunks of kv_split positions, fp32 P, one rounding).
// qkv (R, (H+2Hkv)hd) (the q part is read; RoPE applied), cache_k/cache_v [slots, max_seq, Hkv*hd],
// slot (R), len (R) with 1 <= len[r] <= max_seq -> out (R, H*hd), lse (R, H) fp32 = m + log(l)
template <class T, class Exec>
void attention_decode(const Exec& space, ConstView2<T> qkv, ConstView3<T> cache_k, ConstView3<T> cache_v,
                      ConstView1<int> slot, ConstView1<int> len, int n_head, int n_kv_head, int head_dim, int kv_split,
                      View2<T> out, View2<float> lse) {
  const char* who = "attention_decode";
  const std::size_t rows = qkv.extent(0);
  detail::decode_check_heads(who, qkv.extent(1), n_head, n_kv_head, head_dim);
  detail::decode_check_cache<T>(who, cache_k, cache_v, n_kv_head, head_dim);
  if (kv_split < 1) detail::decode_fail(who, "kv_split must be >= 1, got " + std::to_string(kv_split));
  if (slot.extent(0) != rows || len.extent(0) != rows)
    detail::decode_fail(who, "slot and len need one entry per qkv row (" + std::to_string(rows) + ")");
  const std::size_t heads = static_cast<std::size_t>(n_head);
  if (out.extent(0) != rows || out.extent(1) != heads * head_dim)
    detail::decode_fail(who, "out is " + detail::decode_extents(out.extent(0), out.extent(1)) + ", expected " +
                                 detail::decode_extents(rows, heads * head_dim));
  if (lse.extent(0) != rows || lse.extent(1) != heads)
    detail::decode_fail(who, "lse is " + detail::decode_extents(lse.extent(0), lse.extent(1)) + ", expected " +
                                 detail::decode_extents(rows, heads));
  if (rows == 0) return;

  // Range check of slot and len, and the longest len (the size of the score buffer): an invalid
  // row reports max_seq + 1.
  const int n_slots = static_cast<int>(cache_k.extent(0)), max_seq = static_cast<int>(cache_k.extent(1));
  int longest = 0;
  Kokkos::parallel_reduce(
      "mantissa::decode::attention_check", Kokkos::RangePolicy<Exec>(space, 0, rows),
      KOKKOS_LAMBDA(const std::size_t r, int& m) {
        const bool ok = slot(r) >= 0 && slot(r) < n_slots && len(r) >= 1 && len(r) <= max_seq;
        m = kmax(m, ok ? len(r) : max_seq + 1);
      },
      Kokkos::Max<int>(longest));
  if (longest > max_seq)
    detail::decode_fail(who, "some rows have slot outside [0, " + std::to_string(n_slots) + ") or len outside [1, " +
                                 std::to_string(max_seq) + "]");

  // The fp32 scores of every (row, head), computed once (D4) and read by the chunk loop.
  const std::size_t stride = static_cast<std::size_t>(longest);
  const View1<float> scores(Kokkos::view_alloc(std::string("mantissa::decode::scores"), Kokkos::WithoutInitializing),
                            rows * heads * stride);
  const int hd = head_dim, group = n_head / n_kv_head;
  const float scale = attention_scale(hd);
  Kokkos::parallel_for(
      "mantissa::decode::attention", Kokkos::RangePolicy<Exec>(space, 0, rows * heads),
      KOKKOS_LAMBDA(const std::size_t idx) {
        const std::size_t r = idx / heads;
        const int h = static_cast<int>(idx % heads);
        const int s = slot(r), n_pos = len(r), kc = (h / group) * hd;
        float q[attention_max_head_dim];
        for (int d = 0; d < hd; ++d) q[d] = detail::decode_load(qkv(r, h * hd + d));  // F1
        float* sc = scores.data() + idx * stride;
        float m = 0.0f;
        for (int j = 0; j < n_pos; ++j) {
          if (j + decode_prefetch_ahead < n_pos) detail::decode_prefetch(&cache_k(s, j + decode_prefetch_ahead, kc), hd);
          sc[j] = detail::decode_dot(q, &cache_k(s, j, kc), hd) * scale;  // D4 (= F2)
          m = j == 0 ? sc[j] : kmax(m, sc[j]);
        }
        float o[attention_max_head_dim], oc[attention_max_head_dim];
        for (int d = 0; d < hd; ++d) o[d] = 0.0f;
        float l = 0.0f;
        for (int c0 = 0; c0 < n_pos;) {  // D5: chunks of kv_split positions, in order
          const int c1 = n_pos - c0 <= kv_split ? n_pos : c0 + kv_split;
          float mc = sc[c0];
          for (int j = c0 + 1; j < c1; ++j) mc = kmax(mc, sc[j]);
          float lc = 0.0f;
          for (int d = 0; d < hd; ++d) oc[d] = 0.0f;
          for (int j = c0; j < c1; ++j) {
            const float e = kmath::exp(sc[j] - mc);
            lc += e;
            if (j + decode_prefetch_ahead < n_pos) detail::decode_prefetch(&cache_v(s, j + decode_prefetch_ahead, kc), hd);
            const T* v = &cache_v(s, j, kc);
            for (int d = 0; d < hd; ++d) oc[d] += e * detail::decode_load(v[d]);  // D6: e not rounded to T
          }
          const float w = kmath::exp(mc - m);
          l += lc * w;
          for (int d = 0; d < hd; ++d) o[d] += oc[d] * w;
          c0 = c1;
        }
        for (int d = 0; d < hd; ++d) out(r, h * hd + d) = from_float<T>(o[d] / l);  // D7
        lse(r, h) = m + kmath::log(l);                                              // D8
      });
}

#define MANTISSA_DECODE_DECLARE(EXTERN, T)                                                                            \
  EXTERN template void linear_decode<T, ExecSpace>(const ExecSpace&, ConstView2<T>, ConstView2<T>, ConstView2<T>,     \
                                                   View2<T>, int);                                                    \
  EXTERN template void kv_cache_append<T, ExecSpace>(const ExecSpace&, ConstView2<T>, ConstView1<int>,                \
                                                     ConstView1<int>, int, int, int, View3<T>, View3<T>);             \
  EXTERN template void attention_decode<T, ExecSpace>(const ExecSpace&, ConstView2<T>, ConstView3<T>, ConstView3<T>, \
                                                      ConstView1<int>, ConstView1<int>, int, int, int, int, View2<T>, \
                                                      View2<float>);
MANTISSA_DECODE_DECLARE(extern, float)
MANTISSA_DECODE_DECLARE(extern, fp16_t)
MANTISSA_DECODE_DECLARE(extern, bf16_t)

}  // namespace mantissa
