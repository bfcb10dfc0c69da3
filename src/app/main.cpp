// mantissa: MPI_Init -> Kokkos::initialize -> command -> Kokkos::finalize -> MPI_Finalize.
#include <mpi.h>

#include <Kokkos_Core.hpp>

#include "app/cli.hpp"

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  Kokkos::initialize(argc, argv);  // consumes --kokkos-* arguments before the CLI sees them
  const int rc = mantissa::app::main_cli(argc, argv);
  Kokkos::finalize();
  MPI_Finalize();
  return rc;
}
