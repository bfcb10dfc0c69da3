#pragma once
// What the host-CPU SIMD paths of the kernels share (gemm.cpp, decode.hpp, attention.hpp):
//  - MANTISSA_HOST_SIMD: defined on x86-64 host builds with g++/clang (not a device compiler),
//    where kernels may add code compiled with __attribute__((target("avx,f16c"))) (never "fma":
//    no a*b+c is contracted, so those paths give the bits of the portable build);
//  - host_avx_f16c(): whether this CPU (and OS) can run such code, asked once;
//  - f16c_widen_row / f16c_round_row: fp16 rows through F16C (every element, tails included),
//    bit-exact with to_float / from_float<fp16_t> (vcvtps2ph equals fp16_bits_from_float on all
//    2^32 floats, test_precision), except that vcvtph2ps quietens signalling NaNs, which to_float
//    keeps (no product can tell them apart: x86 returns the quietened NaN operand either way).
#include "mantissa/kernels/precision.hpp"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(__CUDACC__) && \
    !defined(__HIPCC__) && !defined(SYCL_LANGUAGE_VERSION)
#define MANTISSA_HOST_SIMD 1
#include <immintrin.h>
#endif

namespace mantissa {

#if defined(MANTISSA_HOST_SIMD)
inline bool host_avx_f16c() {
  static const bool ok = __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c");
  return ok;
}

// dst[j] = to_float(src[j]) (signalling NaNs quietened), j < n
__attribute__((target("avx,f16c"))) inline void f16c_widen_row(const fp16_t* src, float* dst, int n) {
  int j = 0;
  for (; j + 8 <= n; j += 8)
    _mm256_storeu_ps(dst + j, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + j))));
  for (; j < n; ++j) dst[j] = _cvtsh_ss(src[j].bits);
}
// dst[j] = from_float<fp16_t>(src[j]), j < n
__attribute__((target("avx,f16c"))) inline void f16c_round_row(const float* src, fp16_t* dst, int n) {
  int j = 0;
  for (; j + 8 <= n; j += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + j),
                     _mm256_cvtps_ph(_mm256_loadu_ps(src + j), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  for (; j < n; ++j) dst[j].bits = _cvtss_sh(src[j], _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
#else
inline bool host_avx_f16c() { return false; }
#endif

}  // namespace mantissa
