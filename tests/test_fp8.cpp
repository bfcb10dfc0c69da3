// FP8 (OCP OFP8 E4M3 and E5M2) conversions and blockwise quantisation (fp8.hpp, fp8_quant.hpp).
//  - decode: all 256 patterns of each format against the value computed in double from the format
//    definition (sign, exponent, mantissa, subnormals, NaN/Inf patterns); encode(decode(p)) == p for
//    every non-NaN pattern in both overflow modes, NaN -> a NaN pattern;
//  - every rounding boundary: for each pair of adjacent representable magnitudes (and the pair max,
//    next-above-max that decides overflow) the midpoint goes to the even one and its float
//    neighbours to the nearer one, both signs, both modes; named spec facts (464, 61440, Inf, NaN);
//  - all 2^32 floats, both modes, against a double-precision nearest-value search (ties to even);
//  - quantisation: scales = max(fl(amax/max), 2^-126) exactly, the block's amax maps to +-max,
//    dequantize(quantize(x)) within the unit-roundoff bound elementwise, partial blocks, zero blocks,
//    non-finite blocks (+Inf scale, NaN out), saturation, the per-tensor path;
//  - fp8_gemm: bit-exact against a host emulation of its operation order, and within a rigorous
//    error bound derived from the FP8 and fp32 unit roundoffs, the block scales and the reduction
//    lengths, against a double reference, on random and adversarial data (ratios printed);
//  - every kernel these functions launch is labelled mantissa::fp8::<op>.
#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "kernel_test_util.hpp"
#include "label_test_util.hpp"
#include "mantissa/kernels/fp8.hpp"
#include "mantissa/kernels/fp8_quant.hpp"

using namespace mantissa;

namespace fp8_test {  // named, not anonymous: the all-floats functor may run on a device

// ---- the formats, from their definition alone (not from fp8.hpp's code) -----------------------
template <class T8>
struct Fmt;
template <>
struct Fmt<fp8_e4m3_t> {
  static constexpr int M = 3, E = 4, bias = 7;
  static constexpr bool ieee_specials = false;  // NaN = S.1111.111 only, no Inf
  static constexpr unsigned max_code = 0x7e, overflow_nonsat = 0x7f;  // NaN
};
template <>
struct Fmt<fp8_e5m2_t> {
  static constexpr int M = 2, E = 5, bias = 15;
  static constexpr bool ieee_specials = true;  // all-ones exponent: Inf (m = 0) or NaN
  static constexpr unsigned max_code = 0x7b, overflow_nonsat = 0x7c;  // Inf
};

// Value of pattern p in double; `unbounded`: ignore the special patterns (the value the code would
// have with more exponent range: the next magnitude above max, which decides overflow).
template <class T8>
double reference_value(unsigned p, bool unbounded = false) {
  using F = Fmt<T8>;
  const int s = (p >> 7) & 1, e = (p >> F::M) & ((1 << F::E) - 1), m = p & ((1 << F::M) - 1);
  const double sign = s ? -1.0 : 1.0;
  if (!unbounded) {
    if (F::ieee_specials && e == (1 << F::E) - 1) return m ? std::nan("") : sign * INFINITY;
    if (!F::ieee_specials && e == (1 << F::E) - 1 && m == (1 << F::M) - 1) return std::nan("");
  }
  if (e == 0) return sign * std::ldexp(static_cast<double>(m), 1 - F::bias - F::M);
  return sign * std::ldexp(1.0 + std::ldexp(static_cast<double>(m), -F::M), e - F::bias);
}

// The magnitudes 0 .. max (index = code) and, at index max_code + 1, the next one above max.
template <class T8>
struct Table {
  static constexpr int n = Fmt<T8>::max_code + 2;
  double value[n];
  double mid[n - 1];  // mid[i] = (value[i] + value[i+1]) / 2, exact in double
  Table() {
    for (int i = 0; i < n; ++i) value[i] = reference_value<T8>(static_cast<unsigned>(i), i == n - 1);
    for (int i = 0; i + 1 < n; ++i) mid[i] = 0.5 * (value[i] + value[i + 1]);
  }
};

// The code of the magnitude index i (which may be max_code + 1) in mode `mode`.
template <class T8>
KOKKOS_INLINE_FUNCTION unsigned overflowed(unsigned i, Fp8Overflow mode) {
  if (i <= Fmt<T8>::max_code) return i;
  return mode == Fp8Overflow::saturate ? Fmt<T8>::max_code : Fmt<T8>::overflow_nonsat;
}

// Reference encoder: nearest magnitude by search, ties to the even code (last mantissa bit 0),
// overflow when the nearest is above max (or |x| is beyond it); NaN is checked separately.
template <class T8>
unsigned reference_encode(const Table<T8>& t, float x, Fp8Overflow mode) {
  const double a = std::fabs(static_cast<double>(x));
  const unsigned sign = std::signbit(x) ? 0x80u : 0u;
  unsigned i = 0;
  if (a >= t.value[Table<T8>::n - 1]) {
    i = Table<T8>::n - 1;
  } else {
    while (t.value[i + 1] <= a) ++i;
    if (a > t.mid[i] || (a == t.mid[i] && (i & 1u))) ++i;
  }
  return sign | overflowed<T8>(i, mode);
}

template <class T8>
bool is_nan_code(unsigned p) {
  return std::isnan(reference_value<T8>(p));
}

// All positive floats in [begin, end) per chunk, each with both signs and both modes, against the
// reference: a walk that keeps the bracketing index (floats come in increasing order), started by
// a search at the chunk's first float. Returns the mismatch count.
template <class T8>
struct EveryFloat {
  Table<T8> t;
  std::uint64_t stride, chunk;
  KOKKOS_INLINE_FUNCTION void operator()(const std::uint64_t c, long long& bad) const {
    constexpr int top = Table<T8>::n - 1;
    const std::uint64_t u0 = c * chunk, u1 = u0 + chunk < 0x80000000ull ? u0 + chunk : 0x80000000ull;
    int i = 0;
    for (std::uint64_t u = u0; u < u1; u += stride) {
      const float x = bits_float(static_cast<std::uint32_t>(u));
      if (u > 0x7f800000ull) {  // NaN: any NaN pattern
        for (int mi = 0; mi < 2; ++mi) {
          const Fp8Overflow mode = mi ? Fp8Overflow::nonsaturate : Fp8Overflow::saturate;
          bad += !(to_float(from_float<T8>(x, mode)) != to_float(from_float<T8>(x, mode)));
          bad += !(to_float(from_float<T8>(-x, mode)) != to_float(from_float<T8>(-x, mode)));
        }
        continue;
      }
      const double a = static_cast<double>(x);
      while (i < top && t.value[i + 1] <= a) ++i;
      unsigned idx = static_cast<unsigned>(i);
      if (i < top && (a > t.mid[i] || (a == t.mid[i] && (i & 1)))) ++idx;
      for (int mi = 0; mi < 2; ++mi) {
        const Fp8Overflow mode = mi ? Fp8Overflow::nonsaturate : Fp8Overflow::saturate;
        const unsigned want = overflowed<T8>(idx, mode);
        bad += from_float<T8>(x, mode).bits != want;
        bad += from_float<T8>(-x, mode).bits != (want | 0x80u);
      }
    }
  }
};

template <class T8>
constexpr double u8() {
  return precision_traits<T8>::unit_roundoff;
}
template <class T8>
constexpr double half_min_subnormal() {
  return 0.5 * precision_traits<T8>::min_subnormal;
}
constexpr double kU64 = 1.1102230246251565e-16;  // 2^-53, double (the reference's sums)
inline double gamma(double n, double u) { return n * u / (1.0 - n * u); }

// |s q - x| <= alpha |x| + s * delta for q = RNE_sat(fl32(x / s)): the fp32 quotient's rounding
// (u32), the FP8 rounding (u8 relative in the normal range, half the smallest subnormal below);
// saturation moves a quotient of at most max (1 + 2 u32) to max, inside the u8 term.
template <class T8>
double quant_error_bound(double x, double s) {
  const double alpha = u8<T8>() + test::kU32 + u8<T8>() * test::kU32;
  return alpha * std::fabs(x) + s * half_min_subnormal<T8>();
}

std::vector<float> host_floats(const std::vector<double>& v) {
  std::vector<float> f(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) f[i] = static_cast<float>(v[i]);
  return f;
}
View2<float> make_f32(const char* label, const std::vector<float>& v, std::size_t rows, std::size_t cols) {
  View2<float> d(std::string(label), rows, cols);
  auto h = Kokkos::create_mirror_view(d);
  for (std::size_t i = 0; i < rows; ++i)
    for (std::size_t j = 0; j < cols; ++j) h(i, j) = v[i * cols + j];
  Kokkos::deep_copy(d, h);
  return d;
}

template <class T8>
struct HostBlocked {
  std::vector<std::uint8_t> q;
  std::vector<float> scale;
  std::size_t rows, cols, nbc;
  int br, bc;
  float s(std::size_t r, std::size_t c) const { return scale[(r / br) * nbc + c / bc]; }
  float qf(std::size_t r, std::size_t c) const { return to_float(T8{q[r * cols + c]}); }
};
template <class T8>
HostBlocked<T8> to_host(const Fp8Blocked<T8>& b) {
  Kokkos::fence();
  auto q = Kokkos::create_mirror_view_and_copy(HostSpace(), b.q);
  auto s = Kokkos::create_mirror_view_and_copy(HostSpace(), b.scale);
  HostBlocked<T8> h{{}, {}, q.extent(0), q.extent(1), s.extent(1), b.block_rows, b.block_cols};
  for (std::size_t i = 0; i < q.extent(0); ++i)
    for (std::size_t j = 0; j < q.extent(1); ++j) h.q.push_back(q(i, j).bits);
  for (std::size_t i = 0; i < s.extent(0); ++i)
    for (std::size_t j = 0; j < s.extent(1); ++j) h.scale.push_back(s(i, j));
  return h;
}

}  // namespace fp8_test

using namespace fp8_test;

// ---- (a) decode all 256 patterns, round trip ----------------------------------------------------
template <class T8>
void check_all_patterns() {
  int nans = 0, infs = 0;
  for (unsigned p = 0; p < 256; ++p) {
    const float f = to_float(T8{static_cast<std::uint8_t>(p)});
    const double ref = reference_value<T8>(p);
    for (Fp8Overflow mode : {Fp8Overflow::saturate, Fp8Overflow::nonsaturate}) {
      const unsigned back = from_float<T8>(f, mode).bits;
      if (std::isnan(ref)) {
        ASSERT_TRUE(std::isnan(f)) << precision_traits<T8>::name << " pattern " << p;
        ASSERT_TRUE(is_nan_code<T8>(back)) << p;
        ASSERT_EQ(back & 0x80u, p & 0x80u) << "NaN keeps its sign, pattern " << p;
      } else {
        ASSERT_EQ(static_cast<double>(f), ref) << precision_traits<T8>::name << " pattern " << p;
        ASSERT_EQ(std::signbit(f), (p & 0x80u) != 0) << p;
        if (std::isinf(ref) && mode == Fp8Overflow::saturate) {
          ASSERT_EQ(back, (p & 0x80u) | Fmt<T8>::max_code) << "Inf saturates to max, pattern " << p;
        } else {
          ASSERT_EQ(back, p) << precision_traits<T8>::name << " round trip of pattern " << p;
        }
      }
    }
    nans += std::isnan(ref);
    infs += std::isinf(ref);
  }
  // The specials the format definition implies: E4M3 S.1111.111 only; E5M2 S.11111.{01,10,11}, +-Inf.
  EXPECT_EQ(nans, Fmt<T8>::ieee_specials ? 6 : 2);
  EXPECT_EQ(infs, Fmt<T8>::ieee_specials ? 2 : 0);
  EXPECT_EQ(static_cast<double>(to_float(T8{precision_traits<T8>::max_bits})), precision_traits<T8>::max);
}

TEST(Fp8, E4M3DecodesEveryPatternAndRoundTrips) { check_all_patterns<fp8_e4m3_t>(); }
TEST(Fp8, E5M2DecodesEveryPatternAndRoundTrips) { check_all_patterns<fp8_e5m2_t>(); }

TEST(Fp8, TraitsMatchTheFormatDefinition) {
  EXPECT_EQ(precision_traits<fp8_e4m3_t>::max, 448.0);
  EXPECT_EQ(precision_traits<fp8_e4m3_t>::min_normal, std::ldexp(1.0, -6));
  EXPECT_EQ(precision_traits<fp8_e4m3_t>::min_subnormal, std::ldexp(1.0, -9));
  EXPECT_EQ(precision_traits<fp8_e4m3_t>::unit_roundoff, std::ldexp(1.0, -4));
  EXPECT_EQ(precision_traits<fp8_e5m2_t>::max, 57344.0);
  EXPECT_EQ(precision_traits<fp8_e5m2_t>::min_normal, std::ldexp(1.0, -14));
  EXPECT_EQ(precision_traits<fp8_e5m2_t>::min_subnormal, std::ldexp(1.0, -16));
  EXPECT_EQ(precision_traits<fp8_e5m2_t>::unit_roundoff, std::ldexp(1.0, -3));
  EXPECT_EQ(reference_value<fp8_e4m3_t>(0x08), precision_traits<fp8_e4m3_t>::min_normal);
  EXPECT_EQ(reference_value<fp8_e4m3_t>(0x01), precision_traits<fp8_e4m3_t>::min_subnormal);
  EXPECT_EQ(reference_value<fp8_e5m2_t>(0x04), precision_traits<fp8_e5m2_t>::min_normal);
  EXPECT_EQ(reference_value<fp8_e5m2_t>(0x01), precision_traits<fp8_e5m2_t>::min_subnormal);
  EXPECT_EQ(reference_value<fp8_e4m3_t>(precision_traits<fp8_e4m3_t>::max_bits), 448.0);
  EXPECT_EQ(reference_value<fp8_e5m2_t>(precision_traits<fp8_e5m2_t>::max_bits), 57344.0);
  EXPECT_TRUE(is_nan_code<fp8_e4m3_t>(precision_traits<fp8_e4m3_t>::nan_bits));
  EXPECT_TRUE(is_nan_code<fp8_e5m2_t>(precision_traits<fp8_e5m2_t>::nan_bits));
  EXPECT_TRUE(std::isinf(reference_value<fp8_e5m2_t>(precision_traits<fp8_e5m2_t>::inf_bits)));
}

// ---- (b) every rounding boundary ------------------------------------------------------------------
template <class T8>
void check_boundaries() {
  const Table<T8> t;
  int checked = 0;
  for (int i = 0; i + 1 < Table<T8>::n; ++i) {
    const float lo = static_cast<float>(t.value[i]), hi = static_cast<float>(t.value[i + 1]);
    const float mid = static_cast<float>(t.mid[i]);
    ASSERT_EQ(static_cast<double>(mid), t.mid[i]) << "midpoints are floats";
    const unsigned even = (i & 1) ? static_cast<unsigned>(i + 1) : static_cast<unsigned>(i);
    for (Fp8Overflow mode : {Fp8Overflow::saturate, Fp8Overflow::nonsaturate}) {
      for (unsigned sign : {0u, 0x80u}) {
        const float sg = sign ? -1.0f : 1.0f;
        const auto enc = [&](float v) { return static_cast<unsigned>(from_float<T8>(sg * v, mode).bits); };
        const unsigned want_lo = sign | overflowed<T8>(i, mode), want_hi = sign | overflowed<T8>(i + 1, mode);
        ASSERT_EQ(enc(lo), want_lo) << "value " << lo;
        ASSERT_EQ(enc(hi), want_hi) << "value " << hi;  // (the one above max: overflow)
        ASSERT_EQ(enc(mid), sign | overflowed<T8>(even, mode)) << precision_traits<T8>::name << " tie at " << sg * mid;
        ASSERT_EQ(enc(std::nextafter(mid, 0.0f)), want_lo) << "below tie " << sg * mid;
        ASSERT_EQ(enc(std::nextafter(mid, INFINITY)), want_hi) << "above tie " << sg * mid;
        checked += 3;
      }
    }
  }
  std::printf("  %s: %d boundary points checked (%d intervals, both signs, both modes)\n",
              precision_traits<T8>::name, checked, Table<T8>::n - 1);
  // Below the smallest subnormal's half and above everything: fp32 subnormals, FLT_MAX, Inf.
  for (Fp8Overflow mode : {Fp8Overflow::saturate, Fp8Overflow::nonsaturate}) {
    const unsigned over = overflowed<T8>(Fmt<T8>::max_code + 1, mode);
    EXPECT_EQ(from_float<T8>(1e-45f, mode).bits, 0x00);
    EXPECT_EQ(from_float<T8>(-1e-45f, mode).bits, 0x80);
    EXPECT_EQ(from_float<T8>(1.1754942e-38f, mode).bits, 0x00);
    EXPECT_EQ(from_float<T8>(0.0f, mode).bits, 0x00);
    EXPECT_EQ(from_float<T8>(-0.0f, mode).bits, 0x80);
    EXPECT_EQ(from_float<T8>(FLT_MAX, mode).bits, over);
    EXPECT_EQ(from_float<T8>(-FLT_MAX, mode).bits, 0x80 | over);
    EXPECT_EQ(from_float<T8>(INFINITY, mode).bits, over);
    EXPECT_EQ(from_float<T8>(-INFINITY, mode).bits, 0x80 | over);
    EXPECT_TRUE(std::isnan(round_to<T8>(NAN, mode)));
  }
}

TEST(Fp8, E4M3EveryRoundingBoundary) { check_boundaries<fp8_e4m3_t>(); }
TEST(Fp8, E5M2EveryRoundingBoundary) { check_boundaries<fp8_e5m2_t>(); }

// The spec's named facts, written out (OFP8 Rev. 1.0, section 5).
TEST(Fp8, NamedSpecFacts) {
  using S = Fp8Overflow;
  // E4M3: 464 is the tie between 448 (1.110b 2^8, even) and 480 (odd): -> 448; above -> overflow.
  EXPECT_EQ(fp8_e4m3_bits_from_float(448.0f, S::nonsaturate), 0x7e);
  EXPECT_EQ(fp8_e4m3_bits_from_float(464.0f, S::nonsaturate), 0x7e);
  EXPECT_EQ(fp8_e4m3_bits_from_float(std::nextafter(464.0f, 1e9f), S::nonsaturate), 0x7f);  // NaN
  EXPECT_EQ(fp8_e4m3_bits_from_float(std::nextafter(464.0f, 1e9f), S::saturate), 0x7e);
  EXPECT_EQ(fp8_e4m3_bits_from_float(-1e9f, S::saturate), 0xfe);
  EXPECT_EQ(fp8_e4m3_bits_from_float(INFINITY, S::saturate), 0x7e);   // no Inf: saturates to max
  EXPECT_EQ(fp8_e4m3_bits_from_float(INFINITY, S::nonsaturate), 0x7f);  // ... or NaN
  EXPECT_EQ(fp8_e4m3_bits_from_float(NAN, S::saturate), 0x7f);
  EXPECT_EQ(fp8_e4m3_bits_from_float(-NAN, S::saturate), 0xff);
  EXPECT_EQ(fp8_e4m3_bits_from_float(std::ldexp(1.0f, -10), S::saturate), 0x00);  // tie 0 | 2^-9 -> 0
  EXPECT_EQ(fp8_e4m3_bits_from_float(std::ldexp(3.0f, -10), S::saturate), 0x02);  // tie 1 | 2 -> 2
  EXPECT_EQ(fp8_e4m3_bits_from_float(std::ldexp(15.0f, -10), S::saturate), 0x08);  // 7.5 units -> min normal
  EXPECT_EQ(fp8_e4m3_bits_from_float(1.0f, S::saturate), 0x38);
  // E5M2: 61440 is the tie between 57344 (1.11b 2^15, odd) and 2^16 (even): -> overflow.
  EXPECT_EQ(fp8_e5m2_bits_from_float(57344.0f, S::nonsaturate), 0x7b);
  EXPECT_EQ(fp8_e5m2_bits_from_float(std::nextafter(61440.0f, 0.0f), S::nonsaturate), 0x7b);
  EXPECT_EQ(fp8_e5m2_bits_from_float(61440.0f, S::nonsaturate), 0x7c);  // Inf
  EXPECT_EQ(fp8_e5m2_bits_from_float(61440.0f, S::saturate), 0x7b);
  EXPECT_EQ(fp8_e5m2_bits_from_float(-INFINITY, S::nonsaturate), 0xfc);
  EXPECT_EQ(fp8_e5m2_bits_from_float(-INFINITY, S::saturate), 0xfb);
  EXPECT_TRUE(is_nan_code<fp8_e5m2_t>(fp8_e5m2_bits_from_float(NAN, S::saturate)));
  EXPECT_EQ(fp8_e5m2_bits_from_float(1.0f, S::saturate), 0x3c);  // the top byte of fp16's 1.0
  // The one-argument forms are non-saturating.
  EXPECT_EQ(from_float<fp8_e4m3_t>(500.0f).bits, 0x7f);
  EXPECT_EQ(from_float<fp8_e5m2_t>(1e5f).bits, 0x7c);
  EXPECT_TRUE(std::isnan(round_to<fp8_e4m3_t>(500.0f)));
  EXPECT_EQ(round_to<fp8_e4m3_t>(500.0f, S::saturate), 448.0f);
}

// ---- (c) every float ------------------------------------------------------------------------------
template <class T8>
void check_every_float() {
  // All 2^32 floats by default; MANTISSA_PRECISION_SAMPLES sets a stride (the sanitizer preset).
  std::uint64_t stride = 1;
  if (const char* env = std::getenv("MANTISSA_PRECISION_SAMPLES"))
    stride = std::max<std::uint64_t>(1, (1ull << 32) / std::max(1ll, std::atoll(env)));
  const auto t0 = std::chrono::steady_clock::now();
  const std::uint64_t chunk = 1ull << 22;  // 512 chunks of positive floats (each also negated)
  EveryFloat<T8> f{Table<T8>(), stride, chunk};
  long long bad = 0;
  Kokkos::parallel_reduce("mantissa::test::fp8_every_float",
                          Kokkos::RangePolicy<ExecSpace, Kokkos::IndexType<std::uint64_t>>(0, (1ull << 31) / chunk), f,
                          bad);
  Kokkos::fence();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("  %s: %llu floats x 2 modes in %.1f s, %lld mismatches\n", precision_traits<T8>::name,
              static_cast<unsigned long long>((1ull << 32) / stride), secs, bad);
  EXPECT_EQ(bad, 0);
  if (bad) {  // the first few, by the plain reference
    const Table<T8> t;
    int shown = 0;
    for (std::uint64_t u = 0; u < (1ull << 32) && shown < 5; u += stride) {
      const float x = bits_float(static_cast<std::uint32_t>(u));
      if (std::isnan(x)) continue;
      for (Fp8Overflow mode : {Fp8Overflow::saturate, Fp8Overflow::nonsaturate}) {
        const unsigned want = reference_encode<T8>(t, x, mode), got = from_float<T8>(x, mode).bits;
        if (want != got && shown++ < 5)
          ADD_FAILURE() << "float bits 0x" << std::hex << u << " (" << x << ") mode " << static_cast<int>(mode)
                        << ": got 0x" << got << " want 0x" << want;
      }
    }
  }
}

TEST(Fp8, E4M3EncodeEveryFloatBitExact) { check_every_float<fp8_e4m3_t>(); }
TEST(Fp8, E5M2EncodeEveryFloatBitExact) { check_every_float<fp8_e5m2_t>(); }

// The walk of the all-floats test agrees with the plain search on random floats (the test's two
// references check each other).
TEST(Fp8, ReferenceEncoderSelfCheck) {
  const Table<fp8_e4m3_t> t4;
  const Table<fp8_e5m2_t> t5;
  std::mt19937 rng(15);
  long long bad = 0;
  for (int k = 0; k < 200000; ++k) {
    // magnitudes around the FP8 ranges, where the search does the work
    const float x = std::ldexp(std::uniform_real_distribution<float>(-1.0f, 1.0f)(rng),
                               std::uniform_int_distribution<int>(-20, 18)(rng));
    for (Fp8Overflow mode : {Fp8Overflow::saturate, Fp8Overflow::nonsaturate}) {
      bad += reference_encode(t4, x, mode) != fp8_e4m3_bits_from_float(x, mode);
      bad += reference_encode(t5, x, mode) != fp8_e5m2_bits_from_float(x, mode);
    }
  }
  EXPECT_EQ(bad, 0);
}

// ---- quantisation -----------------------------------------------------------------------------------
// Host view of the rounding a block quantiser must do, written out: s from amax, q = RNE_sat(x / s).
template <class T8>
float expected_scale(const std::vector<float>& x, std::size_t cols, std::size_t r0, std::size_t r1, std::size_t c0,
                     std::size_t c1) {
  float amax = 0.0f;
  bool finite = true;
  for (std::size_t r = r0; r < r1; ++r)
    for (std::size_t c = c0; c < c1; ++c) {
      finite = finite && std::isfinite(x[r * cols + c]);
      amax = std::max(amax, std::fabs(x[r * cols + c]));
    }
  if (!finite) return INFINITY;
  if (amax == 0.0f) return 1.0f;
  return std::max(amax / static_cast<float>(precision_traits<T8>::max), FLT_MIN);
}

// Quantises x (rows, cols) in br x bc blocks and checks the scales, q's bits and the dequantised
// values elementwise: |x~ - x| <= alpha |x| + s delta (quant_error_bound) plus the fp32 rounding of
// q s (u32 of |q s| <= |x| + that bound). Returns the worst err/tol.
template <class T8>
double check_blockwise(const std::string& what, const std::vector<float>& x, std::size_t rows, std::size_t cols,
                       int br, int bc) {
  const View2<float> xd = make_f32("mantissa::test::x", x, rows, cols);
  Fp8Blocked<T8> b;
  fp8_quantize_blockwise<T8>(ExecSpace(), xd, br, bc, b);
  const View2<float> y("mantissa::test::y", rows, cols);
  fp8_dequantize_blockwise<T8>(ExecSpace(), b, y);
  const auto h = fp8_test::to_host(b);
  const std::vector<double> yv = test::to_host(y);
  EXPECT_EQ(b.scale.extent(0), (rows + br - 1) / br);
  EXPECT_EQ(b.scale.extent(1), (cols + bc - 1) / bc);
  long long bad_scale = 0, bad_q = 0, bad_max = 0;
  for (std::size_t i = 0; i < b.scale.extent(0); ++i)
    for (std::size_t j = 0; j < b.scale.extent(1); ++j) {
      const std::size_t r0 = i * br, r1 = std::min(rows, r0 + br), c0 = j * bc, c1 = std::min(cols, c0 + bc);
      const float want = expected_scale<T8>(x, cols, r0, r1, c0, c1);
      const float got = h.scale[i * h.nbc + j];
      bad_scale += !(got == want);
      // the block's largest element maps to +-max exactly (finite, non-zero blocks)
      if (std::isfinite(want) && want * static_cast<float>(precision_traits<T8>::max) > 0.0f && want > FLT_MIN) {
        float amax = 0.0f;
        std::size_t at = r0 * cols + c0;
        for (std::size_t r = r0; r < r1; ++r)
          for (std::size_t c = c0; c < c1; ++c)
            if (std::fabs(x[r * cols + c]) > amax) amax = std::fabs(x[at = r * cols + c]);
        bad_max += (h.q[at] & 0x7fu) != precision_traits<T8>::max_bits;
      }
    }
  std::vector<double> got, ref, tol;
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t c = 0; c < cols; ++c) {
      const float xv = x[r * cols + c], s = h.s(r, c);
      bad_q += h.q[r * cols + c] != from_float<T8>(xv / s, Fp8Overflow::saturate).bits;
      if (!std::isfinite(s)) continue;  // non-finite blocks: checked by the caller
      const double qb = quant_error_bound<T8>(xv, s);
      got.push_back(yv[r * cols + c]);
      ref.push_back(xv);
      tol.push_back(qb + test::kU32 * (std::fabs(xv) + qb));
    }
  EXPECT_EQ(bad_scale, 0) << what;
  EXPECT_EQ(bad_q, 0) << what;
  EXPECT_EQ(bad_max, 0) << what;
  return test::expect_close(what, got, ref, tol);
}

// values sign * 2^U(lo, hi): a wide dynamic range inside every block
std::vector<float> log_uniform(std::size_t n, double lo, double hi, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> e(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>((rng() & 1 ? -1.0 : 1.0) * std::exp2(e(rng)));
  return v;
}

template <class T8>
void check_quantize() {
  const std::string name = precision_traits<T8>::name;
  // 200 x 300: partial blocks in both directions for 128 x 128; 1 x 128 groups with a 44-wide tail.
  const std::size_t rows = 200, cols = 300;
  const auto normal = host_floats(test::random_values<float>(rows * cols, -3.0, 3.0, 11));
  const auto wide = log_uniform(rows * cols, -40.0, 10.0, 12);
  for (const auto* data : {&normal, &wide}) {
    const std::string d = data == &normal ? "uniform" : "2^U(-40,10)";
    EXPECT_LE(check_blockwise<T8>(name + " 128x128 " + d, *data, rows, cols, 128, 128), 1.0);
    EXPECT_LE(check_blockwise<T8>(name + " 1x128 " + d, *data, rows, cols, 1, 128), 1.0);
    EXPECT_LE(check_blockwise<T8>(name + " 7x5 " + d, *data, rows, cols, 7, 5), 1.0);
  }
  // Tiny blocks: the scale is floored at 2^-126 (normal); values far below it round to 0.
  std::vector<float> tiny(4 * 128);
  for (std::size_t i = 0; i < tiny.size(); ++i) tiny[i] = std::ldexp(static_cast<float>(i % 13) - 6.0f, -130);
  EXPECT_LE(check_blockwise<T8>(name + " 1x128 subnormal fp32 inputs", tiny, 4, 128, 1, 128), 1.0);
}

TEST(Fp8Quant, E4M3BlockwiseScalesBitsAndRoundTrip) { check_quantize<fp8_e4m3_t>(); }
TEST(Fp8Quant, E5M2BlockwiseScalesBitsAndRoundTrip) { check_quantize<fp8_e5m2_t>(); }

// Zero blocks get scale 1 and +-0 (sign kept); a block with Inf or NaN gets scale +Inf, dequantises
// to NaN everywhere, and makes every GEMM output that reads it non-finite; other blocks are untouched.
template <class T8>
void check_special_blocks() {
  const std::size_t rows = 4, cols = 256, n = 3;
  auto x = host_floats(test::random_values<float>(rows * cols, -2.0, 2.0, 21));
  for (std::size_t c = 0; c < 128; ++c) x[c] = (c & 1) ? -0.0f : 0.0f;  // row 0, group 0: zeros
  x[1 * cols + 200] = NAN;                                              // row 1, group 1
  x[2 * cols + 5] = INFINITY;                                           // row 2, group 0
  x[3 * cols + 130] = -INFINITY;                                        // row 3, group 1
  const View2<float> xd = make_f32("mantissa::test::x", x, rows, cols);
  Fp8Blocked<T8> b;
  fp8_quantize_activation<T8>(ExecSpace(), xd, b);
  const auto h = fp8_test::to_host(b);
  EXPECT_EQ(h.scale[0], 1.0f);
  for (std::size_t c = 0; c < 128; ++c) EXPECT_EQ(h.q[c], (c & 1) ? 0x80 : 0x00) << c;
  for (auto [r, j] : {std::pair<int, int>{1, 1}, {2, 0}, {3, 1}}) {
    EXPECT_TRUE(std::isinf(h.s(r, j * 128)) && h.s(r, j * 128) > 0) << "row " << r;
  }
  EXPECT_TRUE(std::isfinite(h.s(1, 0)) && std::isfinite(h.s(2, 128)) && std::isfinite(h.s(3, 0)));
  const View2<float> y("mantissa::test::y", rows, cols);
  fp8_dequantize_blockwise<T8>(ExecSpace(), b, y);
  const auto yv = test::to_host(y);
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t c = 0; c < cols; ++c) {
      const bool bad_block = (r == 1 && c >= 128) || (r == 2 && c < 128) || (r == 3 && c >= 128);
      EXPECT_EQ(std::isnan(yv[r * cols + c]), bad_block) << r << "," << c;
    }
  // GEMM: rows 1..3 read a non-finite block in every output; row 0 stays finite.
  Fp8Blocked<T8> w;
  fp8_quantize_weight<T8>(ExecSpace(),
                          make_f32("mantissa::test::w", host_floats(test::random_values<float>(n * cols, -1, 1, 22)),
                                   n, cols),
                          w);
  const View2<float> out("mantissa::test::out", rows, n);
  fp8_gemm<T8, T8>(ExecSpace(), b, w, out);
  const auto ov = test::to_host(out);
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t j = 0; j < n; ++j) EXPECT_EQ(std::isfinite(ov[r * n + j]), r == 0) << r << "," << j;
}

TEST(Fp8Quant, ZeroAndNonFiniteBlocks) {
  check_special_blocks<fp8_e4m3_t>();
  check_special_blocks<fp8_e5m2_t>();
}

// Per tensor (an FP8 KV cache): amax, the scale rule, saturation, round trip within the bound.
template <class T8>
void check_tensor() {
  using S = Fp8Overflow;
  const float fmax = static_cast<float>(precision_traits<T8>::max);
  EXPECT_EQ(fp8_scale_from_amax<T8>(0.0f), 1.0f);
  EXPECT_EQ(fp8_scale_from_amax<T8>(fmax), 1.0f);
  EXPECT_EQ(fp8_scale_from_amax<T8>(1e-38f), FLT_MIN);
  EXPECT_EQ(fp8_scale_from_amax<T8>(INFINITY), INFINITY);
  EXPECT_EQ(fp8_scale_from_amax<T8>(NAN), INFINITY);
  // Saturation with a fixed scale of 1: beyond max (and Inf) -> +-max, never NaN or Inf.
  const std::vector<float> big = {2.0f * fmax, -1e30f, fmax, INFINITY, -INFINITY, 1.0f};
  View1<float> bd("mantissa::test::big", big.size());
  auto bh = Kokkos::create_mirror_view(bd);
  for (std::size_t i = 0; i < big.size(); ++i) bh(i) = big[i];
  Kokkos::deep_copy(bd, bh);
  View1<T8> bq("mantissa::test::bq", big.size());
  fp8_quantize_tensor<T8>(ExecSpace(), bd, 1.0f, bq);
  auto bqh = Kokkos::create_mirror_view_and_copy(HostSpace(), bq);
  const unsigned mx = precision_traits<T8>::max_bits;
  const std::vector<unsigned> want = {mx, 0x80u | mx, mx, mx, 0x80u | mx, from_float<T8>(1.0f, S::saturate).bits};
  for (std::size_t i = 0; i < big.size(); ++i) EXPECT_EQ(bqh(i).bits, want[i]) << i;
  // amax: Inf or NaN anywhere -> +Inf; empty -> 0.
  EXPECT_EQ(fp8_amax(ExecSpace(), bd), INFINITY);
  EXPECT_EQ(fp8_amax(ExecSpace(), View1<float>("mantissa::test::empty", 0)), 0.0f);
  bh(3) = NAN;
  bh(4) = 3.0f;
  Kokkos::deep_copy(bd, bh);
  EXPECT_EQ(fp8_amax(ExecSpace(), bd), INFINITY);
  // Round trip with the tensor's own scale.
  const auto xv = log_uniform(5000, -20.0, 6.0, 31);
  View1<float> xd("mantissa::test::x", xv.size());
  auto xh = Kokkos::create_mirror_view(xd);
  float amax = 0.0f;
  for (std::size_t i = 0; i < xv.size(); ++i) amax = std::max(amax, std::fabs(xh(i) = xv[i]));
  Kokkos::deep_copy(xd, xh);
  EXPECT_EQ(fp8_amax(ExecSpace(), xd), amax);
  const float s = fp8_scale_from_amax<T8>(amax);
  View1<T8> q("mantissa::test::q", xv.size());
  View1<float> y("mantissa::test::y", xv.size());
  fp8_quantize_tensor<T8>(ExecSpace(), xd, s, q);
  fp8_dequantize_tensor<T8>(ExecSpace(), q, s, y);
  const auto yv = test::to_host(y);
  std::vector<double> ref(xv.begin(), xv.end()), tol(xv.size());
  for (std::size_t i = 0; i < xv.size(); ++i) {
    const double qb = quant_error_bound<T8>(xv[i], s);
    tol[i] = qb + test::kU32 * (std::fabs(xv[i]) + qb);
  }
  EXPECT_LE(test::expect_close(std::string(precision_traits<T8>::name) + " per-tensor round trip", yv, ref, tol), 1.0);
}

TEST(Fp8Quant, PerTensorScaleSaturationAndRoundTrip) {
  check_tensor<fp8_e4m3_t>();
  check_tensor<fp8_e5m2_t>();
}

// ---- (d) the blockwise-scaled FP8 GEMM ----------------------------------------------------------------
// Bound per output element (x, w the fp32 inputs, exact in double; s the block scales):
//   quantisation  x = s_x q_x + e_x, |e_x| <= E_x = alpha_X |x| + s_x delta_X (quant_error_bound), same for w,
//                 |s_x q_x s_w q_w - x w| <= E_x |w| + (|x| + E_x) E_w;
//   segment S (n_S terms): the products q_x q_w are exact; their fp32 sum P_S has error
//                 <= gamma_{n_S}(u32) sum |q_x q_w|; with T_S = sum_S (|x| + E_x)(|w| + E_w) >= s_x s_w sum |q_x q_w|;
//   promotion     c_S = fl(s_x s_w) (u32), acc = fma(c_S, P_S, acc) over the n_seg segments: <= gamma_{n_seg} sum |c_S P_S|;
//   total         sum_k [E_x |w| + (|x| + E_x) E_w] + sum_S T_S [gamma_{n_S} + (1 + gamma_{n_S}) (u32 + gamma_{n_seg} (1 + u32))],
// plus the double reference's own gamma_K(2^-53) sum |x w|. (Scale products stay normal here.)
template <class TX, class TW>
double check_gemm(const std::string& what, const std::vector<float>& x, const std::vector<float>& w, std::size_t M,
                  std::size_t N, std::size_t K) {
  Fp8Blocked<TX> xq;
  Fp8Blocked<TW> wq;
  fp8_quantize_activation<TX>(ExecSpace(), make_f32("mantissa::test::x", x, M, K), xq);
  fp8_quantize_weight<TW>(ExecSpace(), make_f32("mantissa::test::w", w, N, K), wq);
  const View2<float> y("mantissa::test::y", M, N);
  fp8_gemm<TX, TW>(ExecSpace(), xq, wq, y);
  const auto yv = test::to_host(y);
  const auto hx = fp8_test::to_host(xq);
  const auto hw = fp8_test::to_host(wq);
  const std::size_t seg = static_cast<std::size_t>(xq.block_cols), n_seg = (K + seg - 1) / seg;
  const double u32 = test::kU32;
  long long not_bit_exact = 0;
  std::vector<double> got, ref, tol;
  for (std::size_t m = 0; m < M; ++m)
    for (std::size_t n = 0; n < N; ++n) {
      // host emulation of fp8_gemm's operation order: must agree bit for bit
      float acc = 0.0f;
      double exact = 0.0, abs_sum = 0.0, bound = 0.0;
      for (std::size_t s = 0; s < n_seg; ++s) {
        const std::size_t k0 = s * seg, k1 = std::min(K, k0 + seg);
        float partial = 0.0f;
        double t_s = 0.0;
        for (std::size_t k = k0; k < k1; ++k) {
          partial += hx.qf(m, k) * hw.qf(n, k);
          const double xk = x[m * K + k], wk = w[n * K + k];
          const double ex = quant_error_bound<TX>(xk, hx.s(m, k)), ew = quant_error_bound<TW>(wk, hw.s(n, k));
          exact += xk * wk;
          abs_sum += std::fabs(xk * wk);
          bound += ex * std::fabs(wk) + (std::fabs(xk) + ex) * ew;
          t_s += (std::fabs(xk) + ex) * (std::fabs(wk) + ew);
        }
        const float c = hx.s(m, k0) * hw.s(n, k0);
        acc = std::fma(c, partial, acc);
        const double g_n = gamma(static_cast<double>(k1 - k0), u32);
        bound += t_s * (g_n + (1.0 + g_n) * (u32 + gamma(static_cast<double>(n_seg), u32) * (1.0 + u32)));
      }
      bound += gamma(static_cast<double>(K), kU64) * abs_sum;
      not_bit_exact += float_bits(acc) != float_bits(static_cast<float>(yv[m * N + n]));
      got.push_back(yv[m * N + n]);
      ref.push_back(exact);
      tol.push_back(bound);
    }
  EXPECT_EQ(not_bit_exact, 0) << what << ": fp8_gemm differs from the emulation of its own order";
  const double worst = test::expect_close(what, got, ref, tol);
  EXPECT_LE(worst, 1.0) << what;
  return worst;
}

// All values at FP8 rounding ties that round AWAY from zero (the midpoint between the odd code
// 1 + 2^-M and the even 1 + 2^-(M-1), times powers of two), one element per block pinned to max so
// that every scale is a power of two and x / s is exactly that tie: the quantisation errors are
// the largest RNE allows and all of one sign, so the bound is nearly attained.
template <class T8>
std::vector<float> midpoint_data(std::size_t rows, std::size_t cols, int block_rows, std::uint64_t seed) {
  constexpr int M = precision_traits<T8>::mantissa_bits;
  const double fmax = precision_traits<T8>::max;
  const int top = static_cast<int>(std::floor(std::log2(fmax)));  // exponent of max
  const double tie = 1.0 + 1.5 * std::ldexp(1.0, -M);
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> e(top - 5, top);
  std::vector<float> v(rows * cols);
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t c = 0; c < cols; ++c) {
      const bool pin = r % block_rows == 0 && c % 128 == 0;
      v[r * cols + c] = static_cast<float>(std::ldexp(pin ? fmax : std::ldexp(tie, e(rng)), -top));
    }
  return v;
}

template <class TX, class TW>
void gemm_cases(const std::string& name) {
  // M tokens x K features, N outputs: W has a full and a partial 128-row block, K three segments
  // (128, 128, 64).
  const std::size_t M = 12, N = 160, K = 320;
  const auto xr = host_floats(test::random_values<float>(M * K, -4.0, 4.0, 41));
  const auto wr = host_floats(test::random_values<float>(N * K, -0.1, 0.1, 42));
  std::printf("  %s: error / bound (1 = the bound attained)\n", name.c_str());
  check_gemm<TX, TW>(name + " uniform", xr, wr, M, N, K);
  check_gemm<TX, TW>(name + " 2^U(-24,4) x 2^U(-24,0)", log_uniform(M * K, -24, 4, 43), log_uniform(N * K, -24, 0, 44),
                     M, N, K);
  check_gemm<TX, TW>(name + " all at ties, one sign", midpoint_data<TX>(M, K, 1, 45), midpoint_data<TW>(N, K, 128, 46),
                     M, N, K);
  // Cancellation: w's rows are x's first row with alternating signs of pairs, so y ~ 0 relative
  // to sum |x w| (the bound's scale).
  std::vector<float> wc(N * K);
  for (std::size_t n = 0; n < N; ++n)
    for (std::size_t k = 0; k < K; ++k) wc[n * K + k] = 0.01f * xr[k] * ((k / 2 + n) % 2 ? 1.0f : -1.0f);
  check_gemm<TX, TW>(name + " cancelling", xr, wc, M, N, K);
}

TEST(Fp8Gemm, E4M3WithinTheBlockScaleBound) { gemm_cases<fp8_e4m3_t, fp8_e4m3_t>("e4m3 x e4m3"); }
TEST(Fp8Gemm, E5M2WithinTheBlockScaleBound) { gemm_cases<fp8_e5m2_t, fp8_e5m2_t>("e5m2 x e5m2"); }
TEST(Fp8Gemm, MixedFormatsWithinTheBlockScaleBound) {
  gemm_cases<fp8_e5m2_t, fp8_e4m3_t>("e5m2 x e4m3");
  gemm_cases<fp8_e4m3_t, fp8_e5m2_t>("e4m3 x e5m2");
}

TEST(Fp8Gemm, RejectsMismatchedSegments) {
  Fp8Blocked<fp8_e4m3_t> x, w;
  fp8_quantize_blockwise<fp8_e4m3_t>(ExecSpace(), View2<float>("mantissa::test::x", 2, 256), 1, 128, x);
  fp8_quantize_blockwise<fp8_e4m3_t>(ExecSpace(), View2<float>("mantissa::test::w", 3, 256), 128, 64, w);
  const View2<float> y("mantissa::test::y", 2, 3);
  const auto call = [&] { fp8_gemm<fp8_e4m3_t, fp8_e4m3_t>(ExecSpace(), x, w, y); };
  EXPECT_THROW(call(), std::invalid_argument);
}

// ---- labels -----------------------------------------------------------------------------------------
TEST(Fp8, EveryKernelIsLabelledMantissaFp8) {
  if (test::KernelLabels::tools_loaded()) GTEST_SKIP() << "a Kokkos Tools library is loaded";
  test::KernelLabels rec;
  {
    const View2<float> x("mantissa::test::x", 3, 200), w("mantissa::test::w", 5, 200), y("mantissa::test::y", 3, 5);
    Fp8Blocked<fp8_e4m3_t> xq;
    Fp8Blocked<fp8_e5m2_t> wq;
    fp8_quantize_activation<fp8_e4m3_t>(ExecSpace(), x, xq);
    fp8_quantize_weight<fp8_e5m2_t>(ExecSpace(), w, wq);
    fp8_dequantize_blockwise<fp8_e4m3_t>(ExecSpace(), xq, View2<float>("mantissa::test::xd", 3, 200));
    fp8_gemm<fp8_e4m3_t, fp8_e5m2_t>(ExecSpace(), xq, wq, y);
    const View1<float> t("mantissa::test::t", 16);
    const View1<fp8_e4m3_t> tq("mantissa::test::tq", 16);
    fp8_quantize_tensor<fp8_e4m3_t>(ExecSpace(), t, fp8_scale_from_amax<fp8_e4m3_t>(fp8_amax(ExecSpace(), t)), tq);
    fp8_dequantize_tensor<fp8_e4m3_t>(ExecSpace(), tq, 1.0f, t);
  }
  rec.stop();
  for (const auto& l : rec.ours()) EXPECT_EQ(l.rfind("mantissa::fp8::", 0), 0u) << "kernel label '" << l << "'";
  EXPECT_GE(rec.ours().size(), 7u);  // quantize_blockwise, dequantize_blockwise, widen, gemm, amax, quantize/dequantize_tensor
}
