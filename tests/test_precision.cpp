// Bit-exactness of the 16-bit storage types.
//  - decode: all 65536 patterns of fp16 and bf16 against an independent value formula (double
//    ldexp), and fp16 also against the CPU's F16C vcvtph2ps;
//  - encode: float -> fp16 against F16C vcvtps2ph (round to nearest even), float -> bf16 against an
//    exact reference that compares the two neighbouring bf16 values in double; every edge case
//    and 10^8 random floats (uniform over bit patterns, so over all exponents);
//  - round trip of every non-NaN pattern; NaN stays NaN.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <vector>

#include "mantissa/kernels/convert.hpp"
#include "mantissa/kernels/host_simd.hpp"  // MANTISSA_HOST_SIMD (x86-64 host compilers), <immintrin.h>
#include "mantissa/kernels/precision.hpp"

// The F16C reference: host x86-64 builds only (compiled with target("f16c"), used when the CPU has
// it); elsewhere (nvcc, other CPUs) the tests that need it are skipped and say so.
#if defined(MANTISSA_HOST_SIMD)
#define MANTISSA_HAVE_F16C_REF 1
#endif

using namespace mantissa;

namespace {

double fp16_reference_value(std::uint16_t h) {
  const int s = h >> 15, e = (h >> 10) & 0x1f, m = h & 0x3ff;
  const double sign = s ? -1.0 : 1.0;
  if (e == 0) return sign * std::ldexp(static_cast<double>(m), -24);
  if (e == 31) return m ? std::nan("") : sign * INFINITY;
  return sign * std::ldexp(1.0 + m / 1024.0, e - 15);
}

double bf16_reference_value(std::uint16_t b) {
  const int s = b >> 15, e = (b >> 7) & 0xff, m = b & 0x7f;
  const double sign = s ? -1.0 : 1.0;
  if (e == 0) return sign * std::ldexp(static_cast<double>(m), -133);
  if (e == 255) return m ? std::nan("") : sign * INFINITY;
  return sign * std::ldexp(1.0 + m / 128.0, e - 127);
}

// Exact RNE reference for bf16: pick the nearer of the two bf16 neighbours of x (computed in
// double, where the distances are exact); on a tie pick the even one.
std::uint16_t bf16_reference_encode(float x) {
  const std::uint32_t u = float_bits(x);
  if (std::isnan(x)) return 0;  // NaN is checked separately
  const std::uint16_t lo = static_cast<std::uint16_t>(u >> 16);  // truncation toward zero
  if ((u & 0xffffu) == 0) return lo;
  const std::uint16_t hi = static_cast<std::uint16_t>(lo + 1);   // next away from zero (may be Inf)
  const double dx = std::fabs(static_cast<double>(x));
  const double dlo = dx - std::fabs(bf16_reference_value(lo));
  const double vhi = ((hi & 0x7fff) == 0x7f80) ? std::ldexp(1.0, 128) : std::fabs(bf16_reference_value(hi));
  const double dhi = vhi - dx;  // Inf counts as 2^128 for rounding purposes (IEEE overflow rule)
  if (dlo < dhi) return lo;
  if (dhi < dlo) return hi;
  return (lo & 1) ? hi : lo;
}

#if MANTISSA_HAVE_F16C_REF
bool cpu_has_f16c() { return __builtin_cpu_supports("f16c"); }
__attribute__((target("f16c"))) std::uint16_t f16c_encode(float x) {
  return static_cast<std::uint16_t>(_cvtss_sh(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
__attribute__((target("f16c"))) float f16c_decode(std::uint16_t h) { return _cvtsh_ss(h); }
#endif

std::vector<float> edge_cases() {
  std::vector<float> v = {0.0f, -0.0f, 1.0f, -1.0f, 65504.0f, 65519.99f, 65520.0f, 65536.0f, -65520.0f, 1e30f,
                          INFINITY, -INFINITY, 6.103515625e-05f, 5.9604644775390625e-08f, 2.98023223876953125e-08f,
                          2.9802326e-08f, 1e-45f, 3.4028235e38f, -3.4028235e38f, 1.1754944e-38f, 0.1f, 1.0f / 3.0f};
  // Every tie and near-tie around fp16 and bf16 rounding boundaries at every exponent.
  for (std::uint32_t e = 0; e < 255; ++e) {
    for (std::uint32_t low : {0x0u, 0x1u, 0xfffu, 0x1000u, 0x1001u, 0x1fffu, 0x2000u, 0x3000u, 0x7fffu, 0x8000u,
                              0x8001u, 0xffffu, 0x18000u, 0x7fffffu, 0x7fe000u, 0x7ff000u, 0x400000u}) {
      for (std::uint32_t s : {0u, 0x80000000u}) v.push_back(bits_float(s | (e << 23) | low));
    }
  }
  return v;
}

}  // namespace

TEST(Precision, Fp16DecodesEveryPatternAndRoundTrips) {
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const float f = fp16_bits_to_float(static_cast<std::uint16_t>(h));
    const double ref = fp16_reference_value(static_cast<std::uint16_t>(h));
    if (std::isnan(ref)) {
      ASSERT_TRUE(std::isnan(f)) << h;
      // quiet NaNs round-trip exactly; signalling ones come back quietened
      ASSERT_EQ(fp16_bits_from_float(f), static_cast<std::uint16_t>(h | 0x200)) << h;
      continue;
    }
    ASSERT_EQ(static_cast<double>(f), ref) << "pattern " << h;
    ASSERT_EQ(std::signbit(f), (h & 0x8000) != 0) << h;
    ASSERT_EQ(fp16_bits_from_float(f), h) << "round trip of pattern " << h;
#if MANTISSA_HAVE_F16C_REF
    if (cpu_has_f16c()) {
      ASSERT_EQ(float_bits(f), float_bits(f16c_decode(static_cast<std::uint16_t>(h)))) << h;
    }
#endif
  }
}

TEST(Precision, Bf16DecodesEveryPatternAndRoundTrips) {
  for (std::uint32_t b = 0; b < 65536; ++b) {
    const float f = bf16_bits_to_float(static_cast<std::uint16_t>(b));
    const double ref = bf16_reference_value(static_cast<std::uint16_t>(b));
    if (std::isnan(ref)) {
      ASSERT_TRUE(std::isnan(f)) << b;
      ASSERT_EQ(bf16_bits_from_float(f), static_cast<std::uint16_t>(b | 0x40)) << b;
      continue;
    }
    ASSERT_EQ(static_cast<double>(f), ref) << "pattern " << b;
    ASSERT_EQ(bf16_bits_from_float(f), b) << "round trip of pattern " << b;
  }
}

namespace {
void check_encode(float x) {
  const std::uint16_t h = fp16_bits_from_float(x);
  const std::uint16_t b = bf16_bits_from_float(x);
  if (std::isnan(x)) {
    ASSERT_TRUE(std::isnan(fp16_bits_to_float(h))) << float_bits(x);
    ASSERT_TRUE(std::isnan(bf16_bits_to_float(b))) << float_bits(x);
  } else {
    ASSERT_EQ(b, bf16_reference_encode(x)) << "bf16 of float bits 0x" << std::hex << float_bits(x);
  }
#if MANTISSA_HAVE_F16C_REF
  ASSERT_EQ(h, f16c_encode(x)) << "fp16 of float bits 0x" << std::hex << float_bits(x);
#endif
}
}  // namespace

TEST(Precision, EncodeEdgeCasesBitExact) {
#if MANTISSA_HAVE_F16C_REF
  if (!cpu_has_f16c()) GTEST_SKIP() << "CPU lacks F16C, the fp16 reference";
#endif
  const auto cases = edge_cases();
  for (float x : cases) check_encode(x);
  std::printf("%zu edge cases checked\n", cases.size());
  for (std::uint32_t nan : {0x7f800001u, 0x7fc00000u, 0xffc00001u, 0x7fbfffffu, 0xff800123u}) check_encode(bits_float(nan));
  // Named IEEE facts.
  EXPECT_EQ(fp16_bits_from_float(65504.0f), 0x7bff);
  EXPECT_EQ(fp16_bits_from_float(65519.996f), 0x7bff);
  EXPECT_EQ(fp16_bits_from_float(65520.0f), 0x7c00);  // tie, 65504 is odd -> Inf
  EXPECT_EQ(fp16_bits_from_float(-1e9f), 0xfc00);
  EXPECT_EQ(fp16_bits_from_float(2.98023223876953125e-08f), 0x0000);  // 2^-25: tie to even (0)
  EXPECT_EQ(fp16_bits_from_float(8.940697e-08f), 0x0002);             // 1.5 * 2^-24: tie to even (2)
  EXPECT_EQ(bf16_bits_from_float(1.00390625f), 0x3f80);               // 1 + 2^-8: tie to even (1)
  EXPECT_EQ(bf16_bits_from_float(3.4028235e38f), 0x7f80);             // max float rounds to Inf in bf16
}

TEST(Precision, EncodeRandomFloatsBitExact) {
#if MANTISSA_HAVE_F16C_REF
  if (!cpu_has_f16c()) GTEST_SKIP() << "CPU lacks F16C, the fp16 reference";
#endif
  // 10^8 by default; MANTISSA_PRECISION_SAMPLES overrides (the debug/sanitizer preset uses fewer).
  long long n = 100000000LL;
  if (const char* env = std::getenv("MANTISSA_PRECISION_SAMPLES")) n = std::atoll(env);
  std::mt19937_64 rng(20251125);
  long long mismatches16 = 0, mismatches_b = 0;
  for (long long i = 0; i < n; ++i) {
    const std::uint64_t r = rng();
    for (std::uint32_t u : {static_cast<std::uint32_t>(r), static_cast<std::uint32_t>(r >> 32)}) {
      const float x = bits_float(u);
      if (std::isnan(x)) {
        mismatches16 += !std::isnan(fp16_bits_to_float(fp16_bits_from_float(x)));
        mismatches_b += !std::isnan(bf16_bits_to_float(bf16_bits_from_float(x)));
        continue;
      }
#if MANTISSA_HAVE_F16C_REF
      mismatches16 += fp16_bits_from_float(x) != f16c_encode(x);
#endif
      // the exact bf16 reference is slow; check it on every 16th sample, the bit rule on all
      if ((u & 0xf) == 0) mismatches_b += bf16_bits_from_float(x) != bf16_reference_encode(x);
    }
    ++i;  // two floats per 64-bit draw
  }
  EXPECT_EQ(mismatches16, 0);
  EXPECT_EQ(mismatches_b, 0);
}

// The branchy fp16 encoder the branch-free one replaced (integer rounding on every path),
// kept as an independent reference.
static std::uint16_t fp16_reference_encode(float f) {
  const std::uint32_t x = float_bits(f);
  const std::uint32_t sign = (x >> 16) & 0x8000u;
  std::uint32_t a = x & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
  if (a >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);
  if (a >= 0x38800000u) return static_cast<std::uint16_t>(sign | ((a + 0xc8000fffu + ((a >> 13) & 1u)) >> 13));
  const std::uint32_t shift = 126u - (a >> 23);
  if (shift > 25u) return static_cast<std::uint16_t>(sign);
  const std::uint32_t m = (a & 0x7fffffu) | 0x800000u;
  std::uint32_t r = m >> shift;
  const std::uint32_t rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
  if (rem > half || (rem == half && (r & 1u))) ++r;
  return static_cast<std::uint16_t>(sign | r);
}
#if defined(MANTISSA_HOST_SIMD)
__attribute__((target("f16c"))) static std::uint16_t f16c_encode_runtime(float x) {
  return static_cast<std::uint16_t>(_cvtss_sh(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
#endif

// Every float (2^32 patterns; a stride over them when MANTISSA_PRECISION_SAMPLES is set, as in
// the sanitizer preset): the branch-free fp16 and bf16 encoders against the branchy reference,
// against F16C's vcvtps2ph where the CPU has it (chosen at run time, so the portable build checks it
// too), and the bf16 rule against its NaN-free form.
TEST(Precision, EncodeEveryFloatBitExact) {
  std::uint64_t stride = 1;
  if (const char* env = std::getenv("MANTISSA_PRECISION_SAMPLES"))
    stride = std::max<std::uint64_t>(1, (1ull << 32) / std::max(1ll, std::atoll(env)));
#if defined(MANTISSA_HOST_SIMD)
  const bool f16c = __builtin_cpu_supports("f16c");
#else
  const bool f16c = false;
#endif
  long long bad_ref = 0, bad_f16c = 0, bad_bf16 = 0;
  for (std::uint64_t u = 0; u < (1ull << 32); u += stride) {
    const float x = bits_float(static_cast<std::uint32_t>(u));
    const std::uint16_t h = fp16_bits_from_float(x);
    bad_ref += h != fp16_reference_encode(x);
#if defined(MANTISSA_HOST_SIMD)
    if (f16c && !std::isnan(x)) bad_f16c += h != f16c_encode_runtime(x);
#endif
    const std::uint32_t b = bf16_bits_from_float(x);
    const std::uint32_t want_b = std::isnan(x) ? (static_cast<std::uint32_t>(u) >> 16) | 0x40u
                                               : (static_cast<std::uint32_t>(u) + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    bad_bf16 += b != (want_b & 0xffffu);
  }
  EXPECT_EQ(bad_ref, 0);
  EXPECT_EQ(bad_f16c, 0) << (f16c ? "" : "(no F16C here)");
  EXPECT_EQ(bad_bf16, 0);
}

TEST(Precision, TraitsAndNames) {
  EXPECT_EQ(precision_traits<fp16_t>::unit_roundoff, std::ldexp(1.0, -11));
  EXPECT_EQ(precision_traits<bf16_t>::unit_roundoff, std::ldexp(1.0, -8));
  EXPECT_EQ(precision_traits<float>::unit_roundoff, std::ldexp(1.0, -24));
  EXPECT_EQ(precision_traits<fp16_t>::max, fp16_bits_to_float(0x7bff));
  EXPECT_EQ(precision_traits<bf16_t>::max, bf16_bits_to_float(0x7f7f));
  EXPECT_EQ(precision_traits<fp16_t>::min_normal, fp16_bits_to_float(0x0400));
  Precision p{};
  for (Precision q : {Precision::fp32, Precision::bf16, Precision::fp16}) {
    ASSERT_TRUE(parse_precision(precision_name(q), p));
    EXPECT_EQ(p, q);
  }
  EXPECT_FALSE(parse_precision("fp8", p));
}

TEST(Precision, ViewConversionKernel) {
  const int n = 4096;
  View1<float> x("mantissa::test::x", n);
  View1<fp16_t> h("mantissa::test::h", n);
  View1<bf16_t> b("mantissa::test::b", n);
  auto xh = Kokkos::create_mirror_view(x);
  std::mt19937 rng(7);
  std::normal_distribution<float> dist(0.0f, 100.0f);
  for (int i = 0; i < n; ++i) xh(i) = dist(rng);
  Kokkos::deep_copy(x, xh);
  convert<float, fp16_t>(ExecSpace(), x, h);
  convert<float, bf16_t>(ExecSpace(), x, b);
  auto hh = Kokkos::create_mirror_view_and_copy(HostSpace(), h);
  auto bh = Kokkos::create_mirror_view_and_copy(HostSpace(), b);
  for (int i = 0; i < n; ++i) {
    ASSERT_EQ(hh(i).bits, fp16_bits_from_float(xh(i)));
    ASSERT_EQ(bh(i).bits, bf16_bits_from_float(xh(i)));
  }
}
