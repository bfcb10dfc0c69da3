#pragma once
// FP8 quantisation with fp32 scales, and the FP8 GEMM that reads it, as DeepSeek-V3 and FP8-RL
// (NVIDIA, 2026) do it: fine-grained blocks, one fp32 scale per block, FP8 values inside.
//
// Blockwise: a (rows, cols) fp32 matrix is cut into block_rows x block_cols tiles (the last ones in
// each direction may be smaller); tile (I, J) has one scale s_IJ and x_ij ~ s_IJ * q_ij with
//   amax = max |x| over the tile,   s = fp8_scale_from_amax<T8>(amax),   q = RNE_sat(fl32(x / s)).
// fp8_scale_from_amax: s = fl32(amax / max_T8), so the tile's largest element maps to +-max_T8
// (x / s = max_T8 (1 +- 2u32) rounds to max_T8), floored at 2^-126 (FLT_MIN) so that s is normal;
// amax = 0 (an all-zero tile) -> s = 1; a tile holding any Inf or NaN -> amax = s = +Inf, so that
// the problem stays visible: its q are +-0 (finite x / Inf) and NaN, it dequantises to NaN
// everywhere (0 * Inf), and every GEMM output that reads it is non-finite.
// The rounding is saturating (an fp32 quotient just above max_T8 must not become NaN or Inf).
//   weights      128 x 128 tiles    (fp8_quantize_weight)
//   activations  1 x 128 per token  (fp8_quantize_activation)
//
// fp8_gemm: y = x W^T, x (M,K) and W (N,K) blockwise with the same block_cols (the K segment, 128):
// per output element and K segment S, the products q_x q_w are exact in fp32 (4-bit x 4-bit
// significands at most, exponents within fp32's normal range), summed in fp32 in ascending k
// (P_S = fl32(sum)); then acc = fma(fl32(s_x s_w), P_S, acc) over the segments in order, acc from 0:
// the fp32 promotion of every 128-long partial that DeepSeek-V3 does on CUDA cores. Output fp32.
// (A scale product below 2^-126 loses bits or flushes to 0: tiles whose amax is below ~2^-63 each.)
//
// Per tensor (an FP8 KV cache): one scale for the whole tensor, from fp8_amax (max |x|, +Inf when
// any element is non-finite) and fp8_scale_from_amax; q = RNE_sat(fl32(x / s)), x~ = fl32(q s).
// Labels: mantissa::fp8::<op>. Instantiated for T8 in {fp8_e4m3_t, fp8_e5m2_t} on ExecSpace.
#include <cfloat>

#include "mantissa/kernels/fp8.hpp"
#include "mantissa/kernels/types.hpp"

namespace mantissa {

template <class T8>
struct Fp8Blocked {
  View2<T8> q;          // (rows, cols)
  View2<float> scale;   // (ceil(rows / block_rows), ceil(cols / block_cols))
  int block_rows = 0;
  int block_cols = 0;
};

constexpr int kFp8WeightBlock = 128;    // weights: 128 x 128 tiles
constexpr int kFp8ActivationGroup = 128;  // activations: 1 x 128 groups per token

// The scale of a block or tensor with largest magnitude amax (see the top of this file).
template <class T8>
KOKKOS_INLINE_FUNCTION float fp8_scale_from_amax(float amax) {
  if (!(amax <= FLT_MAX)) return static_cast<float>(INFINITY);  // Inf or NaN
  if (amax == 0.0f) return 1.0f;
  const float s = amax / static_cast<float>(precision_traits<T8>::max);
  return s < FLT_MIN ? FLT_MIN : s;
}

// out = blockwise quantisation of x; out's Views are (re)allocated when their extents differ.
//                                                          x (R,C) -> out.q (R,C), out.scale (ceil R/br, ceil C/bc)
template <class T8, class Exec>
void fp8_quantize_blockwise(const Exec& space, const ConstView2<float>& x, int block_rows, int block_cols,
                            Fp8Blocked<T8>& out);
// Weights (out_features, in_features) in 128 x 128 tiles; activations (tokens, features) in 1 x 128.
template <class T8, class Exec>
void fp8_quantize_weight(const Exec& space, const ConstView2<float>& w, Fp8Blocked<T8>& out) {
  fp8_quantize_blockwise<T8>(space, w, kFp8WeightBlock, kFp8WeightBlock, out);
}
template <class T8, class Exec>
void fp8_quantize_activation(const Exec& space, const ConstView2<float>& x, Fp8Blocked<T8>& out) {
  fp8_quantize_blockwise<T8>(space, x, 1, kFp8ActivationGroup, out);
}

// y = fl32(q * scale of its block)                          in.q (R,C) -> y (R,C)
template <class T8, class Exec>
void fp8_dequantize_blockwise(const Exec& space, const Fp8Blocked<T8>& in, const View2<float>& y);

// y = x W^T with per-segment fp32 promotion (see above)     x.q (M,K), w.q (N,K) -> y (M,N) fp32
// Requires x.block_cols == w.block_cols; any block_rows.
template <class TX, class TW, class Exec>
void fp8_gemm(const Exec& space, const Fp8Blocked<TX>& x, const Fp8Blocked<TW>& w, const View2<float>& y);

// Per tensor: max |x| (+Inf if any element is Inf or NaN; 0 for n = 0), fenced, on the host.
template <class Exec>
float fp8_amax(const Exec& space, const ConstView1<float>& x);
// q = RNE_sat(fl32(x / scale))                               x (n) -> q (n)
template <class T8, class Exec>
void fp8_quantize_tensor(const Exec& space, const ConstView1<float>& x, float scale, const View1<T8>& q);
// y = fl32(q * scale)                                        q (n) -> y (n)
template <class T8, class Exec>
void fp8_dequantize_tensor(const Exec& space, const ConstView1<T8>& q, float scale, const View1<float>& y);

#define MANTISSA_FP8_DECLARE(EXTERN, T8)                                                                             \
  EXTERN template void fp8_quantize_blockwise<T8, ExecSpace>(const ExecSpace&, const ConstView2<float>&, int, int, \
                                                             Fp8Blocked<T8>&);                                    \
  EXTERN template void fp8_dequantize_blockwise<T8, ExecSpace>(const ExecSpace&, const Fp8Blocked<T8>&,            \
                                                               const View2<float>&);                              \
  EXTERN template void fp8_quantize_tensor<T8, ExecSpace>(const ExecSpace&, const ConstView1<float>&, float,        \
                                                          const View1<T8>&);                                      \
  EXTERN template void fp8_dequantize_tensor<T8, ExecSpace>(const ExecSpace&, const ConstView1<T8>&, float,         \
                                                            const View1<float>&);
#define MANTISSA_FP8_GEMM_DECLARE(EXTERN, TX, TW)                                                              \
  EXTERN template void fp8_gemm<TX, TW, ExecSpace>(const ExecSpace&, const Fp8Blocked<TX>&, const Fp8Blocked<TW>&, \
                                                   const View2<float>&);
MANTISSA_FP8_DECLARE(extern, fp8_e4m3_t)
MANTISSA_FP8_DECLARE(extern, fp8_e5m2_t)
MANTISSA_FP8_GEMM_DECLARE(extern, fp8_e4m3_t, fp8_e4m3_t)
MANTISSA_FP8_GEMM_DECLARE(extern, fp8_e5m2_t, fp8_e4m3_t)
MANTISSA_FP8_GEMM_DECLARE(extern, fp8_e4m3_t, fp8_e5m2_t)
MANTISSA_FP8_GEMM_DECLARE(extern, fp8_e5m2_t, fp8_e5m2_t)
extern template float fp8_amax<ExecSpace>(const ExecSpace&, const ConstView1<float>&);

}  // namespace mantissa
