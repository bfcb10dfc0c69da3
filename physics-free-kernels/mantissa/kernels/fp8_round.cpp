#include "mantissa/kernels/fp8_round.hpp"

#include <stdexcept>

namespace mantissa {

// amax over the finite values seen so far (the scales skip NaN and Inf, see fp8_round.hpp).
KOKKOS_INLINE_FUNCTION void fp8_amax_update(float& amax, float v) {
  const float a = v < 0.0f ? -v : v;
  if (fp8_round_finite(v) && a > amax) amax = a;
}

template <class T>
void fp8_round_groups(const ExecSpace& space, const View2<T>& x, int group, Fp8Format f) {
  if (group <= 0) throw std::invalid_argument("mantissa::fp8_round_groups: group must be positive");
  if (f == Fp8Format::none) return;
  const int n = static_cast<int>(x.extent(0)), k = static_cast<int>(x.extent(1));
  if (n == 0 || k == 0) return;
  const int ng = (k + group - 1) / group;
  const float limit = static_cast<float>(precision_traits<T>::max);
  Kokkos::parallel_for(
      "mantissa::fp8::round_groups", Kokkos::RangePolicy<ExecSpace>(space, 0, n * ng), KOKKOS_LAMBDA(const int e) {
        const int i = e / ng, c0 = (e % ng) * group, c1 = c0 + group < k ? c0 + group : k;
        float amax = 0.0f;
        for (int c = c0; c < c1; ++c) fp8_amax_update(amax, to_float(x(i, c)));
        const float s = fp8_pow2_scale(amax, f);
        for (int c = c0; c < c1; ++c) x(i, c) = from_float<T>(fp8_round_scaled(to_float(x(i, c)), s, f, limit));
      });
}

void fp8_round_blocks(const ExecSpace& space, const View2<float>& w, int br, int bc, Fp8Format f, float limit) {
  if (br <= 0 || bc <= 0) throw std::invalid_argument("mantissa::fp8_round_blocks: block sizes must be positive");
  if (f == Fp8Format::none) return;
  const int rows = static_cast<int>(w.extent(0)), cols = static_cast<int>(w.extent(1));
  if (rows == 0 || cols == 0) return;
  const int nbr = (rows + br - 1) / br, nbc = (cols + bc - 1) / bc;
  Kokkos::parallel_for(
      "mantissa::fp8::round_blocks", Kokkos::RangePolicy<ExecSpace>(space, 0, nbr * nbc), KOKKOS_LAMBDA(const int e) {
        const int r0 = (e / nbc) * br, c0 = (e % nbc) * bc;
        const int r1 = r0 + br < rows ? r0 + br : rows, c1 = c0 + bc < cols ? c0 + bc : cols;
        float amax = 0.0f;
        for (int r = r0; r < r1; ++r)
          for (int c = c0; c < c1; ++c) fp8_amax_update(amax, w(r, c));
        const float s = fp8_pow2_scale(amax, f);
        for (int r = r0; r < r1; ++r)
          for (int c = c0; c < c1; ++c) w(r, c) = fp8_round_scaled(w(r, c), s, f, limit);
      });
}

template <class T>
float fp8_amax_columns(const ExecSpace& space, const ConstView2<T>& x, int c0, int n) {
  const int rows = static_cast<int>(x.extent(0));
  if (c0 < 0 || n < 0 || c0 + n > static_cast<int>(x.extent(1)))
    throw std::invalid_argument("mantissa::fp8_amax_columns: columns out of range");
  float amax = 0.0f;
  if (rows == 0 || n == 0) return amax;
  Kokkos::parallel_reduce(
      "mantissa::fp8::amax_columns", Kokkos::RangePolicy<ExecSpace>(space, 0, rows * n),
      KOKKOS_LAMBDA(const int e, float& m) { fp8_amax_update(m, to_float(x(e / n, c0 + e % n))); },
      Kokkos::Max<float>(amax));
  return amax;  // max is exact and order-free: the same on every backend
}

template <class T>
void fp8_round_columns(const ExecSpace& space, const View2<T>& x, int c0, int n, float s, Fp8Format f) {
  const int rows = static_cast<int>(x.extent(0));
  if (c0 < 0 || n < 0 || c0 + n > static_cast<int>(x.extent(1)))
    throw std::invalid_argument("mantissa::fp8_round_columns: columns out of range");
  if (f == Fp8Format::none || rows == 0 || n == 0) return;
  const float limit = static_cast<float>(precision_traits<T>::max);
  Kokkos::parallel_for(
      "mantissa::fp8::round_columns", Kokkos::RangePolicy<ExecSpace>(space, 0, rows * n), KOKKOS_LAMBDA(const int e) {
        const int i = e / n, c = c0 + e % n;
        x(i, c) = from_float<T>(fp8_round_scaled(to_float(x(i, c)), s, f, limit));
      });
}

MANTISSA_FP8_ROUND_DECLARE(, float)
MANTISSA_FP8_ROUND_DECLARE(, fp16_t)
MANTISSA_FP8_ROUND_DECLARE(, bf16_t)

}  // namespace mantissa
