// decode_gemm: see decode_gemm.hpp. The AVX-512 tile kernel is compiled with a target attribute
// (the default build stays portable x86-64) and chosen at run time (decode_gemm_available).
#include "mantissa/kernels/decode_gemm.hpp"

#include <cmath>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "mantissa/kernels/exp.hpp"
#include "mantissa/kernels/host_simd.hpp"

#if defined(MANTISSA_HOST_SIMD) && !defined(KOKKOS_ENABLE_CUDA) && !defined(KOKKOS_ENABLE_HIP) && \
    !defined(KOKKOS_ENABLE_SYCL) && !defined(KOKKOS_ENABLE_OPENMPTARGET)
#define MANTISSA_DECODE_GEMM_AVX512 1
#endif

namespace mantissa {
namespace decode_gemm_detail {

[[noreturn]] void fail(const std::string& what) { throw std::invalid_argument("mantissa::decode_gemm: " + what); }

#if defined(MANTISSA_DECODE_GEMM_AVX512)
constexpr int P = decode_gemm_panel;
constexpr int RT = 8;  // rows per register tile: 8 x 2 accumulators + 2 weight vectors + 1 broadcast

// acc[i][0..31] = fma chain over k of x[i][k] * wp[k][0..31], i < R (R <= RT), stored to out[i][.]
template <int R>
__attribute__((target("avx512f"))) void tile(const float* x, std::size_t ldx, const float* wp, int K, float* out) {
  __m512 a0[R], a1[R];
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i) a0[i] = _mm512_setzero_ps(), a1[i] = _mm512_setzero_ps();
  for (int k = 0; k < K; ++k) {
    const __m512 w0 = _mm512_loadu_ps(wp + static_cast<std::size_t>(k) * P);
    const __m512 w1 = _mm512_loadu_ps(wp + static_cast<std::size_t>(k) * P + 16);
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) {
      const __m512 b = _mm512_set1_ps(x[i * ldx + k]);
      a0[i] = _mm512_fmadd_ps(b, w0, a0[i]);
      a1[i] = _mm512_fmadd_ps(b, w1, a1[i]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i) {
    _mm512_storeu_ps(out + i * P, a0[i]);
    _mm512_storeu_ps(out + i * P + 16, a1[i]);
  }
}

// Row conversions of the epilogue: F16C for fp16 where the CPU has it (bit-exact with to_float /
// from_float<fp16_t>, host_simd.hpp), else the scalar conversions.
template <class T>
void load_row(const T* src, float* dst, int n) {
  if constexpr (std::is_same<T, fp16_t>::value) {
    if (host_avx_f16c()) return f16c_widen_row(src, dst, n);
  }
  for (int c = 0; c < n; ++c) dst[c] = to_float(src[c]);
}
template <class T>
void store_row(const float* src, T* dst, int n) {
  if constexpr (std::is_same<T, fp16_t>::value) {
    if (host_avx_f16c()) return f16c_round_row(src, dst, n);
  }
  for (int c = 0; c < n; ++c) dst[c] = from_float<T>(src[c]);
}

using TileFn = void (*)(const float*, std::size_t, const float*, int, float*);
constexpr TileFn tiles[RT + 1] = {nullptr, tile<1>, tile<2>, tile<3>, tile<4>, tile<5>, tile<6>, tile<7>, tile<8>};

bool cpu_ok() {
  static const bool ok = __builtin_cpu_supports("avx512f");
  return ok;
}
#endif

// fp32 rows of x: x itself for float, else a widened copy in `buf`.
template <class T>
const float* fp32_rows(const ConstView2<T>& x, std::vector<float>& buf, std::size_t& ld) {
  const std::size_t R = x.extent(0), K = x.extent(1);
  if constexpr (std::is_same<T, float>::value) {
    ld = x.stride(0);
    (void)buf, (void)R, (void)K;
    return x.data();
  } else {
    if (buf.size() < R * K) buf.resize(R * K);
    for (std::size_t r = 0; r < R; ++r) {
      const T* src = &x(r, 0);
      float* dst = buf.data() + r * K;
      if constexpr (std::is_same<T, fp16_t>::value) {
        if (host_avx_f16c()) {
          f16c_widen_row(src, dst, static_cast<int>(K));
          continue;
        }
      }
      for (std::size_t k = 0; k < K; ++k) dst[k] = to_float(src[k]);
    }
    ld = K;
    return buf.data();
  }
}

}  // namespace decode_gemm_detail

// decode_gemm is host-only (AVX-512 CPUs): each call reads its x rows on the host, so each call
// completes before it returns. Named, so that tests can tell these host fences from device syncs.
constexpr const char* decode_gemm_fence_label = "mantissa::decode::gemm (host-only kernel)";

bool decode_gemm_available() {
#if defined(MANTISSA_DECODE_GEMM_AVX512)
  return decode_gemm_detail::cpu_ok();
#else
  return false;
#endif
}

template <class T, class Exec>
void decode_gemm_pack(const Exec& space, const ConstView2<T>& W, DecodeGemmWeights& out) {
  constexpr int P = decode_gemm_panel;
  const int N = static_cast<int>(W.extent(0)), K = static_cast<int>(W.extent(1));
  const int np = (N + P - 1) / P;
  const std::size_t need = static_cast<std::size_t>(np) * K * P;
  if (out.w.extent(0) < need)
    out.w = View1<float>(Kokkos::view_alloc(std::string("mantissa::decode::gemm_weights"), Kokkos::WithoutInitializing),
                         need);
  out.n = N, out.k = K;
  const View1<float> w = out.w;
  Kokkos::parallel_for(
      "mantissa::decode::gemm_pack", Kokkos::RangePolicy<Exec>(space, 0, np), KOKKOS_LAMBDA(const int p) {
        for (int k = 0; k < K; ++k) {
          for (int c = 0; c < P; ++c) {
            const int n = p * P + c;
            w((static_cast<std::size_t>(p) * K + k) * P + c) = n < N ? to_float(W(n, k)) : 0.0f;
          }
        }
      });
  named_fence(space, decode_gemm_fence_label);
}

template <class T, class Exec>
void decode_gemm_pack_swiglu(const Exec& space, const ConstView2<T>& Wgu, DecodeGemmWeights& out) {
  constexpr int P = decode_gemm_panel, H = P / 2;
  if (Wgu.extent(0) % 2 != 0) decode_gemm_detail::fail("Wgu needs 2F rows");
  const int F = static_cast<int>(Wgu.extent(0) / 2), K = static_cast<int>(Wgu.extent(1));
  const int np = (F + H - 1) / H;
  const std::size_t need = static_cast<std::size_t>(np) * K * P;
  if (out.w.extent(0) < need)
    out.w = View1<float>(Kokkos::view_alloc(std::string("mantissa::decode::gemm_weights"), Kokkos::WithoutInitializing),
                         need);
  out.n = F, out.k = K, out.swiglu = true;
  const View1<float> w = out.w;
  Kokkos::parallel_for(
      "mantissa::decode::gemm_pack", Kokkos::RangePolicy<Exec>(space, 0, np), KOKKOS_LAMBDA(const int p) {
        for (int k = 0; k < K; ++k) {
          for (int c = 0; c < P; ++c) {
            const int j = p * H + (c < H ? c : c - H);  // output column; gate row j, up row F + j
            w((static_cast<std::size_t>(p) * K + k) * P + c) = j < F ? to_float(Wgu(c < H ? j : F + j, k)) : 0.0f;
          }
        }
      });
  named_fence(space, decode_gemm_fence_label);
}

template <class T, class Exec>
void decode_gemm(const Exec& space, const ConstView2<T>& x, const DecodeGemmWeights& W, const ConstView2<T>& residual,
                 const View2<T>& y) {
  using namespace decode_gemm_detail;
  const std::size_t R = x.extent(0), K = x.extent(1);
  const int N = W.n;
  if (static_cast<int>(K) != W.k || y.extent(0) != R || y.extent(1) != static_cast<std::size_t>(N))
    fail("x is (" + std::to_string(R) + ", " + std::to_string(K) + "), packed W (" + std::to_string(N) + ", " +
         std::to_string(W.k) + "), y (" + std::to_string(y.extent(0)) + ", " + std::to_string(y.extent(1)) + ")");
  const bool has_res = residual.data() != nullptr;
  if (has_res && (residual.extent(0) != R || residual.extent(1) != static_cast<std::size_t>(N)))
    fail("residual is (" + std::to_string(residual.extent(0)) + ", " + std::to_string(residual.extent(1)) + ")");
  if (W.swiglu) fail("weights packed for decode_gemm_swiglu");
  if (R == 0 || N == 0) return;
#if defined(MANTISSA_DECODE_GEMM_AVX512)
  if (!cpu_ok()) fail("this CPU has no AVX-512F (check decode_gemm_available())");
  static std::vector<float> xbuf;  // like gemm's work buffers: calls must not run concurrently
  std::size_t ldx = 0;
  const float* x32 = fp32_rows<T>(x, xbuf, ldx);
  const float* wpk = W.w.data();
  const int np = (N + P - 1) / P;
  const int Ki = static_cast<int>(K);
  const int Ri = static_cast<int>(R);
  Kokkos::parallel_for(
      "mantissa::decode::gemm", Kokkos::RangePolicy<Exec>(space, 0, np), [=](const int p) {
        alignas(64) float acc[RT * P];
        const float* wp = wpk + static_cast<std::size_t>(p) * Ki * P;
        const int c0 = p * P, nc = N - c0 < P ? N - c0 : P;
        for (int r0 = 0; r0 < Ri; r0 += RT) {
          const int rows = Ri - r0 < RT ? Ri - r0 : RT;
          tiles[rows](x32 + static_cast<std::size_t>(r0) * ldx, ldx, wp, Ki, acc);
          for (int i = 0; i < rows; ++i) {  // D2: y = round_T(acc + residual), one rounding to T
            float* a = acc + i * P;
            if (has_res) {
              alignas(64) float rv[P];
              load_row<T>(&residual(r0 + i, c0), rv, nc);
              for (int c = 0; c < nc; ++c) a[c] += rv[c];
            }
            store_row<T>(a, &y(r0 + i, c0), nc);
          }
        }
      });
  named_fence(space, decode_gemm_fence_label);
#else
  (void)space;
  fail("not available in this build (check decode_gemm_available())");
#endif
}

template <class T, class Exec>
void decode_gemm_swiglu(const Exec& space, const ConstView2<T>& x, const DecodeGemmWeights& W, const View2<T>& s) {
  using namespace decode_gemm_detail;
  const std::size_t R = x.extent(0), K = x.extent(1);
  const int F = W.n;
  if (!W.swiglu) fail("decode_gemm_swiglu needs weights packed by decode_gemm_pack_swiglu");
  if (static_cast<int>(K) != W.k || s.extent(0) != R || s.extent(1) != static_cast<std::size_t>(F))
    fail("x is (" + std::to_string(R) + ", " + std::to_string(K) + "), packed Wgu (2x" + std::to_string(F) + ", " +
         std::to_string(W.k) + "), s (" + std::to_string(s.extent(0)) + ", " + std::to_string(s.extent(1)) + ")");
  if (R == 0 || F == 0) return;
#if defined(MANTISSA_DECODE_GEMM_AVX512)
  if (!cpu_ok()) fail("this CPU has no AVX-512F (check decode_gemm_available())");
  constexpr int H = P / 2;
  static std::vector<float> xbuf;
  std::size_t ldx = 0;
  const float* x32 = fp32_rows<T>(x, xbuf, ldx);
  const float* wpk = W.w.data();
  const int np = (F + H - 1) / H;
  const int Ki = static_cast<int>(K);
  const int Ri = static_cast<int>(R);
  Kokkos::parallel_for(
      "mantissa::decode::gemm_swiglu", Kokkos::RangePolicy<Exec>(space, 0, np), [=](const int p) {
        alignas(64) float acc[RT * P];
        const float* wp = wpk + static_cast<std::size_t>(p) * Ki * P;
        const int c0 = p * H, nc = F - c0 < H ? F - c0 : H;
        for (int r0 = 0; r0 < Ri; r0 += RT) {
          const int rows = Ri - r0 < RT ? Ri - r0 : RT;
          tiles[rows](x32 + static_cast<std::size_t>(r0) * ldx, ldx, wp, Ki, acc);
          for (int i = 0; i < rows; ++i) {  // gu rounded to T, then swiglu_forward's operations
            const float* a = acc + i * P;
            alignas(64) T gu16[P];
            alignas(64) float gu[P], o[H];
            store_row<T>(a, gu16, P);  // round_T of the gate and up accumulators (all P: padding is 0)
            load_row<T>(gu16, gu, P);
            for (int c = 0; c < nc; ++c) {
              const float g = gu[c], u = gu[H + c];
              const float sg = 1.0f / (1.0f + exp_fp32(-g));
              o[c] = g * sg * u;
            }
            store_row<T>(o, &s(r0 + i, c0), nc);
          }
        }
      });
  named_fence(space, decode_gemm_fence_label);
#else
  (void)space;
  fail("not available in this build (check decode_gemm_available())");
#endif
}

template <class T>
void decode_gemm_reference(const ConstView2<T>& x, const ConstView2<T>& W, const ConstView2<T>& residual,
                           const View2<T>& y) {
  const std::size_t R = x.extent(0), K = x.extent(1), N = W.extent(0);
  for (std::size_t r = 0; r < R; ++r) {
    for (std::size_t n = 0; n < N; ++n) {
      float acc = 0.0f;
      for (std::size_t k = 0; k < K; ++k) acc = std::fmaf(to_float(x(r, k)), to_float(W(n, k)), acc);
      y(r, n) = from_float<T>(residual.data() != nullptr ? acc + to_float(residual(r, n)) : acc);
    }
  }
}

MANTISSA_DECODE_GEMM_DECLARE(, float)
MANTISSA_DECODE_GEMM_DECLARE(, bf16_t)
MANTISSA_DECODE_GEMM_DECLARE(, fp16_t)

}  // namespace mantissa
