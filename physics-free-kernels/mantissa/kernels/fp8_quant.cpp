// FP8 blockwise and per-tensor quantisation, dequantisation and the blockwise-scaled FP8 GEMM.
// See fp8_quant.hpp for the semantics (scales, non-finite blocks, the GEMM's accumulation).
#include "mantissa/kernels/fp8_quant.hpp"

#include <cfloat>
#include <cmath>
#include <cstddef>
#include <stdexcept>
#include <string>

namespace mantissa {
namespace fp8_detail {  // named, not anonymous: CUDA's extended lambdas need enclosing functions with linkage

// fma in fp32 (one rounding), host and device (Kokkos 3.4 has no Kokkos::fma).
KOKKOS_INLINE_FUNCTION float fma32(float a, float b, float c) { return ::fmaf(a, b, c); }

// |x|, with Inf and NaN as +Inf (so that a max over a block sees a NaN)
KOKKOS_INLINE_FUNCTION float magnitude(float x) {
  const float a = kmath::fabs(x);
  return a <= FLT_MAX ? a : static_cast<float>(INFINITY);
}

// q(i, j) as fp32 (exact)                                              q (R,C) -> (R,C) fp32
template <class T8, class Exec>
View2<float> widen(const Exec& space, const View2<T8>& q, const char* label) {
  const std::size_t rows = q.extent(0), cols = q.extent(1);
  const View2<float> y = make_uninit<View2<float>>(std::string(label), rows, cols);
  if (rows * cols == 0) return y;
  Kokkos::parallel_for(
      "mantissa::fp8::widen", Kokkos::RangePolicy<Exec>(space, 0, rows * cols), KOKKOS_LAMBDA(const std::size_t e) {
        const std::size_t r = e / cols, c = e % cols;
        y(r, c) = to_float(q(r, c));
      });
  return y;
}

inline int ceil_div(int a, int b) { return (a + b - 1) / b; }

}  // namespace fp8_detail

template <class T8, class Exec>
void fp8_quantize_blockwise(const Exec& space, const ConstView2<float>& x, int block_rows, int block_cols,
                            Fp8Blocked<T8>& out) {
  if (block_rows <= 0 || block_cols <= 0)
    throw std::invalid_argument("mantissa::fp8_quantize_blockwise: block_rows and block_cols must be positive");
  const int rows = static_cast<int>(x.extent(0)), cols = static_cast<int>(x.extent(1));
  const int nbr = fp8_detail::ceil_div(rows, block_rows), nbc = fp8_detail::ceil_div(cols, block_cols);
  if (static_cast<int>(out.q.extent(0)) != rows || static_cast<int>(out.q.extent(1)) != cols)
    out.q = make_uninit<View2<T8>>("mantissa::fp8::q", rows, cols);
  if (static_cast<int>(out.scale.extent(0)) != nbr || static_cast<int>(out.scale.extent(1)) != nbc)
    out.scale = make_uninit<View2<float>>("mantissa::fp8::scale", nbr, nbc);
  out.block_rows = block_rows;
  out.block_cols = block_cols;
  if (nbr == 0 || nbc == 0) return;
  const View2<T8> q = out.q;
  const View2<float> scale = out.scale;
  const int br = block_rows, bc = block_cols;
  using policy = Kokkos::TeamPolicy<Exec>;
  using member = typename policy::member_type;
  Kokkos::parallel_for(
      "mantissa::fp8::quantize_blockwise", policy(space, nbr * nbc, Kokkos::AUTO), KOKKOS_LAMBDA(const member& team) {
        const int bi = team.league_rank() / nbc, bj = team.league_rank() % nbc;
        const int r0 = bi * br, c0 = bj * bc;
        const int h = kmin(br, rows - r0), w = kmin(bc, cols - c0);
        float amax = 0.0f;
        Kokkos::parallel_reduce(
            Kokkos::TeamThreadRange(team, h * w),
            [&](const int e, float& m) {
              const float v = fp8_detail::magnitude(x(r0 + e / w, c0 + e % w));
              if (v > m) m = v;
            },
            Kokkos::Max<float>(amax));
        const float s = fp8_scale_from_amax<T8>(amax);
        Kokkos::parallel_for(Kokkos::TeamThreadRange(team, h * w), [&](const int e) {
          const int r = r0 + e / w, c = c0 + e % w;
          q(r, c) = from_float<T8>(x(r, c) / s, Fp8Overflow::saturate);
        });
        Kokkos::single(Kokkos::PerTeam(team), [&]() { scale(bi, bj) = s; });
      });
}

template <class T8, class Exec>
void fp8_dequantize_blockwise(const Exec& space, const Fp8Blocked<T8>& in, const View2<float>& y) {
  const std::size_t rows = in.q.extent(0), cols = in.q.extent(1);
  if (y.extent(0) != rows || y.extent(1) != cols || in.block_rows <= 0 || in.block_cols <= 0)
    throw std::invalid_argument("mantissa::fp8_dequantize_blockwise: expected y of q's shape and positive blocks");
  if (rows * cols == 0) return;
  const View2<T8> q = in.q;
  const View2<float> scale = in.scale;
  const std::size_t br = static_cast<std::size_t>(in.block_rows), bc = static_cast<std::size_t>(in.block_cols);
  Kokkos::parallel_for(
      "mantissa::fp8::dequantize_blockwise", Kokkos::RangePolicy<Exec>(space, 0, rows * cols),
      KOKKOS_LAMBDA(const std::size_t e) {
        const std::size_t r = e / cols, c = e % cols;
        y(r, c) = to_float(q(r, c)) * scale(r / br, c / bc);
      });
}

template <class TX, class TW, class Exec>
void fp8_gemm(const Exec& space, const Fp8Blocked<TX>& x, const Fp8Blocked<TW>& w, const View2<float>& y) {
  const int m_rows = static_cast<int>(x.q.extent(0)), n_rows = static_cast<int>(w.q.extent(0));
  const int k_len = static_cast<int>(x.q.extent(1));
  const int seg = x.block_cols;
  if (static_cast<int>(w.q.extent(1)) != k_len || static_cast<int>(y.extent(0)) != m_rows ||
      static_cast<int>(y.extent(1)) != n_rows)
    throw std::invalid_argument("mantissa::fp8_gemm: expected x.q (M,K), w.q (N,K), y (M,N)");
  if (seg <= 0 || w.block_cols != seg || x.block_rows <= 0 || w.block_rows <= 0)
    throw std::invalid_argument("mantissa::fp8_gemm: x and w need the same positive block_cols (the K segment)");
  const int n_seg = fp8_detail::ceil_div(k_len, seg);
  if (static_cast<int>(x.scale.extent(1)) != n_seg || static_cast<int>(w.scale.extent(1)) != n_seg ||
      static_cast<int>(x.scale.extent(0)) != fp8_detail::ceil_div(m_rows, x.block_rows) ||
      static_cast<int>(w.scale.extent(0)) != fp8_detail::ceil_div(n_rows, w.block_rows))
    throw std::invalid_argument("mantissa::fp8_gemm: scale extents do not match q and the blocks");
  if (m_rows == 0 || n_rows == 0) return;
  const View2<float> xf = fp8_detail::widen(space, x.q, "mantissa::fp8::gemm_x");
  const View2<float> wf = fp8_detail::widen(space, w.q, "mantissa::fp8::gemm_w");
  const View2<float> sx = x.scale, sw = w.scale;
  const int brx = x.block_rows, brw = w.block_rows;
  Kokkos::parallel_for(
      "mantissa::fp8::gemm", Kokkos::RangePolicy<Exec>(space, 0, static_cast<std::size_t>(m_rows) * n_rows),
      KOKKOS_LAMBDA(const std::size_t e) {
        const int m = static_cast<int>(e / n_rows), n = static_cast<int>(e % n_rows);
        float acc = 0.0f;
        for (int s = 0; s < n_seg; ++s) {
          const int k1 = kmin(k_len, (s + 1) * seg);
          float partial = 0.0f;  // exact products, fp32 sum in ascending k
          for (int k = s * seg; k < k1; ++k) partial += xf(m, k) * wf(n, k);
          acc = fp8_detail::fma32(sx(m / brx, s) * sw(n / brw, s), partial, acc);
        }
        y(m, n) = acc;
      });
}

template <class Exec>
float fp8_amax(const Exec& space, const ConstView1<float>& x) {
  const std::size_t n = x.extent(0);
  if (n == 0) return 0.0f;
  float amax = 0.0f;
  Kokkos::parallel_reduce(
      "mantissa::fp8::amax", Kokkos::RangePolicy<Exec>(space, 0, n),
      KOKKOS_LAMBDA(const std::size_t i, float& m) {
        const float v = fp8_detail::magnitude(x(i));
        if (v > m) m = v;
      },
      Kokkos::Max<float>(amax));
  space.fence();
  return amax;
}

template <class T8, class Exec>
void fp8_quantize_tensor(const Exec& space, const ConstView1<float>& x, float scale, const View1<T8>& q) {
  if (q.extent(0) != x.extent(0)) throw std::invalid_argument("mantissa::fp8_quantize_tensor: x (n), q (n)");
  Kokkos::parallel_for(
      "mantissa::fp8::quantize_tensor", Kokkos::RangePolicy<Exec>(space, 0, x.extent(0)),
      KOKKOS_LAMBDA(const std::size_t i) { q(i) = from_float<T8>(x(i) / scale, Fp8Overflow::saturate); });
}

template <class T8, class Exec>
void fp8_dequantize_tensor(const Exec& space, const ConstView1<T8>& q, float scale, const View1<float>& y) {
  if (y.extent(0) != q.extent(0)) throw std::invalid_argument("mantissa::fp8_dequantize_tensor: q (n), y (n)");
  Kokkos::parallel_for(
      "mantissa::fp8::dequantize_tensor", Kokkos::RangePolicy<Exec>(space, 0, q.extent(0)),
      KOKKOS_LAMBDA(const std::size_t i) { y(i) = to_float(q(i)) * scale; });
}

MANTISSA_FP8_DECLARE(, fp8_e4m3_t)
MANTISSA_FP8_DECLARE(, fp8_e5m2_t)
MANTISSA_FP8_GEMM_DECLARE(, fp8_e4m3_t, fp8_e4m3_t)
MANTISSA_FP8_GEMM_DECLARE(, fp8_e5m2_t, fp8_e4m3_t)
MANTISSA_FP8_GEMM_DECLARE(, fp8_e4m3_t, fp8_e5m2_t)
MANTISSA_FP8_GEMM_DECLARE(, fp8_e5m2_t, fp8_e5m2_t)
template float fp8_amax<ExecSpace>(const ExecSpace&, const ConstView1<float>&);

}  // namespace mantissa
