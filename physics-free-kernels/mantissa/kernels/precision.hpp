#pragma once
// Storage precisions: our own bit-exact 2-byte fp16 (IEEE binary16) and bf16 (bfloat16) types.
//
// Kokkos' half_t is plain float on host-only builds and bhalf_t does not exist in 3.4, so
// Mantissa stores 16-bit values in these trivially copyable structs and computes in fp32.
// Conversions float -> P round to nearest, ties to even, bit-exact with IEEE 754 (x86 F16C,
// numpy.float16, torch.bfloat16): NaN stays NaN (quietened, payload's top bits kept),
// +-Inf stays Inf, fp16 overflow (|x| >= 65520) rounds to Inf, subnormals are exact.
// This header has no Kokkos dependency so it can be used anywhere, host or device.
#include <cstdint>
#include <cstring>
#include <string_view>
#include <type_traits>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define MANTISSA_HD __host__ __device__ inline
#else
#define MANTISSA_HD inline
#endif

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

namespace mantissa {

struct fp16_t {
  std::uint16_t bits;
};
struct bf16_t {
  std::uint16_t bits;
};
static_assert(sizeof(fp16_t) == 2 && std::is_trivially_copyable<fp16_t>::value, "fp16_t must be 2 plain bytes");
static_assert(sizeof(bf16_t) == 2 && std::is_trivially_copyable<bf16_t>::value, "bf16_t must be 2 plain bytes");

MANTISSA_HD std::uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}
MANTISSA_HD float bits_float(std::uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

// ---- fp16 ---------------------------------------------------------------------------------
// Branch-free (selects, no jumps), so that loops over fp16 data vectorise. Normal results: the
// exponent rebiased by -112 and the significand rounded on bit 13 with the tie to even by an
// integer add. Subnormal results (|x| < 2^-14): x + 0.5f in fp32, whose ulp is 2^-24 = the fp16
// subnormal step, so the fp32 adder's round-to-nearest-even does the rounding (a result of 2^-14
// is the smallest normal's bits, also correct); 0.5f's bits subtracted leave the fp16 bits. An fp32
// subnormal input is far below half the smallest fp16 subnormal and gives +-0 either way (also
// under denormals-are-zero). NaN: quietened, the payload's top 9 bits kept; >= 65520 (tie included)
// and Inf give Inf. Tested against a plain branchy reference (test_precision).
MANTISSA_HD std::uint16_t fp16_bits_from_float(float f) {
  const std::uint32_t x = float_bits(f);
  const std::uint32_t sign = (x >> 16) & 0x8000u;
  const std::uint32_t a = x & 0x7fffffffu;
  const std::uint32_t normal = (a + 0xc8000fffu + ((a >> 13) & 1u)) >> 13;  // (wraps for huge a: not selected)
  const std::uint32_t sub = float_bits(bits_float(a) + 0.5f) - 0x3f000000u;
  // (masks rather than ?: so that g++ does not turn the selects back into jumps)
  const std::uint32_t is_normal = 0u - static_cast<std::uint32_t>(a >= 0x38800000u);
  const std::uint32_t is_inf = 0u - static_cast<std::uint32_t>(a >= 0x477ff000u);
  const std::uint32_t is_nan = 0u - static_cast<std::uint32_t>(a > 0x7f800000u);
  std::uint32_t r = (normal & is_normal) | (sub & ~is_normal);
  r = (0x7c00u & is_inf) | (r & ~is_inf);
  r = ((0x7e00u | ((a >> 13) & 0x3ffu)) & is_nan) | (r & ~is_nan);
  return static_cast<std::uint16_t>(sign | r);
}

// Exact (bit for bit, NaN payloads kept) and branch-free, so that loops over fp16 data vectorise.
// Normal values: exponent rebiased by 112; Inf/NaN: by 224 (to 255), payload kept; zero/subnormal:
// 2^-14 (1 + m 2^-10) - 2^-14 = m 2^-24, an exact fp32 subtraction (Sterbenz) of normal numbers, so
// flush-to-zero modes cannot change it; then the sign. Tested on all 2^16 inputs (test_precision).
MANTISSA_HD float fp16_bits_to_float(std::uint16_t h) {
  const std::uint32_t o = (static_cast<std::uint32_t>(h) & 0x7fffu) << 13;  // exponent, mantissa at fp32 places
  const std::uint32_t e = o & 0x0f800000u;
  const std::uint32_t inf_nan = 0u - static_cast<std::uint32_t>(e == 0x0f800000u);  // all ones or zero
  const std::uint32_t zero_sub = 0u - static_cast<std::uint32_t>(e == 0u);
  const std::uint32_t normal = o + 0x38000000u + (inf_nan & 0x38000000u);
  const std::uint32_t sub = float_bits(bits_float(o + 0x38800000u) - 6.103515625e-05f);
  return bits_float((sub & zero_sub) | (normal & ~zero_sub) | ((static_cast<std::uint32_t>(h) & 0x8000u) << 16));
}

// ---- bf16 ---------------------------------------------------------------------------------
// Branch-free: round on bit 16 with the tie to even by an integer add; NaN quietened (selected).
MANTISSA_HD std::uint16_t bf16_bits_from_float(float f) {
  const std::uint32_t x = float_bits(f);
  const std::uint32_t rounded = (x + 0x7fffu + ((x >> 16) & 1u)) >> 16;
  const std::uint32_t is_nan = 0u - static_cast<std::uint32_t>((x & 0x7fffffffu) > 0x7f800000u);
  return static_cast<std::uint16_t>((((x >> 16) | 0x0040u) & is_nan) | (rounded & ~is_nan));
}
MANTISSA_HD float bf16_bits_to_float(std::uint16_t b) { return bits_float(static_cast<std::uint32_t>(b) << 16); }

// ---- generic conversions: to_float(x) and from_float<T>(f) for T in {float, fp16_t, bf16_t}
MANTISSA_HD float to_float(float x) { return x; }
MANTISSA_HD float to_float(fp16_t x) { return fp16_bits_to_float(x.bits); }
MANTISSA_HD float to_float(bf16_t x) { return bf16_bits_to_float(x.bits); }

template <class T>
MANTISSA_HD T from_float(float f);
template <>
MANTISSA_HD float from_float<float>(float f) {
  return f;
}
template <>
MANTISSA_HD fp16_t from_float<fp16_t>(float f) {
  return fp16_t{fp16_bits_from_float(f)};
}
template <>
MANTISSA_HD bf16_t from_float<bf16_t>(float f) {
  return bf16_t{bf16_bits_from_float(f)};
}

// Round a float to the nearest value of storage type T, returned as float.
template <class T>
MANTISSA_HD float round_to(float f) {
  return to_float(from_float<T>(f));
}

// ---- precision enum and traits --------------------------------------------------------------
enum class Precision { fp32, bf16, fp16 };

constexpr std::string_view precision_name(Precision p) {
  return p == Precision::fp32 ? "fp32" : p == Precision::bf16 ? "bf16" : "fp16";
}
// Parses the deck names "fp32", "bf16", "fp16"; returns false on anything else.
constexpr bool parse_precision(std::string_view s, Precision& out) {
  if (s == "fp32") return out = Precision::fp32, true;
  if (s == "bf16") return out = Precision::bf16, true;
  if (s == "fp16") return out = Precision::fp16, true;
  return false;
}

template <class T>
struct precision_traits;
template <>
struct precision_traits<float> {
  static constexpr Precision precision = Precision::fp32;
  static constexpr int mantissa_bits = 23;
  static constexpr double unit_roundoff = 5.9604644775390625e-08;  // 2^-24
  static constexpr double max = 3.4028234663852886e+38;
  static constexpr double min_normal = 1.1754943508222875e-38;  // 2^-126
  static constexpr const char* name = "fp32";
};
template <>
struct precision_traits<bf16_t> {
  static constexpr Precision precision = Precision::bf16;
  static constexpr int mantissa_bits = 7;
  static constexpr double unit_roundoff = 0.00390625;  // 2^-8
  static constexpr double max = 3.3895313892515355e+38;  // 0x7f7f
  static constexpr double min_normal = 1.1754943508222875e-38;
  static constexpr const char* name = "bf16";
};
template <>
struct precision_traits<fp16_t> {
  static constexpr Precision precision = Precision::fp16;
  static constexpr int mantissa_bits = 10;
  static constexpr double unit_roundoff = 0.00048828125;  // 2^-11
  static constexpr double max = 65504.0;
  static constexpr double min_normal = 6.103515625e-05;  // 2^-14
  static constexpr const char* name = "fp16";
};

// Calls f(T{}) with the storage type named by p: the one place a runtime Precision becomes a type.
template <class F>
decltype(auto) dispatch_precision(Precision p, F&& f) {
  switch (p) {
    case Precision::bf16: return f(bf16_t{});
    case Precision::fp16: return f(fp16_t{});
    case Precision::fp32: break;
  }
  return f(float{});
}

#if defined(__CUDACC__)
// Interoperation with CUDA's native types (same bits, so no rounding happens here).
MANTISSA_HD __half to_native(fp16_t x) {
  __half_raw r;
  r.x = x.bits;
  return __half(r);
}
MANTISSA_HD fp16_t from_native(__half x) { return fp16_t{static_cast<__half_raw>(x).x}; }
MANTISSA_HD __nv_bfloat16 to_native(bf16_t x) {
  __nv_bfloat16_raw r;
  r.x = x.bits;
  return __nv_bfloat16(r);
}
MANTISSA_HD bf16_t from_native(__nv_bfloat16 x) { return bf16_t{static_cast<__nv_bfloat16_raw>(x).x}; }
#endif

}  // namespace mantissa
