#pragma once
// Elementwise conversion between storage precisions (round to nearest even), e.g. the cast
// of the fp32 master weights to the storage-precision copy both engines read.
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

}  // namespace mantissa
