#pragma once
// Shared helpers of the kernel tests: random values exactly representable in T, host <-> device
// copies through double, the storage types as a GoogleTest type list, and an element-wise
// comparison against a double reference with a per-element tolerance that reports the worst case.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "mantissa/kernels/types.hpp"

namespace mantissa::test {

using StorageTypes = ::testing::Types<float, bf16_t, fp16_t>;
struct StorageTypeNames {
  template <class T>
  static std::string GetName(int) {
    return precision_traits<T>::name;
  }
};

constexpr double kU32 = 5.9604644775390625e-08;  // 2^-24: unit roundoff of fp32, where every kernel computes

// Unit roundoff of the storage type (2^-24, 2^-8, 2^-11).
template <class T>
constexpr double unit_roundoff() {
  return precision_traits<T>::unit_roundoff;
}
// Half the spacing of T's subnormals: the absolute error of rounding a tiny value to T.
template <class T>
double subnormal_half_ulp() {
  if constexpr (std::is_same<T, fp16_t>::value)
    return std::ldexp(1.0, -25);
  else if constexpr (std::is_same<T, bf16_t>::value)
    return std::ldexp(1.0, -134);
  else
    return std::ldexp(1.0, -150);
}
// Tolerance of one rounding of an exact value `ref` to T.
template <class T>
double rounding_tol(double ref) {
  return unit_roundoff<T>() * std::fabs(ref) + subnormal_half_ulp<T>();
}

// x rounded to T (to fp32 first, which is exact for the fp32-representable values used here);
// T = double leaves x as it is (inputs of the double-only finite-difference checks).
template <class T>
double round_double(double x) {
  if constexpr (std::is_same<T, double>::value)
    return x;
  else
    return static_cast<double>(round_to<T>(static_cast<float>(x)));
}

// n uniform values in [lo, hi), rounded to T (so they are exactly the values a kernel reads).
template <class T>
std::vector<double> random_values(std::size_t n, double lo, double hi, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<double> v(n);
  for (auto& x : v) x = round_double<T>(dist(rng));
  return v;
}

// Device views from host doubles (rounded to T; exact for values from random_values<T>).
template <class T>
View1<T> make_view1(const char* label, const std::vector<double>& v) {
  View1<T> d(std::string(label), v.size());
  auto h = Kokkos::create_mirror_view(d);
  for (std::size_t i = 0; i < v.size(); ++i) h(i) = from_float<T>(static_cast<float>(v[i]));
  Kokkos::deep_copy(d, h);
  return d;
}
template <class T>
View2<T> make_view2(const char* label, const std::vector<double>& v, std::size_t rows, std::size_t cols) {
  EXPECT_EQ(v.size(), rows * cols);
  View2<T> d(std::string(label), rows, cols);
  auto h = Kokkos::create_mirror_view(d);
  for (std::size_t i = 0; i < rows; ++i)
    for (std::size_t j = 0; j < cols; ++j) h(i, j) = from_float<T>(static_cast<float>(v[i * cols + j]));
  Kokkos::deep_copy(d, h);
  return d;
}
// Whether the build's kernels run on the host, where the bit-exact host emulations apply. Read through
// a volatile so that the skip it decides is not a compile-time constant: nvcc warns that the code after
// a constant GTEST_SKIP is unreachable.
inline bool kernels_run_on_host() {
  volatile bool host = std::is_same<MemSpace, Kokkos::HostSpace>::value;
  return host;
}

inline View1<int> make_int_view(const char* label, const std::vector<int>& v) {
  View1<int> d(std::string(label), v.size());
  auto h = Kokkos::create_mirror_view(d);
  for (std::size_t i = 0; i < v.size(); ++i) h(i) = v[i];
  Kokkos::deep_copy(d, h);
  return d;
}

// Device view -> host doubles (row-major for rank 2). Fences the default instance first.
template <class V>
std::vector<double> to_host(const V& d) {
  Kokkos::fence();
  auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), d);
  std::vector<double> v;
  if constexpr (V::rank == 1) {
    for (std::size_t i = 0; i < h.extent(0); ++i) v.push_back(to_float(h(i)));
  } else {
    for (std::size_t i = 0; i < h.extent(0); ++i)
      for (std::size_t j = 0; j < h.extent(1); ++j) v.push_back(to_float(h(i, j)));
  }
  return v;
}

// Fails when any |got - ref| > tol (or is NaN); prints the worst err/tol ratio and |err| so the
// margins are visible in the log. Returns the worst ratio.
inline double expect_close(const std::string& what, const std::vector<double>& got, const std::vector<double>& ref,
                           const std::vector<double>& tol) {
  EXPECT_EQ(got.size(), ref.size()) << what;
  EXPECT_EQ(tol.size(), ref.size()) << what;
  double worst_ratio = 0.0, worst_err = 0.0;
  std::size_t worst = 0, failures = 0;
  for (std::size_t i = 0; i < ref.size() && i < got.size() && i < tol.size(); ++i) {
    const double err = std::fabs(got[i] - ref[i]);
    const double ratio = err == 0.0 ? 0.0 : err / tol[i];  // exact matches count as 0, also where tol = 0
    if (!(err <= tol[i])) {
      if (failures++ < 5)
        ADD_FAILURE() << what << ": element " << i << " got " << got[i] << " ref " << ref[i] << " |err| " << err
                      << " > tol " << tol[i];
    }
    if (ratio > worst_ratio || std::isnan(ratio)) {
      worst_ratio = std::isnan(ratio) ? INFINITY : ratio;
      worst = i;
    }
    if (err > worst_err) worst_err = err;
  }
  std::printf("  %-58s max|err| %.3e  max err/tol %.3f (at %zu of %zu)\n", what.c_str(), worst_err, worst_ratio, worst,
              ref.size());
  return worst_ratio;
}

}  // namespace mantissa::test
