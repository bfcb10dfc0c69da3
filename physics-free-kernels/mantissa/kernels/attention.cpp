// Explicit instantiations of the training engine's attention for every storage type on the
// default execution space (the header declares them extern).
#include "mantissa/kernels/attention.hpp"

namespace mantissa {

#define MANTISSA_ATTENTION_INSTANTIATE(T)                                                                         \
  template void attention_forward<T, ExecSpace>(const ExecSpace&, ConstView2<T>, ConstView1<int>, int, int, int,  \
                                                View2<T>, View2<float>);                                          \
  template void attention_backward<T, ExecSpace>(const ExecSpace&, ConstView2<T>, ConstView1<int>, int, int, int, \
                                                 ConstView2<T>, ConstView2<T>, ConstView2<float>, View2<T>);
MANTISSA_ATTENTION_INSTANTIATE(float)
MANTISSA_ATTENTION_INSTANTIATE(fp16_t)
MANTISSA_ATTENTION_INSTANTIATE(bf16_t)
#undef MANTISSA_ATTENTION_INSTANTIATE

}  // namespace mantissa
