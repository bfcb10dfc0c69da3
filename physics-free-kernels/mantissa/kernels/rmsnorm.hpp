#pragma once
// RMSNorm (Llama): y = x * rstd * w, rstd = 1/sqrt(mean(x^2) + eps). The statistic rstd is fp32
// and saved for the backward pass; y is rounded once to T.
//
// Backward, with r = rstd and dot_n = sum_j dy_nj w_j x_nj:
//   dx_nj = r_n w_j dy_nj - r_n^3 / D * x_nj * dot_n,     dw_j = sum_n dy_nj x_nj r_n.
// One team handles a fixed chunk of 16 rows (the partition does not depend on the thread count):
// per row a team reduction for dot_n, then dx; the chunk's dw partial sums (rows in order) sit in
// team scratch and are written to a (chunks, D) buffer. A second kernel adds the partials to dw
// chunk by chunk in ascending order, per column. No atomics: dw has the same bits run to run on
// every backend, and on Serial the same bits as the former per-chunk atomic adds (same order).
#include <cstddef>
#include <stdexcept>

#include "mantissa/kernels/team.hpp"
#include "mantissa/kernels/types.hpp"

namespace mantissa {

// y = round_T(x * rstd * w), rstd = 1/sqrt(mean_j x_j^2 + eps)     x (N,D), w (D) -> y (N,D), rstd (N)
template <class T, class Exec>
void rmsnorm_forward(const Exec& space, const ConstView2<T>& x, const ConstView1<T>& w, float eps, const View2<T>& y,
                     const View1<float>& rstd) {
  const int n_rows = static_cast<int>(x.extent(0));
  const int dim = static_cast<int>(x.extent(1));
  if (w.extent(0) != x.extent(1) || y.extent(0) != x.extent(0) || y.extent(1) != x.extent(1) ||
      rstd.extent(0) != x.extent(0))
    throw std::invalid_argument("mantissa::rmsnorm_forward: expected x (N,D), w (D), y (N,D), rstd (N)");
  using policy = Kokkos::TeamPolicy<Exec>;
  using member = typename policy::member_type;
  Kokkos::parallel_for(
      "mantissa::rmsnorm::forward", auto_team_policy(space, n_rows), KOKKOS_LAMBDA(const member& team) {
        const int n = team.league_rank();
        float sum_sq = 0.0f;
        Kokkos::parallel_reduce(
            Kokkos::TeamThreadRange(team, dim),
            [&](const int j, float& acc) {
              const float v = to_float(x(n, j));
              acc += v * v;
            },
            sum_sq);
        const float r = 1.0f / kmath::sqrt(sum_sq / static_cast<float>(dim) + eps);
        Kokkos::parallel_for(Kokkos::TeamThreadRange(team, dim),
                             [&](const int j) { y(n, j) = from_float<T>(to_float(x(n, j)) * r * to_float(w(j))); });
        Kokkos::single(Kokkos::PerTeam(team), [&]() { rstd(n) = r; });
      });
}

// dx (= or +=) r w dy - r^3/D x dot, dw += sum_n dy x r    x, dy (N,D), w (D), rstd (N) -> dx (N,D), dw (D) fp32
template <class T, class Exec>
void rmsnorm_backward(const Exec& space, const ConstView2<T>& x, const ConstView1<T>& w, const ConstView1<float>& rstd,
                      const ConstView2<T>& dy, const View2<T>& dx, const View1<float>& dw, bool accumulate_dx) {
  const int n_rows = static_cast<int>(x.extent(0));
  const int dim = static_cast<int>(x.extent(1));
  if (w.extent(0) != x.extent(1) || rstd.extent(0) != x.extent(0) || dy.extent(0) != x.extent(0) ||
      dy.extent(1) != x.extent(1) || dx.extent(0) != x.extent(0) || dx.extent(1) != x.extent(1) ||
      dw.extent(0) != x.extent(1))
    throw std::invalid_argument("mantissa::rmsnorm_backward: expected x, dy, dx (N,D), w (D), rstd (N), dw (D)");
  constexpr int rows_per_team = 16;
  using policy = Kokkos::TeamPolicy<Exec>;
  using member = typename policy::member_type;
  using scratch_view =
      Kokkos::View<float*, typename Exec::scratch_memory_space, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
  // Per team: dw_part, and fp32 copies of w and of the current row's x and dy (converted once per
  // element in loops that vectorise, instead of inside the serial dot product; same values, same
  // operations, so the same bits).
  const std::size_t scratch_bytes = 4 * scratch_view::shmem_size(dim);
  const int level = static_cast<int>(scratch_bytes) <= policy::scratch_size_max(0) ? 0 : 1;
  const int league = (n_rows + rows_per_team - 1) / rows_per_team;
  const auto team_policy = auto_team_policy(space, league).set_scratch_size(level, Kokkos::PerTeam(scratch_bytes));
  const View2<float> partial = make_uninit<View2<float>>("mantissa::rmsnorm::dw_partial", league, dim);
  Kokkos::parallel_for(
      "mantissa::rmsnorm::backward", team_policy, KOKKOS_LAMBDA(const member& team) {
        scratch_view dw_part(team.team_scratch(level), dim), wf(team.team_scratch(level), dim);
        scratch_view xf(team.team_scratch(level), dim), gf(team.team_scratch(level), dim);
        Kokkos::parallel_for(Kokkos::TeamThreadRange(team, dim), [&](const int j) {
          dw_part(j) = 0.0f;
          wf(j) = to_float(w(j));
        });
        const int n_begin = team.league_rank() * rows_per_team;
        const int n_end = kmin(n_begin + rows_per_team, n_rows);
        for (int n = n_begin; n < n_end; ++n) {
          team.team_barrier();  // (the previous row's readers are done)
          Kokkos::parallel_for(Kokkos::TeamThreadRange(team, dim), [&](const int j) {
            xf(j) = to_float(x(n, j));
            gf(j) = to_float(dy(n, j));
          });
          team.team_barrier();
          const float r = rstd(n);
          float dot = 0.0f;
          Kokkos::parallel_reduce(
              Kokkos::TeamThreadRange(team, dim), [&](const int j, float& acc) { acc += gf(j) * wf(j) * xf(j); }, dot);
          const float c = r * r * r * dot / static_cast<float>(dim);
          Kokkos::parallel_for(Kokkos::TeamThreadRange(team, dim), [&](const int j) {
            const float xj = xf(j);
            const float g = gf(j);
            const float grad = r * wf(j) * g - c * xj;
            dx(n, j) = from_float<T>(accumulate_dx ? to_float(dx(n, j)) + grad : grad);
            dw_part(j) += g * xj * r;  // rows in order: the barrier above separates row n from n+1
          });
        }
        team.team_barrier();
        const int c = team.league_rank();
        Kokkos::parallel_for(Kokkos::TeamThreadRange(team, dim), [&](const int j) { partial(c, j) = dw_part(j); });
      });
  // dw_j += partial_0j, += partial_1j, ... in chunk order (fixed, independent of threads and teams).
  Kokkos::parallel_for(
      "mantissa::rmsnorm::backward_dw", Kokkos::RangePolicy<Exec>(space, 0, dim), KOKKOS_LAMBDA(const int j) {
        float acc = dw(j);
        for (int c = 0; c < league; ++c) acc += partial(c, j);
        dw(j) = acc;
      });
}

#define MANTISSA_RMSNORM_DECLARE(EXTERN, T)                                                                            \
  EXTERN template void rmsnorm_forward<T, ExecSpace>(const ExecSpace&, const ConstView2<T>&, const ConstView1<T>&,     \
                                                     float, const View2<T>&, const View1<float>&);                     \
  EXTERN template void rmsnorm_backward<T, ExecSpace>(const ExecSpace&, const ConstView2<T>&, const ConstView1<T>&,    \
                                                      const ConstView1<float>&, const ConstView2<T>&, const View2<T>&, \
                                                      const View1<float>&, bool);
MANTISSA_RMSNORM_DECLARE(extern, float)
MANTISSA_RMSNORM_DECLARE(extern, fp16_t)
MANTISSA_RMSNORM_DECLARE(extern, bf16_t)

}  // namespace mantissa
