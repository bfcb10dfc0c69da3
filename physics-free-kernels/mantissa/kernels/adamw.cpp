#include "mantissa/kernels/adamw.hpp"

#include <cmath>

namespace mantissa {

namespace {
// A reduction over a custom value type: the compat macro supplies the volatile join 3.x needs.
struct GradStatsFunctor {
  using value_type = GradStats;
  ConstView1<float> g;
  KOKKOS_INLINE_FUNCTION void init(value_type& v) const {
    v.sumsq = 0.0;
    v.nonfinite = 0;
  }
  KOKKOS_INLINE_FUNCTION void operator()(const std::size_t i, value_type& v) const {
    const float x = g(i);
    if (kmath::isfinite(x)) {
      v.sumsq += static_cast<double>(x) * static_cast<double>(x);
    } else {
      v.nonfinite += 1;
    }
  }
  MANTISSA_VOLATILE_JOIN(value_type, dst, src, {
    dst.sumsq += src.sumsq;
    dst.nonfinite += src.nonfinite;
  })
};
}  // namespace

template <class Exec>
GradStats grad_stats(const Exec& space, const ConstView1<float>& g) {
  GradStats out;
  Kokkos::parallel_reduce("mantissa::optimizer::grad_stats", Kokkos::RangePolicy<Exec>(space, 0, g.extent(0)),
                          GradStatsFunctor{g}, out);
  space.fence();
  return out;
}

template <class Exec>
void adamw_step(const Exec& space, const View1<float>& w, const ConstView1<float>& g, const View1<float>& m,
                const View1<float>& v, const AdamWParams& p, float grad_mult, long long step) {
  const float bc1 = 1.0f - static_cast<float>(std::pow(static_cast<double>(p.beta1), static_cast<double>(step)));
  const float bc2 = 1.0f - static_cast<float>(std::pow(static_cast<double>(p.beta2), static_cast<double>(step)));
  const AdamWParams q = p;
  Kokkos::parallel_for(
      "mantissa::optimizer::adamw", Kokkos::RangePolicy<Exec>(space, 0, w.extent(0)),
      KOKKOS_LAMBDA(const std::size_t i) {
        const float gi = g(i) * grad_mult;
        const float mi = q.beta1 * m(i) + (1.0f - q.beta1) * gi;
        const float vi = q.beta2 * v(i) + (1.0f - q.beta2) * gi * gi;
        m(i) = mi;
        v(i) = vi;
        const float update = (mi / bc1) / (kmath::sqrt(vi / bc2) + q.eps);
        w(i) = w(i) - q.lr * (update + q.weight_decay * w(i));
      });
}

template GradStats grad_stats<ExecSpace>(const ExecSpace&, const ConstView1<float>&);
template void adamw_step<ExecSpace>(const ExecSpace&, const View1<float>&, const ConstView1<float>&,
                                    const View1<float>&, const View1<float>&, const AdamWParams&, float, long long);

}  // namespace mantissa
