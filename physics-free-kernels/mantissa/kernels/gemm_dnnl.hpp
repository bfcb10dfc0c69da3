#pragma once
// Internal to gemm.cpp and gemm_dnnl.cpp: the entry points of gemm's oneDNN route (see gemm.hpp,
// "Routes"). No oneDNN header here: only gemm_dnnl.cpp includes <oneapi/dnnl/dnnl.hpp>, and it
// compiles to the stubs below' fallbacks unless the build found oneDNN (MANTISSA_HAVE_ONEDNN).
#include <cstddef>

#include "mantissa/kernels/gemm.hpp"

namespace mantissa::gemm_detail {

enum class Dt { f32, bf16, f16 };

// op(X) is rows x cols; X itself is stored row-major with leading dimension ld: X = op(X) when
// !trans, X = op(X)^T (cols x rows) when trans.
struct DnnlMatrix {
  const void* data;
  Dt dt;
  std::size_t rows, cols, ld;
  bool trans;
};

// The route one call of element type `a` takes (GemmRoute::automatic resolved, unavailable forced
// routes replaced by the automatic choice): blas, onednn_fp32 or onednn_native.
GemmRoute resolve_host_route(Dt a);

// C = alpha op(A) op(B) + beta C (C not read when beta == 0), fp32 accumulation, one rounding to
// dtc. `threads`: the execution space's concurrency (oneDNN's OpenMP threads are set to it).
// Records the implementation for gemm_last_implementation(); `widened` says that A and B are fp32
// copies of 16-bit operands. Returns false (and computes nothing) if oneDNN could not take it.
bool onednn_matmul(std::size_t m, std::size_t n, std::size_t k, float alpha, const DnnlMatrix& a, const DnnlMatrix& b,
                   float beta, void* c, Dt dtc, std::size_t ldc, int threads, const char* widened);

// Records that the BLAS ran (for gemm_last_implementation()).
void note_blas_route(const char* what);

}  // namespace mantissa::gemm_detail
