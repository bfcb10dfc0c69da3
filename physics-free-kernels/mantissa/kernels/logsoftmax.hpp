#pragma once
// Log-softmax over the vocabulary, gathered at the target token, with the row's entropy; all in
// fp32 from logits of storage type T. Per row, with m = max_v x_v and e_v = exp(x_v - m):
//   S = sum_v e_v,  lse = m + log S,  logp = x_target - lse,
//   entropy = -sum_v p_v log p_v = log S - (sum_v e_v (x_v - m)) / S
// (two passes: the max, then S and the shifted sum in one team reduction). Every term of the
// shifted sum is <= 0, so it has no cancellation.
// targets[n] < 0 means "no target": logp = 0 and a zero gradient row (the entropy is still
// computed). A target >= V reads no memory: logp and its gradient row are NaN (loud).
#include <stdexcept>

#include "mantissa/kernels/team.hpp"
#include "mantissa/kernels/types.hpp"

namespace mantissa {

namespace detail {
// S and the shifted sum of one row, reduced together.
struct ExpSums {
  float sum_exp;      // sum_v exp(x_v - m)
  float sum_exp_dev;  // sum_v exp(x_v - m) (x_v - m)
};

// Reducer for ExpSums, shaped like Kokkos::Sum (3.4 and 4.x nested reductions).
struct ExpSumsReducer {
  using reducer = ExpSumsReducer;
  using value_type = ExpSums;
  using result_view_type = Kokkos::View<value_type, Kokkos::HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;

  KOKKOS_INLINE_FUNCTION explicit ExpSumsReducer(value_type& value) : value_(&value) {}
  MANTISSA_VOLATILE_JOIN(value_type, dst, src, {
    dst.sum_exp += src.sum_exp;
    dst.sum_exp_dev += src.sum_exp_dev;
  })
  KOKKOS_INLINE_FUNCTION void init(value_type& v) const {
    v.sum_exp = 0.0f;
    v.sum_exp_dev = 0.0f;
  }
  KOKKOS_INLINE_FUNCTION value_type& reference() const { return *value_.data(); }
  KOKKOS_INLINE_FUNCTION result_view_type view() const { return value_; }
  KOKKOS_INLINE_FUNCTION bool references_scalar() const { return true; }

 private:
  result_view_type value_;
};
}  // namespace detail

// logp = log softmax(logits)[target], entropy, lse      logits (N,V), targets (N) -> logp, entropy, lse (N) fp32
template <class T, class Exec>
void logsoftmax_gather_forward(const Exec& space, const ConstView2<T>& logits, const ConstView1<int>& targets,
                               const View1<float>& logp, const View1<float>& entropy, const View1<float>& lse) {
  const int n_rows = static_cast<int>(logits.extent(0));
  const int vocab = static_cast<int>(logits.extent(1));
  if (targets.extent(0) != logits.extent(0) || logp.extent(0) != logits.extent(0) ||
      entropy.extent(0) != logits.extent(0) || lse.extent(0) != logits.extent(0))
    throw std::invalid_argument(
        "mantissa::logsoftmax_gather_forward: expected logits (N,V), targets/logp/entropy/lse (N)");
  using policy = Kokkos::TeamPolicy<Exec>;
  using member = typename policy::member_type;
  Kokkos::parallel_for(
      "mantissa::logsoftmax::forward", auto_team_policy(space, n_rows), KOKKOS_LAMBDA(const member& team) {
        const int n = team.league_rank();
        float m = 0.0f;
        Kokkos::parallel_reduce(
            Kokkos::TeamThreadRange(team, vocab),
            [&](const int v, float& acc) { acc = kmax(acc, to_float(logits(n, v))); }, Kokkos::Max<float>(m));
        detail::ExpSums sums{0.0f, 0.0f};
        Kokkos::parallel_reduce(
            Kokkos::TeamThreadRange(team, vocab),
            [&](const int v, detail::ExpSums& acc) {
              const float dev = to_float(logits(n, v)) - m;
              const float e = kmath::exp(dev);
              acc.sum_exp += e;
              acc.sum_exp_dev += e * dev;
            },
            detail::ExpSumsReducer(sums));
        Kokkos::single(Kokkos::PerTeam(team), [&]() {
          const float log_s = kmath::log(sums.sum_exp);
          const float row_lse = m + log_s;
          const int t = targets(n);
          lse(n) = row_lse;
          entropy(n) = log_s - sums.sum_exp_dev / sums.sum_exp;
          logp(n) = t < 0 ? 0.0f : (t < vocab ? to_float(logits(n, t)) - row_lse : bits_float(0x7fc00000u));  // NaN
        });
      });
}

// dlogits[n,v] = dlogp[n] (1[v == target] - exp(x - lse)), 0 rows without target   logits (N,V) -> dlogits (N,V)
template <class T, class Exec>
void logsoftmax_gather_backward(const Exec& space, const ConstView2<T>& logits, const ConstView1<int>& targets,
                                const ConstView1<float>& lse, const ConstView1<float>& dlogp, const View2<T>& dlogits) {
  const int n_rows = static_cast<int>(logits.extent(0));
  const int vocab = static_cast<int>(logits.extent(1));
  if (targets.extent(0) != logits.extent(0) || lse.extent(0) != logits.extent(0) ||
      dlogp.extent(0) != logits.extent(0) || dlogits.extent(0) != logits.extent(0) ||
      dlogits.extent(1) != logits.extent(1))
    throw std::invalid_argument(
        "mantissa::logsoftmax_gather_backward: expected logits, dlogits (N,V), targets/lse/dlogp (N)");
  using policy = Kokkos::TeamPolicy<Exec>;
  using member = typename policy::member_type;
  Kokkos::parallel_for(
      "mantissa::logsoftmax::backward", auto_team_policy(space, n_rows), KOKKOS_LAMBDA(const member& team) {
        const int n = team.league_rank();
        const int t = targets(n);
        const float row_lse = lse(n);
        // t >= V: NaN scale (loud); t < 0: no target, zero row.
        const float scale = t < 0 ? 0.0f : (t < vocab ? dlogp(n) : bits_float(0x7fc00000u));
        Kokkos::parallel_for(Kokkos::TeamThreadRange(team, vocab), [&](const int v) {
          const float p = kmath::exp(to_float(logits(n, v)) - row_lse);
          dlogits(n, v) = from_float<T>(scale * ((v == t ? 1.0f : 0.0f) - p));
        });
      });
}

#define MANTISSA_LOGSOFTMAX_DECLARE(EXTERN, T)                                                                    \
  EXTERN template void logsoftmax_gather_forward<T, ExecSpace>(const ExecSpace&, const ConstView2<T>&,            \
                                                               const ConstView1<int>&, const View1<float>&,       \
                                                               const View1<float>&, const View1<float>&);         \
  EXTERN template void logsoftmax_gather_backward<T, ExecSpace>(const ExecSpace&, const ConstView2<T>&,           \
                                                                const ConstView1<int>&, const ConstView1<float>&, \
                                                                const ConstView1<float>&, const View2<T>&);
MANTISSA_LOGSOFTMAX_DECLARE(extern, float)
MANTISSA_LOGSOFTMAX_DECLARE(extern, fp16_t)
MANTISSA_LOGSOFTMAX_DECLARE(extern, bf16_t)

}  // namespace mantissa
