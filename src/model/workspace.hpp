#pragma once
// A buffer that grows to the largest request seen and hands out [rows, cols] views of its front:
// engines keep one per activation so that steady-state steps allocate nothing.
#include <string>

#include "mantissa/kernels/types.hpp"

namespace mantissa::model {

template <class T>
struct Rows {
  View1<T> buf;
  std::string label = "mantissa::model::activation";
  View2<T> get(std::size_t rows, std::size_t cols) { return View2<T>(grow(rows * cols), rows, cols); }
  View1<T> get1(std::size_t n) { return View1<T>(grow(n), n); }
  // A view of what the last get() handed out (the caller knows the shape).
  View2<T> view(std::size_t rows, std::size_t cols) const { return View2<T>(buf.data(), rows, cols); }
  View1<T> view1(std::size_t n) const { return View1<T>(buf.data(), n); }

 private:
  T* grow(std::size_t n) {
    if (buf.extent(0) < n) buf = View1<T>(Kokkos::view_alloc(label, Kokkos::WithoutInitializing), n);
    return buf.data();
  }
};

}  // namespace mantissa::model
