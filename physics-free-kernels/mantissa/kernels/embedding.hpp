#pragma once
// Token embedding: a row gather (forward) and a row scatter-add (backward).
// A token outside [0, V) reads no memory: its forward row is NaN (loud) and its backward row is
// skipped, so a bad token id shows up in the loss instead of corrupting memory.
#include <stdexcept>

#include "mantissa/kernels/team.hpp"
#include "mantissa/kernels/types.hpp"

namespace mantissa {

// out[n,:] = table[tokens[n],:]                        tokens (N), table (V,D) -> out (N,D)
template <class T, class Exec>
void embedding_forward(const Exec& space, const ConstView1<int>& tokens, const ConstView2<T>& table,
                       const View2<T>& out) {
  const int n_rows = static_cast<int>(tokens.extent(0));
  const int vocab = static_cast<int>(table.extent(0));
  const int dim = static_cast<int>(table.extent(1));
  if (out.extent(0) != tokens.extent(0) || out.extent(1) != table.extent(1))
    throw std::invalid_argument("mantissa::embedding_forward: out must be (N, D)");
  using policy = Kokkos::TeamPolicy<Exec>;
  using member = typename policy::member_type;
  Kokkos::parallel_for(
      "mantissa::embedding::forward", auto_team_policy(space, n_rows), KOKKOS_LAMBDA(const member& team) {
        const int n = team.league_rank();
        const int tok = tokens(n);
        const bool valid = tok >= 0 && tok < vocab;  // else a quiet-NaN row (0x7fc00000)
        Kokkos::parallel_for(Kokkos::TeamThreadRange(team, dim), [&](const int d) {
          out(n, d) = valid ? table(tok, d) : from_float<T>(bits_float(0x7fc00000u));
        });
      });
}

// dtable[tokens[n],:] += dout[n,:] in fp32, n ascending              tokens (N), dout (N,D) -> dtable (V,D)
// Repeated tokens add to the same row. Instead of atomics (whose order, hence bits, changes from run
// to run on parallel backends) each column d is owned by one thread, which walks n = 0..N-1 in order:
// the result is the Serial order's bits on every backend. Parallelism is D (the model width).
template <class T, class Exec>
void embedding_backward(const Exec& space, const ConstView1<int>& tokens, const ConstView2<T>& dout,
                        const View2<float>& dtable) {
  const int n_rows = static_cast<int>(tokens.extent(0));
  const int vocab = static_cast<int>(dtable.extent(0));
  const int dim = static_cast<int>(dtable.extent(1));
  if (dout.extent(0) != tokens.extent(0) || dout.extent(1) != dtable.extent(1))
    throw std::invalid_argument("mantissa::embedding_backward: dout must be (N, D) with D = dtable's columns");
  Kokkos::parallel_for(
      "mantissa::embedding::backward", Kokkos::RangePolicy<Exec>(space, 0, dim), KOKKOS_LAMBDA(const int d) {
        for (int n = 0; n < n_rows; ++n) {
          const int tok = tokens(n);
          if (tok < 0 || tok >= vocab) continue;
          dtable(tok, d) += to_float(dout(n, d));
        }
      });
}

#define MANTISSA_EMBEDDING_DECLARE(EXTERN, T)                                                                          \
  EXTERN template void embedding_forward<T, ExecSpace>(const ExecSpace&, const ConstView1<int>&, const ConstView2<T>&, \
                                                       const View2<T>&);                                               \
  EXTERN template void embedding_backward<T, ExecSpace>(const ExecSpace&, const ConstView1<int>&,                      \
                                                        const ConstView2<T>&, const View2<float>&);
MANTISSA_EMBEDDING_DECLARE(extern, float)
MANTISSA_EMBEDDING_DECLARE(extern, fp16_t)
MANTISSA_EMBEDDING_DECLARE(extern, bf16_t)

}  // namespace mantissa
