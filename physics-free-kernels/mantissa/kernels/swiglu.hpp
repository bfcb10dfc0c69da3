#pragma once
// SwiGLU of the fused gate/up projection: out = silu(gate) * up, silu(g) = g * sigmoid(g).
// With s = sigmoid(g) = 1 / (1 + exp(-g)), all in fp32 and each output rounded once to T:
//   out = g s u,   d gate = dout u s (1 + g (1 - s)),   d up = dout g s.
// exp is exp_fp32 (exp.hpp: vectorisable, portable bits). exp(-g) overflowing to
// +Inf for very negative g gives s = 0 and finite results.
#include <stdexcept>
#include <type_traits>

#include "mantissa/kernels/exp.hpp"
#include "mantissa/kernels/host_simd.hpp"
#include "mantissa/kernels/team.hpp"
#include "mantissa/kernels/types.hpp"

// Host builds: one work item per row, chunks of the row converted into fp32 arrays (F16C for fp16
// where the CPU has it, bit-exact with to_float / from_float, host_simd.hpp), the same fp32
// expressions in plain loops the compiler vectorises (exp_fp32 included), then rounded once to T:
// the bits of the team-loop path, which devices run.
#if defined(MANTISSA_HOST_SIMD) && !defined(KOKKOS_ENABLE_CUDA) && !defined(KOKKOS_ENABLE_HIP) && \
    !defined(KOKKOS_ENABLE_SYCL) && !defined(KOKKOS_ENABLE_OPENMPTARGET)
#define MANTISSA_SWIGLU_HOST_ROWS 1
#endif

namespace mantissa {

#if defined(MANTISSA_SWIGLU_HOST_ROWS)
namespace swiglu_detail {
inline constexpr int chunk = 64;
template <class T>
inline void load(const T* src, float* dst, int n) {
  if constexpr (std::is_same<T, fp16_t>::value) {
    if (host_avx_f16c()) return f16c_widen_row(src, dst, n);
  }
  for (int j = 0; j < n; ++j) dst[j] = to_float(src[j]);
}
template <class T>
inline void store(const float* src, T* dst, int n) {
  if constexpr (std::is_same<T, fp16_t>::value) {
    if (host_avx_f16c()) return f16c_round_row(src, dst, n);
  }
  for (int j = 0; j < n; ++j) dst[j] = from_float<T>(src[j]);
}
}  // namespace swiglu_detail
#endif

// out = silu(gu[:, :F]) * gu[:, F:]                          gu (N,2F) -> out (N,F)
template <class T, class Exec>
void swiglu_forward(const Exec& space, const ConstView2<T>& gu, const View2<T>& out) {
  const int n_rows = static_cast<int>(gu.extent(0));
  const int f = static_cast<int>(out.extent(1));
  if (out.extent(0) != gu.extent(0) || gu.extent(1) != 2 * out.extent(1))
    throw std::invalid_argument("mantissa::swiglu_forward: expected gu (N,2F), out (N,F)");
#if defined(MANTISSA_SWIGLU_HOST_ROWS)
  Kokkos::parallel_for(
      "mantissa::swiglu::forward", Kokkos::RangePolicy<Exec>(space, 0, n_rows), [=](const int n) {
        using namespace swiglu_detail;
        float g[chunk], u[chunk], o[chunk];
        for (int j0 = 0; j0 < f; j0 += chunk) {
          const int m = f - j0 < chunk ? f - j0 : chunk;
          load(&gu(n, j0), g, m);
          load(&gu(n, f + j0), u, m);
          for (int j = 0; j < m; ++j) {
            const float s = 1.0f / (1.0f + exp_fp32(-g[j]));
            o[j] = g[j] * s * u[j];
          }
          store(o, &out(n, j0), m);
        }
      });
  return;
#endif
  using policy = Kokkos::TeamPolicy<Exec>;
  using member = typename policy::member_type;
  Kokkos::parallel_for(
      "mantissa::swiglu::forward", auto_team_policy(space, n_rows), KOKKOS_LAMBDA(const member& team) {
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
#if defined(MANTISSA_SWIGLU_HOST_ROWS)
  Kokkos::parallel_for(
      "mantissa::swiglu::backward", Kokkos::RangePolicy<Exec>(space, 0, n_rows), [=](const int n) {
        using namespace swiglu_detail;
        float g[chunk], u[chunk], d[chunk], dg[chunk], du[chunk];
        for (int j0 = 0; j0 < f; j0 += chunk) {
          const int m = f - j0 < chunk ? f - j0 : chunk;
          load(&gu(n, j0), g, m);
          load(&gu(n, f + j0), u, m);
          load(&dout(n, j0), d, m);
          for (int j = 0; j < m; ++j) {
            const float s = 1.0f / (1.0f + exp_fp32(-g[j]));
            dg[j] = d[j] * u[j] * s * (1.0f + g[j] * (1.0f - s));
            du[j] = d[j] * g[j] * s;
          }
          store(dg, &dgu(n, j0), m);
          store(du, &dgu(n, f + j0), m);
        }
      });
  return;
#endif
  using policy = Kokkos::TeamPolicy<Exec>;
  using member = typename policy::member_type;
  Kokkos::parallel_for(
      "mantissa::swiglu::backward", auto_team_policy(space, n_rows), KOKKOS_LAMBDA(const member& team) {
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
