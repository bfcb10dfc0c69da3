#pragma once
// The main() of every perf/ benchmark: Kokkos around Google Benchmark.
#include <benchmark/benchmark.h>

#include <Kokkos_Core.hpp>

#define MANTISSA_BENCHMARK_MAIN()               \
  int main(int argc, char** argv) {             \
    Kokkos::ScopeGuard guard(argc, argv);       \
    benchmark::Initialize(&argc, argv);         \
    benchmark::RunSpecifiedBenchmarks();        \
    benchmark::Shutdown();                      \
    return 0;                                   \
  }
