// mantissa: MPI_Init -> Kokkos::initialize -> command -> Kokkos::finalize -> MPI_Finalize.
// Every failure ends as one printed line and a documented exit status (app/exit.hpp).
#include <mpi.h>

#include <Kokkos_Core.hpp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "app/cli.hpp"
#include "app/exit.hpp"

namespace {

// Kokkos' own parser aborts (or throws, depending on its version) on a bad value: check the integer
// --kokkos-* arguments first so that a typo is a bad command line (status 2), never an abort.
bool kokkos_arguments_valid(int argc, char** argv, int rank) {
  static const char* const integer_args[] = {"--kokkos-threads", "--kokkos-num-threads", "--kokkos-numa",
                                             "--kokkos-num-devices", "--kokkos-device-id", "--kokkos-ndevices"};
  for (int i = 1; i < argc; ++i) {
    const char* a = argv[i];
    for (const char* name : integer_args) {
      const std::size_t n = std::strlen(name);
      if (std::strncmp(a, name, n) != 0 || (a[n] != '=' && a[n] != '\0')) continue;
      const char* value = a[n] == '=' ? a + n + 1 : (i + 1 < argc ? argv[i + 1] : "");
      char* end = nullptr;
      const long v = std::strtol(value, &end, 10);
      if (*value == '\0' || end == value || *end != '\0' || v < 0 || v > 1 << 20) {
        if (rank == 0)
          std::fprintf(stderr, "mantissa: bad command line: %s needs a non-negative integer, got \"%s\"\n", name, value);
        return false;
      }
    }
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  mantissa::app::init_exit_handling();
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  int rc = mantissa::app::kExitInput;
  if (kokkos_arguments_valid(argc, argv, rank)) {
    bool kokkos_up = false;
    try {
      Kokkos::initialize(argc, argv);  // consumes --kokkos-* arguments before the CLI sees them
      kokkos_up = true;
    } catch (const std::exception& e) {
      if (rank == 0) std::fprintf(stderr, "mantissa: cannot start Kokkos: %s\n", e.what());
    }
    if (kokkos_up) {
      rc = mantissa::app::main_cli(argc, argv);
      Kokkos::finalize();
    }
  }
  MPI_Finalize();
  return rc;
}
