#pragma once
// Matrix multiply with tensor-core semantics for the model's projections (weights W are [out, in]
// row-major, so y = x W^T is gemm('N', 'T', 1, x, W, 0, y)):
//   C[M,N] = alpha * op(A) * op(B) + beta * C,   op = 'N' (as is) or 'T' (transposed),
// with A and B values of their storage types (exact in fp32), every product and sum in fp32, and
// alpha*AB + beta*C formed in fp32 and rounded ONCE to TC.
//
// Routes (gemm.cpp; the host route is chosen per call at run time, gemm_dnnl.cpp):
//  - onednn_fp32 (host builds linked with oneDNN, on CPUs with AVX-512 (avx512_core); the automatic
//    choice there): oneDNN's fp32 matmul (brgemm AVX-512 kernels) on the operands themselves for
//    float, else on their exact fp32 widenings (as the BLAS route below: same work buffers); C
//    rounded once to TC. Debian 12's OpenBLAS 0.3.21 does not know Sapphire/Emerald Rapids and
//    runs its SSE3 "Prescott" kernels there (12 vs 62-68 GFLOP/s measured, docs/results.md).
//  - onednn_native (same builds, where oneDNN has a matmul on 16-bit inputs for this CPU: bf16 with
//    AVX512-BF16 or AMX; fp16 none in oneDNN 2.6, later versions with AVX512-FP16/AMX-FP16): the
//    16-bit operands exactly as stored, fp32 accumulation (vdpbf16ps / AMX tdpbf16ps), alpha*AB +
//    beta*C in fp32 and ONE rounding to TC. Differences from the fp32 routes: the bf16 dot-product
//    instructions treat bf16 subnormal inputs (|x| < 2^-126) as 0 and flush subnormal results of
//    their fp32 sums to 0 (DAZ/FTZ in hardware), and add two products per step. Chosen
//    automatically only with AMX: with AVX512-BF16 alone it measured slower than onednn_fp32.
//  - blas (every other CPU, builds without oneDNN, or forced):
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
#include <string>

#include "mantissa/kernels/types.hpp"

namespace mantissa {

// C = alpha op(A) op(B) + beta C, fp32 compute, one rounding to TC    op(A) (M,K), op(B) (K,N), C (M,N)
// transA/transB: 'N'/'n' or 'T'/'t'. With beta == 0, C is not read (NaN in C does not propagate).
template <class TA, class TB, class TC, class Exec>
void gemm(const Exec& space, char transA, char transB, float alpha, const ConstView2<TA>& A, const ConstView2<TB>& B,
          float beta, const View2<TC>& C);

// Frees gemm's fp32 work buffers now (they are also freed at Kokkos::finalize).
void gemm_release_workspace();

// The host route (ignored by CUDA builds with cuBLAS). automatic: as described above. A forced
// route that this build or CPU lacks for a call's element type is replaced by the automatic one;
// gemm_last_implementation() tells what ran. Initial value: the environment variable
// MANTISSA_GEMM_ROUTE = auto | blas | onednn_fp32 | onednn_native (unset: auto).
enum class GemmRoute { automatic, blas, onednn_fp32, onednn_native };
void set_gemm_route(GemmRoute r);
GemmRoute gemm_route();
const char* gemm_route_name(GemmRoute r);
// Whether route r can run gemm calls whose A and B are of precision p here (build and CPU).
bool gemm_route_available(GemmRoute r, Precision p);
// What the last host gemm call ran, e.g. "openblas (fp32 of widened bf16)" or
// "onednn 2.6.3 brg:avx512_core_bf16" ("none" before the first call).
const char* gemm_last_implementation();
// Every implementation host gemm calls ran in this process, with call counts (for benchmarks).
std::string gemm_implementations_used();

#define MANTISSA_GEMM_DECLARE(EXTERN, TA, TB, TC)                                                              \
  EXTERN template void gemm<TA, TB, TC, ExecSpace>(const ExecSpace&, char, char, float, const ConstView2<TA>&, \
                                                   const ConstView2<TB>&, float, const View2<TC>&);
MANTISSA_GEMM_DECLARE(extern, float, float, float)
MANTISSA_GEMM_DECLARE(extern, bf16_t, bf16_t, bf16_t)
MANTISSA_GEMM_DECLARE(extern, bf16_t, bf16_t, float)
MANTISSA_GEMM_DECLARE(extern, fp16_t, fp16_t, fp16_t)
MANTISSA_GEMM_DECLARE(extern, fp16_t, fp16_t, float)

}  // namespace mantissa
