#pragma once
// The ROLLOUT (inference) engine's kernels for KV-cached decoding: the linear layers
// (linear_decode here: consistent mode, and the default mode where decode_gemm is not available;
// decode_gemm in decode_gemm.hpp: the default mode on host CPUs with AVX-512), the KV cache
// (kv_cache_append) and decode attention (attention_decode).
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
//  D1  Reduction order. Training: gemm() (gemm.hpp) hands the fp32 product to a library
//      (oneDNN's matmul on CPUs with AVX-512, OpenBLAS sgemm on other CPUs, cublasGemmEx on
//      GPUs) whose order over K is the library's own, chosen by its blocking and kernels for the
//      shape (M, N, K) and the CPU, so a row's result may depend on how many rows are in the
//      call. Rollout, consistent mode (and default mode without decode_gemm): a fixed split-K order
//      (detail::decode_split_k_dot): K is cut into consecutive chunks of split_k elements;
//      inside a chunk 8 interleaved fp32 lanes (lane l takes the chunk's elements l, l+8,
//      l+16, ... in ascending order), combined as ((s0+s4)+(s2+s6))+((s1+s5)+(s3+s7)); the
//      chunk partials are added in fp32 in chunk order to an accumulator that starts at 0.
//  D1g Rollout, default mode, host CPUs with AVX-512 (decode_gemm.hpp): one GEMM over all active
//      rows on weights packed once per load (their exact fp32 values), what an inference engine's
//      decode GEMM does; per element acc = 0, then acc = fma(x[k], w[k], acc) for k ascending (one
//      rounding per fused multiply-add, no split-K), then D2's epilogue. Another order than D1's
//      split-K and than the training gemm's: default-mode log mu differs from consistent-mode log mu
//      in fp32 too. Still batch-invariant (D3): every element runs that sequence in whichever
//      register tile (up to 8 rows x 32 columns) it lands.
//  D2  Residual add fused into the epilogue. Training: t = round_T(x W^T), then the residual
//      add y = round_T(t + residual) (two roundings to T). Rollout (both D1 and D1g):
//      y = round_T(acc + residual) with the fp32 accumulator (one rounding).
//  D3  Batch invariance. Rollout: every output element is one fixed sequence of fp32
//      operations on (x row, W row, split_k); whichever code computes it (on host CPUs a 2-row
//      or a 1-row register tile of a work item, which depends on the row's position and on the
//      number of rows; elsewhere a block of decode_linear_block columns or the last partial
//      block) runs that same sequence. So a row's result does not depend on the number of rows
//      in the call or on its position. The training gemm gives no such guarantee.
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
//      call. Each (row, head) runs a fixed operation sequence (one thread, or on the team path one
//      team whose threads share the chunks and combine them in chunk order), so results are
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
// Argument checks. Shapes are checked on the host (std::invalid_argument) by every overload. The
// slot, pos and len values live in device memory. Two kinds of call:
//  - checked (kv_cache_append and attention_decode without a workspace): one small parallel_reduce
//    per call checks they are in range before any cache element is read or written and throws
//    for a bad row (it synchronises the execution space instance);
//  - trusted rows (the overloads with a DecodeWorkspace, for the rollout loop's per-token calls):
//    no parallel_reduce, no fence, no deep_copy, no allocation once the workspace has grown; the
//    kernels guard every row instead: kv_cache_append skips a row whose slot is outside
//    [0, slots) or pos outside [0, max_seq), attention_decode writes NaN to all out and lse entries
//    of a row whose slot is outside [0, slots) or len outside [1, max_seq]; neither reads or
//    writes anything else for such a row. Valid rows get the checked call's bits.
// (The guards run in the checked calls too, where they never trigger.)
//
// Work space: linear_decode none (it widens x and W to fp32 in small panels on each work item's
// stack on host CPUs, or as it loads them on devices). kv_cache_append none. attention_decode an
// fp32 score buffer (each (row, head) writes its scores once and reads them per chunk, instead of
// recomputing the dot products; the host path then overwrites them with the chunk's e_j): the
// checked call allocates R * n_head * max(len) floats per call (well under a microsecond on a
// host, glibc reuses the block; keeping the scores on each thread's stack instead was measured ~5%
// slower for the generic path); the trusted call takes them from DecodeWorkspace::scores, sized
// from host-known bounds, R * n_head * max_seq (max_seq = cache_k.extent(1)), grown when a call
// needs more and reused otherwise. The team path's other state is team scratch (below).
//
// Code paths of linear_decode (all compute the same operations per element, D1-D3; see
// "linear_decode on host CPUs" below). automatic: on host memory spaces x86-64 builds run
// register-blocked SIMD tiles (AVX + F16C when the CPU has them, else SSE2), chosen at run time,
// other host builds the generic path; on device memory spaces the team path. generic: one thread
// per (row, block of decode_linear_block columns) with the scalar 8-lane loop
// (detail::decode_split_k_dot). team (detail::DecodeLinearTeam): one team per block of
// decode_linear_team_cols columns, its threads over the block's (column, row) elements, the 8
// vector lanes of a thread over D1's 8 lanes (per chunk lane l reads elements l, l+8, ... of the W
// row and of the x row: contiguous across the lanes), the lane sums gathered exactly by a
// vector-level reduction (detail::DecodeLanesReducer, a bitwise OR of one contributor per lane)
// and combined in D1's tree. On a GPU that is the same per-element sequence with another tiling;
// nvcc's default FMA contraction then changes the bits as stated above.
//
// Code paths of attention_decode (the same operations per element, D4-D8; see "attention_decode
// on host CPUs" below). automatic: on host memory spaces, x86-64 builds whose CPU has AVX + F16C
// run host_avx: the scores of 8 keys per register tile (8 lanes per key, reduced together by the
// same shuffle tree as linear_decode) and P V over 8-float vectors of the head, the K/V rows
// widened exactly (F16C for fp16); other host builds, or a CPU without them, the generic path:
// one thread per (row, head), one key at a time (detail::decode_dot). On device memory spaces the
// team path (flash-decoding, detail::DecodeAttentionTeam): one team per (row, head); D5's chunks
// of kv_split positions are dealt to the team's threads (thread t: chunks t, t + nt, ...; a thread
// takes several when len > nt kv_split); the 8 vector lanes of a thread split the head dimension
// (the scores: lane l sums d = l mod 8, D4's lanes, contiguous reads of the key row across the
// lanes, gathered exactly and combined in the tree; P V: lane l holds o_c[d] for d = l mod 8,
// contiguous reads of the value row); m is the sequential kmax of all scores, found from each
// thread's first largest score and its chunk; the chunk partials l_c w_c and o_c[d] w_c go to team
// scratch (nt (hd + 2) floats, plus q, o and a few more) and are added to l and o in chunk order,
// nt chunks per round. The same bits as the generic path for every team size (tests: team sizes
// 1, 2, 4). The exponentials and the logarithm are the same kmath calls, one per position and per
// chunk, on every path. detail::attention_decode_path and detail::linear_decode_path name a path
// and, for team, a team size (0: the path chooses; sizes above decode_*_team_size_max throw).
//
// kv_cache_append on host builds copies one qkv row per iteration (contiguous loops); on devices
// one element per thread. Both are exact copies.
#include <climits>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "mantissa/kernels/attention.hpp"
#include "mantissa/kernels/types.hpp"

// Host x86-64 builds (MANTISSA_HOST_SIMD, host_simd.hpp): the register-blocked SIMD paths of
// linear_decode and attention_decode.
#include "mantissa/kernels/host_simd.hpp"

namespace mantissa {

// Output columns per thread of the generic (device) linear_decode (one x row against this many W
// rows at once, so the x row is loaded once per block; every element still runs the same
// operations, D3).
inline constexpr int decode_linear_block = 8;

// Positions ahead of the current one whose cache slice attention_decode prefetches (host builds).
inline constexpr int decode_prefetch_ahead = 16;

// Buffers of the trusted-rows overloads of kv_cache_append and attention_decode (the rollout loop's
// per-token calls): grown on demand on the first calls, then reused, so that a call with shapes it
// has seen allocates nothing. One per stream of calls (not shared by concurrent calls).
struct DecodeWorkspace {
  View1<float> scores;  // attention_decode: fp32 scores, rows * n_head * max_seq (max_seq = cache_k.extent(1))
};

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
// ((s0+s4)+(s2+s6))+((s1+s5)+(s3+s7)). NB = 1 and NB > 1 give the same bits per row. The
// operands are read with decode_load (exact), so x and w may be float, bf16_t or fp16_t.
template <int NB, class TX, class TW>
KOKKOS_INLINE_FUNCTION void decode_dot_block(const TX* x, const TW* w, std::size_t ldw, int n, float* out) {
  // (The tail loop has a fixed trip count with a guard instead of a variable one, so every index
  // into s is a compile-time constant once unrolled and s need not live in memory.)
  float s[NB][8];
  for (int b = 0; b < NB; ++b)
    for (int l = 0; l < 8; ++l) s[b][l] = 0.0f;
  int d = 0;
  for (; d + 8 <= n; d += 8)
    for (int b = 0; b < NB; ++b)
      for (int l = 0; l < 8; ++l) s[b][l] += decode_load(x[d + l]) * decode_load(w[b * ldw + d + l]);
  if (d < n)
    for (int b = 0; b < NB; ++b)
      for (int l = 0; l < 8; ++l)
        if (d + l < n) s[b][l] += decode_load(x[d + l]) * decode_load(w[b * ldw + d + l]);
  for (int b = 0; b < NB; ++b)
    out[b] = ((s[b][0] + s[b][4]) + (s[b][2] + s[b][6])) + ((s[b][1] + s[b][5]) + (s[b][3] + s[b][7]));
}

// acc[b] = sum over the split_k chunks of K (chunk order) of decode_dot_block   (D1)
template <int NB, class TX, class TW>
KOKKOS_INLINE_FUNCTION void decode_split_k_dot(const TX* x, const TW* w, std::size_t ldw, int k, int split_k,
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

// The 8 lanes of one 8-lane dot product (D1, D4), gathered from the 8 vector lanes of a team
// thread (lane l contributes slot l) by a Kokkos vector-level reduction whose join is a bitwise OR:
// every slot has one contributor and the identity (all bits zero) elsewhere, so the result holds each
// lane's float exactly (NaN payloads and signed zeros included) whatever order the backend joins in.
// The caller then combines the slots in the documented tree (decode_lanes_sum).
struct DecodeLanes {
  std::uint32_t b[8];
};
struct DecodeLanesReducer {
  using reducer = DecodeLanesReducer;
  using value_type = DecodeLanes;
  using result_view_type = Kokkos::View<value_type, Kokkos::HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;

  KOKKOS_INLINE_FUNCTION explicit DecodeLanesReducer(value_type& value) : value_(&value) {}
  MANTISSA_VOLATILE_JOIN(value_type, dst, src, {
    for (int l = 0; l < 8; ++l) dst.b[l] |= src.b[l];
  })
  KOKKOS_INLINE_FUNCTION void init(value_type& v) const {
    for (int l = 0; l < 8; ++l) v.b[l] = 0u;
  }
  KOKKOS_INLINE_FUNCTION value_type& reference() const { return *value_.data(); }
  KOKKOS_INLINE_FUNCTION result_view_type view() const { return value_; }
  KOKKOS_INLINE_FUNCTION bool references_scalar() const { return true; }

 private:
  result_view_type value_;
};
// ((s0+s4)+(s2+s6))+((s1+s5)+(s3+s7)), the lanes' combination of decode_dot and decode_dot_block.
KOKKOS_INLINE_FUNCTION float decode_lanes_sum(const DecodeLanes& a) {
  float s[8];
  for (int l = 0; l < 8; ++l) s[l] = bits_float(a.b[l]);
  return ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
}

// Vector lanes per team thread of the team paths on device spaces (the 8 lanes of D1/D4; host
// backends run the lanes as a loop and get vector length 1).
inline constexpr int decode_team_vector = 8;

// ---- linear_decode on host CPUs: register-blocked tiles, the same operations per element ----
//
// Host builds on x86-64 (g++/clang, not a device compiler) run linear_decode through the code
// below; every other build uses decode_split_k_dot, one thread per (row, block of columns). Both
// compute every output element with the same sequence of fp32 operations (D1, D2): that sequence
// is fixed by (x row, W row, split_k) alone, whatever the tiling. How the host code keeps it:
//  - The 8 lanes of D1 are the 8 floats of one vector (AVX: one 256-bit register; SSE2: two
//    128-bit ones, lanes 0-3 and 4-7): lane l of element (r, n) takes the chunk's elements
//    l, l+8, ... in ascending order, s_l = s_l + x*w, a product then a sum, as in
//    decode_dot_block. Vectorising over the 8 lanes is not vectorising over K in another order:
//    it is the documented order.
//  - A work item is a group of decode_item_rows rows x a panel of decode_item_cols columns. It
//    walks K in blocks of up to decode_k_block elements, each block whole chunks and pieces of
//    chunks, and widens its x rows and W rows of the block (exactly: decode_load, or F16C's
//    vcvtph2ps for fp16, which equals to_float except that it quiets signalling NaNs, and a
//    NaN operand gives the same quiet NaN product either way) into fp32 panels on its stack,
//    each chunk starting at a multiple of 8 floats and its tail padded with zeros in both x and
//    W: a padded lane adds 0*0 = +0, and s + (+0) = s for every s a lane can hold (a lane
//    starts at +0 and never becomes -0 in round-to-nearest), so the padding changes no bit.
//    fp32 blocks with nothing to pad are read in place. A chunk longer than what is left of the
//    block continues in the next block with its lanes kept in the item's lane buffer (a
//    multiple of 8 elements per piece, so every element stays in its lane).
//  - Register tiles of NR rows x NC columns (AVX: 2 x 4 or 1 x 8, SSE2: 2 x 2 or 1 x 4, i.e. 8
//    or 4 output elements) load each x vector once for NC columns and each W vector once for
//    NR rows. At the end of a chunk the tile's elements are reduced together by shuffles and
//    vector adds that form, per element, exactly ((s0+s4)+(s2+s6))+((s1+s5)+(s3+s7)), and the
//    partials are added to the elements' fp32 accumulators (acc = acc + partial, chunk order).
//  - The epilogue is D2's: v = acc (+ residual), then one rounding to T (for fp16 on the AVX path
//    by F16C's vcvtps2ph, round to nearest even, which equals fp16_bits_from_float on all 2^32
//    floats, NaNs included; checked exhaustively once, and in the tests on a sample).
//  - Columns past N in the last panel are computed on zero W rows and dropped; a row's tile
//    shape (2-row or 1-row tile) does not change any element's operations, so results are
//    batch-invariant (D3) and position-invariant.
//  - The instruction set is chosen at run time: AVX + F16C when the CPU has them (no FMA: the
//    functions are compiled for "avx,f16c" only, so nothing contracts a*b+c), else SSE2. In a
//    build for an FMA target (-march=native) the compiler may contract s + x*w into fma(x, w, s)
//    on both paths alike (see "FMA contraction" above).
// No allocation: the panels (~25 KiB) live on the work item's stack.
// (MANTISSA_HOST_SIMD: defined at the top of this file.)

}  // namespace detail

// Rows and columns of one work item of the host linear_decode, and the K elements its panels hold.
inline constexpr int decode_item_rows = 16;
inline constexpr int decode_item_cols = 16;
inline constexpr int decode_k_block = 128;

namespace detail {

// Which code computes linear_decode (all give the same bits). automatic: host_avx or host_sse2 on
// x86-64 host builds (by CPU), generic elsewhere. Tests name the others to compare them.
// On device memory spaces automatic = team (threads over output elements, the 8 vector lanes of a
// thread over D1's 8 lanes).
enum class LinearPath { automatic, generic, host_sse2, host_avx, team };
// The same for attention_decode: automatic = on host memory spaces host_avx on x86-64 host builds
// whose CPU has AVX and F16C, generic otherwise; on device memory spaces team (flash-decoding, one
// team per (row, head)). Every path can be named on every backend except host_avx.
enum class AttentionPath { automatic, generic, host_avx, team };

#if defined(MANTISSA_HOST_SIMD)

#define MANTISSA_DECODE_ALWAYS_INLINE inline __attribute__((always_inline))
#define MANTISSA_DECODE_AVX __attribute__((target("avx,f16c")))

using dec_v8 = float __attribute__((vector_size(32)));
using dec_v4 = float __attribute__((vector_size(16)));
#if defined(__has_builtin)
#if __has_builtin(__builtin_shufflevector)
#define MANTISSA_DECODE_SHUFFLE_VECTOR 1
#endif
#endif
#if defined(MANTISSA_DECODE_SHUFFLE_VECTOR)
#define MANTISSA_DECODE_SHUF8(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#define MANTISSA_DECODE_SHUF4(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
using dec_v8i = int __attribute__((vector_size(32)));
using dec_v4i = int __attribute__((vector_size(16)));
#define MANTISSA_DECODE_SHUF8(a, b, ...) __builtin_shuffle(a, b, dec_v8i{__VA_ARGS__})
#define MANTISSA_DECODE_SHUF4(a, b, ...) __builtin_shuffle(a, b, dec_v4i{__VA_ARGS__})
#endif

// The 8 lanes of one output element: one dec_v8 (AVX) or two dec_v4 (SSE2; [0] lanes 0-3, [1] 4-7).
struct DecodeIsaAvx {
  using V = dec_v8;
  static constexpr int NV = 1, E = 8;  // vectors per element, elements per register tile
};
struct DecodeIsaSse2 {
  using V = dec_v4;
  static constexpr int NV = 2, E = 4;
};

// Per element e < 8 of s (8 lanes each): p[e] = ((s0+s4)+(s2+s6))+((s1+s5)+(s3+s7)).
// [u_e | u_e+4] with u = lanes 0-3 + lanes 4-7 = (s0+s4, s1+s5, s2+s6, s3+s7); then z = u0 + u2 and
// u1 + u3 per element side by side; then their sum, the elements in order 0..7.
MANTISSA_DECODE_ALWAYS_INLINE void decode_reduce(const dec_v8 (&s)[8], dec_v8& p) {
  dec_v8 u[4];
  for (int e = 0; e < 4; ++e)
    u[e] = MANTISSA_DECODE_SHUF8(s[e], s[e + 4], 0, 1, 2, 3, 8, 9, 10, 11) +
           MANTISSA_DECODE_SHUF8(s[e], s[e + 4], 4, 5, 6, 7, 12, 13, 14, 15);
  const dec_v8 z01 = MANTISSA_DECODE_SHUF8(u[0], u[1], 0, 1, 8, 9, 4, 5, 12, 13) +
                     MANTISSA_DECODE_SHUF8(u[0], u[1], 2, 3, 10, 11, 6, 7, 14, 15);
  const dec_v8 z23 = MANTISSA_DECODE_SHUF8(u[2], u[3], 0, 1, 8, 9, 4, 5, 12, 13) +
                     MANTISSA_DECODE_SHUF8(u[2], u[3], 2, 3, 10, 11, 6, 7, 14, 15);
  p = MANTISSA_DECODE_SHUF8(z01, z23, 0, 2, 8, 10, 4, 6, 12, 14) +
      MANTISSA_DECODE_SHUF8(z01, z23, 1, 3, 9, 11, 5, 7, 13, 15);
}
// The same for 4 elements held as lane pairs s[2e] (lanes 0-3), s[2e+1] (lanes 4-7).
MANTISSA_DECODE_ALWAYS_INLINE void decode_reduce(const dec_v4 (&s)[8], dec_v4& p) {
  dec_v4 u[4];
  for (int e = 0; e < 4; ++e) u[e] = s[2 * e] + s[2 * e + 1];
  const dec_v4 z01 = MANTISSA_DECODE_SHUF4(u[0], u[1], 0, 1, 4, 5) + MANTISSA_DECODE_SHUF4(u[0], u[1], 2, 3, 6, 7);
  const dec_v4 z23 = MANTISSA_DECODE_SHUF4(u[2], u[3], 0, 1, 4, 5) + MANTISSA_DECODE_SHUF4(u[2], u[3], 2, 3, 6, 7);
  p = MANTISSA_DECODE_SHUF4(z01, z23, 0, 2, 4, 6) + MANTISSA_DECODE_SHUF4(z01, z23, 1, 3, 5, 7);
}

// One piece of a chunk, staged at offset off of the panels (len elements, padded to a multiple of 8).
struct DecodeSegment {
  int off, len, steps;  // offset in the panels, elements, 8-element steps
  bool first, last;     // the piece starts / ends its chunk
};

// Load / store of the floats p[0 .. size of V): through the unaligned, may_alias twins of the
// vector types (as immintrin.h's __m256_u), so no alignment or aliasing is assumed and no
// register is forced into memory (a memcpy from a tile's accumulator array makes g++ keep the
// whole array on the stack).
using dec_v8u = float __attribute__((vector_size(32), may_alias, aligned(4)));
using dec_v4u = float __attribute__((vector_size(16), may_alias, aligned(4)));
MANTISSA_DECODE_ALWAYS_INLINE void decode_loadu(dec_v8& v, const float* p) { v = *reinterpret_cast<const dec_v8u*>(p); }
MANTISSA_DECODE_ALWAYS_INLINE void decode_loadu(dec_v4& v, const float* p) { v = *reinterpret_cast<const dec_v4u*>(p); }
MANTISSA_DECODE_ALWAYS_INLINE void decode_storeu(float* p, const dec_v8& v) { *reinterpret_cast<dec_v8u*>(p) = v; }
MANTISSA_DECODE_ALWAYS_INLINE void decode_storeu(float* p, const dec_v4& v) { *reinterpret_cast<dec_v4u*>(p) = v; }

// A register tile: rows xb + r*ldx (r < NR) x columns wb + c*ldw (c < NC) over the block's
// segments (a segment's elements at offset off of every row). acc: the tile's E fp32
// accumulators; lanes: its E x 8 kept lanes.
template <class Isa, int NR, int NC>
MANTISSA_DECODE_ALWAYS_INLINE void decode_tile(const float* xb, std::size_t ldx, const float* wb, std::size_t ldw,
                                               const DecodeSegment* seg, int nseg, float* acc, float* lanes) {
  using V = typename Isa::V;
  constexpr int NV = Isa::NV, E = NR * NC, W = 8 / NV;
  static_assert(E == Isa::E, "a register tile holds Isa::E elements");
  V s[E * NV];
  for (int g = 0; g < nseg; ++g) {
    if (seg[g].first) {
      for (int i = 0; i < E * NV; ++i) s[i] = V{};
    } else {
      for (int i = 0; i < E * NV; ++i) decode_loadu(s[i], lanes + i * W);
    }
    const float* xp = xb + seg[g].off;
    const float* wp = wb + seg[g].off;
    for (int t = 0; t < seg[g].steps; ++t, xp += 8, wp += 8) {
      V xv[NR * NV];
      for (int r = 0; r < NR; ++r)
        for (int v = 0; v < NV; ++v) decode_loadu(xv[r * NV + v], xp + r * ldx + v * W);
      for (int c = 0; c < NC; ++c)
        for (int v = 0; v < NV; ++v) {
          V wv;
          decode_loadu(wv, wp + c * ldw + v * W);
          for (int r = 0; r < NR; ++r) s[(r * NC + c) * NV + v] += xv[r * NV + v] * wv;  // lane += x * w
        }
    }
    if (seg[g].last) {
      V p, a;
      decode_reduce(s, p);
      decode_loadu(a, acc);
      a += p;  // acc = acc + chunk partial (D1)
      decode_storeu(acc, a);
    } else {
      for (int i = 0; i < E * NV; ++i) decode_storeu(lanes + i * W, s[i]);
    }
  }
}

// Rows src + i*ld, i < n, elements [0, len) as floats (exact) into dst + i*decode_k_block (32-byte
// aligned), each padded with zeros to a multiple of 8 floats.
template <class Isa, class T>
MANTISSA_DECODE_ALWAYS_INLINE void decode_stage(const T* src, std::size_t ld, int n, float* dst, int len) {
  using V = typename Isa::V;
  constexpr int W = 8 / Isa::NV;
  for (int r = 0; r < n; ++r, src += ld, dst += decode_k_block) {
    int i = 0;
    if constexpr (std::is_same<T, float>::value) {
      for (; i + W <= len; i += W) {
        V v;
        decode_loadu(v, src + i);
        __asm__("" : "+x"(v));  // (keeps g++ from turning the loop into a memcpy call per row)
        decode_storeu(dst + i, v);
      }
    }
    for (; i < len; ++i) dst[i] = decode_load(src[i]);
    for (; (i & 7) != 0; ++i) dst[i] = 0.0f;
  }
}
// The same for fp16 with F16C (f16c_widen_row, host_simd.hpp). A call per segment, not inlined: an
// always_inline callee must not need more than its caller.
MANTISSA_DECODE_AVX inline void decode_stage_f16c(const fp16_t* src, std::size_t ld, int n, float* dst, int len) {
  for (int r = 0; r < n; ++r, src += ld, dst += decode_k_block) {
    f16c_widen_row(src, dst, len);
    for (int i = len; (i & 7) != 0; ++i) dst[i] = 0.0f;
  }
}
// y[i*ldy + j] = fp16 of v[i*ldv + j] (f16c_round_row: round to nearest even), i < n, j < m.
MANTISSA_DECODE_AVX inline void decode_round_f16c(const float* v, int ldv, int n, int m, fp16_t* y, std::size_t ldy) {
  for (int i = 0; i < n; ++i, v += ldv, y += ldy) f16c_round_row(v, y, m);
}
template <class Isa, class T>
MANTISSA_DECODE_ALWAYS_INLINE void decode_stage_isa(const T* src, std::size_t ld, int n, float* dst, int len) {
  if constexpr (std::is_same<Isa, DecodeIsaAvx>::value && std::is_same<T, fp16_t>::value) {
    decode_stage_f16c(src, ld, n, dst, len);
  } else {
    decode_stage<Isa>(src, ld, n, dst, len);
  }
}

// Everything one work item of the host linear_decode needs (raw host pointers, row strides).
template <class T>
struct DecodeLinearArgs {
  const T* x;
  std::size_t ldx;
  const T* w;
  std::size_t ldw;
  const T* res;  // nullptr: no residual
  std::size_t ldr;
  T* y;
  std::size_t ldy;
  std::size_t rows, nout, panels, groups;
  int k, split_k;
};

// Work item `item` = (column panel item / groups, row group item % groups): consecutive items share
// their W panel (read from memory once, then from L1), and the x rows of a call (at most a few
// tens of KiB in decode) stay in L1/L2, which matters once attention has swept the caches.
template <class T, class Isa>
MANTISSA_DECODE_ALWAYS_INLINE void decode_linear_item(const DecodeLinearArgs<T>& a, std::size_t item) {
  constexpr int RG = decode_item_rows, CP = decode_item_cols, KB = decode_k_block, E = Isa::E;
  constexpr int NC2 = E / 2, NC1 = E;  // columns of the 2-row and of the 1-row register tiles
  static_assert(CP % 8 == 0 && KB % 8 == 0, "panels hold whole 8-lane vectors");
  const std::size_t r0 = (item % a.groups) * RG, c0 = (item / a.groups) * CP;
  const int rg = a.rows - r0 < static_cast<std::size_t>(RG) ? static_cast<int>(a.rows - r0) : RG;
  const int cp = a.nout - c0 < static_cast<std::size_t>(CP) ? static_cast<int>(a.nout - c0) : CP;
  const int cpad = (cp + 7) / 8 * 8;  // columns computed (cp..cpad: zero W rows, dropped)
  alignas(32) float xb[RG * KB];
  alignas(32) float wb[CP * KB];
  alignas(32) float acc[RG * CP];
  alignas(32) float lanes[RG * CP * 8];
  DecodeSegment seg[KB / 8];
  const int k = a.k, split_k = a.split_k;
  int kk = 0, cstart = 0, cend = k <= split_k ? k : split_k;
  int tiles = 0;  // register tiles of the item (2-row tiles, then the odd row's 1-row tiles)
  for (int r = 0; r < rg; r += 2) tiles += r + 2 <= rg ? cpad / NC2 : cpad / NC1;
  for (int i = 0; i < tiles * E; ++i) acc[i] = 0.0f;
  while (kk < k) {
    // the next block: whole chunks and pieces of chunks, each at a multiple of 8 floats
    const int kb0 = kk;
    int nseg = 0, off = 0;
    bool whole = true;  // every segment a multiple of 8 elements: offsets are k - kb0
    while (kk < k && off < KB) {
      const int len = cend - kk < KB - off ? cend - kk : KB - off;
      seg[nseg++] = DecodeSegment{off, len, (len + 7) / 8, kk == cstart, kk + len == cend};
      whole = whole && len % 8 == 0;
      off += (len + 7) / 8 * 8;
      kk += len;
      if (kk == cend) {
        cstart = kk;
        cend = k - kk <= split_k ? k : kk + split_k;
      }
    }
    // fp32 operands with nothing to pad are read in place; the others are staged (widened, padded)
    const float *xp = xb, *wp = wb;
    std::size_t ldx = KB, ldw = KB;
    if (std::is_same<T, float>::value && whole && cp == cpad) {
      xp = reinterpret_cast<const float*>(a.x + r0 * a.ldx + kb0), ldx = a.ldx;
      wp = reinterpret_cast<const float*>(a.w + c0 * a.ldw + kb0), ldw = a.ldw;
    } else {
      for (int g = 0, q = kb0; g < nseg; q += seg[g].len, ++g) {
        decode_stage_isa<Isa>(a.x + r0 * a.ldx + q, a.ldx, rg, xb + seg[g].off, seg[g].len);
        decode_stage_isa<Isa>(a.w + c0 * a.ldw + q, a.ldw, cp, wb + seg[g].off, seg[g].len);
        for (int c = cp; c < cpad; ++c)
          for (int i = 0; i < seg[g].steps * 8; ++i) wb[c * KB + seg[g].off + i] = 0.0f;
      }
    }
    int t = 0, r = 0;
    for (; r + 2 <= rg; r += 2)
      for (int c = 0; c < cpad; c += NC2, ++t)
        decode_tile<Isa, 2, NC2>(xp + r * ldx, ldx, wp + c * ldw, ldw, seg, nseg, acc + t * E, lanes + t * E * 8);
    if (r < rg)
      for (int c = 0; c < cpad; c += NC1, ++t)
        decode_tile<Isa, 1, NC1>(xp + r * ldx, ldx, wp + c * ldw, ldw, seg, nseg, acc + t * E, lanes + t * E * 8);
  }
  // v = acc (+ residual) in fp32, rows of the panel side by side (the residual is read here,
  // before y is written); then y = round_T(v), one rounding (D2), a row of the panel at a time.
  // The tiles' accumulators are copied out as whole row pieces (columns cp..cpad are padding,
  // never stored to y) and the residual add and the rounding run as plain loops over a row, which
  // the compiler vectorises: same operations per element.
  float* v = xb;  // (the x panel is no longer needed)
  int t = 0, r = 0;
  for (; r + 2 <= rg; r += 2)
    for (int c = 0; c < cpad; c += NC2, ++t)
      for (int e = 0; e < NC2; ++e) {
        v[r * CP + c + e] = acc[t * E + e];
        v[(r + 1) * CP + c + e] = acc[t * E + NC2 + e];
      }
  if (r < rg)
    for (int c = 0; c < cpad; c += NC1, ++t)
      for (int e = 0; e < NC1; ++e) v[r * CP + c + e] = acc[t * E + e];
  if (a.res) {
    for (int i = 0; i < rg; ++i) {
      const T* res = a.res + (r0 + i) * a.ldr + c0;
      float* vi = v + i * CP;
      for (int j = 0; j < cp; ++j) vi[j] = vi[j] + decode_load(res[j]);
    }
  }
  T* y = a.y + r0 * a.ldy + c0;
  if constexpr (std::is_same<Isa, DecodeIsaAvx>::value && std::is_same<T, fp16_t>::value) {
    decode_round_f16c(v, CP, rg, cp, y, a.ldy);
  } else {
    for (int i = 0; i < rg; ++i)
      for (int j = 0; j < cp; ++j) y[i * a.ldy + j] = from_float<T>(v[i * CP + j]);
  }
}

template <class T>
MANTISSA_DECODE_AVX void decode_linear_item_avx(const DecodeLinearArgs<T>& a, std::size_t item) {
  decode_linear_item<T, DecodeIsaAvx>(a, item);
}
template <class T>
void decode_linear_item_sse2(const DecodeLinearArgs<T>& a, std::size_t item) {
  decode_linear_item<T, DecodeIsaSse2>(a, item);
}

// ---- attention_decode on host CPUs (AVX + F16C): the same operations per element ----
//
// One work item per (row, head), as on the generic path, with the same fp32 operations (D4-D8):
//  - Scores (D4): 8 keys at a time. Key e of the tile has its own 8-lane accumulator (one vector:
//    lane l sums q[d] * k[d] for d = l mod 8 ascending, a product then a sum, as decode_dot),
//    and decode_reduce combines the 8 keys' lanes at once, per key exactly as
//    ((s0+s4)+(s2+s6))+((s1+s5)+(s3+s7)); then the product with scale. A head_dim that is not a
//    multiple of 8 ends with one step on zero-padded q and k (a padded lane adds 0*0 = +0, which
//    changes no lane, see the linear path above). The keys past len in the last tile repeat a
//    valid key and their scores are dropped. K is widened exactly (fp32 read in place, bf16 by
//    a 16-bit shift, fp16 by F16C's vcvtph2ps, which quiets signalling NaNs only).
//  - m and each chunk's mc: the same scalar kmax loops over the stored scores. The chunk's
//    e_j = exp_fp32(s_j - mc) (the same function, one call per position) and lc (j ascending)
//    as before; e_j then replaces s_j in the buffer.
//  - P V (D5, D6): oc[d] = 0 + e_j v_j[d] + ... (j ascending), 8 consecutive d per vector, up to
//    4 vectors (32 d) per pass over the chunk's V rows; then o[d] = o[d] + oc[d] w.
//  - out = round_T(o / l) (vector division; fp16 by vcvtps2ph, round to nearest even, as in
//    linear_decode), lse = m + kmath::log(l).
// Nothing here depends on the other rows of the call: batch-invariant as D9 states.

// Everything one work item of the host attention_decode needs (raw host pointers, strides).
template <class T>
struct DecodeAttentionArgs {
  const T* qkv;
  std::size_t ldq;
  const T* ck;
  const T* cv;
  std::size_t ld_slot, ld_pos;  // cache strides (k and v alike)
  const int* slot;
  const int* len;
  T* out;
  std::size_t ldo;
  float* lse;
  std::size_t ldl;
  float* scores;
  std::size_t stride;  // floats of the score buffer per (row, head)
  int heads, group, hd, kv_split;
  int n_slots, max_seq;  // rows with slot outside [0, n_slots) or len outside [1, max_seq] get NaN
  float scale;
};

// v = the 8 values at p as floats, exactly (fp16: F16C; bf16: the bits shifted up by 16).
MANTISSA_DECODE_AVX MANTISSA_DECODE_ALWAYS_INLINE void decode_widen8(dec_v8& v, const float* p) { decode_loadu(v, p); }
MANTISSA_DECODE_AVX MANTISSA_DECODE_ALWAYS_INLINE void decode_widen8(dec_v8& v, const fp16_t* p) {
  v = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
MANTISSA_DECODE_AVX MANTISSA_DECODE_ALWAYS_INLINE void decode_widen8(dec_v8& v, const bf16_t* p) {
  const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)), z = _mm_setzero_si128();
  v = _mm256_castsi256_ps(
      _mm256_insertf128_si256(_mm256_castsi128_si256(_mm_unpacklo_epi16(z, x)), _mm_unpackhi_epi16(z, x), 1));
}
// The first n < 8 values at p (decode_load, exact), the other lanes +0.
template <class T>
MANTISSA_DECODE_AVX MANTISSA_DECODE_ALWAYS_INLINE void decode_widen_tail(dec_v8& v, const T* p, int n) {
  float t[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
  for (int i = 0; i < n; ++i) t[i] = decode_load(p[i]);
  decode_loadu(v, t);
}

// o[g] += (sum_{j in [c0, c1)} e[j] v_j[8g .. 8g+8)) * w for g < G (G vectors of head elements
// starting at vb; Tail: the last of them has only `tail` elements), v_j = vb + j * ld.
template <int G, bool Tail, class T>
MANTISSA_DECODE_AVX MANTISSA_DECODE_ALWAYS_INLINE void decode_attention_pv(const T* vb, std::size_t ld, int c0, int c1,
                                                                           const float* e, float w, int tail,
                                                                           dec_v8* o) {
  dec_v8 acc[G];
  for (int g = 0; g < G; ++g) acc[g] = dec_v8{};
  for (int j = c0; j < c1; ++j) {
    const dec_v8 ev = _mm256_set1_ps(e[j]);
    const T* vp = vb + j * ld;
    for (int g = 0; g < G; ++g) {
      dec_v8 v;
      if (Tail && g == G - 1) decode_widen_tail(v, vp + 8 * g, tail);
      else decode_widen8(v, vp + 8 * g);
      acc[g] += ev * v;  // oc[d] = oc[d] + e_j v_j[d]   (D6: e not rounded to T)
    }
  }
  const dec_v8 wv = _mm256_set1_ps(w);
  for (int g = 0; g < G; ++g) o[g] += acc[g] * wv;  // o[d] = o[d] + oc[d] w   (D5)
}

template <class T>
MANTISSA_DECODE_AVX void decode_attention_item_avx(const DecodeAttentionArgs<T>& a, std::size_t idx) {
  constexpr int MV = attention_max_head_dim / 8;
  const std::size_t r = idx / a.heads;
  const int h = static_cast<int>(idx % a.heads);
  const int hd = a.hd, n_pos = a.len[r], nf = hd / 8, tail = hd % 8, nv = nf + (tail != 0);
  if (a.slot[r] < 0 || a.slot[r] >= a.n_slots || n_pos < 1 || n_pos > a.max_seq) {  // guard: NaN, no access
    T* op = a.out + r * a.ldo + static_cast<std::size_t>(h) * hd;
    for (int d = 0; d < hd; ++d) op[d] = from_float<T>(bits_float(0x7fc00000u));
    a.lse[r * a.ldl + h] = bits_float(0x7fc00000u);
    return;
  }
  const std::size_t ldp = a.ld_pos;
  const std::size_t base = static_cast<std::size_t>(a.slot[r]) * a.ld_slot + static_cast<std::size_t>(h / a.group) * hd;
  const T* kb = a.ck + base;
  const T* vb = a.cv + base;

  dec_v8 q[MV];  // F1: q read exactly
  const T* qp = a.qkv + r * a.ldq + static_cast<std::size_t>(h) * hd;
  for (int t = 0; t < nf; ++t) decode_widen8(q[t], qp + 8 * t);
  if (tail != 0) decode_widen_tail(q[nf], qp + 8 * nf, tail);

  // D4: the scores, 8 keys per register tile.
  float* sc = a.scores + idx * a.stride;
  const dec_v8 scale = _mm256_set1_ps(a.scale);
  for (int j = 0; j < n_pos; j += 8) {
    const int nk = n_pos - j < 8 ? n_pos - j : 8;
    const T* kp[8];
    for (int e = 0; e < 8; ++e) kp[e] = kb + static_cast<std::size_t>(j + (e < nk ? e : 0)) * ldp;
    for (int e = 0; e < 8; ++e)
      if (j + decode_prefetch_ahead + e < n_pos) decode_prefetch(kp[0] + (decode_prefetch_ahead + e) * ldp, hd);
    dec_v8 s[8];
    for (int e = 0; e < 8; ++e) s[e] = dec_v8{};
    for (int t = 0; t < nf; ++t) {
      const dec_v8 qv = q[t];
      for (int e = 0; e < 8; ++e) {
        dec_v8 kv;
        decode_widen8(kv, kp[e] + 8 * t);
        s[e] += qv * kv;  // lane += q * k
      }
    }
    if (tail != 0)
      for (int e = 0; e < 8; ++e) {
        dec_v8 kv;
        decode_widen_tail(kv, kp[e] + 8 * nf, tail);
        s[e] += q[nf] * kv;
      }
    dec_v8 p;
    decode_reduce(s, p);
    p *= scale;  // s_j = dot * scale
    if (nk == 8) {
      decode_storeu(sc + j, p);
    } else {
      float t8[8];
      decode_storeu(t8, p);
      for (int e = 0; e < nk; ++e) sc[j + e] = t8[e];
    }
  }
  float m = sc[0];
  for (int j = 1; j < n_pos; ++j) m = kmax(m, sc[j]);

  dec_v8 o[MV];
  for (int t = 0; t < nv; ++t) o[t] = dec_v8{};
  float l = 0.0f;
  for (int c0 = 0; c0 < n_pos;) {  // D5: chunks of kv_split positions, in order
    const int c1 = n_pos - c0 <= a.kv_split ? n_pos : c0 + a.kv_split;
    float mc = sc[c0];
    for (int j = c0 + 1; j < c1; ++j) mc = kmax(mc, sc[j]);
    float lc = 0.0f;
    for (int j = c0; j < c1; ++j) {
      const float e = exp_fp32(sc[j] - mc);
      lc += e;
      sc[j] = e;
    }
    for (int j = c0 + decode_prefetch_ahead; j < c1 + decode_prefetch_ahead && j < n_pos; ++j)
      decode_prefetch(vb + j * ldp, hd);
    const float w = exp_fp32(mc - m);
    l += lc * w;
    int t = 0;
    for (; t + 4 <= nf; t += 4) decode_attention_pv<4, false>(vb + 8 * t, ldp, c0, c1, sc, w, 0, o + t);
    for (; t < nf; ++t) decode_attention_pv<1, false>(vb + 8 * t, ldp, c0, c1, sc, w, 0, o + t);
    if (tail != 0) decode_attention_pv<1, true>(vb + 8 * nf, ldp, c0, c1, sc, w, tail, o + nf);
    c0 = c1;
  }

  // D7, D8
  T* op = a.out + r * a.ldo + static_cast<std::size_t>(h) * hd;
  const dec_v8 lv = _mm256_set1_ps(l);
  for (int t = 0; t < nv; ++t) {
    const dec_v8 y = o[t] / lv;
    const int n = t < nf ? 8 : tail;
    if constexpr (std::is_same<T, float>::value) {
      if (n == 8) {
        decode_storeu(op + 8 * t, y);
        continue;
      }
    } else if constexpr (std::is_same<T, fp16_t>::value) {
      if (n == 8) {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(op + 8 * t),
                         _mm256_cvtps_ph(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        continue;
      }
    }
    float t8[8];
    decode_storeu(t8, y);
    for (int i = 0; i < n; ++i) op[8 * t + i] = from_float<T>(t8[i]);
  }
  a.lse[r * a.ldl + h] = m + kmath::log(l);
}

#endif  // MANTISSA_HOST_SIMD

// Whether `path` can run here (automatic and generic always can).
template <class Exec>
bool decode_linear_path_available(LinearPath path) {
#if defined(MANTISSA_HOST_SIMD)
  constexpr bool host = std::is_same<typename Exec::memory_space, Kokkos::HostSpace>::value &&
                        std::is_same<MemSpace, Kokkos::HostSpace>::value;
  if (path == LinearPath::host_sse2) return host;
  if (path == LinearPath::host_avx) return host && host_avx_f16c();
  return true;
#else
  return path == LinearPath::automatic || path == LinearPath::generic || path == LinearPath::team;
#endif
}

template <class Exec>
bool decode_attention_path_available(AttentionPath path) {
#if defined(MANTISSA_HOST_SIMD)
  constexpr bool host = std::is_same<typename Exec::memory_space, Kokkos::HostSpace>::value &&
                        std::is_same<MemSpace, Kokkos::HostSpace>::value;
  if (path == AttentionPath::host_avx) return host && host_avx_f16c();
  return true;
#else
  return path != AttentionPath::host_avx;
#endif
}

}  // namespace detail

namespace detail {

// Output columns per team of the team path of linear_decode, and its threads per team at most when
// it chooses (team_size 0).
inline constexpr int decode_linear_team_cols = 16;
inline constexpr int decode_linear_team_threads = 32;

// The team path of linear_decode: one team per block of decode_linear_team_cols columns; its threads
// take the block's (column, row) elements (the rows of a column one after another, so a W row is
// read by neighbouring threads while it is in cache); the 8 vector lanes of a thread are D1's 8
// lanes: for each split_k chunk lane l sums x[i] w[i] for i = c0 + l, c0 + l + 8, ... ascending (8
// consecutive elements of the W row and of the x row across the lanes: contiguous reads), the lane
// sums are gathered exactly (DecodeLanesReducer) and combined as ((s0+s4)+(s2+s6))+((s1+s5)+(s3+s7)),
// and acc = acc + partial in chunk order; then D2's epilogue. Per element the operations of
// decode_split_k_dot: the generic path's bits for every team size.
template <class T, class Exec>
struct DecodeLinearTeam {
  using policy = Kokkos::TeamPolicy<Exec>;
  using member = typename policy::member_type;
  ConstView2<T> x, W, residual;
  View2<T> y;
  int rows, nout, k, split_k;
  bool has_residual;

  KOKKOS_INLINE_FUNCTION void operator()(const member& team) const {
    const int n0 = team.league_rank() * decode_linear_team_cols;
    const int nc = nout - n0 < decode_linear_team_cols ? nout - n0 : decode_linear_team_cols;
    Kokkos::parallel_for(Kokkos::TeamThreadRange(team, nc * rows), [&](const int e) {
      const int n = n0 + e / rows, r = e % rows;
      const T* xr = x.data() + static_cast<std::size_t>(r) * x.stride(0);
      const T* wr = W.data() + static_cast<std::size_t>(n) * W.stride(0);
      float acc = 0.0f;
      for (int c0 = 0; c0 < k;) {
        const int c1 = k - c0 <= split_k ? k : c0 + split_k;  // no int overflow for split_k near INT_MAX
        DecodeLanes lanes;
        Kokkos::parallel_reduce(
            Kokkos::ThreadVectorRange(team, 8),
            [&](const int l, DecodeLanes& a) {
              float s = 0.0f;
              for (std::ptrdiff_t i = c0 + l; i < c1; i += 8) s += decode_load(xr[i]) * decode_load(wr[i]);
              a.b[l] |= float_bits(s);
            },
            DecodeLanesReducer(lanes));
        acc += decode_lanes_sum(lanes);  // acc = acc + chunk partial (D1)
        c0 = c1;
      }
      Kokkos::single(Kokkos::PerThread(team), [&]() {
        y(r, n) = from_float<T>(has_residual ? acc + to_float(residual(r, n)) : acc);  // D2
      });
    });
  }
};

// The largest team size the team path of linear_decode can run with on `space`'s backend.
template <class T, class Exec>
int decode_linear_team_size_max(const Exec& space) {
  constexpr bool host = std::is_same<typename Exec::memory_space, Kokkos::HostSpace>::value;
  const typename DecodeLinearTeam<T, Exec>::policy p(space, 1, 1, host ? 1 : decode_team_vector);
  return p.team_size_max(DecodeLinearTeam<T, Exec>{}, Kokkos::ParallelForTag());
}

// linear_decode (below) with the code path named (tests: every path gives the same bits). Throws
// std::invalid_argument for a path that cannot run here (decode_linear_path_available) or a team
// size the backend refuses (team path; 0: choose).
template <class T, class Exec>
void linear_decode_path(const Exec& space, ConstView2<T> x, ConstView2<T> W, ConstView2<T> residual, View2<T> y,
                        int split_k, LinearPath path, int team_size = 0) {
  const std::size_t rows = x.extent(0), kdim = x.extent(1), nout = W.extent(0);
  const char* who = "linear_decode";
  if (split_k < 1) decode_fail(who, "split_k must be >= 1, got " + std::to_string(split_k));
  if (W.extent(1) != kdim)
    decode_fail(who, "W is " + decode_extents(W.extent(0), W.extent(1)) + ", expected (Nout, K = " +
                         std::to_string(kdim) + ")");
  if (kdim > static_cast<std::size_t>(INT_MAX)) decode_fail(who, "K must fit an int");
  if (y.extent(0) != rows || y.extent(1) != nout)
    decode_fail(who, "y is " + decode_extents(y.extent(0), y.extent(1)) + ", expected " + decode_extents(rows, nout));
  const bool has_residual = residual.extent(0) != 0;
  if (has_residual && (residual.extent(0) != rows || residual.extent(1) != nout))
    decode_fail(who, "residual is " + decode_extents(residual.extent(0), residual.extent(1)) + ", expected " +
                         decode_extents(rows, nout) + " or empty");
  if (!decode_linear_path_available<Exec>(path)) decode_fail(who, "the requested code path cannot run here");
  if (rows == 0 || nout == 0) return;
  const int k = static_cast<int>(kdim);
  constexpr bool host = std::is_same<typename Exec::memory_space, Kokkos::HostSpace>::value &&
                        std::is_same<MemSpace, Kokkos::HostSpace>::value;
  if (path == LinearPath::team || (path == LinearPath::automatic && !host)) {
    using F = DecodeLinearTeam<T, Exec>;
    if (rows * static_cast<std::size_t>(decode_linear_team_cols) > static_cast<std::size_t>(INT_MAX) ||
        nout > static_cast<std::size_t>(INT_MAX))
      decode_fail(who, "the team path needs rows * " + std::to_string(decode_linear_team_cols) +
                           " and Nout to fit an int");
    const int tmax = decode_linear_team_size_max<T>(space);
    const int ts = team_size != 0 ? team_size : kmax(1, kmin(tmax, decode_linear_team_threads));
    if (ts < 1 || ts > tmax)
      decode_fail(who, "team size " + std::to_string(ts) + " outside [1, " + std::to_string(tmax) + "] here");
    const int vec = std::is_same<typename Exec::memory_space, Kokkos::HostSpace>::value ? 1 : decode_team_vector;
    const int blocks = static_cast<int>((nout + decode_linear_team_cols - 1) / decode_linear_team_cols);
    const F f{x, W, residual, y, static_cast<int>(rows), static_cast<int>(nout), k, split_k, has_residual};
    Kokkos::parallel_for("mantissa::decode::linear", typename F::policy(space, blocks, ts, vec), f);
    return;
  }
#if defined(MANTISSA_HOST_SIMD)
  if constexpr (host) {
    if (path != LinearPath::generic) {
      const bool avx = path == LinearPath::host_avx || (path == LinearPath::automatic && host_avx_f16c());
      const std::size_t panels = (nout + decode_item_cols - 1) / decode_item_cols;
      const std::size_t groups = (rows + decode_item_rows - 1) / decode_item_rows;
      const DecodeLinearArgs<T> a{x.data(),
                                  x.stride(0),
                                  W.data(),
                                  W.stride(0),
                                  has_residual ? residual.data() : nullptr,
                                  has_residual ? residual.stride(0) : 0,
                                  y.data(),
                                  y.stride(0),
                                  rows,
                                  nout,
                                  panels,
                                  groups,
                                  k,
                                  split_k};
      const Kokkos::RangePolicy<Exec> items(space, 0, groups * panels);
      if (avx)
        Kokkos::parallel_for(
            "mantissa::decode::linear", items, KOKKOS_LAMBDA(const std::size_t i) { decode_linear_item_avx<T>(a, i); });
      else
        Kokkos::parallel_for(
            "mantissa::decode::linear", items, KOKKOS_LAMBDA(const std::size_t i) { decode_linear_item_sse2<T>(a, i); });
      return;
    }
  }
#endif
  // Generic (device) path: one thread per (row, block of decode_linear_block columns), the
  // operands read in T and widened as they are loaded (decode_load, exact).
  constexpr int nb = decode_linear_block;
  const std::size_t blocks = (nout + nb - 1) / nb;
  Kokkos::parallel_for(
      "mantissa::decode::linear", Kokkos::RangePolicy<Exec>(space, 0, rows * blocks),
      KOKKOS_LAMBDA(const std::size_t idx) {
        const std::size_t r = idx / blocks, n0 = (idx % blocks) * nb;
        const T* xr = x.data() + r * x.stride(0);
        const std::size_t ldw = W.stride(0);
        float acc[nb];
        int count = nb;
        if (n0 + nb <= nout) {
          decode_split_k_dot<nb>(xr, W.data() + n0 * ldw, ldw, k, split_k, acc);
        } else {  // the last, partial block: one W row at a time, the same operations per element
          count = static_cast<int>(nout - n0);
          for (int b = 0; b < count; ++b) decode_split_k_dot<1>(xr, W.data() + (n0 + b) * ldw, ldw, k, split_k, acc + b);
        }
        for (int b = 0; b < count; ++b)
          y(r, n0 + b) = from_float<T>(has_residual ? acc[b] + to_float(residual(r, n0 + b)) : acc[b]);
      });
}

}  // namespace detail

// y[r,n] = round_T( sum_k x[r,k] W[n,k] (+ residual[r,n]) ), split-K order D1, one rounding (D2)
// x (R,K), W (Nout,K), residual (R,Nout) or empty (extent 0: no residual) -> y (R,Nout)
// residual may be the same View as y (each element is read before it is written, by the same
// thread); x and W must not overlap y. split_k >= 1 (split_k >= K: one chunk). No allocation.
template <class T, class Exec>
void linear_decode(const Exec& space, ConstView2<T> x, ConstView2<T> W, ConstView2<T> residual, View2<T> y,
                   int split_k) {
  detail::linear_decode_path<T>(space, x, W, residual, y, split_k, detail::LinearPath::automatic);
}

namespace detail {

// Shape checks of kv_cache_append (host; std::invalid_argument).
template <class T>
void decode_check_append(const char* who, const ConstView2<T>& qkv, const ConstView1<int>& slot,
                         const ConstView1<int>& pos, int n_head, int n_kv_head, int head_dim,
                         const ConstView3<T>& cache_k, const ConstView3<T>& cache_v) {
  const std::size_t rows = qkv.extent(0);
  decode_check_heads(who, qkv.extent(1), n_head, n_kv_head, head_dim);
  decode_check_cache<T>(who, cache_k, cache_v, n_kv_head, head_dim);
  if (slot.extent(0) != rows || pos.extent(0) != rows)
    decode_fail(who, "slot and pos need one entry per qkv row (" + std::to_string(rows) + ")");
}

// The copies of kv_cache_append. A row whose slot is outside [0, slots) or pos outside [0, max_seq)
// is skipped (nothing read or written for it): the trusted-rows overload's guard.
template <class T, class Exec>
void kv_cache_append_rows(const Exec& space, ConstView2<T> qkv, ConstView1<int> slot, ConstView1<int> pos, int n_head,
                          int n_kv_head, int head_dim, View3<T> cache_k, View3<T> cache_v) {
  const std::size_t rows = qkv.extent(0);
  if (rows == 0) return;
  const int n_slots = static_cast<int>(cache_k.extent(0)), max_seq = static_cast<int>(cache_k.extent(1));
  const std::size_t cols = static_cast<std::size_t>(n_kv_head) * head_dim;
  const std::size_t k_col = static_cast<std::size_t>(n_head) * head_dim, v_col = k_col + cols;
  if constexpr (std::is_same<typename Exec::memory_space, Kokkos::HostSpace>::value &&
                std::is_same<MemSpace, Kokkos::HostSpace>::value) {
    // Host: one row per iteration, contiguous copies (no index arithmetic per element).
    Kokkos::parallel_for(
        "mantissa::decode::append", Kokkos::RangePolicy<Exec>(space, 0, rows), KOKKOS_LAMBDA(const std::size_t r) {
          const int s = slot(r), p = pos(r);
          if (s < 0 || s >= n_slots || p < 0 || p >= max_seq) return;
          const T* src = &qkv(r, 0);
          T* kd = &cache_k(s, p, 0);
          T* vd = &cache_v(s, p, 0);
          for (std::size_t c = 0; c < cols; ++c) kd[c] = src[k_col + c];
          for (std::size_t c = 0; c < cols; ++c) vd[c] = src[v_col + c];
        });
    return;
  }
  Kokkos::parallel_for(
      "mantissa::decode::append", Kokkos::RangePolicy<Exec>(space, 0, rows * cols),
      KOKKOS_LAMBDA(const std::size_t e) {
        const std::size_t r = e / cols, c = e % cols;
        const int s = slot(r), p = pos(r);
        if (s < 0 || s >= n_slots || p < 0 || p >= max_seq) return;
        cache_k(s, p, c) = qkv(r, k_col + c);
        cache_v(s, p, c) = qkv(r, v_col + c);
      });
}

}  // namespace detail

// cache_k[slot[r], pos[r], :] = k part of qkv row r, cache_v likewise with the v part (exact copies)
// qkv (R, (H+2Hkv)hd), slot (R), pos (R) -> cache_k, cache_v [slots, max_seq, Hkv*hd]
// Precondition: no two rows name the same (slot, pos). slot and pos out of range throw (checked by
// a parallel_reduce that synchronises `space`).
template <class T, class Exec>
void kv_cache_append(const Exec& space, ConstView2<T> qkv, ConstView1<int> slot, ConstView1<int> pos, int n_head,
                     int n_kv_head, int head_dim, View3<T> cache_k, View3<T> cache_v) {
  const char* who = "kv_cache_append";
  detail::decode_check_append<T>(who, qkv, slot, pos, n_head, n_kv_head, head_dim, cache_k, cache_v);
  const std::size_t rows = qkv.extent(0);
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
  detail::kv_cache_append_rows<T>(space, qkv, slot, pos, n_head, n_kv_head, head_dim, cache_k, cache_v);
}

// The same for the rollout loop's per-token calls (trusted rows): no check of slot and pos on the
// host, no synchronisation, no allocation (ws is not needed by this kernel today; it is part of the
// signature so that the loop passes one workspace to both calls). A row with slot outside
// [0, slots) or pos outside [0, max_seq) is skipped: nothing is read or written for it.
template <class T, class Exec>
void kv_cache_append(const Exec& space, ConstView2<T> qkv, ConstView1<int> slot, ConstView1<int> pos, int n_head,
                     int n_kv_head, int head_dim, View3<T> cache_k, View3<T> cache_v, DecodeWorkspace& ws) {
  (void)ws;
  detail::decode_check_append<T>("kv_cache_append", qkv, slot, pos, n_head, n_kv_head, head_dim, cache_k, cache_v);
  detail::kv_cache_append_rows<T>(space, qkv, slot, pos, n_head, n_kv_head, head_dim, cache_k, cache_v);
}

namespace detail {

// Threads per team that the team path of attention_decode chooses (team_size 0) at most.
inline constexpr int decode_attention_team_threads = 16;

// The team path of attention_decode (flash-decoding), one team per (row, head), league index
// idx = r * heads + h. The row's positions [0, len) are cut into D5's chunks of kv_split; thread t
// of nt takes chunks t, t + nt, t + 2 nt, ...; the 8 vector lanes of a thread split a key row's
// head elements (lane l: d = l mod 8, D4's lanes) and a value row's (o_c[d] for d = l mod 8):
// contiguous across lanes.
//  A. Scores: for each position j of its chunks a thread computes s_j = decode_dot(q, k_j) * scale
//     (the 8 lane sums gathered exactly by DecodeLanesReducer, combined in the documented tree,
//     decode_lanes_sum) and stores it in the score buffer; it keeps the first largest score of its
//     positions and that position's chunk. The threads' results give m: the largest score, the
//     earliest chunk among equal ones, or s_0 when s_0 is a NaN -- exactly m = s_0,
//     m = kmax(m, s_j) for j ascending (the generic path's m: kmax skips a NaN except the first).
//  B. Rounds of nt chunks: each thread computes its chunk c's m_c, e_j, l_c (j ascending) and o_c
//     (j ascending) as the generic path, w_c = exp_fp32(m_c - m), and puts l_c w_c and o_c[d] w_c in
//     team scratch; after a barrier the team adds them to l and o[d] in chunk order (o[d] over the
//     team's threads and lanes, l by one thread): l = l + l_c w_c, o[d] = o[d] + o_c[d] w_c, the
//     generic path's operations in its order. Then out = round_T(o / l), lse = m + log(l).
// Same bits for every team size (and as the generic path, where no FMA contraction differs).
// Rows with slot outside [0, slots) or len outside [1, max_seq] get NaN out and lse, no access.
template <class T, class Exec>
struct DecodeAttentionTeam {
  using policy = Kokkos::TeamPolicy<Exec>;
  using member = typename policy::member_type;
  using float_scratch =
      Kokkos::View<float*, typename Exec::scratch_memory_space, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
  using int_scratch = Kokkos::View<int*, typename Exec::scratch_memory_space, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;

  ConstView2<T> qkv;
  ConstView3<T> cache_k, cache_v;
  ConstView1<int> slot, len;
  View2<T> out;
  View2<float> lse;
  float* scores;
  std::size_t stride;  // floats of the score buffer per (row, head), >= every valid len
  int heads, group, hd, kv_split, n_slots, max_seq, level;
  float scale;

  // Team scratch: q[hd], o[hd], part_o[nt hd], part_l[nt], red_m[nt], misc[2] floats; red_i[nt] ints.
  KOKKOS_INLINE_FUNCTION static std::size_t n_floats(int nt, int head_dim) {
    return static_cast<std::size_t>(nt) * (head_dim + 2) + 2 * static_cast<std::size_t>(head_dim) + 2;
  }
  static std::size_t scratch_bytes(int nt, int head_dim) {
    return float_scratch::shmem_size(n_floats(nt, head_dim)) + int_scratch::shmem_size(nt);
  }
  KOKKOS_INLINE_FUNCTION static bool is_nan(float x) { return (float_bits(x) & 0x7fffffffu) > 0x7f800000u; }

  KOKKOS_INLINE_FUNCTION void operator()(const member& team) const {
    const int nt = team.team_size(), t = team.team_rank();
    const std::size_t idx = static_cast<std::size_t>(team.league_rank());
    const std::size_t r = idx / static_cast<std::size_t>(heads);
    const int h = static_cast<int>(idx % static_cast<std::size_t>(heads));
    const int s = slot(r), n_pos = len(r), qc = h * hd;
    if (s < 0 || s >= n_slots || n_pos < 1 || n_pos > max_seq) {  // guard: NaN, nothing read
      const float nan = bits_float(0x7fc00000u);
      Kokkos::parallel_for(Kokkos::TeamVectorRange(team, hd),
                           [&](const int d) { out(r, qc + d) = from_float<T>(nan); });
      Kokkos::single(Kokkos::PerTeam(team), [&]() { lse(r, h) = nan; });
      return;
    }
    float_scratch buf(team.team_scratch(level), n_floats(nt, hd));
    int_scratch red_i(team.team_scratch(level), nt);
    float* q = buf.data();
    float* o = q + hd;
    float* part_o = o + hd;
    float* part_l = part_o + static_cast<std::size_t>(nt) * hd;
    float* red_m = part_l + nt;
    float* misc = red_m + nt;  // misc[0] = s_0, misc[1] = l
    const int kc = (h / group) * hd;
    Kokkos::parallel_for(Kokkos::TeamVectorRange(team, hd), [&](const int d) {
      q[d] = decode_load(qkv(r, qc + d));  // F1
      o[d] = 0.0f;
    });
    Kokkos::single(Kokkos::PerTeam(team), [&]() { misc[1] = 0.0f; });
    team.team_barrier();

    const int chunks = (n_pos - 1) / kv_split + 1;
    float* sc = scores + idx * stride;
    // A: scores (D4) of this thread's chunks; the first largest one and its chunk.
    float mt = -bits_float(0x7f800000u);
    int it = INT_MAX;
    for (int c = t; c < chunks; c += nt) {
      const int c0 = c * kv_split, c1 = n_pos - c0 <= kv_split ? n_pos : c0 + kv_split;
      for (int j = c0; j < c1; ++j) {
        const T* kr = &cache_k(s, j, kc);
        DecodeLanes lanes;
        Kokkos::parallel_reduce(
            Kokkos::ThreadVectorRange(team, 8),
            [&](const int l, DecodeLanes& a) {
              float acc = 0.0f;
              for (int d = l; d < hd; d += 8) acc += q[d] * decode_load(kr[d]);  // lane l of decode_dot
              a.b[l] |= float_bits(acc);
            },
            DecodeLanesReducer(lanes));
        const float sj = decode_lanes_sum(lanes) * scale;  // = decode_dot(q, k_j, hd) * scale
        Kokkos::single(Kokkos::PerThread(team), [&]() {
          sc[j] = sj;
          if (j == 0) misc[0] = sj;
        });
        if (mt < sj) {  // kmax's comparison: the first of equal maxima stays, a NaN never enters
          mt = sj;
          it = c;
        }
      }
    }
    Kokkos::single(Kokkos::PerThread(team), [&]() {
      red_m[t] = mt;
      red_i[t] = it;
    });
    team.team_barrier();
    float mx = -bits_float(0x7f800000u);
    int ix = INT_MAX;
    for (int u = 0; u < nt; ++u)
      if (mx < red_m[u] || (mx == red_m[u] && red_i[u] < ix)) {
        mx = red_m[u];
        ix = red_i[u];
      }
    const float m = is_nan(misc[0]) ? misc[0] : mx;

    // B: the chunks' partials, combined in chunk order, nt chunks per round (D5, D6).
    const int rounds = (chunks - 1) / nt + 1;
    for (int rd = 0; rd < rounds; ++rd) {
      const int c = rd * nt + t;
      if (c < chunks) {
        const int c0 = c * kv_split, c1 = n_pos - c0 <= kv_split ? n_pos : c0 + kv_split;
        Kokkos::parallel_for(Kokkos::ThreadVectorRange(team, 8), [&](const int l) {
          float mc = sc[c0];
          for (int j = c0 + 1; j < c1; ++j) mc = kmax(mc, sc[j]);
          float oc[attention_max_head_dim / 8];
          for (int i = 0; i < attention_max_head_dim / 8; ++i) oc[i] = 0.0f;
          float lc = 0.0f;
          for (int j = c0; j < c1; ++j) {
            const float e = exp_fp32(sc[j] - mc);
            lc += e;
            const T* v = &cache_v(s, j, kc);
            for (int i = 0, d = l; d < hd; ++i, d += 8) oc[i] += e * decode_load(v[d]);  // D6: e not rounded
          }
          const float w = exp_fp32(mc - m);
          for (int i = 0, d = l; d < hd; ++i, d += 8) part_o[t * hd + d] = oc[i] * w;
          if (l == 0) part_l[t] = lc * w;
        });
      }
      team.team_barrier();
      const int nc = chunks - rd * nt < nt ? chunks - rd * nt : nt;
      Kokkos::parallel_for(Kokkos::TeamVectorRange(team, hd), [&](const int d) {
        float x = o[d];
        for (int u = 0; u < nc; ++u) x = x + part_o[u * hd + d];  // o[d] += o_c[d] w_c, chunk order
        o[d] = x;
      });
      Kokkos::single(Kokkos::PerTeam(team), [&]() {
        float x = misc[1];
        for (int u = 0; u < nc; ++u) x = x + part_l[u];  // l += l_c w_c, chunk order
        misc[1] = x;
      });
      team.team_barrier();
    }
    const float l = misc[1];
    Kokkos::parallel_for(Kokkos::TeamVectorRange(team, hd),
                         [&](const int d) { out(r, qc + d) = from_float<T>(o[d] / l); });  // D7
    Kokkos::single(Kokkos::PerTeam(team), [&]() { lse(r, h) = m + kmath::log(l); });     // D8
  }
};

// The largest team size the team path of attention_decode can run with on `space`'s backend
// (Serial: 1; OpenMP: the threads of its pool).
template <class T, class Exec>
int decode_attention_team_size_max(const Exec& space) {
  constexpr bool host = std::is_same<typename Exec::memory_space, Kokkos::HostSpace>::value;
  const typename DecodeAttentionTeam<T, Exec>::policy p(space, 1, 1, host ? 1 : decode_team_vector);
  return p.team_size_max(DecodeAttentionTeam<T, Exec>{}, Kokkos::ParallelForTag());
}

// Host shape checks of attention_decode (std::invalid_argument).
template <class T, class Exec>
void decode_check_attention(const char* who, const ConstView2<T>& qkv, const ConstView3<T>& cache_k,
                            const ConstView3<T>& cache_v, const ConstView1<int>& slot, const ConstView1<int>& len,
                            int n_head, int n_kv_head, int head_dim, int kv_split, const View2<T>& out,
                            const View2<float>& lse, AttentionPath path) {
  const std::size_t rows = qkv.extent(0);
  decode_check_heads(who, qkv.extent(1), n_head, n_kv_head, head_dim);
  decode_check_cache<T>(who, cache_k, cache_v, n_kv_head, head_dim);
  if (kv_split < 1) decode_fail(who, "kv_split must be >= 1, got " + std::to_string(kv_split));
  if (slot.extent(0) != rows || len.extent(0) != rows)
    decode_fail(who, "slot and len need one entry per qkv row (" + std::to_string(rows) + ")");
  const std::size_t heads = static_cast<std::size_t>(n_head);
  if (out.extent(0) != rows || out.extent(1) != heads * head_dim)
    decode_fail(who, "out is " + decode_extents(out.extent(0), out.extent(1)) + ", expected " +
                         decode_extents(rows, heads * head_dim));
  if (lse.extent(0) != rows || lse.extent(1) != heads)
    decode_fail(who, "lse is " + decode_extents(lse.extent(0), lse.extent(1)) + ", expected " +
                         decode_extents(rows, heads));
  if (!decode_attention_path_available<Exec>(path)) decode_fail(who, "the requested code path cannot run here");
}

// The kernels of attention_decode, shapes already checked, rows not: every path guards its rows
// (slot outside [0, slots) or len outside [1, max_seq]: NaN out and lse, nothing read). scores:
// rows * n_head * stride floats, stride >= every valid len. team_size: the team path's threads per
// team (0: choose; see decode_attention_team_size_max).
template <class T, class Exec>
void attention_decode_rows(const Exec& space, ConstView2<T> qkv, ConstView3<T> cache_k, ConstView3<T> cache_v,
                           ConstView1<int> slot, ConstView1<int> len, int n_head, int n_kv_head, int head_dim,
                           int kv_split, View2<T> out, View2<float> lse, float* scores_data, std::size_t stride,
                           AttentionPath path, int team_size) {
  const char* who = "attention_decode";
  const std::size_t rows = qkv.extent(0);
  const std::size_t heads = static_cast<std::size_t>(n_head);
  const int n_slots = static_cast<int>(cache_k.extent(0)), max_seq = static_cast<int>(cache_k.extent(1));
  const int hd = head_dim, group = n_head / n_kv_head;
  const float scale = attention_scale(hd);
  constexpr bool host = std::is_same<typename Exec::memory_space, Kokkos::HostSpace>::value &&
                        std::is_same<MemSpace, Kokkos::HostSpace>::value;
  if (path == AttentionPath::team || (path == AttentionPath::automatic && !host)) {
    using F = DecodeAttentionTeam<T, Exec>;
    const int vec = std::is_same<typename Exec::memory_space, Kokkos::HostSpace>::value ? 1 : decode_team_vector;
    const int tmax = decode_attention_team_size_max<T>(space);
    int ts = team_size;
    if (ts == 0) {
      const int chunks_max = (max_seq - 1) / kv_split + 1;
      ts = kmin(kmin(tmax, chunks_max), decode_attention_team_threads);
      ts = kmax(ts, 1);
    }
    if (ts < 1 || ts > tmax)
      decode_fail(who, "team size " + std::to_string(ts) + " outside [1, " + std::to_string(tmax) + "] here");
    const std::size_t bytes = F::scratch_bytes(ts, hd);
    const int level = bytes <= static_cast<std::size_t>(F::policy::scratch_size_max(0)) ? 0 : 1;
    if (bytes > static_cast<std::size_t>(F::policy::scratch_size_max(1)))
      decode_fail(who, "the team path needs " + std::to_string(bytes) +
                           " bytes of team scratch, more than level 1 holds here");
    const F f{qkv,     cache_k, cache_v, slot,     len,     out,     lse,   scores_data, stride,
              n_head,  group,   hd,      kv_split, n_slots, max_seq, level, scale};
    Kokkos::parallel_for("mantissa::decode::attention",
                         typename F::policy(space, static_cast<int>(rows * heads), ts, vec)
                             .set_scratch_size(level, Kokkos::PerTeam(bytes)),
                         f);
    return;
  }
#if defined(MANTISSA_HOST_SIMD)
  if constexpr (host) {
    if (path == AttentionPath::host_avx || (path == AttentionPath::automatic && host_avx_f16c())) {
      const DecodeAttentionArgs<T> a{qkv.data(),        qkv.stride(0),     cache_k.data(), cache_v.data(),
                                     cache_k.stride(0), cache_k.stride(1), slot.data(),    len.data(),
                                     out.data(),        out.stride(0),     lse.data(),     lse.stride(0),
                                     scores_data,       stride,            n_head,         group,
                                     hd,                kv_split,          n_slots,        max_seq,
                                     scale};
      Kokkos::parallel_for(
          "mantissa::decode::attention", Kokkos::RangePolicy<Exec>(space, 0, rows * heads),
          KOKKOS_LAMBDA(const std::size_t idx) { decode_attention_item_avx<T>(a, idx); });
      return;
    }
  }
#endif
  float* const scores = scores_data;
  Kokkos::parallel_for(
      "mantissa::decode::attention", Kokkos::RangePolicy<Exec>(space, 0, rows * heads),
      KOKKOS_LAMBDA(const std::size_t idx) {
        const std::size_t r = idx / heads;
        const int h = static_cast<int>(idx % heads);
        const int s = slot(r), n_pos = len(r), kc = (h / group) * hd;
        if (s < 0 || s >= n_slots || n_pos < 1 || n_pos > max_seq) {  // guard: NaN, nothing read
          for (int d = 0; d < hd; ++d) out(r, h * hd + d) = from_float<T>(bits_float(0x7fc00000u));
          lse(r, h) = bits_float(0x7fc00000u);
          return;
        }
        float q[attention_max_head_dim];
        for (int d = 0; d < hd; ++d) q[d] = decode_load(qkv(r, h * hd + d));  // F1
        float* sc = scores + idx * stride;
        float m = 0.0f;
        for (int j = 0; j < n_pos; ++j) {
          if (j + decode_prefetch_ahead < n_pos) decode_prefetch(&cache_k(s, j + decode_prefetch_ahead, kc), hd);
          sc[j] = decode_dot(q, &cache_k(s, j, kc), hd) * scale;  // D4 (= F2)
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
            const float e = exp_fp32(sc[j] - mc);
            lc += e;
            if (j + decode_prefetch_ahead < n_pos) decode_prefetch(&cache_v(s, j + decode_prefetch_ahead, kc), hd);
            const T* v = &cache_v(s, j, kc);
            for (int d = 0; d < hd; ++d) oc[d] += e * decode_load(v[d]);  // D6: e not rounded to T
          }
          const float w = exp_fp32(mc - m);
          l += lc * w;
          for (int d = 0; d < hd; ++d) o[d] += oc[d] * w;
          c0 = c1;
        }
        for (int d = 0; d < hd; ++d) out(r, h * hd + d) = from_float<T>(o[d] / l);  // D7
        lse(r, h) = m + kmath::log(l);                                              // D8
      });
}

// attention_decode (below) with the code path named (tests: every path gives the same bits), rows
// checked (throws for a bad slot or len, like attention_decode). Throws std::invalid_argument for a
// path that cannot run here (decode_attention_path_available) or a team size the backend refuses.
template <class T, class Exec>
void attention_decode_path(const Exec& space, ConstView2<T> qkv, ConstView3<T> cache_k, ConstView3<T> cache_v,
                           ConstView1<int> slot, ConstView1<int> len, int n_head, int n_kv_head, int head_dim,
                           int kv_split, View2<T> out, View2<float> lse, AttentionPath path, int team_size = 0) {
  const char* who = "attention_decode";
  decode_check_attention<T, Exec>(who, qkv, cache_k, cache_v, slot, len, n_head, n_kv_head, head_dim, kv_split, out,
                                  lse, path);
  const std::size_t rows = qkv.extent(0);
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
    decode_fail(who, "some rows have slot outside [0, " + std::to_string(n_slots) + ") or len outside [1, " +
                         std::to_string(max_seq) + "]");

  // The fp32 scores of every (row, head), computed once (D4) and read by the chunk loop.
  const std::size_t stride = static_cast<std::size_t>(longest);
  const View1<float> scores(Kokkos::view_alloc(std::string("mantissa::decode::scores"), Kokkos::WithoutInitializing),
                            rows * static_cast<std::size_t>(n_head) * stride);
  attention_decode_rows<T>(space, qkv, cache_k, cache_v, slot, len, n_head, n_kv_head, head_dim, kv_split, out, lse,
                           scores.data(), stride, path, team_size);
}

// The same, trusted rows (attention_decode with a DecodeWorkspace): no check of slot and len on the
// host, no synchronisation; ws.scores grows to rows * n_head * max_seq when shorter (the only
// allocation, none once grown). A bad row gets NaN out and lse.
template <class T, class Exec>
void attention_decode_path(const Exec& space, ConstView2<T> qkv, ConstView3<T> cache_k, ConstView3<T> cache_v,
                           ConstView1<int> slot, ConstView1<int> len, int n_head, int n_kv_head, int head_dim,
                           int kv_split, View2<T> out, View2<float> lse, DecodeWorkspace& ws, AttentionPath path,
                           int team_size = 0) {
  decode_check_attention<T, Exec>("attention_decode", qkv, cache_k, cache_v, slot, len, n_head, n_kv_head, head_dim,
                                  kv_split, out, lse, path);
  const std::size_t rows = qkv.extent(0);
  if (rows == 0) return;
  const std::size_t stride = cache_k.extent(1);
  const std::size_t need = rows * static_cast<std::size_t>(n_head) * stride;
  if (ws.scores.extent(0) < need)
    ws.scores = View1<float>(Kokkos::view_alloc(std::string("mantissa::decode::scores"), Kokkos::WithoutInitializing),
                             need);
  attention_decode_rows<T>(space, qkv, cache_k, cache_v, slot, len, n_head, n_kv_head, head_dim, kv_split, out, lse,
                           ws.scores.data(), stride, path, team_size);
}

}  // namespace detail

// out[r, h*hd:(h+1)*hd] = sum_{j<len[r]} P[r,h,j] v[slot[r], j, kvh(h)],  P = softmax_j(q . k_j * scale)
// computed as D4-D8 (flash-decoding over chunks of kv_split positions, fp32 P, one rounding).
// qkv (R, (H+2Hkv)hd) (the q part is read; RoPE applied), cache_k/cache_v [slots, max_seq, Hkv*hd],
// slot (R), len (R) with 1 <= len[r] <= max_seq -> out (R, H*hd), lse (R, H) fp32 = m + log(l)
// slot or len out of range throw (checked by a parallel_reduce that synchronises `space`); allocates
// its score buffer per call.
template <class T, class Exec>
void attention_decode(const Exec& space, ConstView2<T> qkv, ConstView3<T> cache_k, ConstView3<T> cache_v,
                      ConstView1<int> slot, ConstView1<int> len, int n_head, int n_kv_head, int head_dim, int kv_split,
                      View2<T> out, View2<float> lse) {
  detail::attention_decode_path<T>(space, qkv, cache_k, cache_v, slot, len, n_head, n_kv_head, head_dim, kv_split, out,
                                   lse, detail::AttentionPath::automatic);
}

// The same for the rollout loop's per-token calls (trusted rows): no check of slot and len on the
// host, no synchronisation, no allocation once ws has grown for the shapes (its score buffer holds
// rows * n_head * max_seq floats). A row with slot outside [0, slots) or len outside [1, max_seq]
// gets NaN in all its out and lse entries and reads nothing. Same bits as the overload above for
// valid rows.
template <class T, class Exec>
void attention_decode(const Exec& space, ConstView2<T> qkv, ConstView3<T> cache_k, ConstView3<T> cache_v,
                      ConstView1<int> slot, ConstView1<int> len, int n_head, int n_kv_head, int head_dim, int kv_split,
                      View2<T> out, View2<float> lse, DecodeWorkspace& ws) {
  detail::attention_decode_path<T>(space, qkv, cache_k, cache_v, slot, len, n_head, n_kv_head, head_dim, kv_split, out,
                                   lse, ws, detail::AttentionPath::automatic);
}

#define MANTISSA_DECODE_DECLARE(EXTERN, T)                                                                            \
  EXTERN template void linear_decode<T, ExecSpace>(const ExecSpace&, ConstView2<T>, ConstView2<T>, ConstView2<T>,     \
                                                   View2<T>, int);                                                    \
  EXTERN template void kv_cache_append<T, ExecSpace>(const ExecSpace&, ConstView2<T>, ConstView1<int>,                \
                                                     ConstView1<int>, int, int, int, View3<T>, View3<T>);             \
  EXTERN template void attention_decode<T, ExecSpace>(const ExecSpace&, ConstView2<T>, ConstView3<T>, ConstView3<T>, \
                                                      ConstView1<int>, ConstView1<int>, int, int, int, int, View2<T>, \
                                                      View2<float>);                                          \
  EXTERN template void kv_cache_append<T, ExecSpace>(const ExecSpace&, ConstView2<T>, ConstView1<int>,                \
                                                     ConstView1<int>, int, int, int, View3<T>, View3<T>,              \
                                                     DecodeWorkspace&);                                               \
  EXTERN template void attention_decode<T, ExecSpace>(const ExecSpace&, ConstView2<T>, ConstView3<T>, ConstView3<T>, \
                                                      ConstView1<int>, ConstView1<int>, int, int, int, int, View2<T>, \
                                                      View2<float>, DecodeWorkspace&);
MANTISSA_DECODE_DECLARE(extern, float)
MANTISSA_DECODE_DECLARE(extern, fp16_t)
MANTISSA_DECODE_DECLARE(extern, bf16_t)

}  // namespace mantissa
