// MPI-aware GoogleTest main: MPI_Init -> Kokkos::initialize -> tests -> reverse.
// Only rank 0 prints; every rank exits with the worst result of all ranks.
// Without MANTISSA_TEST_MPI (the kernels-only build of a bare GPU node) it runs on one process.
#include <gtest/gtest.h>
#if defined(MANTISSA_TEST_MPI)
#include <mpi.h>
#endif

#include <Kokkos_Core.hpp>
#include <cstdio>

int main(int argc, char** argv) {
  int rank = 0, ranks = 1;
#if defined(MANTISSA_TEST_MPI)
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);
#endif
  Kokkos::initialize(argc, argv);
  int rc = 0;
  {
    ::testing::InitGoogleTest(&argc, argv);
    if (rank != 0) {
      auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
      delete listeners.Release(listeners.default_result_printer());
    }
    if (rank == 0) {  // every test's output names the backend it ran on (ctest logs keep it)
      std::printf("[ mantissa ] Kokkos %d, execution space %s, concurrency %d, MPI ranks %d\n", KOKKOS_VERSION,
                  Kokkos::DefaultExecutionSpace::name(), static_cast<int>(Kokkos::DefaultExecutionSpace().concurrency()),
                  ranks);
      std::fflush(stdout);
    }
    rc = RUN_ALL_TESTS();
  }
  Kokkos::finalize();
  int worst = rc;
#if defined(MANTISSA_TEST_MPI)
  MPI_Allreduce(&rc, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
#endif
  return worst;
}
