#include "parallel/comm.hpp"

#include <type_traits>

#include "mantissa/kernels/region.hpp"

namespace mantissa::parallel {

void allreduce_sum(const View1<float>& v, MPI_Comm comm) {
  ScopedRegion region("mantissa::parallel::allreduce");
  ExecSpace().fence();
  const int n = static_cast<int>(v.extent(0));
  if constexpr (Kokkos::SpaceAccessibility<HostSpace, MemSpace>::accessible) {
    MPI_Allreduce(MPI_IN_PLACE, v.data(), n, MPI_FLOAT, MPI_SUM, comm);
  } else {
    auto h = Kokkos::create_mirror_view_and_copy(HostSpace(), v);
    MPI_Allreduce(MPI_IN_PLACE, h.data(), n, MPI_FLOAT, MPI_SUM, comm);
    Kokkos::deep_copy(v, h);
  }
}

template <class T>
T allreduce_sum_scalar(T x, MPI_Comm comm) {
  T out{};
  MPI_Datatype type = std::is_same_v<T, double> ? MPI_DOUBLE : MPI_LONG_LONG;
  MPI_Allreduce(&x, &out, 1, type, MPI_SUM, comm);
  return out;
}
template double allreduce_sum_scalar<double>(double, MPI_Comm);
template long long allreduce_sum_scalar<long long>(long long, MPI_Comm);

}  // namespace mantissa::parallel
