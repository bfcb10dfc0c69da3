#pragma once
// This process's place in MPI_COMM_WORLD, for tests that run on 1 and 2 ranks.
#include <mpi.h>

namespace mantissa::test {

inline int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}
inline int world_size() {
  int n = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  return n;
}

}  // namespace mantissa::test
