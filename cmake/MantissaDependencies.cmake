# Dependency glue for Mantissa: finds every package and mends the known defects of
# Debian's Trilinos-packaged Kokkos 3.4.01 here, and nowhere else.
#
# Accepted: Debian 12's Kokkos 3.4.01 (Serial) and a user's Kokkos 4.x (OpenMP, CUDA; tested 4.6.01),
# passed with -DKokkos_ROOT=/path/to/install (KokkosKernels likewise, -DKokkosKernels_ROOT).

set(CMAKE_CXX_EXTENSIONS OFF)  # Kokkos' config warns and forces this otherwise
find_package(Kokkos 3.4 REQUIRED)

# Defect 1 (Debian/Trilinos flavour): Kokkos::kokkos carries INTERFACE_INCLUDE_DIRECTORIES
# "/usr/lib/include", computed one directory level too shallow, so generation fails.
if("trilinos_kokkoscore" IN_LIST Kokkos_LIBRARIES)
  get_filename_component(_mantissa_kokkos_inc "${Kokkos_INCLUDE_DIRS}" REALPATH)
  set_property(TARGET Kokkos::kokkos PROPERTY INTERFACE_INCLUDE_DIRECTORIES "${_mantissa_kokkos_inc}")
  set(MANTISSA_KOKKOS_FLAVOUR "trilinos")
else()
  set(MANTISSA_KOKKOS_FLAVOUR "standalone")
endif()

# Defect 2: Debian's KokkosKernels has no version file (so no version argument here) and
# exports no Kokkos::kokkoskernels target, only trilinos_kokkoskernels.
find_package(KokkosKernels REQUIRED)
if(NOT TARGET Kokkos::kokkoskernels)
  add_library(Kokkos::kokkoskernels INTERFACE IMPORTED)
  get_filename_component(_mantissa_kk_inc "${KokkosKernels_INCLUDE_DIRS}" REALPATH)
  set_target_properties(Kokkos::kokkoskernels PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${_mantissa_kk_inc}"
    INTERFACE_LINK_LIBRARIES "trilinos_kokkoskernels;Kokkos::kokkos")
endif()

if(NOT MANTISSA_KERNELS_ONLY)
find_package(MPI REQUIRED COMPONENTS C CXX)
set(HDF5_PREFER_PARALLEL TRUE)
find_package(HDF5 REQUIRED COMPONENTS C)
if(NOT HDF5_IS_PARALLEL)
  message(WARNING "Mantissa: HDF5 is not a parallel build; outputs are written by rank 0 only anyway.")
endif()
find_package(tomlplusplus REQUIRED)
find_package(CLI11 REQUIRED)
find_package(fmt REQUIRED)
endif()

# nvcc_wrapper as the C++ compiler (CUDA builds): the host-only libraries (deck, HDF5, tasks), which
# include toml++ and never Kokkos, are compiled by the host compiler (nvcc_wrapper --host-only).
set(MANTISSA_HOST_ONLY_FLAG "")
if(CMAKE_CXX_COMPILER MATCHES "nvcc_wrapper$")
  set(MANTISSA_HOST_ONLY_FLAG "--host-only")
endif()
# mantissa_host_only(a.cpp ...): these sources (of the current directory) include no Kokkos and may
# include host-only libraries; in CUDA builds nvcc_wrapper passes them to the host compiler.
function(mantissa_host_only)
  if(MANTISSA_HOST_ONLY_FLAG)
    set_source_files_properties(${ARGN} DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR}
                                PROPERTIES COMPILE_OPTIONS "${MANTISSA_HOST_ONLY_FLAG}")
  endif()
endfunction()

if(Kokkos_ENABLE_CUDA)
  set(MANTISSA_HAVE_CUDA ON)
else()
  set(MANTISSA_HAVE_CUDA OFF)
endif()
message(STATUS "Mantissa: Kokkos ${Kokkos_VERSION} (${MANTISSA_KOKKOS_FLAVOUR}), devices: ${Kokkos_DEVICES}")
