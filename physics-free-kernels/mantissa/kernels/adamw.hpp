#pragma once
// Optimizer kernels on flat fp32 buffers: gradient statistics (for clipping and the loss scaler's
// inf/nan check) and the AdamW update of the fp32 master weights.
#include "mantissa/kernels/types.hpp"

namespace mantissa {

struct GradStats {
  double sumsq = 0.0;         // sum of squares of the finite entries, fp64 accumulation
  long long nonfinite = 0;    // number of inf/nan entries
};

// One pass over g: sum of squares and inf/nan count.                                        (n)
template <class Exec>
GradStats grad_stats(const Exec& space, const ConstView1<float>& g);

// AdamW (decoupled weight decay, bias-corrected moments) with the gradient multiplied by
// grad_mult first (1/loss_scale times the clip coefficient). step counts from 1.       w, g, m, v (n)
struct AdamWParams {
  float lr, beta1, beta2, eps, weight_decay;
};
template <class Exec>
void adamw_step(const Exec& space, const View1<float>& w, const ConstView1<float>& g, const View1<float>& m,
                const View1<float>& v, const AdamWParams& p, float grad_mult, long long step);

extern template GradStats grad_stats<ExecSpace>(const ExecSpace&, const ConstView1<float>&);
extern template void adamw_step<ExecSpace>(const ExecSpace&, const View1<float>&, const ConstView1<float>&,
                                           const View1<float>&, const View1<float>&, const AdamWParams&, float,
                                           long long);

}  // namespace mantissa
