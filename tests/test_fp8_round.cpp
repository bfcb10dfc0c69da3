// FP8 rounding with power-of-two scales (fp8_round.hpp), against references built from the OCP
// OFP8 format definition alone (a table of every finite magnitude, nearest by search, ties to the
// even code, saturating at max), not from fp8.hpp's bit arithmetic:
//  - fp8_pow2_scale: a power of two >= 2^-126, the smallest with amax <= max s, on random floats
//    over the whole range, subnormals, max 2^k and its float neighbours; 1 for 0, Inf, NaN;
//  - fp8_round_scaled: s * nearest(x / s) exactly (round_to checked against the search on a
//    sample first, then used on many values), non-finite x unchanged, finite x finite, the result
//    exactly a bf16 and an fp16 in their ranges, |x' - x| <= u8 |x| where x / s is FP8-normal;
//  - fp8_round_groups<T> (T = float, bf16, fp16), fp8_round_blocks, fp8_amax_columns,
//    fp8_round_columns: bit-exact against a host reference of the same definition (group amax ->
//    scale -> round -> T), with partial groups and blocks, zero groups, NaN/Inf members, T's
//    largest values, and the FP8 unit-roundoff bound;
//  - every kernel they launch is labelled mantissa::fp8::<op>.
// All comparisons are exact (bits), except the rounding bound u8 = 2^-4 (E4M3) / 2^-3 (E5M2): RNE's
// relative error on a normal FP8 value is at most u8 / (1 + u8) < u8.
#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernel_test_util.hpp"
#include "label_test_util.hpp"
#include "mantissa/kernels/fp8_round.hpp"

using namespace mantissa;

namespace {

constexpr Fp8Format kFormats[] = {Fp8Format::e4m3, Fp8Format::e5m2};

// ---- the formats from their definition (OCP OFP8 sections 4-5) ---------------------------------
struct Def {
  int M, bias;
  double max, u8, min_normal;
};
Def def(Fp8Format f) {
  return f == Fp8Format::e4m3 ? Def{3, 7, 448.0, 0x1p-4, 0x1p-6} : Def{2, 15, 57344.0, 0x1p-3, 0x1p-14};
}
const char* name(Fp8Format f) { return f == Fp8Format::e4m3 ? "e4m3" : "e5m2"; }

// Every finite magnitude 0 .. max in increasing order; the index is the code, so an even index is
// an even code (mantissa's last bit 0).
const std::vector<double>& magnitudes(Fp8Format f) {
  static std::vector<double> tab[2];
  auto& v = tab[f == Fp8Format::e5m2];
  if (v.empty()) {
    const Def d = def(f);
    for (int code = 0;; ++code) {
      const int e = code >> d.M, m = code & ((1 << d.M) - 1);
      const double x = e == 0 ? std::ldexp(m, 1 - d.bias - d.M) : std::ldexp(1.0 + std::ldexp(m, -d.M), e - d.bias);
      if (x > d.max) break;
      v.push_back(x);
    }
  }
  return v;
}

// The nearest FP8 value to y (exact double), ties to even, saturating at +-max; sign kept.
double nearest(double y, Fp8Format f) {
  const auto& v = magnitudes(f);
  const double a = std::fabs(y);
  double r;
  if (a >= v.back()) {
    r = v.back();
  } else {
    std::size_t i = static_cast<std::size_t>(std::upper_bound(v.begin(), v.end(), a) - v.begin()) - 1;
    const double mid = 0.5 * (v[i] + v[i + 1]);
    if (a > mid || (a == mid && (i & 1u))) ++i;
    r = v[i];
  }
  return std::copysign(r, y);
}

// The smallest power of two s >= 2^-126 with amax <= max s (by counting up); 1 for 0 or non-finite.
double ref_scale(double amax, Fp8Format f) {
  if (!(amax > 0.0) || !std::isfinite(amax)) return 1.0;
  int k = -126;
  while (def(f).max * std::ldexp(1.0, k) < amax) ++k;
  return std::ldexp(1.0, k);
}

// x' = s nearest(x / s), and where that exceeds `limit` (the storage type's largest finite value,
// which the scaled grid's top may pass: 256 * 2^120 > FLT_MAX, 256 * 256 > 65504) the largest grid
// value s v <= limit, the saturation of the scaled grid at the storage range. Non-finite x unchanged.
double ref_round(double x, double s, Fp8Format f, double limit) {
  if (!std::isfinite(x)) return x;
  double r = s * nearest(x / s, f);
  if (std::fabs(r) > limit) {
    const auto& v = magnitudes(f);
    std::size_t i = v.size() - 1;
    while (s * v[i] > limit) --i;
    r = std::copysign(s * v[i], x);
  }
  return r;
}

bool is_pow2(float s) {
  const std::uint32_t b = float_bits(s), e = (b >> 23) & 0xffu;
  return (b & 0x807fffffu) == 0u && e >= 1u && e <= 254u;
}

// Positive finite floats: uniform over the bit patterns (every binade equally), plus the edges.
std::vector<float> amax_values(std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<std::uint32_t> all(1u, 0x7f7fffffu), sub(1u, 0x7fffffu);
  std::vector<float> v;
  for (int i = 0; i < 200000; ++i) v.push_back(bits_float(all(rng)));
  for (int i = 0; i < 2000; ++i) v.push_back(bits_float(sub(rng)));
  for (std::uint32_t b : {0x1u, 0x7fffffu, 0x800000u, 0x800001u, 0x7f7fffffu, 0x7f7ffffeu}) v.push_back(bits_float(b));
  for (Fp8Format f : kFormats)
    for (int k = -160; k <= 140; ++k) {
      const float p = std::ldexp(1.0f, k), m = std::ldexp(static_cast<float>(def(f).max), k);
      for (float x : {p, m, std::nextafter(m, 0.0f), std::nextafter(m, INFINITY)})
        if (x > 0.0f && std::isfinite(x)) v.push_back(x);
    }
  return v;
}

}  // namespace

// ---- 1. fp8_pow2_scale ------------------------------------------------------------------------------
TEST(Fp8Round, Pow2ScaleIsTheSmallestPowerOfTwoThatCoversAmax) {
  const auto v = amax_values(1);
  for (Fp8Format f : kFormats) {
    const double max = def(f).max, smin = 0x1p-126;
    long long bad = 0;
    for (float a : v) {
      const float s = fp8_pow2_scale(a, f);
      // all in double, where max s and max s / 2 are exact
      const bool ok = is_pow2(s) && s >= smin && a <= max * s && (s == smin || a > max * s / 2) &&
                      static_cast<double>(s) == ref_scale(a, f);
      if (!ok && bad++ < 5) ADD_FAILURE() << name(f) << ": amax " << a << " (bits " << float_bits(a) << ") -> s " << s;
    }
    EXPECT_EQ(bad, 0) << name(f) << " of " << v.size();
    for (float a : {0.0f, -0.0f, INFINITY, -INFINITY, NAN, -NAN}) EXPECT_EQ(fp8_pow2_scale(a, f), 1.0f) << name(f) << " " << a;
    // the largest float still gets a finite scale
    EXPECT_TRUE(std::isfinite(max * fp8_pow2_scale(FLT_MAX, f)));
  }
}

// ---- 2. fp8_round_scaled ------------------------------------------------------------------------------
namespace {
// x / s in many positions: s the scale of a random amax >= |x| (often |x| itself: x at the top of
// its grid), or any power of two (saturation, subnormal FP8 codes, flush to 0).
struct Case {
  float x, s;
};
std::vector<Case> round_cases(Fp8Format f, std::uint64_t seed, int n) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<std::uint32_t> bits(0u, 0x7f7fffffu);
  std::uniform_int_distribution<int> k(-126, 127), pick(0, 3);
  std::uniform_real_distribution<double> up(1.0, 300.0);
  std::vector<Case> c;
  for (int i = 0; i < n; ++i) {
    float x = bits_float(bits(rng));
    if (rng() & 1u) x = -x;
    float s;
    switch (pick(rng)) {
      case 0: s = fp8_pow2_scale(std::fabs(x), f); break;
      case 1: s = fp8_pow2_scale(static_cast<float>(std::min(std::fabs(x) * up(rng), 3.0e38)), f); break;
      default: s = std::ldexp(1.0f, k(rng)); break;
    }
    c.push_back({x, s});
  }
  // ties of the FP8 grid times scales, and values at the top of the float range
  const auto& mag = magnitudes(f);
  for (std::size_t i = 0; i + 1 < mag.size(); ++i)
    for (int e : {-126, -40, 0, 20}) {
      const float s = std::ldexp(1.0f, e), t = static_cast<float>(0.5 * (mag[i] + mag[i + 1]) * s);
      c.push_back({t, s}), c.push_back({-t, s}), c.push_back({std::nextafter(t, 0.0f), s}),
          c.push_back({std::nextafter(t, INFINITY), s});
    }
  for (float x : {FLT_MAX, std::nextafter(FLT_MAX, 0.0f), 3.3e38f, 3.0e38f, 65504.0f, 65520.0f, 62000.0f})
    c.push_back({x, fp8_pow2_scale(x, f)}), c.push_back({-x, fp8_pow2_scale(x, f)});
  return c;
}
}  // namespace

TEST(Fp8Round, RoundToAgreesWithTheDefinitionsNearestValue) {
  // fp8.hpp's round_to (saturating) as the reference below: first checked against the search.
  for (Fp8Format f : kFormats) {
    long long bad = 0;
    const auto cases = round_cases(f, 2, 20000);
    for (const Case& c : cases) {
      const double y = static_cast<double>(c.x) / c.s;  // exact in double
      if (!(std::fabs(y) < 1e30)) continue;              // beyond float after the division
      const float yf = static_cast<float>(y);
      const double q = f == Fp8Format::e4m3 ? round_to<fp8_e4m3_t>(yf, Fp8Overflow::saturate)
                                            : round_to<fp8_e5m2_t>(yf, Fp8Overflow::saturate);
      if (q != nearest(y, f) && bad++ < 5) ADD_FAILURE() << name(f) << ": x/s = " << y << " round_to " << q << " search " << nearest(y, f);
    }
    EXPECT_EQ(bad, 0) << name(f);
  }
}

TEST(Fp8Round, RoundScaledIsTheScaledNearestFp8Value) {
  for (Fp8Format f : kFormats) {
    const Def d = def(f);
    long long bad = 0, bad_search = 0, not_bf16 = 0, not_fp16 = 0, over_bound = 0, checked_bound = 0;
    const auto cases = round_cases(f, 3, 400000);
    for (std::size_t i = 0; i < cases.size(); ++i) {
      const float x = cases[i].x, s = cases[i].s;
      const float r = fp8_round_scaled(x, s, f);
      // reference 1 (all cases): s * round_to(x / s), x / s in double then float (exact, or far
      // below FP8's smallest subnormal where it is not); reference 2 (every 8th): the search.
      const double y = static_cast<double>(x) / s;
      const double q = std::fabs(y) > FLT_MAX ? std::copysign(d.max, y)
                       : f == Fp8Format::e4m3 ? round_to<fp8_e4m3_t>(static_cast<float>(y), Fp8Overflow::saturate)
                                              : round_to<fp8_e5m2_t>(static_cast<float>(y), Fp8Overflow::saturate);
      const double unsaturated = s * q;
      const double ref = std::fabs(unsaturated) > FLT_MAX ? ref_round(x, s, f, FLT_MAX) : unsaturated;
      const bool same = static_cast<double>(r) == ref && std::signbit(r) == std::signbit(ref);
      if (!same && bad++ < 5) ADD_FAILURE() << name(f) << ": x " << x << " s " << s << " got " << r << " ref " << ref;
      if (i % 8 == 0 && static_cast<double>(r) != ref_round(x, s, f, FLT_MAX) && bad_search++ < 5)
        ADD_FAILURE() << name(f) << ": x " << x << " s " << s << " got " << r << " search " << ref_round(x, s, f, FLT_MAX);
      // at most M + 1 significant bits: a bf16 and (in fp16's range) an fp16, exactly
      const double a = std::fabs(r);
      if (a >= precision_traits<bf16_t>::min_normal && a <= precision_traits<bf16_t>::max)
        not_bf16 += to_float(from_float<bf16_t>(r)) != r;
      if (a >= precision_traits<fp16_t>::min_normal && a <= precision_traits<fp16_t>::max)
        not_fp16 += to_float(from_float<fp16_t>(r)) != r;
      // RNE bound where x / s is an FP8-normal value below max (no saturation)
      if (std::fabs(y) >= d.min_normal && std::fabs(y) <= d.max && std::fabs(unsaturated) <= FLT_MAX) {
        ++checked_bound;
        over_bound += std::fabs(static_cast<double>(r) - x) > d.u8 * std::fabs(static_cast<double>(x));
      }
    }
    EXPECT_EQ(bad, 0) << name(f) << " of " << cases.size();
    EXPECT_EQ(bad_search, 0) << name(f);
    EXPECT_EQ(not_bf16, 0) << name(f);
    EXPECT_EQ(not_fp16, 0) << name(f);
    EXPECT_EQ(over_bound, 0) << name(f) << " of " << checked_bound;
    EXPECT_GT(checked_bound, 10000);
    // non-finite x: the same bits back; finite x: a finite result, also at the top of the float range
    for (float x : {INFINITY, -INFINITY, NAN, -NAN, bits_float(0x7fa00001u)})
      for (float s : {1.0f, 0x1p-126f, 0x1p100f}) EXPECT_EQ(float_bits(fp8_round_scaled(x, s, f)), float_bits(x));
    for (float x : {FLT_MAX, -FLT_MAX, 3.3e38f})
      EXPECT_TRUE(std::isfinite(fp8_round_scaled(x, fp8_pow2_scale(std::fabs(x), f), f))) << name(f) << " " << x;
    EXPECT_EQ(float_bits(fp8_round_scaled(1.3f, 1.0f, Fp8Format::none)), float_bits(1.3f));
    // a storage limit (fp16's 65504): the search's value where s q <= limit, else the largest grid
    // value within it; every fp16 value and its scale
    long long bad_limit = 0, saturated = 0;
    for (std::uint32_t b = 0; b < 0x7c00u; ++b) {
      const float x = fp16_bits_to_float(static_cast<std::uint16_t>(b));
      for (const float s : {fp8_pow2_scale(x, f), 0.5f * fp8_pow2_scale(x, f)}) {
        const float r = fp8_round_scaled(x, s, f, 65504.0f), rn = fp8_round_scaled(-x, s, f, 65504.0f);
        bad_limit += r != ref_round(x, s, f, 65504.0) || rn != -r;
        saturated += std::fabs(s * nearest(x / s, f)) > 65504.0;
      }
    }
    EXPECT_EQ(bad_limit, 0) << name(f);
    // the case exists: fp16 values above 63488 (e4m3: 248 s, s = 256) or 61440 (e5m2) would round to
    // 65536; 64 and 128 of them
    EXPECT_GE(saturated, f == Fp8Format::e4m3 ? 64 : 128) << name(f);
    EXPECT_EQ(fp8_round_scaled(65504.0f, fp8_pow2_scale(65504.0f, f), f, 65504.0f),
              f == Fp8Format::e4m3 ? 61440.0f : 57344.0f);
  }
}

// ---- 3. the kernels -----------------------------------------------------------------------------------------
namespace {

template <class T>
float round_T(double x) {
  return to_float(from_float<T>(static_cast<float>(x)));
}

// Rows of values of T: magnitudes 2^U(lo, hi) with random signs, then the special rows:
//   row 1: its second group all zero;  row 2: NaN, +Inf, -Inf in the first group, among finite values;
//   row 3: T's largest finite value, and its neighbours, in the first group (the scaled grid's top
//   may exceed T's range there); row 4: a group at max 2^k exactly (x / s hits max) with FP8 ties.
template <class T>
std::vector<double> group_data(int N, int K, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  const double lo = std::is_same<T, fp16_t>::value ? -20.0 : -60.0, hi = std::is_same<T, fp16_t>::value ? 12.0 : 60.0;
  std::uniform_real_distribution<double> e(lo, hi);
  std::vector<double> v(static_cast<std::size_t>(N) * K);
  for (auto& x : v) x = round_T<T>((rng() & 1u ? -1.0 : 1.0) * std::exp2(e(rng)));
  // a row with a narrow spread (most values FP8-normal under the group scale: the bound is checked)
  for (int c = 0; c < K; ++c) v[c] = round_T<T>((rng() & 1u ? -1.0 : 1.0) * std::exp2(e(rng) / 16.0));
  for (int c = 128; c < 256 && c < K; ++c) v[1 * K + c] = 0.0;
  v[2 * K + 3] = NAN, v[2 * K + 17] = INFINITY, v[2 * K + 5] = 3.0;
  if (K > 90) v[2 * K + 90] = -INFINITY;
  const double tmax = precision_traits<T>::max;
  v[3 * K + 0] = tmax, v[3 * K + 1] = -tmax, v[3 * K + 2] = round_T<T>(0.97 * tmax), v[3 * K + 3] = round_T<T>(0.9 * tmax);
  for (int c = 0; c < 128 && c < K; ++c) v[4 * K + c] = round_T<T>(std::ldexp(1.0 + (c % 8) / 16.0, -(c % 5)));
  v[4 * K + 0] = 4.0;
  return v;
}

// The reference for one group (or block) of values `g`: amax of the finite ones -> scale -> round, in T.
std::vector<double> ref_group(const std::vector<double>& g, Fp8Format f, double limit) {
  double amax = 0.0;
  for (double x : g)
    if (std::isfinite(x)) amax = std::max(amax, std::fabs(x));
  const double s = ref_scale(amax, f);
  std::vector<double> r;
  for (double x : g) r.push_back(ref_round(x, s, f, limit));
  return r;
}

struct Tally {
  long long bad = 0, not_exact_in_T = 0, over_bound = 0, checked_bound = 0;
};

// Compares got (from the device, via float) with ref bit for bit (NaN: any NaN), checks ref is a
// value of T, and the FP8 bound where x / s is FP8-normal and unsaturated.
template <class T>
void compare(const std::string& what, const std::vector<double>& x, const std::vector<double>& got,
             const std::vector<double>& ref, double s, Fp8Format f, Tally& t, std::size_t at) {
  for (std::size_t i = 0; i < x.size(); ++i) {
    const bool ok = std::isnan(ref[i]) ? std::isnan(got[i]) : got[i] == ref[i] && std::signbit(got[i]) == std::signbit(ref[i]);
    if (!ok && t.bad++ < 5)
      ADD_FAILURE() << what << " element " << at + i << ": x " << x[i] << " got " << got[i] << " ref " << ref[i];
    if (std::isfinite(ref[i]) && static_cast<double>(round_T<T>(ref[i])) != ref[i]) ++t.not_exact_in_T;
    if (!std::isfinite(x[i]) || !std::isfinite(s)) continue;
    const double y = std::fabs(x[i]) / s;
    if (y >= def(f).min_normal && y <= def(f).max && std::fabs(s * nearest(y, f)) <= precision_traits<T>::max) {
      ++t.checked_bound;
      t.over_bound += std::fabs(got[i] - x[i]) > def(f).u8 * std::fabs(x[i]);
    }
  }
}

template <class T>
class Fp8RoundKernels : public ::testing::Test {};
TYPED_TEST_SUITE(Fp8RoundKernels, test::StorageTypes, test::StorageTypeNames);

}  // namespace

TYPED_TEST(Fp8RoundKernels, RoundGroupsMatchesTheReferenceBitForBit) {
  using T = TypeParam;
  const int N = 6, K = 300, G = 128;  // groups of 128, 128, 44 columns
  for (Fp8Format f : kFormats) {
    const auto v = group_data<T>(N, K, 11);
    const View2<T> x = test::make_view2<T>("mantissa::test::x", v, N, K);
    fp8_round_groups<T>(ExecSpace(), x, G, f);
    const auto got = test::to_host(x);
    Tally t;
    for (int i = 0; i < N; ++i)
      for (int c0 = 0; c0 < K; c0 += G) {
        const std::size_t b = static_cast<std::size_t>(i) * K + c0, e = b + std::min(G, K - c0);
        const std::vector<double> g(v.begin() + b, v.begin() + e), gg(got.begin() + b, got.begin() + e);
        double amax = 0.0;
        for (double xv : g) amax = std::isfinite(xv) ? std::max(amax, std::fabs(xv)) : amax;
        compare<T>(std::string(precision_traits<T>::name) + " " + name(f), g, gg, ref_group(g, f, precision_traits<T>::max), ref_scale(amax, f),
                   f, t, b);
      }
    EXPECT_EQ(t.bad, 0) << name(f);
    EXPECT_EQ(t.not_exact_in_T, 0) << name(f);
    EXPECT_EQ(t.over_bound, 0) << name(f) << " of " << t.checked_bound;
    EXPECT_GT(t.checked_bound, 300) << name(f);
    // the specials: zeros stay (positive) zeros, NaN/Inf pass through, T's max stays finite
    for (int c = 128; c < 256; ++c) EXPECT_EQ(got[1 * K + c], 0.0);
    EXPECT_TRUE(std::isnan(got[2 * K + 3]));
    EXPECT_EQ(got[2 * K + 17], INFINITY);
    EXPECT_EQ(got[2 * K + 90], -INFINITY);
    for (int c = 0; c < 4; ++c) EXPECT_TRUE(std::isfinite(got[3 * K + c])) << name(f) << " " << v[3 * K + c];
    // f = none: untouched
    const View2<T> y = test::make_view2<T>("mantissa::test::y", v, N, K);
    fp8_round_groups<T>(ExecSpace(), y, G, Fp8Format::none);
    const auto same = test::to_host(y);
    for (std::size_t i = 0; i < v.size(); ++i) {
      if (!std::isnan(v[i])) {
        ASSERT_EQ(same[i], v[i]);
      }
    }
  }
  EXPECT_THROW(fp8_round_groups<T>(ExecSpace(), View2<T>("mantissa::test::z", 2, 4), 0, Fp8Format::e4m3),
               std::invalid_argument);
}

TYPED_TEST(Fp8RoundKernels, AmaxAndRoundColumnsOnAColumnRange) {
  using T = TypeParam;
  const int N = 7, K = 40, c0 = 8, n = 16;
  for (Fp8Format f : kFormats) {
    auto v = group_data<T>(N, K, 12);
    // outside the range: values larger than any inside (must not count); inside: NaN, Inf (skipped)
    for (int i = 0; i < N; ++i) v[i * K + 2] = v[i * K + 30] = round_T<T>(1000.0 * (i + 1));
    for (int i = 0; i < N; ++i)
      for (int c = c0; c < c0 + n; ++c) v[i * K + c] = std::isfinite(v[i * K + c]) ? std::fmod(v[i * K + c], 100.0) : v[i * K + c];
    for (auto& x : v) x = std::isfinite(x) ? round_T<T>(x) : x;
    v[5 * K + c0 + 1] = NAN, v[6 * K + c0 + n - 1] = -INFINITY;
    double amax = 0.0;
    for (int i = 0; i < N; ++i)
      for (int c = c0; c < c0 + n; ++c)
        if (std::isfinite(v[i * K + c])) amax = std::max(amax, std::fabs(v[i * K + c]));
    const View2<T> x = test::make_view2<T>("mantissa::test::x", v, N, K);
    const float got_amax = fp8_amax_columns<T>(ExecSpace(), x, c0, n);
    EXPECT_EQ(static_cast<double>(got_amax), amax) << name(f);
    // a scale half the calibrated one: the largest values saturate (as KV values beyond the prefill's)
    for (const double s : {ref_scale(amax, f), ref_scale(amax, f) / 2}) {
      const View2<T> y = test::make_view2<T>("mantissa::test::y", v, N, K);
      fp8_round_columns<T>(ExecSpace(), y, c0, n, static_cast<float>(s), f);
      const auto got = test::to_host(y);
      Tally t;
      for (int i = 0; i < N; ++i)
        for (int c = 0; c < K; ++c) {
          const double xv = v[i * K + c], g = got[i * K + c];
          const double ref = c >= c0 && c < c0 + n ? ref_round(xv, s, f, precision_traits<T>::max) : xv;
          compare<T>(std::string(precision_traits<T>::name) + " " + name(f) + " columns", {xv}, {g}, {ref},
                     c >= c0 && c < c0 + n ? s : INFINITY, f, t, i * K + c);
        }
      EXPECT_EQ(t.bad, 0) << name(f) << " s " << s;
      EXPECT_EQ(t.not_exact_in_T, 0);
      EXPECT_EQ(t.over_bound, 0);
      EXPECT_GT(t.checked_bound, 20);
    }
  }
  const View2<T> z("mantissa::test::z", 2, 10);
  EXPECT_THROW(fp8_amax_columns<T>(ExecSpace(), z, 5, 6), std::invalid_argument);
  EXPECT_THROW(fp8_round_columns<T>(ExecSpace(), z, -1, 3, 1.0f, Fp8Format::e4m3), std::invalid_argument);
  EXPECT_EQ(fp8_amax_columns<T>(ExecSpace(), z, 3, 0), 0.0f);
}

TEST(Fp8RoundKernels, RoundBlocksMatchesTheReferenceWithPartialBlocks) {
  const int R = 300, C = 200, B = 128;  // blocks of 128/128/44 rows x 128/72 columns
  for (Fp8Format f : kFormats) {
    std::mt19937_64 rng(13);
    std::normal_distribution<double> w(0.0, 0.05);
    std::vector<double> v(static_cast<std::size_t>(R) * C);
    for (auto& x : v) x = static_cast<float>(w(rng));
    for (int r = 128; r < 256; ++r)
      for (int c = 0; c < 128; ++c) v[r * C + c] = 0.0;  // a zero block
    v[260 * C + 150] = NAN, v[299 * C + 199] = -INFINITY;  // the last block: non-finite members
    v[5 * C + 7] = 3.0e38;  // a block with amax near FLT_MAX: its scale 2^120 (e4m3) or 2^113 (e5m2)
    const View2<float> x = test::make_view2<float>("mantissa::test::w", v, R, C);
    fp8_round_blocks(ExecSpace(), x, B, B, f);
    const auto got = test::to_host(x);
    Tally t;
    for (int r0 = 0; r0 < R; r0 += B)
      for (int c0 = 0; c0 < C; c0 += B) {
        std::vector<double> g, gg;
        for (int r = r0; r < std::min(R, r0 + B); ++r)
          for (int c = c0; c < std::min(C, c0 + B); ++c) g.push_back(v[r * C + c]), gg.push_back(got[r * C + c]);
        double amax = 0.0;
        for (double xv : g) amax = std::isfinite(xv) ? std::max(amax, std::fabs(xv)) : amax;
        compare<float>(std::string("blocks ") + name(f), g, gg, ref_group(g, f, FLT_MAX), ref_scale(amax, f), f, t,
                       static_cast<std::size_t>(r0) * C + c0);
      }
    EXPECT_EQ(t.bad, 0) << name(f);
    EXPECT_EQ(t.over_bound, 0) << name(f) << " of " << t.checked_bound;
    EXPECT_GT(t.checked_bound, 25000) << name(f);  // 60000 values less the zero block and block (0, 0) (amax 3e38)
    EXPECT_EQ(got[128 * C + 5], 0.0);
    EXPECT_TRUE(std::isnan(got[260 * C + 150]));
    EXPECT_EQ(got[299 * C + 199], -INFINITY);
  }
  // the storage limit of an fp16 engine's weights: a block at fp16's max saturates within it
  for (Fp8Format f : kFormats) {
    const std::vector<double> v = {65504.0, -64000.0, 1000.0, 0.5, 61000.0, 3.0};
    const View2<float> x = test::make_view2<float>("mantissa::test::w", v, 2, 3);
    fp8_round_blocks(ExecSpace(), x, 2, 2, f, 65504.0f);
    const auto got = test::to_host(x);
    const auto ref01 = ref_group({65504.0, -64000.0, 0.5, 61000.0}, f, 65504.0), ref2 = ref_group({1000.0, 3.0}, f, 65504.0);
    const std::vector<double> ref = {ref01[0], ref01[1], ref2[0], ref01[2], ref01[3], ref2[1]};
    EXPECT_EQ(got, ref) << name(f);
    EXPECT_EQ(got[0], f == Fp8Format::e4m3 ? 61440.0 : 57344.0);
  }
  EXPECT_THROW(fp8_round_blocks(ExecSpace(), View2<float>("mantissa::test::z", 2, 2), 0, 128, Fp8Format::e4m3),
               std::invalid_argument);
}

// ---- 5. labels --------------------------------------------------------------------------------------------
TEST(Fp8Round, EveryKernelIsLabelledMantissaFp8) {
  if (test::KernelLabels::tools_loaded()) GTEST_SKIP() << "a Kokkos Tools library is loaded";
  const View2<bf16_t> x("mantissa::test::x", 3, 200);
  const View2<float> w("mantissa::test::w", 130, 200);
  Kokkos::deep_copy(x, from_float<bf16_t>(1.5f));
  Kokkos::deep_copy(w, 0.25f);
  test::KernelLabels rec;
  fp8_round_groups<bf16_t>(ExecSpace(), x, 128, Fp8Format::e4m3);
  fp8_round_blocks(ExecSpace(), w, 128, 128, Fp8Format::e5m2);
  const float a = fp8_amax_columns<bf16_t>(ExecSpace(), x, 10, 20);
  fp8_round_columns<bf16_t>(ExecSpace(), x, 10, 20, fp8_pow2_scale(a, Fp8Format::e4m3), Fp8Format::e4m3);
  rec.stop();
  for (const auto& l : rec.ours()) EXPECT_EQ(l.rfind("mantissa::fp8::", 0), 0u) << "kernel label '" << l << "'";
  EXPECT_EQ(rec.ours().size(), 4u);  // round_groups, round_blocks, amax_columns, round_columns
}
