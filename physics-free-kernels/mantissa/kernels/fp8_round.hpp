#pragma once
// FP8 rounding for the rollout engine's FP8 mode (issue 15): values rounded onto an FP8 format's
// grid (fp8.hpp: OCP E4M3 or E5M2, round to nearest even, saturating) under a power-of-two scale s,
//   x' = s * fp8(x / s),   s = the smallest power of two with amax <= fp8_max * s (at least 2^-126),
// amax taken over the scale's group: a 1 x 128 group of a row (activations at a linear layer's
// input, per token), a 128 x 128 block (weights, as FP8-RL and DeepSeek-V3 quantise them), or a
// whole tensor (the KV cache, one scale per layer and per K/V, recalibrated at every generate).
//
// Why power-of-two scales (E8M0, as MXFP8's shared exponents and DeepSeek-V3.1's "ue8m0" scales)
// rather than amax / fp8_max in fp32 (fp8_quant.hpp offers those): x / s and s * q are then exact,
// and x' has at most 4 (E4M3) or 3 (E5M2) significant bits, so it is exactly a float, a bf16, and an
// fp16 within fp16's range. A linear layer on such inputs and weights with fp32 accumulation and the
// output rounded once to T is an FP8 W8A8 GEMM (every product exact) that differs from a tensor-core
// FP8 GEMM only in the order of its fp32 sum (Hopper's FP8 MMA also keeps fewer accumulator bits).
// The cost: a scale up to 2x larger than amax / fp8_max, so up to one binade of range unused.
// The engine keeps the rounded values in its storage type T: FP8's memory saving is not realised;
// this is a model of FP8's numerics, bit-exact in what it rounds.
//
// Where the scaled grid's top passes the storage type's range (E4M3: amax near FLT_MAX gives
// s = 2^120 and x / s up to 256, 256 s = 2^128; fp16: 65504 -> s = 256, 256 s = 65536), x' saturates at
// the largest grid value within it (FLT_MAX -> 240 * 2^120, 65504 -> 61440), as FP8 itself saturates
// at max: a finite x never becomes Inf here (a real FP8 pipeline never stores s * q in T).
//
// Non-finite values pass through unchanged (NaN stays NaN, Inf stays Inf: an overflow upstream
// stays visible) and are skipped in the amax: the finite members of such a group use the finite amax.
#include <cfloat>

#include "mantissa/kernels/fp8.hpp"
#include "mantissa/kernels/types.hpp"

namespace mantissa {

MANTISSA_HD bool fp8_round_finite(float x) { return (float_bits(x) & 0x7f800000u) != 0x7f800000u; }

MANTISSA_HD float fp8_format_max(Fp8Format f) {
  return f == Fp8Format::e4m3 ? static_cast<float>(precision_traits<fp8_e4m3_t>::max)
                              : static_cast<float>(precision_traits<fp8_e5m2_t>::max);
}

// The smallest power of two s >= 2^-126 with amax <= fp8_max * s (exact comparison: fp8_max * s is
// exact); 1 for amax = 0 or a non-finite amax.
MANTISSA_HD float fp8_pow2_scale(float amax, Fp8Format f) {
  if (!(amax > 0.0f) || !fp8_round_finite(amax)) return 1.0f;
  const float m = fp8_format_max(f);
  const float v = amax / m;
  const std::uint32_t e = (float_bits(v) >> 23) & 0xffu;
  float s = bits_float((e == 0u ? 1u : e) << 23);  // 2^floor(log2 v), at least 2^-126
  if (m * s < amax) s *= 2.0f;
  return s;
}

// y rounded onto f's grid (RNE, saturating at max) as its code, and a code's value (e4m3 or e5m2).
MANTISSA_HD std::uint8_t fp8_round_code(float y, Fp8Format f) {
  return f == Fp8Format::e4m3 ? fp8_e4m3_bits_from_float(y, Fp8Overflow::saturate)
                              : fp8_e5m2_bits_from_float(y, Fp8Overflow::saturate);
}
MANTISSA_HD float fp8_code_value(std::uint8_t c, Fp8Format f) {
  return f == Fp8Format::e4m3 ? fp8_e4m3_bits_to_float(c) : fp8_e5m2_bits_to_float(c);
}

// s * fp8(x / s), saturating at max, and at the largest grid value s q <= limit (the storage type's
// largest finite value: FLT_MAX, bf16's or fp16's max) where s fp8(x / s) would pass it; non-finite x
// unchanged. (x / s and s q are exact: s is a power of two, q has <= 4 significant bits.)
MANTISSA_HD float fp8_round_scaled(float x, float s, Fp8Format f, float limit = FLT_MAX) {
  if (!fp8_round_finite(x) || f == Fp8Format::none) return x;
  const float r = fp8_code_value(fp8_round_code(x / s, f), f) * s;  // Inf where s q > FLT_MAX
  if ((r < 0.0f ? -r : r) <= limit) return r;
  // limit / s rounded onto the grid; one code lower where that rounded up (codes of positive values
  // are in increasing order)
  std::uint8_t c = fp8_round_code(limit / s, f);
  float top = fp8_code_value(c, f) * s;
  if (!(top <= limit)) top = c > 0u ? fp8_code_value(static_cast<std::uint8_t>(c - 1u), f) * s : 0.0f;
  return x < 0.0f ? -top : top;
}

// Every row of x (N, K), per group of `group` consecutive columns (the last may be shorter): the
// group's amax gives its scale, every value is rounded; in place.          x (N, K)
template <class T>
void fp8_round_groups(const ExecSpace& space, const View2<T>& x, int group, Fp8Format f);

// Every br x bc block of w (edge blocks may be smaller) with its own scale; fp32, in place; values
// saturate at limit (the storage type the result is converted to: its largest finite value).
void fp8_round_blocks(const ExecSpace& space, const View2<float>& w, int br, int bc, Fp8Format f,
                      float limit = FLT_MAX);

// max |x(i, c)| over every row i and c in [c0, c0 + n) (non-finite values skipped); one host
// synchronisation (a reduction).
template <class T>
float fp8_amax_columns(const ExecSpace& space, const ConstView2<T>& x, int c0, int n);

// x(i, c) = fp8_round_scaled(x(i, c), s, f) for every row i and c in [c0, c0 + n); in place.
template <class T>
void fp8_round_columns(const ExecSpace& space, const View2<T>& x, int c0, int n, float s, Fp8Format f);

#define MANTISSA_FP8_ROUND_DECLARE(EXTERN, T)                                                              \
  EXTERN template void fp8_round_groups<T>(const ExecSpace&, const View2<T>&, int, Fp8Format);             \
  EXTERN template float fp8_amax_columns<T>(const ExecSpace&, const ConstView2<T>&, int, int);             \
  EXTERN template void fp8_round_columns<T>(const ExecSpace&, const View2<T>&, int, int, float, Fp8Format);
MANTISSA_FP8_ROUND_DECLARE(extern, float)
MANTISSA_FP8_ROUND_DECLARE(extern, fp16_t)
MANTISSA_FP8_ROUND_DECLARE(extern, bf16_t)

}  // namespace mantissa
