// gemm: fp32 BLAS (Kokkos Kernels -> OpenBLAS) or oneDNN (gemm_dnnl.cpp) with widening of 16-bit
// operands and one rounding of the result, oneDNN's native 16-bit matmul where it pays, and
// cublasGemmEx on CUDA builds that enable it. See gemm.hpp for the semantics and the routes.
#include "mantissa/kernels/gemm.hpp"

#include <Kokkos_Core.hpp>

#include <KokkosBlas3_gemm.hpp>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <type_traits>

#if defined(KOKKOS_ENABLE_CUDA) && defined(MANTISSA_HAVE_CUBLAS)
#include <cublas_v2.h>
#endif

// Host-only builds on x86-64: fp16 rows convert with F16C (checked at run time, host_simd.hpp) instead
// of the scalar conversion, which made the fp16 route ~3x slower than bf16 on small shapes.
#include "mantissa/kernels/gemm_dnnl.hpp"
#include "mantissa/kernels/host_simd.hpp"
#if defined(MANTISSA_HOST_SIMD) && !defined(KOKKOS_ENABLE_CUDA) && !defined(KOKKOS_ENABLE_HIP) && \
    !defined(KOKKOS_ENABLE_SYCL) && !defined(KOKKOS_ENABLE_OPENMPTARGET)
#define MANTISSA_GEMM_HOST_F16C 1
#endif

namespace mantissa {
namespace gemm_detail {  // named, not anonymous: CUDA's extended lambdas need enclosing functions with linkage

using WorkView2 = Kokkos::View<float**, Kokkos::LayoutRight, MemSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
using ConstWorkView2 =
    Kokkos::View<const float**, Kokkos::LayoutRight, MemSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;

// fp32 work buffers of the widening route: grown on demand, kept between calls.
struct Workspace {
  View1<float> a, b, c;
};
Workspace& workspace() {
  static Workspace w;
  return w;
}
bool& finalize_hook_registered() {
  static bool registered = false;
  return registered;
}

// A rows x cols fp32 matrix on `buffer`, which grows (never shrinks) to fit.
WorkView2 work_matrix(View1<float>& buffer, const char* label, std::size_t rows, std::size_t cols) {
  if (!finalize_hook_registered()) {  // Views must die before Kokkos::finalize
    Kokkos::push_finalize_hook([] {
      gemm_release_workspace();
      finalize_hook_registered() = false;
    });
    finalize_hook_registered() = true;
  }
  const std::size_t n = rows * cols;
  if (buffer.extent(0) < n) {
    buffer = View1<float>();  // free the old buffer first: the peak is the new size only
    // (a std::string label: Kokkos 3.4's view_alloc takes a const char* for a memory pointer)
    buffer = View1<float>(Kokkos::view_alloc(std::string(label), Kokkos::WithoutInitializing), n);
  }
  return WorkView2(buffer.data(), rows, cols);
}


#if defined(MANTISSA_GEMM_HOST_F16C)
// bf16 rows on host CPUs with AVX2: the scalar conversions of precision.hpp (integer shifts and
// masks, so bit-exact by construction), in loops the compiler vectorises for this target (the
// Kokkos team loop below measured 430 us per widen and 910 us per round of a 2048 x 704 tile).
bool host_avx2() {
  static const bool ok = __builtin_cpu_supports("avx2");
  return ok;
}
__attribute__((target("avx2"))) void bf16_widen_row(const bf16_t* src, float* dst, int n) {
  for (int j = 0; j < n; ++j) dst[j] = bf16_bits_to_float(src[j].bits);
}
__attribute__((target("avx2"))) void bf16_round_row(const float* src, bf16_t* dst, int n) {
  for (int j = 0; j < n; ++j) dst[j].bits = bf16_bits_from_float(src[j]);
}
#endif

// dst = to_float(src)                                                 src (R,C) -> dst (R,C) fp32
template <class T, class Exec>
void widen(const Exec& space, const ConstView2<T>& src, const WorkView2& dst) {
  const int rows = static_cast<int>(src.extent(0));
  const int cols = static_cast<int>(src.extent(1));
#if defined(MANTISSA_GEMM_HOST_F16C)
  if constexpr (std::is_same<T, fp16_t>::value) {
    if (host_avx_f16c()) {
      Kokkos::parallel_for("mantissa::gemm::widen", Kokkos::RangePolicy<Exec>(space, 0, rows),
                           [=](const int i) { f16c_widen_row(&src(i, 0), &dst(i, 0), cols); });
      return;
    }
  }
  if constexpr (std::is_same<T, bf16_t>::value) {
    if (host_avx2()) {
      Kokkos::parallel_for("mantissa::gemm::widen", Kokkos::RangePolicy<Exec>(space, 0, rows),
                           [=](const int i) { bf16_widen_row(&src(i, 0), &dst(i, 0), cols); });
      return;
    }
  }
#endif
  using policy = Kokkos::TeamPolicy<Exec>;
  using member = typename policy::member_type;
  Kokkos::parallel_for(
      "mantissa::gemm::widen", policy(space, rows, Kokkos::AUTO), KOKKOS_LAMBDA(const member& team) {
        const int i = team.league_rank();
        Kokkos::parallel_for(Kokkos::TeamThreadRange(team, cols),
                             [&](const int j) { dst(i, j) = to_float(src(i, j)); });
      });
}

// dst = round_T(src)                                                  src (R,C) fp32 -> dst (R,C)
template <class T, class Exec>
void round_result(const Exec& space, const WorkView2& src, const View2<T>& dst) {
  const int rows = static_cast<int>(dst.extent(0));
  const int cols = static_cast<int>(dst.extent(1));
#if defined(MANTISSA_GEMM_HOST_F16C)
  if constexpr (std::is_same<T, fp16_t>::value) {
    if (host_avx_f16c()) {
      Kokkos::parallel_for("mantissa::gemm::round", Kokkos::RangePolicy<Exec>(space, 0, rows),
                           [=](const int i) { f16c_round_row(&src(i, 0), &dst(i, 0), cols); });
      return;
    }
  }
  if constexpr (std::is_same<T, bf16_t>::value) {
    if (host_avx2()) {
      Kokkos::parallel_for("mantissa::gemm::round", Kokkos::RangePolicy<Exec>(space, 0, rows),
                           [=](const int i) { bf16_round_row(&src(i, 0), &dst(i, 0), cols); });
      return;
    }
  }
#endif
  using policy = Kokkos::TeamPolicy<Exec>;
  using member = typename policy::member_type;
  Kokkos::parallel_for(
      "mantissa::gemm::round", policy(space, rows, Kokkos::AUTO), KOKKOS_LAMBDA(const member& team) {
        const int i = team.league_rank();
        Kokkos::parallel_for(Kokkos::TeamThreadRange(team, cols),
                             [&](const int j) { dst(i, j) = from_float<T>(src(i, j)); });
      });
}

// C = round_T(beta C) (C = 0 when beta == 0): the K = 0 case, where op(A) op(B) is an empty sum.
template <class T, class Exec>
void scale(const Exec& space, float beta, const View2<T>& c) {
  const int cols = static_cast<int>(c.extent(1));
  using policy = Kokkos::TeamPolicy<Exec>;
  using member = typename policy::member_type;
  Kokkos::parallel_for(
      "mantissa::gemm::scale", policy(space, static_cast<int>(c.extent(0)), Kokkos::AUTO),
      KOKKOS_LAMBDA(const member& team) {
        const int i = team.league_rank();
        Kokkos::parallel_for(Kokkos::TeamThreadRange(team, cols), [&](const int j) {
          c(i, j) = from_float<T>(beta == 0.0f ? 0.0f : beta * to_float(c(i, j)));
        });
      });
}

// An fp32 view of an operand: the View itself (strides kept) for float, else its widened copy.
template <class T, class Exec>
ConstWorkView2 fp32_operand(const Exec& space, const ConstView2<T>& x, View1<float>& buffer, const char* label) {
  if constexpr (std::is_same<T, float>::value) {
    (void)space, (void)buffer, (void)label;
    return ConstWorkView2(x);
  } else {
    const WorkView2 w = work_matrix(buffer, label, x.extent(0), x.extent(1));
    widen<T>(space, x, w);
    return w;
  }
}

// The fp32 BLAS call. Kokkos Kernels >= 4 (which defines KOKKOSKERNELS_VERSION) takes the
// execution space instance; 3.4 runs on the View's default instance.
template <class Exec, class CView>
void blas_gemm(const Exec& space, const char* op_a, const char* op_b, float alpha, const ConstWorkView2& a,
               const ConstWorkView2& b, float beta, const CView& c) {
#if defined(KOKKOSKERNELS_VERSION)
  KokkosBlas::gemm(space, op_a, op_b, alpha, a, b, beta, c);
#else
  (void)space;
  KokkosBlas::gemm(op_a, op_b, alpha, a, b, beta, c);
#endif
}

// ---- host: oneDNN (gemm_dnnl.cpp) or the BLAS on fp32 operands --------------------------------
template <class T>
constexpr Dt dt_of() {
  return std::is_same<T, float>::value ? Dt::f32 : std::is_same<T, bf16_t>::value ? Dt::bf16 : Dt::f16;
}
// op(X) (rows, cols) of a row-major matrix X with row stride ld (X = op(X)^T when trans)
inline DnnlMatrix dnnl_matrix(const void* data, Dt dt, std::size_t rows, std::size_t cols, std::size_t ld, bool trans) {
  return DnnlMatrix{data, dt, rows, cols, ld, trans};
}
constexpr bool host_memory = Kokkos::SpaceAccessibility<Kokkos::HostSpace, MemSpace>::accessible;

// C = alpha op(a) op(b) + beta C on fp32 operands: oneDNN's fp32 matmul on route onednn_fp32,
// else (or if oneDNN declines the problem) the BLAS. `widened`: " (fp32 of widened bf16)" etc.
template <class Exec, class CView>
void fp32_gemm(const Exec& space, GemmRoute route, bool trans_a, bool trans_b, std::size_t m, std::size_t n,
               std::size_t k, float alpha, const ConstWorkView2& a, const ConstWorkView2& b, float beta,
               const CView& c, const char* widened) {
  if constexpr (host_memory) {
    if (route == GemmRoute::onednn_fp32) {
      space.fence();  // widening kernels done
      Kokkos::Profiling::pushRegion("mantissa::gemm::onednn");
      const bool done = onednn_matmul(m, n, k, alpha, dnnl_matrix(a.data(), Dt::f32, m, k, a.stride(0), trans_a),
                                      dnnl_matrix(b.data(), Dt::f32, k, n, b.stride(0), trans_b), beta, c.data(),
                                      Dt::f32, c.stride(0), static_cast<int>(space.concurrency()), widened);
      Kokkos::Profiling::popRegion();
      if (done) return;
    }
  }
  const char op_a[2] = {trans_a ? 'T' : 'N', '\0'};
  const char op_b[2] = {trans_b ? 'T' : 'N', '\0'};
  blas_gemm(space, op_a, op_b, alpha, a, b, beta, c);
  note_blas_route(widened[0] == '\0' ? "KokkosBlas (BLAS TPL)" : "KokkosBlas (BLAS TPL) on widened operands");
}

// ---- CUDA: cublasGemmEx, fp16/bf16/fp32 inputs, fp32 compute, output rounded once to TC ----------
#if defined(KOKKOS_ENABLE_CUDA) && defined(MANTISSA_HAVE_CUBLAS)
template <class T>
cudaDataType_t cuda_data_type() {
  if constexpr (std::is_same<T, fp16_t>::value)
    return CUDA_R_16F;
  else if constexpr (std::is_same<T, bf16_t>::value)
    return CUDA_R_16BF;
  else
    return CUDA_R_32F;
}
cublasHandle_t& cublas_handle() {
  static cublasHandle_t handle = nullptr;
  return handle;
}
void cublas_check(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS)
    throw std::runtime_error(std::string("mantissa::gemm: ") + what + ": " + cublasGetStatusString(status));
}
// Row-major C (M,N) is column-major C^T (N,M) = op(B)^T op(A)^T: cuBLAS sees B first, then A.
template <class TA, class TB, class TC>
void cublas_gemm(const Kokkos::Cuda& space, bool trans_a, bool trans_b, int m, int n, int k, float alpha,
                 const ConstView2<TA>& a, const ConstView2<TB>& b, float beta, const View2<TC>& c) {
  cublasHandle_t& handle = cublas_handle();
  if (handle == nullptr) {
    cublas_check(cublasCreate(&handle), "cublasCreate");
    Kokkos::push_finalize_hook([] {
      cublasDestroy(cublas_handle());
      cublas_handle() = nullptr;
    });
  }
  cublas_check(cublasSetStream(handle, space.cuda_stream()), "cublasSetStream");
  const auto ld = [](std::size_t stride) { return static_cast<int>(stride > 0 ? stride : 1); };
  cublas_check(
      cublasGemmEx(handle, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &alpha,
                   b.data(), cuda_data_type<TB>(), ld(b.stride(0)), a.data(), cuda_data_type<TA>(), ld(a.stride(0)),
                   &beta, c.data(), cuda_data_type<TC>(), ld(c.stride(0)), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
      "cublasGemmEx");
}
#endif

bool is_transposed(char op, const char* which) {
  if (op == 'N' || op == 'n') return false;
  if (op == 'T' || op == 't') return true;
  throw std::invalid_argument(std::string("mantissa::gemm: ") + which + " must be 'N' or 'T', got '" + op + "'");
}

}  // namespace gemm_detail

void gemm_release_workspace() { gemm_detail::workspace() = gemm_detail::Workspace{}; }

template <class TA, class TB, class TC, class Exec>
void gemm(const Exec& space, char transA, char transB, float alpha, const ConstView2<TA>& A, const ConstView2<TB>& B,
          float beta, const View2<TC>& C) {
  using namespace gemm_detail;
  const bool trans_a = is_transposed(transA, "transA");
  const bool trans_b = is_transposed(transB, "transB");
  const std::size_t m = trans_a ? A.extent(1) : A.extent(0);
  const std::size_t k = trans_a ? A.extent(0) : A.extent(1);
  const std::size_t k_b = trans_b ? B.extent(1) : B.extent(0);
  const std::size_t n = trans_b ? B.extent(0) : B.extent(1);
  if (k != k_b || C.extent(0) != m || C.extent(1) != n)
    throw std::invalid_argument("mantissa::gemm: op(A) is " + std::to_string(m) + "x" + std::to_string(k) +
                                ", op(B) is " + std::to_string(k_b) + "x" + std::to_string(n) + ", C is " +
                                std::to_string(C.extent(0)) + "x" + std::to_string(C.extent(1)));
  if (m == 0 || n == 0) return;
  if (k == 0) {  // Kokkos Kernels 3.4 returns without touching C here
    scale<TC>(space, beta, C);
    return;
  }

#if defined(KOKKOS_ENABLE_CUDA) && defined(MANTISSA_HAVE_CUBLAS)
  // The CUDA route: tensor cores for fp16/bf16 inputs, fp32 compute, one rounding to TC.
  if constexpr (std::is_same<Exec, Kokkos::Cuda>::value) {
    cublas_gemm<TA, TB, TC>(space, trans_a, trans_b, static_cast<int>(m), static_cast<int>(n), static_cast<int>(k),
                            alpha, A, B, beta, C);
    return;
  }
#endif

  // The host route (gemm_dnnl.cpp): oneDNN on CPUs with AVX-512, else the BLAS.
  GemmRoute route = GemmRoute::blas;
  if constexpr (host_memory) route = resolve_host_route(dt_of<TA>());
  if constexpr (host_memory && std::is_same<TA, TB>::value && !std::is_same<TA, float>::value) {
    if (route == GemmRoute::onednn_native) {  // the 16-bit operands as stored, fp32 accumulation
      space.fence();
      Kokkos::Profiling::pushRegion("mantissa::gemm::onednn");
      const bool done = onednn_matmul(m, n, k, alpha, dnnl_matrix(A.data(), dt_of<TA>(), m, k, A.stride(0), trans_a),
                                      dnnl_matrix(B.data(), dt_of<TB>(), k, n, B.stride(0), trans_b), beta, C.data(),
                                      dt_of<TC>(), C.stride(0), static_cast<int>(space.concurrency()), "");
      Kokkos::Profiling::popRegion();
      if (done) return;
      route = GemmRoute::onednn_fp32;  // oneDNN declined this problem: widen
    }
  }

  // The widening route: an fp32 GEMM (oneDNN or the BLAS) on fp32 views of A and B.
  const char* widened = std::is_same<TA, float>::value    ? ""
                        : std::is_same<TA, bf16_t>::value ? " (fp32 of widened bf16)"
                                                          : " (fp32 of widened fp16)";
  Workspace& ws = workspace();
  const ConstWorkView2 a32 = fp32_operand<TA>(space, A, ws.a, "mantissa::gemm::work_a");
  const ConstWorkView2 b32 = fp32_operand<TB>(space, B, ws.b, "mantissa::gemm::work_b");
  if constexpr (std::is_same<TC, float>::value) {
    fp32_gemm(space, route, trans_a, trans_b, m, n, k, alpha, a32, b32, beta, C, widened);
  } else {
    const WorkView2 c32 = work_matrix(ws.c, "mantissa::gemm::work_c", m, n);
    if (beta != 0.0f) widen<TC>(space, C, c32);  // beta == 0: the fp32 GEMM does not read C
    fp32_gemm(space, route, trans_a, trans_b, m, n, k, alpha, a32, b32, beta, c32, widened);
    round_result<TC>(space, c32, C);
  }
}

MANTISSA_GEMM_DECLARE(, float, float, float)
MANTISSA_GEMM_DECLARE(, bf16_t, bf16_t, bf16_t)
MANTISSA_GEMM_DECLARE(, bf16_t, bf16_t, float)
MANTISSA_GEMM_DECLARE(, fp16_t, fp16_t, fp16_t)
MANTISSA_GEMM_DECLARE(, fp16_t, fp16_t, float)

}  // namespace mantissa
