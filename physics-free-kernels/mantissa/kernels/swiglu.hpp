#pragma once
// SwiGLU of the fused gate/up projection: out = silu(gate) * up, silu(g) = g * sigmoid(g).
// With s = sigmoid(g) = 1 / (1 + exp(-g)), all in fp32 and each output rounded once to T:
//   out = g s u,   d gate = dout u s (1 + g (1 - s)),   d up = dout g s.
// exp is exp_fp32 (exp.hpp: vectorisable, portable bits). exp(-g) overflowing to
// +Inf for very negative g gives s = 0 and finite results.
#include <stdexcept>

#include "mantissa/kernels/exp.hpp"
#include "mantissa/kernels/types.hpp"

namespace mantissa {

// out = silu(gu[:, :F]) * gu[:, F:]                          gu (N,2F) -> out (N,F)
template <class T, class Exec>
void swiglu_forward(const Exec& space, const ConstView2<T>& gu, const View2<T>& out) {
  const int n_rows = static_cast<int>(gu.extent(0));
  const int f = static_cast<int>(out.extent(1));
  if (out.extent(0) != gu.extent(0) || gu.extent(1) != 2 * out.extent(1))
    throw std::invalid_argument("mantissa::swiglu_forward: expected gu (N,2F), out (N,F)");
  using policy = Kokkos::TeamPolicy<Exec>;
  using member = typename policy::member_type;
  Kokkos::parallel_for(
      "mantissa::swiglu::forward", policy(space, n_rows, Kokkos::AUTO), KOKKOS_LAMBDA(const member& team) {
        const int n = team.league_rank();
        Kokkos::parallel_for(Kokkos::TeamThreadRange(team, f), [&](const int j) {
          const float g = to_float(gu(n, j));
          const float u = to_float(gu(n, f + j));
          const float s = 1.0f / (1.0f + exp_fp32(-g));
          out(n, j) = from_float<T>(g * s * u);
        });
      });
}

// dgu[:, :F] = dout u s (1 + g (1 - s)), dgu[:, F:] = dout g s       gu (N,2F), dout (N,F) -> dgu (N,2F)
template <class T, class Exec>
void swiglu_backward(const Exec& space, const ConstView2<T>& gu, const ConstView2<T>& dout, const View2<T>& dgu) {
  const int n_rows = static_cast<int>(gu.extent(0));
  const int f = static_cast<int>(dout.extent(1));
  if (dout.extent(0) != gu.extent(0) || gu.extent(1) != 2 * dout.extent(1) || dgu.extent(0) != gu.extent(0) ||
      dgu.extent(1) != gu.extent(1))
    throw std::invalid_argument("mantissa::swiglu_backward: expected gu (N,2F), dout (N,F), dgu (N,2F)");
  using policy = Kokkos::TeamPolicy<Exec>;
  using member = typename policy::member_type;
  Kokkos::parallel_for(
      "mantissa::swiglu::backward", policy(space, n_rows, Kokkos::AUTO), KOKKOS_LAMBDA(const member& team) {
        const int n = team.league_rank();
        Kokkos::parallel_for(Kokkos::TeamThreadRange(team, f), [&](const int j) {
          const float g = to_float(gu(n, j));
          const float u = to_float(gu(n, f + j));
          const float d = to_float(dout(n, j));
          const float s = 1.0f / (1.0f + exp_fp32(-g));
          dgu(n, j) = from_float<T>(d * u * s * (1.0f + g * (1.0f - s)));
          dgu(n, f + j) = from_float<T>(d * g * s);
        });
      });
}

#define MANTISSA_SWIGLU_DECLARE(EXTERN, T)                                                                         \
  EXTERN template void swiglu_forward<T, ExecSpace>(const ExecSpace&, const ConstView2<T>&, const View2<T>&);      \
  EXTERN template void swiglu_backward<T, ExecSpace>(const ExecSpace&, const ConstView2<T>&, const ConstView2<T>&, \
                                                     const View2<T>&);
MANTISSA_SWIGLU_DECLARE(extern, float)
MANTISSA_SWIGLU_DECLARE(extern, fp16_t)
MANTISSA_SWIGLU_DECLARE(extern, bf16_t)

}  // namespace mantissa
