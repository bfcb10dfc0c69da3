#pragma once
// decode_gemm: the rollout engine's DEFAULT-mode linear layers on host CPUs with AVX-512 (consistent
// mode keeps linear_decode, decode.hpp): one GEMM over all active rows, y = round_T(x W^T (+ res)),
// reading each packed weight panel once per call instead of once per row.
//   x (R, K) of T, W (N, K) of T packed once per weight load (decode_gemm_pack: the exact fp32
//   values of W in column panels of decode_gemm_panel, zero-padded), residual (R, N) or empty,
//   y (R, N) of T.
// Per output element (D1g in decode.hpp's list): acc = 0; for k = 0 .. K-1 ascending:
// acc = fma(x[k], w[k], acc) (one fp32 fused multiply-add, one rounding, per step); then
// y = round_T(acc + residual) in fp32 (D2: residual fused, one rounding to T) or round_T(acc).
// Every element runs that sequence whichever register tile it falls in (tiles of up to 8 rows x
// 32 columns; a partial tile runs the same per-row sequence), so results are batch-invariant (D3):
// a row's y does not depend on the other rows of the call. The order is NOT the consistent mode's
// split-K order (linear_decode) nor the training engine's (gemm.hpp): an honest third one, as an
// inference engine's decode GEMM has.
// decode_gemm_reference computes the same sequence with std::fmaf, one element at a time (tests).
// Not available (decode_gemm_available() false) on device builds, non-x86 CPUs or x86 CPUs without
// AVX-512F: the rollout engine then runs linear_decode in the default mode too.
#include "mantissa/kernels/types.hpp"

namespace mantissa {

inline constexpr int decode_gemm_panel = 32;  // output columns per packed panel (two AVX-512 vectors)

struct DecodeGemmWeights {
  View1<float> w;  // [ceil(N / panel)][K][panel]: w[(p K + k) panel + c] = W(p panel + c, k), 0 past N
  int n = 0, k = 0;  // output columns N (SwiGLU-packed: F), reduction length K
  bool swiglu = false;  // packed by decode_gemm_pack_swiglu: panel p = gate rows 16p.., then up rows F + 16p..
};

// Whether decode_gemm can run here (host build, CPU with AVX-512F).
bool decode_gemm_available();

// Packs W (N, K) into out (reallocated only when it grows).
template <class T, class Exec>
void decode_gemm_pack(const Exec& space, const ConstView2<T>& W, DecodeGemmWeights& out);

// The gate/up projection Wgu (2F, K) packed for decode_gemm_swiglu: each panel holds 16 gate rows
// and the 16 up rows of the same outputs, so the SwiGLU runs in the GEMM's epilogue.
template <class T, class Exec>
void decode_gemm_pack_swiglu(const Exec& space, const ConstView2<T>& Wgu, DecodeGemmWeights& out);

// s = swiglu(round_T(x Wgu^T)), fused: per output j, g = round_T(acc_j), u = round_T(acc_{F+j}) (the
// accumulators as in decode_gemm), then s_j = round_T(g * (1 / (1 + exp_fp32(-g))) * u), the
// operations of swiglu_forward (swiglu.hpp): the same bits as decode_gemm into gu followed by
// swiglu_forward, without writing and re-reading gu.                  x (R,K), Wgu packed, s (R,F)
template <class T, class Exec>
void decode_gemm_swiglu(const Exec& space, const ConstView2<T>& x, const DecodeGemmWeights& Wgu, const View2<T>& s);

// y = round_T(x W^T + residual) (residual empty: round_T(x W^T))       x (R,K), W (N,K) packed, y (R,N)
template <class T, class Exec>
void decode_gemm(const Exec& space, const ConstView2<T>& x, const DecodeGemmWeights& W, const ConstView2<T>& residual,
                 const View2<T>& y);

// The same operations one element at a time with std::fmaf (host views; for tests).
template <class T>
void decode_gemm_reference(const ConstView2<T>& x, const ConstView2<T>& W, const ConstView2<T>& residual,
                           const View2<T>& y);

#define MANTISSA_DECODE_GEMM_DECLARE(EXTERN, T)                                                                     \
  EXTERN template void decode_gemm_pack<T, ExecSpace>(const ExecSpace&, const ConstView2<T>&, DecodeGemmWeights&); \
  EXTERN template void decode_gemm<T, ExecSpace>(const ExecSpace&, const ConstView2<T>&, const DecodeGemmWeights&,  \
                                                 const ConstView2<T>&, const View2<T>&);                            \
  EXTERN template void decode_gemm_pack_swiglu<T, ExecSpace>(const ExecSpace&, const ConstView2<T>&,                \
                                                             DecodeGemmWeights&);                                   \
  EXTERN template void decode_gemm_swiglu<T, ExecSpace>(const ExecSpace&, const ConstView2<T>&,                     \
                                                        const DecodeGemmWeights&, const View2<T>&);                 \
  EXTERN template void decode_gemm_reference<T>(const ConstView2<T>&, const ConstView2<T>&, const ConstView2<T>&,    \
                                                const View2<T>&);
MANTISSA_DECODE_GEMM_DECLARE(extern, float)
MANTISSA_DECODE_GEMM_DECLARE(extern, bf16_t)
MANTISSA_DECODE_GEMM_DECLARE(extern, fp16_t)

}  // namespace mantissa
