#include "mantissa/kernels/elementwise.hpp"

#include "mantissa/kernels/rng.hpp"

namespace mantissa {

template <class T, class Exec>
void add_forward(const Exec& space, const ConstView2<T>& a, const ConstView2<T>& b, const View2<T>& out) {
  const std::size_t n = a.extent(0) * a.extent(1);
  const T* pa = a.data();
  const T* pb = b.data();
  T* po = out.data();
  Kokkos::parallel_for(
      "mantissa::elementwise::add", Kokkos::RangePolicy<Exec>(space, 0, n),
      KOKKOS_LAMBDA(const std::size_t i) { po[i] = from_float<T>(to_float(pa[i]) + to_float(pb[i])); });
}

template <class T, class Exec>
void fill(const Exec& space, const View1<T>& out, float value) {
  Kokkos::parallel_for(
      "mantissa::elementwise::fill", Kokkos::RangePolicy<Exec>(space, 0, out.extent(0)),
      KOKKOS_LAMBDA(const std::size_t i) { out(i) = from_float<T>(value); });
}

template <class Exec>
void init_normal(const Exec& space, const View1<float>& w, double std, std::uint64_t seed, std::uint64_t offset) {
  Kokkos::parallel_for(
      "mantissa::elementwise::init_normal", Kokkos::RangePolicy<Exec>(space, 0, w.extent(0)),
      KOKKOS_LAMBDA(const std::size_t i) { w(i) = static_cast<float>(std * normal_from_counters(seed, offset + i)); });
}

#define MANTISSA_ELEMENTWISE_INST(T)                                                                          \
  template void add_forward<T, ExecSpace>(const ExecSpace&, const ConstView2<T>&, const ConstView2<T>&,       \
                                          const View2<T>&);                                                  \
  template void fill<T, ExecSpace>(const ExecSpace&, const View1<T>&, float);
MANTISSA_ELEMENTWISE_INST(float)
MANTISSA_ELEMENTWISE_INST(fp16_t)
MANTISSA_ELEMENTWISE_INST(bf16_t)
template void init_normal<ExecSpace>(const ExecSpace&, const View1<float>&, double, std::uint64_t, std::uint64_t);

}  // namespace mantissa
