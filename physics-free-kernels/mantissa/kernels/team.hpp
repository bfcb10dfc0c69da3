#pragma once
// Team policies of the kernels that leave the team size to Kokkos (Kokkos::AUTO): a warp multiple on
// GPUs, threads per core on OpenMP (1 on most nodes), 1 on Serial. MANTISSA_TEAM_SIZE=n in the
// environment asks host backends for n threads per team instead (at most the space's concurrency):
// with it the tests run the code paths a GPU takes (several threads per team, team reductions and
// barriers) with real threads on OpenMP. Device backends always take Kokkos' choice.
#include <cstdlib>
#include <type_traits>

#include "mantissa/kernels/kokkos_compat.hpp"

namespace mantissa {

// MANTISSA_TEAM_SIZE (read once), 0 when unset or not a positive number.
inline int team_size_request() {
  static const int n = [] {
    const char* v = std::getenv("MANTISSA_TEAM_SIZE");
    const int k = v != nullptr ? std::atoi(v) : 0;
    return k > 0 ? k : 0;
  }();
  return n;
}

template <class Exec>
Kokkos::TeamPolicy<Exec> auto_team_policy(const Exec& space, int league) {
  if constexpr (std::is_same<typename Exec::memory_space, Kokkos::HostSpace>::value) {
    const int n = team_size_request();
    if (n > 0) return Kokkos::TeamPolicy<Exec>(space, league, kmin(n, kmax(1, space.concurrency())));
  }
  return Kokkos::TeamPolicy<Exec>(space, league, Kokkos::AUTO);
}

}  // namespace mantissa
