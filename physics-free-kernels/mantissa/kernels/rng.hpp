#pragma once
// Counter-based random numbers: a value is a pure function of (seed, counters), so results do not
// depend on the backend, the thread count, the MPI rank count or the order of work.
// The mixer is SplitMix64's finaliser (Steele, Lea, Flood 2014) applied to a combined key.
#include <cstdint>

#include "mantissa/kernels/kokkos_compat.hpp"

namespace mantissa {

KOKKOS_INLINE_FUNCTION std::uint64_t mix64(std::uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Hash of a seed and up to three counters (each step is a full avalanche).
KOKKOS_INLINE_FUNCTION std::uint64_t counter_hash(std::uint64_t seed, std::uint64_t a, std::uint64_t b = 0,
                                                  std::uint64_t c = 0) {
  return mix64(mix64(mix64(mix64(seed) ^ a) ^ b) ^ c);
}

// Uniform in (0, 1): 53 random bits, never exactly 0 or 1.
KOKKOS_INLINE_FUNCTION double uniform_open01(std::uint64_t h) {
  return (static_cast<double>(h >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

// Standard normal by Box-Muller from two independent hashes of the same counters.
KOKKOS_INLINE_FUNCTION double normal_from_counters(std::uint64_t seed, std::uint64_t a, std::uint64_t b = 0) {
  const double u1 = uniform_open01(counter_hash(seed, a, b, 0x5851f42d4c957f2dULL));
  const double u2 = uniform_open01(counter_hash(seed, a, b, 0x14057b7ef767814fULL));
  return kmath::sqrt(-2.0 * kmath::log(u1)) * kmath::cos(6.283185307179586476925286766559 * u2);
}

}  // namespace mantissa
