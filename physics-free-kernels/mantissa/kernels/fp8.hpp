#pragma once
// FP8 storage types: our own bit-exact 1-byte E4M3 and E5M2 (OCP OFP8), like fp16_t/bf16_t in
// precision.hpp: trivially copyable structs, conversions in integer arithmetic on host and device
// (no lookup table, no hardware FP8, no dependence on the FPU's rounding or flush modes).
//
// The facts relied on, from the OCP 8-bit Floating Point Specification (OFP8), Revision 1.0
// (Open Compute Project, 2023), sections 4 and 5:
//   E4M3  S.EEEE.MMM, bias 7. No infinities. NaN: S.1111.111 only (0x7f, 0xff). Exponent field 1111
//         with mantissa 000..110 holds normal numbers, so max = S.1111.110 = 1.75 * 2^8 = 448.
//         Min normal S.0001.000 = 2^-6; subnormals (E = 0) m * 2^-9, min 2^-9, max 0.875 * 2^-6.
//   E5M2  S.EEEEE.MM, bias 15, IEEE 754 conventions: Inf S.11111.00, NaN S.11111.{01,10,11}.
//         Max S.11110.11 = 1.75 * 2^15 = 57344; min normal 2^-14; subnormals m * 2^-16.
//         (E5M2 is the top byte of IEEE binary16, which decoding uses.)
//   Conversion from a wider format rounds to nearest, ties to even (RNE), with the overflow
//   decision made on the RNE result (as if the exponent range were unbounded), and one of two
//   overflow modes:
//     saturating      |result| > max -> +-max; +-Inf -> +-max (both formats); NaN -> NaN.
//     non-saturating  E4M3: |result| > max and +-Inf -> NaN;  E5M2: -> +-Inf;  NaN -> NaN.
//   So E4M3 rounds |x| <= 464 (the tie between 448 = 1.110b * 2^8, even, and 480 = 1.111b * 2^8)
//   to 448 and overflows above; E5M2 keeps |x| < 61440 (the tie between 57344 = 1.11b * 2^15, odd,
//   and 2^16, even) and overflows from 61440 on.
// Choices the spec leaves to the implementation: NaN is encoded as S.1111.111 (E4M3) and the
// quiet S.11111.10 (E5M2), sign kept, payload dropped; decoded NaNs are fp32 quiet NaNs. Signed
// zeros are kept (a negative value that rounds to 0 gives -0).
//
// from_float<fp8_*>(f) and round_to<fp8_*>(f) are NON-saturating (the overflow stays visible, as
// with fp16's Inf and torch's casts); the quantisers (fp8_quant.hpp) use the saturating mode,
// from_float<T>(f, Fp8Overflow::saturate). FP8 is not a Precision of precision.hpp (weights are
// not stored in it); precision_traits<fp8_*> have no `precision` member for that reason.
// Tested bit-exactly on all 256 patterns and all 2^32 floats in both modes (tests/test_fp8.cpp).
#include <cstdint>
#include <string_view>
#include <type_traits>

#include "mantissa/kernels/precision.hpp"

namespace mantissa {

struct fp8_e4m3_t {
  std::uint8_t bits;
};
struct fp8_e5m2_t {
  std::uint8_t bits;
};
static_assert(sizeof(fp8_e4m3_t) == 1 && std::is_trivially_copyable<fp8_e4m3_t>::value, "fp8_e4m3_t: 1 plain byte");
static_assert(sizeof(fp8_e5m2_t) == 1 && std::is_trivially_copyable<fp8_e5m2_t>::value, "fp8_e5m2_t: 1 plain byte");

enum class Fp8Overflow { saturate, nonsaturate };

namespace fp8_detail {

// float -> FP8 bits, RNE, for a format with M mantissa bits, exponent bias Bias, largest finite
// code MaxCode and the code an overflow gives in non-saturating mode (NaN or Inf); NanCode for NaN.
//  - result normal (|x| >= 2^(1-Bias)): round the fp32 significand on bit 23-M with the tie to
//    even by an integer add (a carry moves into the exponent), then rebias by 127-Bias;
//  - result subnormal or zero: the significand with its hidden bit, shifted right to units of
//    the smallest subnormal 2^(1-Bias-M), remainder compared with half a unit, tie to even (a
//    result of 2^M units is the smallest normal's code, also correct). fp32 subnormals are far
//    below half the smallest FP8 subnormal: 0;
//  - codes above MaxCode (including +Inf, whose rebiased code is huge) overflow.
template <unsigned M, unsigned Bias, unsigned MaxCode, unsigned OverflowCode, unsigned NanCode>
MANTISSA_HD std::uint8_t encode(float f, Fp8Overflow mode) {
  const std::uint32_t x = float_bits(f);
  const std::uint32_t sign = (x >> 24) & 0x80u;
  const std::uint32_t a = x & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<std::uint8_t>(sign | NanCode);
  constexpr unsigned shift = 23u - M;
  constexpr std::uint32_t min_normal_bits = (128u - Bias) << 23;  // 2^(1-Bias)
  std::uint32_t r;
  if (a >= min_normal_bits) {
    r = ((a + ((1u << (shift - 1u)) - 1u) + ((a >> shift) & 1u)) >> shift) - ((127u - Bias) << M);
  } else {
    const std::uint32_t e = a >> 23;
    if (e == 0u) {
      r = 0u;
    } else {
      // value = mant * 2^(e-150); in units of 2^(1-Bias-M): mant * 2^-(151-Bias-M-e), and
      // 151-Bias-M-e >= 24-M >= 1 here. Shifts past 31 give 0 as 31 does (mant < 2^24 < half).
      const std::uint32_t mant = (a & 0x7fffffu) | 0x800000u;
      const std::uint32_t s0 = 151u - Bias - M - e;
      const std::uint32_t s = s0 < 31u ? s0 : 31u;
      const std::uint32_t rem = mant & ((1u << s) - 1u), half = 1u << (s - 1u);
      r = mant >> s;
      r += static_cast<std::uint32_t>(rem > half || (rem == half && (r & 1u) != 0u));
    }
  }
  if (r > MaxCode) r = mode == Fp8Overflow::saturate ? MaxCode : OverflowCode;
  return static_cast<std::uint8_t>(sign | r);
}

}  // namespace fp8_detail

// ---- E4M3 ---------------------------------------------------------------------------------
MANTISSA_HD std::uint8_t fp8_e4m3_bits_from_float(float f, Fp8Overflow mode) {
  return fp8_detail::encode<3u, 7u, 0x7eu, 0x7fu, 0x7fu>(f, mode);
}
// Exact. Normal: exponent and mantissa moved to their fp32 places and rebiased by 120.
// Subnormal m * 2^-9 (m = 1..7): m = 2^p (1 + f), p = floor(log2 m), gives exponent 118 + p and
// fraction (m - 2^p) 2^(23-p). NaN (S.1111.111): the fp32 quiet NaN with the sign.
MANTISSA_HD float fp8_e4m3_bits_to_float(std::uint8_t b) {
  const std::uint32_t sign = (static_cast<std::uint32_t>(b) & 0x80u) << 24;
  const std::uint32_t em = static_cast<std::uint32_t>(b) & 0x7fu;
  std::uint32_t r;
  if (em == 0x7fu) {
    r = 0x7fc00000u;
  } else if (em >= 8u) {
    r = (em << 20) + (120u << 23);
  } else if (em == 0u) {
    r = 0u;
  } else {
    const std::uint32_t p = em >= 4u ? 2u : em >= 2u ? 1u : 0u;
    r = ((118u + p) << 23) | (((em - (1u << p)) << (23u - p)) & 0x7fffffu);
  }
  return bits_float(sign | r);
}

// ---- E5M2 ---------------------------------------------------------------------------------
MANTISSA_HD std::uint8_t fp8_e5m2_bits_from_float(float f, Fp8Overflow mode) {
  return fp8_detail::encode<2u, 15u, 0x7bu, 0x7cu, 0x7eu>(f, mode);
}
// Exact: E5M2 bits are the top byte of binary16 bits (same bias, exponent width, Inf and NaN).
MANTISSA_HD float fp8_e5m2_bits_to_float(std::uint8_t b) {
  return fp16_bits_to_float(static_cast<std::uint16_t>(static_cast<std::uint16_t>(b) << 8));
}

// ---- generic conversions (overloads of precision.hpp's) -----------------------------------
MANTISSA_HD float to_float(fp8_e4m3_t x) { return fp8_e4m3_bits_to_float(x.bits); }
MANTISSA_HD float to_float(fp8_e5m2_t x) { return fp8_e5m2_bits_to_float(x.bits); }

template <class T>
MANTISSA_HD T from_float(float f, Fp8Overflow mode);
template <>
MANTISSA_HD fp8_e4m3_t from_float<fp8_e4m3_t>(float f, Fp8Overflow mode) {
  return fp8_e4m3_t{fp8_e4m3_bits_from_float(f, mode)};
}
template <>
MANTISSA_HD fp8_e5m2_t from_float<fp8_e5m2_t>(float f, Fp8Overflow mode) {
  return fp8_e5m2_t{fp8_e5m2_bits_from_float(f, mode)};
}
// The one-argument forms: non-saturating (see the top of this file).
template <>
MANTISSA_HD fp8_e4m3_t from_float<fp8_e4m3_t>(float f) {
  return from_float<fp8_e4m3_t>(f, Fp8Overflow::nonsaturate);
}
template <>
MANTISSA_HD fp8_e5m2_t from_float<fp8_e5m2_t>(float f) {
  return from_float<fp8_e5m2_t>(f, Fp8Overflow::nonsaturate);
}

// f rounded to the nearest value of FP8 type T in overflow mode `mode`, as a float.
template <class T>
MANTISSA_HD float round_to(float f, Fp8Overflow mode) {
  return to_float(from_float<T>(f, mode));
}

// ---- traits (as precision_traits of precision.hpp, plus what FP8 scaling needs) ----------------
template <>
struct precision_traits<fp8_e4m3_t> {
  static constexpr int mantissa_bits = 3;
  static constexpr int exponent_bias = 7;
  static constexpr double unit_roundoff = 0.0625;        // 2^-4
  static constexpr double max = 448.0;                   // S.1111.110
  static constexpr double min_normal = 0.015625;         // 2^-6
  static constexpr double min_subnormal = 0.001953125;   // 2^-9
  static constexpr bool has_infinity = false;
  static constexpr std::uint8_t max_bits = 0x7e;
  static constexpr std::uint8_t nan_bits = 0x7f;
  static constexpr const char* name = "fp8_e4m3";
};
template <>
struct precision_traits<fp8_e5m2_t> {
  static constexpr int mantissa_bits = 2;
  static constexpr int exponent_bias = 15;
  static constexpr double unit_roundoff = 0.125;               // 2^-3
  static constexpr double max = 57344.0;                       // S.11110.11
  static constexpr double min_normal = 6.103515625e-05;        // 2^-14
  static constexpr double min_subnormal = 1.52587890625e-05;   // 2^-16
  static constexpr bool has_infinity = true;
  static constexpr std::uint8_t max_bits = 0x7b;
  static constexpr std::uint8_t nan_bits = 0x7e;
  static constexpr std::uint8_t inf_bits = 0x7c;
  static constexpr const char* name = "fp8_e5m2";
};

template <class T>
struct is_fp8 : std::false_type {};
template <>
struct is_fp8<fp8_e4m3_t> : std::true_type {};
template <>
struct is_fp8<fp8_e5m2_t> : std::true_type {};

// Which FP8 format an engine rounds to (the rollout engine's FP8 mode, fp8_round.hpp); none = no FP8.
enum class Fp8Format { none, e4m3, e5m2 };

constexpr std::string_view fp8_format_name(Fp8Format f) {
  return f == Fp8Format::e4m3 ? "fp8_e4m3" : f == Fp8Format::e5m2 ? "fp8_e5m2" : "none";
}
constexpr bool parse_fp8_format(std::string_view s, Fp8Format& out) {
  if (s == "fp8_e4m3") return out = Fp8Format::e4m3, true;
  if (s == "fp8_e5m2") return out = Fp8Format::e5m2, true;
  return false;
}

}  // namespace mantissa
