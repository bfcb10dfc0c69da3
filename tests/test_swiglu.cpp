// swiglu forward/backward against a double reference of the same T inputs (including gates far
// in both tails, where exp(-g) overflows fp32), the double reference backward against central
// differences, and the fp32 kernels against a directional central difference.
#include <Kokkos_Core.hpp>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <utility>

#include "kernel_test_util.hpp"
#include "mantissa/kernels/exp.hpp"
#include "mantissa/kernels/swiglu.hpp"

using namespace mantissa;
using namespace mantissa::test;

namespace {

double sigmoid(double g) { return 1.0 / (1.0 + std::exp(-g)); }

// out = g s(g) u.                                                    gu (N,2F) -> out (N,F)
std::vector<double> ref_forward(const std::vector<double>& gu, int n_rows, int f) {
  std::vector<double> out(static_cast<std::size_t>(n_rows) * f);
  for (int n = 0; n < n_rows; ++n)
    for (int j = 0; j < f; ++j) {
      const double g = gu[n * 2 * f + j], u = gu[n * 2 * f + f + j];
      out[n * f + j] = g * sigmoid(g) * u;
    }
  return out;
}

// dg = dout u s (1 + g (1 - s)), du = dout g s.                      gu (N,2F), dout (N,F) -> dgu (N,2F)
std::vector<double> ref_backward(const std::vector<double>& gu, const std::vector<double>& dout, int n_rows, int f) {
  std::vector<double> dgu(gu.size());
  for (int n = 0; n < n_rows; ++n)
    for (int j = 0; j < f; ++j) {
      const double g = gu[n * 2 * f + j], u = gu[n * 2 * f + f + j], d = dout[n * f + j], s = sigmoid(g);
      dgu[n * 2 * f + j] = d * u * s * (1.0 + g * (1.0 - s));
      dgu[n * 2 * f + f + j] = d * g * s;
    }
  return dgu;
}

// Gates in [-6, 6] plus both tails: exp(-g) overflows fp32 for g < -88.7 (s = 0) and s rounds to 1
// for g > 17.
template <class T>
std::vector<double> gate_up_values(int n_rows, int f, std::uint64_t seed) {
  auto gu = random_values<T>(static_cast<std::size_t>(n_rows) * 2 * f, -6.0, 6.0, seed);
  const double tails[] = {-100.0, -89.0, -30.0, 20.0, 60.0};
  for (int k = 0; k < 5; ++k) gu[(k * 7) * 2 * f + k] = round_double<T>(tails[k]);  // rows 0, 7, .., gate column k
  return gu;
}

template <class T>
class Swiglu : public ::testing::Test {};
TYPED_TEST_SUITE(Swiglu, StorageTypes, StorageTypeNames);

TYPED_TEST(Swiglu, ForwardAndBackwardMatchDoubleReference) {
  using T = TypeParam;
  const int n_rows = 29, f = 67;
  const auto gu = gate_up_values<T>(n_rows, f, 61);
  const auto dout = random_values<T>(static_cast<std::size_t>(n_rows) * f, -1.0, 1.0, 62);
  auto GU = make_view2<T>("gu", gu, n_rows, 2 * f);
  auto DOUT = make_view2<T>("dout", dout, n_rows, f);
  View2<T> OUT("out", n_rows, f), DGU("dgu", n_rows, 2 * f);
  swiglu_forward<T>(ExecSpace(), GU, OUT);
  swiglu_backward<T>(ExecSpace(), GU, DOUT, DGU);

  const auto out = ref_forward(gu, n_rows, f);
  const auto dgu = ref_backward(gu, dout, n_rows, f);
  // s = 1/(1 + exp(-g)): exp 2 ulp (CUDA's bound; glibc 1), the add and the division: 4u relative;
  // g s u: two more products -> 6u; 8u with slack; then one rounding to T.
  // Far left tail: s = 1/(1 + exp(-g)) is an fp32 subnormal for g < -87.3 (absolute error 2^-149)
  // and 0 once exp(-g) overflows (g < -88.72, as in PyTorch's x / (1 + exp(-x))): s_abs below.
  std::vector<double> tol_out(out.size()), tol_dgu(dgu.size());
  for (int n = 0; n < n_rows; ++n)
    for (int j = 0; j < f; ++j) {
      const std::size_t ig = n * 2 * f + j, iu = ig + f, io = n * f + j;
      const double g = gu[ig], u = gu[iu], d = dout[io], s = sigmoid(g);
      const double s_abs = g < -88.72 ? s : std::ldexp(1.0, -149);
      tol_out[io] = 8 * kU32 * std::fabs(out[io]) + std::fabs(g * u) * s_abs + rounding_tol<T>(out[io]);
      // d gate: s (4u rel), 1 - s (5u abs), g (1 - s) and the add (|g| 5u + u|1 + g(1-s)|), three
      // products (3u): bounded by 16u of |d u| s (1 + |g|).
      tol_dgu[ig] = (16 * kU32 * s + s_abs) * std::fabs(d * u) * (1.0 + std::fabs(g)) + rounding_tol<T>(dgu[ig]);
      // d up = d g s: s (4u) and two products.
      tol_dgu[iu] = 8 * kU32 * std::fabs(dgu[iu]) + std::fabs(d * g) * s_abs + rounding_tol<T>(dgu[iu]);
    }
  // Report the bulk ([-6, 6]) and the tails separately: in the left tail the bound is the value itself.
  const auto got_out = to_host(OUT), got_dgu = to_host(DGU);
  std::vector<double> bulk[6], tail[6];  // got, ref, tol for out and for dgu
  for (std::size_t i = 0; i < out.size(); ++i) {
    const bool is_tail = std::fabs(gu[(i / f) * 2 * f + i % f]) > 6.0;
    for (auto [k, v] : {std::pair{0, got_out[i]}, std::pair{1, out[i]}, std::pair{2, tol_out[i]}})
      (is_tail ? tail : bulk)[k].push_back(v);
  }
  for (std::size_t i = 0; i < dgu.size(); ++i) {
    const std::size_t n = i / (2 * f), j = i % (2 * f);
    const bool is_tail = std::fabs(gu[n * 2 * f + j % f]) > 6.0;
    for (auto [k, v] : {std::pair{3, got_dgu[i]}, std::pair{4, dgu[i]}, std::pair{5, tol_dgu[i]}})
      (is_tail ? tail : bulk)[k].push_back(v);
  }
  const std::string name = precision_traits<T>::name;
  expect_close("swiglu fwd " + name, bulk[0], bulk[1], bulk[2]);
  expect_close("swiglu bwd " + name, bulk[3], bulk[4], bulk[5]);
  expect_close("swiglu fwd, |gate| > 6 " + name, tail[0], tail[1], tail[2]);
  expect_close("swiglu bwd, |gate| > 6 " + name, tail[3], tail[4], tail[5]);
  ASSERT_EQ(tail[0].size(), 5u);
}

// L = sum dout . out(gu): the reference gradient against central differences of the double forward.
TEST(Swiglu, ReferenceBackwardMatchesFiniteDifferences) {
  const int n_rows = 3, f = 5;
  const auto gu = random_values<double>(static_cast<std::size_t>(n_rows) * 2 * f, -6.0, 6.0, 63);
  const auto dout = random_values<double>(static_cast<std::size_t>(n_rows) * f, -1.0, 1.0, 64);
  auto loss = [&](const std::vector<double>& v) {
    const auto out = ref_forward(v, n_rows, f);
    double l = 0.0;
    for (std::size_t i = 0; i < out.size(); ++i) l += dout[i] * out[i];
    return l;
  };
  const auto grad = ref_backward(gu, dout, n_rows, f);
  // h = 1e-5: truncation h^2 |L'''| ~ 1e-10, cancellation 1e-16 |L| / h ~ 1e-11.
  const double h = 1e-5;
  std::vector<double> fd(gu.size()), tol(gu.size());
  for (std::size_t i = 0; i < gu.size(); ++i) {
    auto p = gu, m = gu;
    p[i] += h;
    m[i] -= h;
    fd[i] = (loss(p) - loss(m)) / (2 * h);
    tol[i] = 1e-6 * (std::fabs(grad[i]) + 1.0);
  }
  expect_close("swiglu ref backward vs central differences", grad, fd, tol);
}

// The fp32 kernels: d/dh sum dout . swiglu(gu + h v) against <swiglu_backward(gu, dout), v>.
TEST(Swiglu, Fp32KernelDirectionalDerivative) {
  const int n_rows = 4, f = 8;
  const std::size_t size = static_cast<std::size_t>(n_rows) * 2 * f;
  const auto gu = random_values<float>(size, -4.0, 4.0, 65);
  const auto v = random_values<float>(size, -1.0, 1.0, 66);
  const auto dout = random_values<float>(static_cast<std::size_t>(n_rows) * f, -1.0, 1.0, 67);
  auto DOUT = make_view2<float>("dout", dout, n_rows, f);
  double abs_l = 0.0;
  auto loss = [&](double h) {
    std::vector<double> xs(size);
    for (std::size_t i = 0; i < size; ++i) xs[i] = gu[i] + h * v[i];
    auto GU = make_view2<float>("gu", xs, n_rows, 2 * f);
    View2<float> OUT("out", n_rows, f);
    swiglu_forward<float>(ExecSpace(), GU, OUT);
    const auto out = to_host(OUT);
    double l = 0.0;
    abs_l = 0.0;
    for (std::size_t i = 0; i < out.size(); ++i) {
      l += dout[i] * out[i];
      abs_l += std::fabs(dout[i] * out[i]);
    }
    return l;
  };
  auto GU = make_view2<float>("gu", gu, n_rows, 2 * f);
  View2<float> DGU("dgu", n_rows, 2 * f);
  swiglu_backward<float>(ExecSpace(), GU, DOUT, DGU);
  const auto g = to_host(DGU);
  double predicted = 0.0;
  for (std::size_t i = 0; i < size; ++i) predicted += g[i] * v[i];
  // Truncation O(h^2) ~ 1e-4 relative (derivatives of silu and of the product are O(1) on [-4, 4]);
  // cancellation: each fp32 output (and the fp32-rounded shifted input) carries ~9u relative,
  // so ~ 2 * 9 2^-24 sum|dout out| / h.
  const double h = 1e-2;
  const double fd = (loss(h) - loss(-h)) / (2 * h);
  const double tol = 1e-3 * std::fabs(predicted) + 2 * 9 * kU32 * abs_l / h;
  std::printf("  directional derivative %.6e, central difference %.6e, tol %.2e\n", predicted, fd, tol);
  expect_close("swiglu fp32 kernel directional derivative", {predicted}, {fd}, {tol});
}

// exp_fp32 (exp.hpp, the exp of these kernels) against double exp on every 256th float pattern
// (2^24 inputs over the whole range): within 2 ulp for normal results, +Inf above 88.7228394,
// +0 below -103.972084, NaN for NaN, and results in the subnormal range within 2^-149 + 2 ulp.
TEST(ExpFp32, WithinTwoUlpOfDoubleExp) {
  double worst = 0.0;
  float worst_x = 0.0f;
  long long bad = 0;
  for (std::uint64_t u = 0; u < (1ull << 32); u += 256) {
    const float x = bits_float(static_cast<std::uint32_t>(u) | static_cast<std::uint32_t>(u >> 24));  // vary low bits
    const float y = exp_fp32(x);
    if (std::isnan(x)) {
      bad += !std::isnan(y);
      continue;
    }
    const double e = std::exp(static_cast<double>(x));
    if (x > 88.7228394f) {
      bad += !(std::isinf(y) && y > 0);
      continue;
    }
    if (e < std::ldexp(1.0, -126)) {  // subnormal or zero result
      bad += !(y >= 0.0f && std::fabs(y - e) <= std::ldexp(1.0, -148));
      continue;
    }
    int ex = 0;
    std::frexp(e, &ex);
    const double err = std::fabs(static_cast<double>(y) - e) / std::ldexp(1.0, ex - 24);
    if (err > worst) worst = err, worst_x = x;
  }
  EXPECT_EQ(bad, 0);
  EXPECT_LE(worst, 2.0) << "at x = " << worst_x;
  EXPECT_EQ(exp_fp32(0.0f), 1.0f);
  EXPECT_EQ(exp_fp32(-INFINITY), 0.0f);
  EXPECT_TRUE(std::isinf(exp_fp32(INFINITY)));
  std::printf("exp_fp32: worst %.3f ulp (at %.9g) over 2^24 inputs\n", worst, static_cast<double>(worst_x));
}

TEST(Swiglu, BadShapesThrow) {
  View2<float> GU("gu", 3, 10), OUT("out", 3, 4);
  EXPECT_THROW(swiglu_forward<float>(ExecSpace(), GU, OUT), std::invalid_argument);
}

}  // namespace
