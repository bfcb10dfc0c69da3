#pragma once
// The one place where Kokkos 3.4 (Debian) and Kokkos >= 4.x differ for Mantissa.
//   math functions   Kokkos::Experimental:: before 3.7, Kokkos:: after  -> mantissa::kmath
//   min/max/clamp    absent before 3.7                                  -> mantissa::kmin/kmax/kclamp
//   scoped regions   Kokkos::Profiling::ScopedRegion only from 4.1      -> mantissa::ScopedRegion (region.hpp)
//   device printf    Kokkos::printf only from 4.2                       -> MANTISSA_DEVICE_PRINTF
//   custom reducers  3.x backends join through volatile references      -> MANTISSA_VOLATILE_JOIN
//   named fences     space.fence(label) only from 3.5                   -> mantissa::named_fence
#include <Kokkos_Core.hpp>

#if !defined(KOKKOS_VERSION)
#error "Kokkos_Core.hpp did not define KOKKOS_VERSION"
#endif

namespace mantissa {

#if KOKKOS_VERSION >= 30700
namespace kmath = ::Kokkos;
#else
namespace kmath = ::Kokkos::Experimental;
#endif

template <class T>
KOKKOS_INLINE_FUNCTION constexpr T kmin(T a, T b) {
  return b < a ? b : a;
}
template <class T>
KOKKOS_INLINE_FUNCTION constexpr T kmax(T a, T b) {
  return a < b ? b : a;
}
template <class T>
KOKKOS_INLINE_FUNCTION constexpr T kclamp(T x, T lo, T hi) {
  return x < lo ? lo : (hi < x ? hi : x);
}

// space.fence(label) (named fences, seen by Kokkos Tools, from Kokkos 3.5 on; unnamed before).
template <class Exec>
void named_fence(const Exec& space, const char* label) {
#if KOKKOS_VERSION >= 30500
  space.fence(label);
#else
  (void)label;
  space.fence();
#endif
}

}  // namespace mantissa

#if KOKKOS_VERSION >= 40200
#define MANTISSA_DEVICE_PRINTF(...) ::Kokkos::printf(__VA_ARGS__)
#else
#define MANTISSA_DEVICE_PRINTF(...) ::printf(__VA_ARGS__)
#endif

// A custom reducer's join: Kokkos < 3.7 backends (OpenMP, CUDA) call it through volatile
// references; 4.x rejects a volatile join. Write the body once:
//   MANTISSA_VOLATILE_JOIN(value_type, dst, src, { dst.x += src.x; })
#if KOKKOS_VERSION < 30700
#define MANTISSA_VOLATILE_JOIN(T, dst, src, ...)                                     \
  KOKKOS_INLINE_FUNCTION void join(T& dst, const T& src) const __VA_ARGS__           \
  KOKKOS_INLINE_FUNCTION void join(volatile T& dst, const volatile T& src) const __VA_ARGS__
#else
#define MANTISSA_VOLATILE_JOIN(T, dst, src, ...) \
  KOKKOS_INLINE_FUNCTION void join(T& dst, const T& src) const __VA_ARGS__
#endif
