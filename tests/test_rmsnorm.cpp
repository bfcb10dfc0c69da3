// rmsnorm forward/backward against a double reference of the same T inputs; the double reference
// backward against central differences of the double forward; the fp32 kernel's backward against
// a directional central difference of the fp32 kernel's forward.
#include <Kokkos_Core.hpp>

#include "kernel_test_util.hpp"
#include "mantissa/kernels/rmsnorm.hpp"

using namespace mantissa;
using namespace mantissa::test;

namespace {

constexpr double kEps = 1e-5;

// y = x r w, r = 1/sqrt(mean(x^2) + eps), in double.                 x (N,D), w (D) -> y (N,D), r (N)
void ref_forward(const std::vector<double>& x, const std::vector<double>& w, int n_rows, int dim,
                 std::vector<double>& y, std::vector<double>& r) {
  y.assign(x.size(), 0.0);
  r.assign(n_rows, 0.0);
  for (int n = 0; n < n_rows; ++n) {
    double ss = 0.0;
    for (int j = 0; j < dim; ++j) ss += x[n * dim + j] * x[n * dim + j];
    r[n] = 1.0 / std::sqrt(ss / dim + kEps);
    for (int j = 0; j < dim; ++j) y[n * dim + j] = x[n * dim + j] * r[n] * w[j];
  }
}

// dx = r w dy - r^3/D x sum(dy w x), dw = sum_n dy x r, in double (dx, dw without accumulation).
void ref_backward(const std::vector<double>& x, const std::vector<double>& w, const std::vector<double>& dy, int n_rows,
                  int dim, std::vector<double>& dx, std::vector<double>& dw) {
  std::vector<double> y, r;
  ref_forward(x, w, n_rows, dim, y, r);
  dx.assign(x.size(), 0.0);
  dw.assign(dim, 0.0);
  for (int n = 0; n < n_rows; ++n) {
    double dot = 0.0;
    for (int j = 0; j < dim; ++j) dot += dy[n * dim + j] * w[j] * x[n * dim + j];
    for (int j = 0; j < dim; ++j) {
      dx[n * dim + j] = r[n] * w[j] * dy[n * dim + j] - r[n] * r[n] * r[n] / dim * x[n * dim + j] * dot;
      dw[j] += dy[n * dim + j] * x[n * dim + j] * r[n];
    }
  }
}

template <class T>
class Rmsnorm : public ::testing::Test {};
TYPED_TEST_SUITE(Rmsnorm, StorageTypes, StorageTypeNames);

TYPED_TEST(Rmsnorm, ForwardMatchesDoubleReference) {
  using T = TypeParam;
  const int n_rows = 37, dim = 96;
  const auto x = random_values<T>(n_rows * dim, -2.0, 2.0, 11);
  const auto w = random_values<T>(dim, 0.5, 1.5, 12);
  auto X = make_view2<T>("x", x, n_rows, dim);
  auto W = make_view1<T>("w", w);
  View2<T> Y("y", n_rows, dim);
  View1<float> R("rstd", n_rows);
  rmsnorm_forward<T>(ExecSpace(), X, W, static_cast<float>(kEps), Y, R);

  std::vector<double> y, r;
  ref_forward(x, w, n_rows, dim, y, r);
  // rstd: sum of D positive fp32 squares D u, then /D, +eps, sqrt, 1/x: 4u (the sqrt halves the
  // sum's error; kept as slack). y: two more fp32 products, then one rounding to T.
  const double rel32 = (dim + 8) * kU32;
  std::vector<double> tol_r(n_rows), tol_y(y.size());
  for (int n = 0; n < n_rows; ++n) tol_r[n] = rel32 * r[n];
  for (std::size_t i = 0; i < y.size(); ++i) tol_y[i] = rel32 * std::fabs(y[i]) + rounding_tol<T>(y[i]);
  expect_close(std::string("rmsnorm fwd rstd ") + precision_traits<T>::name, to_host(R), r, tol_r);
  expect_close(std::string("rmsnorm fwd y ") + precision_traits<T>::name, to_host(Y), y, tol_y);
}

TYPED_TEST(Rmsnorm, BackwardMatchesDoubleReference) {
  using T = TypeParam;
  const int n_rows = 37, dim = 96;  // 37 rows: two full 16-row chunks and a partial one
  const auto x = random_values<T>(n_rows * dim, -2.0, 2.0, 21);
  const auto w = random_values<T>(dim, 0.5, 1.5, 22);
  const auto dy = random_values<T>(n_rows * dim, -1.0, 1.0, 23);
  const auto dx0 = random_values<T>(n_rows * dim, -1.0, 1.0, 24);
  const auto dw0 = random_values<float>(dim, -1.0, 1.0, 25);
  auto X = make_view2<T>("x", x, n_rows, dim);
  auto W = make_view1<T>("w", w);
  auto DY = make_view2<T>("dy", dy, n_rows, dim);
  View2<T> Y("y", n_rows, dim);
  View1<float> R("rstd", n_rows);
  rmsnorm_forward<T>(ExecSpace(), X, W, static_cast<float>(kEps), Y, R);

  std::vector<double> dx, dw, y, r;
  ref_backward(x, w, dy, n_rows, dim, dx, dw);
  ref_forward(x, w, n_rows, dim, y, r);

  // Scale of the two dx terms: r|w dy| + r^3/D |x| sum|dy w x|.
  std::vector<double> scale(x.size()), dw_scale(dim, 0.0);
  for (int n = 0; n < n_rows; ++n) {
    double abs_dot = 0.0;
    for (int j = 0; j < dim; ++j) abs_dot += std::fabs(dy[n * dim + j] * w[j] * x[n * dim + j]);
    for (int j = 0; j < dim; ++j) {
      scale[n * dim + j] =
          r[n] * std::fabs(w[j] * dy[n * dim + j]) + r[n] * r[n] * r[n] / dim * std::fabs(x[n * dim + j]) * abs_dot;
      dw_scale[j] += std::fabs(dy[n * dim + j] * x[n * dim + j]) * r[n];
    }
  }

  for (bool accumulate : {false, true}) {
    auto DX = make_view2<T>("dx", dx0, n_rows, dim);
    if (!accumulate) Kokkos::deep_copy(DX, from_float<T>(NAN));  // '=' must not read dx
    auto DW = make_view1<float>("dw", dw0);
    rmsnorm_backward<T>(ExecSpace(), X, W, R, DY, DX, DW, accumulate);
    std::vector<double> ref_dx(x.size()), tol_dx(x.size()), ref_dw(dim), tol_dw(dim);
    for (std::size_t i = 0; i < x.size(); ++i) {
      ref_dx[i] = (accumulate ? dx0[i] : 0.0) + dx[i];
      // rstd from the fp32 forward (rel. err. (D/2+5)u) enters r once and r^3 three times; the dot
      // over D terms: (D+1)u; products, /D, the difference: 5u  ->  (2.5 D + 21) u of the scale.
      // Then the accumulating add (u of the result) and one rounding to T.
      tol_dx[i] = (3 * dim + 24) * kU32 * scale[i] + kU32 * std::fabs(ref_dx[i]) + rounding_tol<T>(ref_dx[i]);
    }
    for (int j = 0; j < dim; ++j) {
      ref_dw[j] = dw0[j] + dw[j];
      // fp32 sum over N rows in 16-row partials plus one add per partial into dw: (N + N/16 + 1) u;
      // per term two products and the forward's rstd error (D/2 + 7) u.
      tol_dw[j] = (n_rows + dim + 16) * kU32 * (dw_scale[j] + std::fabs(dw0[j]));
    }
    const std::string mode = accumulate ? " (+=) " : " (=) ";
    expect_close("rmsnorm bwd dx" + mode + precision_traits<T>::name, to_host(DX), ref_dx, tol_dx);
    expect_close("rmsnorm bwd dw" + mode + precision_traits<T>::name, to_host(DW), ref_dw, tol_dw);
  }
}

// L = sum dy . y(x, w): the double reference gradient against central differences of the double
// forward, every coordinate of x and w.
TEST(Rmsnorm, ReferenceBackwardMatchesFiniteDifferences) {
  const int n_rows = 3, dim = 8;
  const auto x = random_values<double>(n_rows * dim, -2.0, 2.0, 31);
  const auto w = random_values<double>(dim, 0.5, 1.5, 32);
  const auto dy = random_values<double>(n_rows * dim, -1.0, 1.0, 33);
  auto loss = [&](const std::vector<double>& xv, const std::vector<double>& wv) {
    std::vector<double> y, r;
    ref_forward(xv, wv, n_rows, dim, y, r);
    double l = 0.0;
    for (std::size_t i = 0; i < y.size(); ++i) l += dy[i] * y[i];
    return l;
  };
  std::vector<double> dx, dw;
  ref_backward(x, w, dy, n_rows, dim, dx, dw);
  // Central difference with h = 1e-5: truncation h^2 |L'''| ~ 1e-10, cancellation 1e-16 |L| / h ~ 1e-11.
  const double h = 1e-5;
  std::vector<double> fd_x(x.size()), fd_w(dim), tol_x(x.size()), tol_w(dim);
  for (std::size_t i = 0; i < x.size(); ++i) {
    auto xp = x, xm = x;
    xp[i] += h;
    xm[i] -= h;
    fd_x[i] = (loss(xp, w) - loss(xm, w)) / (2 * h);
    tol_x[i] = 1e-6 * (std::fabs(dx[i]) + 1.0);
  }
  for (int j = 0; j < dim; ++j) {
    auto wp = w, wm = w;
    wp[j] += h;
    wm[j] -= h;
    fd_w[j] = (loss(x, wp) - loss(x, wm)) / (2 * h);
    tol_w[j] = 1e-6 * (std::fabs(dw[j]) + 1.0);
  }
  expect_close("rmsnorm ref dx vs central differences", dx, fd_x, tol_x);
  expect_close("rmsnorm ref dw vs central differences", dw, fd_w, tol_w);
}

// The fp32 kernels: dL/dh of L(h) = sum dy . y(x + h vx, w + h vw) from the kernel forward, against
// <dx, vx> + <dw, vw> from the kernel backward.
TEST(Rmsnorm, Fp32KernelDirectionalDerivative) {
  const int n_rows = 4, dim = 16;  // small: the cancellation bound grows like N D, the derivative like sqrt(N D)
  const auto x = random_values<float>(n_rows * dim, -2.0, 2.0, 41);
  const auto w = random_values<float>(dim, 0.5, 1.5, 42);
  const auto dy = random_values<float>(n_rows * dim, -1.0, 1.0, 43);
  const auto vx = random_values<float>(n_rows * dim, -1.0, 1.0, 44);
  const auto vw = random_values<float>(dim, -1.0, 1.0, 45);
  auto DY = make_view2<float>("dy", dy, n_rows, dim);
  double abs_l = 0.0;
  auto loss = [&](double h) {
    std::vector<double> xs(x.size()), ws(dim);
    for (std::size_t i = 0; i < x.size(); ++i) xs[i] = x[i] + h * vx[i];
    for (int j = 0; j < dim; ++j) ws[j] = w[j] + h * vw[j];
    auto X = make_view2<float>("x", xs, n_rows, dim);
    auto W = make_view1<float>("w", ws);
    View2<float> Y("y", n_rows, dim);
    View1<float> R("rstd", n_rows);
    rmsnorm_forward<float>(ExecSpace(), X, W, static_cast<float>(kEps), Y, R);
    const auto y = to_host(Y);
    double l = 0.0;
    abs_l = 0.0;
    for (std::size_t i = 0; i < y.size(); ++i) {
      l += dy[i] * y[i];
      abs_l += std::fabs(dy[i] * y[i]);
    }
    return l;
  };
  auto X = make_view2<float>("x", x, n_rows, dim);
  auto W = make_view1<float>("w", w);
  View2<float> Y("y", n_rows, dim), DX("dx", n_rows, dim);
  View1<float> R("rstd", n_rows), DW("dw", dim);
  rmsnorm_forward<float>(ExecSpace(), X, W, static_cast<float>(kEps), Y, R);
  rmsnorm_backward<float>(ExecSpace(), X, W, R, DY, DX, DW, false);
  const auto dx = to_host(DX), dw = to_host(DW);
  double predicted = 0.0;
  for (std::size_t i = 0; i < x.size(); ++i) predicted += dx[i] * vx[i];
  for (int j = 0; j < dim; ++j) predicted += dw[j] * vw[j];
  // The shifted inputs x + h v are rounded to fp32 (relative 2^-24 of |x| ~ 2, i.e. a shift error
  // ~1e-7/h of v); y carries (D+8) 2^-24 relative error, so the difference quotient has a
  // cancellation error ~ (D+8) 2^-24 sum|dy y| / h; the truncation error is O(h^2) = 1e-4 relative.
  const double h = 1e-2;
  const double fd = (loss(h) - loss(-h)) / (2 * h);
  const double tol = 1e-3 * std::fabs(predicted) + 2 * (dim + 8) * kU32 * abs_l / h;
  std::printf("  directional derivative %.6e, central difference %.6e, tol %.2e\n", predicted, fd, tol);
  expect_close("rmsnorm fp32 kernel directional derivative", {predicted}, {fd}, {tol});
}

TEST(Rmsnorm, ShapeMismatchThrows) {
  View2<float> X("x", 4, 8), Y("y", 4, 7);
  View1<float> W("w", 8), R("rstd", 4);
  EXPECT_THROW(rmsnorm_forward<float>(ExecSpace(), X, W, 1e-5f, Y, R), std::invalid_argument);
}

}  // namespace
