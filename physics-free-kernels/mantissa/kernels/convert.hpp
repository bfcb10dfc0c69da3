#pragma once
// Elementwise conversion between storage precisions (round to nearest even), e.g. the cast
// of the fp32 master weights to the storage-precision copy both engines read.
#include <string>
#include <type_traits>

#include "mantissa/kernels/types.hpp"

namespace mantissa {

// y[i] = from_float<TOut>(to_float(x[i])), i < n.            (n) -> (n)
template <class TIn, class TOut, class Exec>
void convert(const Exec& space, const ConstView1<TIn>& x, const View1<TOut>& y) {
  const std::size_t n = x.extent(0);
  Kokkos::parallel_for(
      "mantissa::precision::convert", Kokkos::RangePolicy<Exec>(space, 0, n),
      KOKKOS_LAMBDA(const std::size_t i) { y(i) = from_float<TOut>(to_float(x(i))); });
}

// An fp32 copy of a T matrix (exact: every T value is a float); for T = float the input itself,
// no copy. Kernels whose inner loops read 16-bit operands many times widen them once here.  (n0, n1)
template <class T, class Exec>
ConstView2<float> widen_to_fp32(const Exec& space, const ConstView2<T>& x, const char* label) {
  if constexpr (std::is_same<T, float>::value) {
    (void)space;
    (void)label;
    return x;
  } else {
    const std::size_t n0 = x.extent(0), n1 = x.extent(1);
    const View2<float> y(Kokkos::view_alloc(std::string(label), Kokkos::WithoutInitializing), n0, n1);
    if (n1 == 0) return y;
    Kokkos::parallel_for(
        "mantissa::precision::widen", Kokkos::RangePolicy<Exec>(space, 0, n0 * n1), KOKKOS_LAMBDA(const std::size_t e) {
          const std::size_t r = e / n1, c = e % n1;
          y(r, c) = to_float(x(r, c));
        });
    return y;
  }
}

}  // namespace mantissa
