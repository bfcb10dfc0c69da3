#pragma once
// Matrix multiply with tensor-core semantics for the model's projections (weights W are [out, in]
// row-major, so y = x W^T is gemm('N', 'T', 1, x, W, 0, y)):
//   C[M,N] = alpha * op(A) * op(B) + beta * C,   op = 'N' (as is) or 'T' (transposed),
// with A and B values of their storage types (exact in fp32), every product and sum in fp32, and
// alpha*AB + beta*C formed in fp32 and rounded ONCE to TC.
//
// Routes (gemm.cpp):
//  - TA = TB = TC = float: KokkosBlas::gemm on the Views themselves (the BLAS TPL: OpenBLAS here).
//  - otherwise: the 16-bit operands (and C when beta != 0 and TC is 16-bit) are widened into fp32
//    work buffers, the fp32 BLAS runs, and the fp32 result is rounded once to TC. The work buffers
//    are process-wide, grow to the largest call and are reused (no allocation once warm); they are
//    released by a Kokkos finalize hook. Calls must therefore not run concurrently on different
//    execution space instances.
//  - CUDA builds with MANTISSA_HAVE_CUBLAS (link CUDA::cublas and define it): cublasGemmEx with
//    fp16/bf16/fp32 inputs, fp32 compute (CUBLAS_COMPUTE_32F) and a TC output; it reads beta*C in
//    TC and rounds alpha*AB + beta*C once, the same semantics. Without the macro CUDA builds take
//    the widening route through KokkosBlas.
// Instantiated for (T,T,T) and (T,T,float), T in {float, bf16_t, fp16_t}, on mantissa::ExecSpace.
#include "mantissa/kernels/types.hpp"

namespace mantissa {

// C = alpha op(A) op(B) + beta C, fp32 compute, one rounding to TC    op(A) (M,K), op(B) (K,N), C (M,N)
// transA/transB: 'N'/'n' or 'T'/'t'. With beta == 0, C is not read (NaN in C does not propagate).
template <class TA, class TB, class TC, class Exec>
void gemm(const Exec& space, char transA, char transB, float alpha, const ConstView2<TA>& A, const ConstView2<TB>& B,
          float beta, const View2<TC>& C);

// Frees gemm's fp32 work buffers now (they are also freed at Kokkos::finalize).
void gemm_release_workspace();

#define MANTISSA_GEMM_DECLARE(EXTERN, TA, TB, TC)                                                              \
  EXTERN template void gemm<TA, TB, TC, ExecSpace>(const ExecSpace&, char, char, float, const ConstView2<TA>&, \
                                                   const ConstView2<TB>&, float, const View2<TC>&);
MANTISSA_GEMM_DECLARE(extern, float, float, float)
MANTISSA_GEMM_DECLARE(extern, bf16_t, bf16_t, bf16_t)
MANTISSA_GEMM_DECLARE(extern, bf16_t, bf16_t, float)
MANTISSA_GEMM_DECLARE(extern, fp16_t, fp16_t, fp16_t)
MANTISSA_GEMM_DECLARE(extern, fp16_t, fp16_t, float)

}  // namespace mantissa
