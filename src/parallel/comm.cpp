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

void allreduce_sum(std::vector<double>& v, MPI_Comm comm) {
  MPI_Allreduce(MPI_IN_PLACE, v.data(), static_cast<int>(v.size()), MPI_DOUBLE, MPI_SUM, comm);
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

namespace mantissa::parallel {

template <class T>
std::vector<T> gather_to_root(const std::vector<T>& local, MPI_Comm comm) {
  int rank = 0, size = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  const int n = static_cast<int>(local.size() * sizeof(T));
  std::vector<int> counts(size), displs(size);
  MPI_Gather(&n, 1, MPI_INT, counts.data(), 1, MPI_INT, 0, comm);
  std::vector<T> out;
  if (rank == 0) {
    int total = 0;
    for (int r = 0; r < size; ++r) displs[r] = total, total += counts[r];
    out.resize(static_cast<std::size_t>(total) / sizeof(T));
  }
  MPI_Gatherv(local.data(), n, MPI_BYTE, out.data(), counts.data(), displs.data(), MPI_BYTE, 0, comm);
  return out;
}
template std::vector<float> gather_to_root<float>(const std::vector<float>&, MPI_Comm);
template std::vector<int> gather_to_root<int>(const std::vector<int>&, MPI_Comm);
template std::vector<double> gather_to_root<double>(const std::vector<double>&, MPI_Comm);

}  // namespace mantissa::parallel
