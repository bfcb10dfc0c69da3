# Test helpers: every test binary uses the MPI-aware GoogleTest main in tests/.
# MANTISSA_GTEST_SOURCE_DIR: build GoogleTest from a source tree (a node without packages).
if(MANTISSA_GTEST_SOURCE_DIR)
  set(INSTALL_GTEST OFF CACHE BOOL "" FORCE)
  set(BUILD_GMOCK OFF CACHE BOOL "" FORCE)
  add_subdirectory(${MANTISSA_GTEST_SOURCE_DIR} ${CMAKE_BINARY_DIR}/googletest EXCLUDE_FROM_ALL)
  if(NOT TARGET GTest::gtest)
    add_library(GTest::gtest ALIAS gtest)
  endif()
else()
  find_package(GTest REQUIRED)
endif()

# OpenMPI refuses to run as root without these; oversubscription lets -n 2 run on any box.
# Single-rank tests inherit OMP_NUM_THREADS (OpenMP builds: `OMP_NUM_THREADS=2 ctest`); tests on
# several ranks run one thread per rank so that -n 2 fits two cores.
set(MANTISSA_MPI_TEST_ENV
  "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;OMPI_MCA_rmaps_base_oversubscribe=1")

# mantissa_add_test(NAME name SOURCES a.cpp ... [RANKS 1 2] [LIBS ...] [LABELS ...])
# Registers name_np<R> for every R in RANKS (default 1); R = 1 runs without mpiexec.
function(mantissa_add_test)
  cmake_parse_arguments(T "" "NAME;TIMEOUT" "SOURCES;RANKS;LIBS;LABELS" ${ARGN})
  if(NOT T_RANKS)
    set(T_RANKS 1)
  endif()
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 600)
  endif()
  add_executable(${T_NAME} ${T_SOURCES})
  target_link_libraries(${T_NAME} PRIVATE mantissa_test_main ${T_LIBS})
  foreach(np IN LISTS T_RANKS)
    if(np EQUAL 1)
      add_test(NAME ${T_NAME} COMMAND $<TARGET_FILE:${T_NAME}>)
      set(_t ${T_NAME})
    else()
      set(_t ${T_NAME}_np${np})
      add_test(NAME ${_t} COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} ${np}
               ${MPIEXEC_PREFLAGS} $<TARGET_FILE:${T_NAME}> ${MPIEXEC_POSTFLAGS})
    endif()
    set(_env "${MANTISSA_MPI_TEST_ENV}")
    if(NOT np EQUAL 1)
      list(APPEND _env "OMP_NUM_THREADS=1")
    endif()
    set_tests_properties(${_t} PROPERTIES ENVIRONMENT "${_env}"
                         PROCESSORS ${np} TIMEOUT ${T_TIMEOUT} LABELS "${T_LABELS}")
  endforeach()
endfunction()
