#pragma once
// MPI collectives on Kokkos Views. Views are fenced before MPI reads them; device Views are staged
// through host memory (Debian's OpenMPI is not CUDA-aware), host Views are reduced in place.
#include <mpi.h>

#include <vector>

#include "mantissa/kernels/types.hpp"

namespace mantissa::parallel {

// In-place sum over all ranks of a contiguous fp32 buffer (the flat gradient).
void allreduce_sum(const View1<float>& v, MPI_Comm comm = MPI_COMM_WORLD);

template <class T>
T allreduce_sum_scalar(T x, MPI_Comm comm = MPI_COMM_WORLD);

// In-place sum over all ranks of a host vector of doubles (metrics), in one collective.
void allreduce_sum(std::vector<double>& v, MPI_Comm comm = MPI_COMM_WORLD);

}  // namespace mantissa::parallel

namespace mantissa::parallel {
// Concatenation of every rank's vector on rank 0 (rank order); other ranks get an empty vector.
template <class T>
std::vector<T> gather_to_root(const std::vector<T>& local, MPI_Comm comm = MPI_COMM_WORLD);
}  // namespace mantissa::parallel
