#pragma once
// View typedefs shared by every kernel. Activations are row-major [rows, features]; a packed
// batch of variable-length sequences stacks all tokens as rows (no padding).
#include <Kokkos_Core.hpp>

#include "mantissa/kernels/kokkos_compat.hpp"
#include "mantissa/kernels/precision.hpp"

namespace mantissa {

using ExecSpace = Kokkos::DefaultExecutionSpace;
using MemSpace = ExecSpace::memory_space;
using HostSpace = Kokkos::HostSpace;

template <class T>
using View1 = Kokkos::View<T*, Kokkos::LayoutRight, MemSpace>;
template <class T>
using View2 = Kokkos::View<T**, Kokkos::LayoutRight, MemSpace>;
template <class T>
using View3 = Kokkos::View<T***, Kokkos::LayoutRight, MemSpace>;
template <class T>
using ConstView1 = Kokkos::View<const T*, Kokkos::LayoutRight, MemSpace>;
template <class T>
using ConstView2 = Kokkos::View<const T**, Kokkos::LayoutRight, MemSpace>;
template <class T>
using ConstView3 = Kokkos::View<const T***, Kokkos::LayoutRight, MemSpace>;

// Allocation without the zero-fill kernel, labelled for the tools' memory reports.
// (The label must be a std::string: Kokkos takes a raw char pointer for user memory.)
template <class V>
V make_uninit(const std::string& label, std::size_t n0, std::size_t n1 = KOKKOS_IMPL_CTOR_DEFAULT_ARG,
              std::size_t n2 = KOKKOS_IMPL_CTOR_DEFAULT_ARG) {
  return V(Kokkos::view_alloc(label, Kokkos::WithoutInitializing), n0, n1, n2);
}

}  // namespace mantissa
