#pragma once
// Small elementwise kernels of the training engine.
#include "mantissa/kernels/types.hpp"

namespace mantissa {

// out = round_T(a + b), elementwise over (N, D): the eager residual add (its own rounding point).
template <class T, class Exec>
void add_forward(const Exec& space, const ConstView2<T>& a, const ConstView2<T>& b, const View2<T>& out);

// out[i] = value, (n)
template <class T, class Exec>
void fill(const Exec& space, const View1<T>& out, float value);

// w[i] = std * normal(seed, i + offset): counter-based, independent of backend and order.  (n)
template <class Exec>
void init_normal(const Exec& space, const View1<float>& w, double std, std::uint64_t seed, std::uint64_t offset);

#define MANTISSA_ELEMENTWISE_EXTERN(T)                                                                     \
  extern template void add_forward<T, ExecSpace>(const ExecSpace&, const ConstView2<T>&, const ConstView2<T>&, \
                                                 const View2<T>&);                                        \
  extern template void fill<T, ExecSpace>(const ExecSpace&, const View1<T>&, float);
MANTISSA_ELEMENTWISE_EXTERN(float)
MANTISSA_ELEMENTWISE_EXTERN(fp16_t)
MANTISSA_ELEMENTWISE_EXTERN(bf16_t)
#undef MANTISSA_ELEMENTWISE_EXTERN
extern template void init_normal<ExecSpace>(const ExecSpace&, const View1<float>&, double, std::uint64_t,
                                            std::uint64_t);

}  // namespace mantissa
