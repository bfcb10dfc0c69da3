// rope forward/backward against a double reference of the same T inputs (q and k heads rotated,
// v untouched bit for bit), the double reference backward against central differences, the fp32
// kernels against a directional central difference, and backward(forward(x)) = x.
#include <Kokkos_Core.hpp>

#include "kernel_test_util.hpp"
#include "mantissa/kernels/rope.hpp"

using namespace mantissa;
using namespace mantissa::test;

namespace {

struct RopeShape {
  int n_head, n_kv_head, head_dim;
  float theta;
  int width() const { return (n_head + 2 * n_kv_head) * head_dim; }
};

// The method's angle: inv_freq and pos * inv_freq in fp32 (as the kernel and Hugging Face do).
double method_angle(int pos, int i, const RopeShape& s) {
  const float inv_freq = 1.0f / std::pow(s.theta, static_cast<float>(2 * i) / static_cast<float>(s.head_dim));
  return static_cast<double>(static_cast<float>(pos) * inv_freq);
}

// Rotation by sign * angle of the q and k heads in double; v copied.     x (N, width) -> out (N, width)
std::vector<double> ref_rotate(const std::vector<double>& x, const std::vector<int>& pos, const RopeShape& s,
                               double sign) {
  std::vector<double> out = x;
  const int width = s.width(), half = s.head_dim / 2;
  for (std::size_t n = 0; n < pos.size(); ++n) {
    for (int i = 0; i < half; ++i) {
      const double a = method_angle(pos[n], i, s);
      const double c = std::cos(a), sn = sign * std::sin(a);
      for (int h = 0; h < s.n_head + s.n_kv_head; ++h) {
        const std::size_t j1 = n * width + h * s.head_dim + i, j2 = j1 + half;
        out[j1] = x[j1] * c - x[j2] * sn;
        out[j2] = x[j2] * c + x[j1] * sn;
      }
    }
  }
  return out;
}

// Tolerance of each rotated element: fp32 cos/sin (1 ulp each, 2 on GPUs) and the two products
// and the sum, 6 2^-24 of |x1| + |x2|; the fp32 angle itself may differ by a few ulp between libms
// (powf, the product): 4 2^-24 |angle| of |x1| + |x2|; then one rounding to T.
template <class T>
std::vector<double> rotate_tol(const std::vector<double>& x, const std::vector<double>& ref,
                               const std::vector<int>& pos, const RopeShape& s) {
  std::vector<double> tol(ref.size());
  const int width = s.width(), half = s.head_dim / 2;
  for (std::size_t n = 0; n < pos.size(); ++n) {
    for (int j = 0; j < width; ++j) tol[n * width + j] = 0.0;  // v: must be untouched
    for (int i = 0; i < half; ++i) {
      const double a = method_angle(pos[n], i, s);
      for (int h = 0; h < s.n_head + s.n_kv_head; ++h) {
        const std::size_t j1 = n * width + h * s.head_dim + i, j2 = j1 + half;
        const double mag = (6 + 4 * std::fabs(a)) * kU32 * (std::fabs(x[j1]) + std::fabs(x[j2]));
        tol[j1] = mag + rounding_tol<T>(ref[j1]);
        tol[j2] = mag + rounding_tol<T>(ref[j2]);
      }
    }
  }
  return tol;
}

// Packed batch: sequences of lengths 10, 12 and 7, then one that starts at position 500.
std::vector<int> packed_positions() {
  std::vector<int> pos;
  for (int len : {10, 12, 7})
    for (int p = 0; p < len; ++p) pos.push_back(p);
  for (int p = 500; p < 506; ++p) pos.push_back(p);
  return pos;
}

template <class T>
class Rope : public ::testing::Test {};
TYPED_TEST_SUITE(Rope, StorageTypes, StorageTypeNames);

TYPED_TEST(Rope, ForwardAndBackwardMatchDoubleReference) {
  using T = TypeParam;
  const RopeShape s{4, 2, 16, 10000.0f};
  const std::vector<int> pos = packed_positions();
  const int n_rows = static_cast<int>(pos.size());
  auto P = make_int_view("pos", pos);
  for (double sign : {1.0, -1.0}) {
    const auto x = random_values<T>(static_cast<std::size_t>(n_rows) * s.width(), -2.0, 2.0, sign > 0 ? 51 : 52);
    auto X = make_view2<T>("qkv", x, n_rows, s.width());
    if (sign > 0)
      rope_forward<T>(ExecSpace(), X, P, s.n_head, s.n_kv_head, s.head_dim, s.theta);
    else
      rope_backward<T>(ExecSpace(), X, P, s.n_head, s.n_kv_head, s.head_dim, s.theta);
    const auto ref = ref_rotate(x, pos, s, sign);
    expect_close(std::string(sign > 0 ? "rope fwd " : "rope bwd ") + precision_traits<T>::name, to_host(X), ref,
                 rotate_tol<T>(x, ref, pos, s));
  }
}

// backward is the inverse rotation: backward(forward(x)) = x up to the roundings of both.
TYPED_TEST(Rope, BackwardInvertsForward) {
  using T = TypeParam;
  const RopeShape s{2, 1, 8, 10000.0f};
  const std::vector<int> pos = packed_positions();
  const int n_rows = static_cast<int>(pos.size());
  auto P = make_int_view("pos", pos);
  const auto x = random_values<T>(static_cast<std::size_t>(n_rows) * s.width(), -2.0, 2.0, 53);
  auto X = make_view2<T>("qkv", x, n_rows, s.width());
  rope_forward<T>(ExecSpace(), X, P, s.n_head, s.n_kv_head, s.head_dim, s.theta);
  rope_backward<T>(ExecSpace(), X, P, s.n_head, s.n_kv_head, s.head_dim, s.theta);
  // Two rotations, each with fp32 error 6 2^-24 (|x1|+|x2|) and one rounding to T of a value at most
  // |x1|+|x2|: 2 (u_T + 6 2^-24) (|x1|+|x2|), pairwise.
  std::vector<double> tol(x.size(), 0.0);
  const int width = s.width(), half = s.head_dim / 2;
  for (int n = 0; n < n_rows; ++n)
    for (int h = 0; h < s.n_head + s.n_kv_head; ++h)
      for (int i = 0; i < half; ++i) {
        const std::size_t j1 = static_cast<std::size_t>(n) * width + h * s.head_dim + i, j2 = j1 + half;
        const double mag = std::fabs(x[j1]) + std::fabs(x[j2]);
        tol[j1] = tol[j2] = 2 * (unit_roundoff<T>() + 6 * kU32) * mag + 2 * subnormal_half_ulp<T>();
      }
  expect_close(std::string("rope bwd(fwd(x)) = x ") + precision_traits<T>::name, to_host(X), x, tol);
}

// L = sum dy . rope(x): the reference gradient (inverse rotation of dy) against central
// differences of the double forward, every coordinate.
TEST(Rope, ReferenceBackwardMatchesFiniteDifferences) {
  const RopeShape s{1, 1, 4, 10000.0f};
  const std::vector<int> pos = {0, 3, 7};
  const int n = static_cast<int>(pos.size());
  const auto x = random_values<double>(static_cast<std::size_t>(n) * s.width(), -2.0, 2.0, 54);
  const auto dy = random_values<double>(x.size(), -1.0, 1.0, 55);
  auto loss = [&](const std::vector<double>& xv) {
    const auto y = ref_rotate(xv, pos, s, 1.0);
    double l = 0.0;
    for (std::size_t i = 0; i < y.size(); ++i) l += dy[i] * y[i];
    return l;
  };
  const auto grad = ref_rotate(dy, pos, s, -1.0);
  // L is linear in x: the central difference has no truncation error; cancellation 1e-16 |L| / h.
  const double h = 1e-5;
  std::vector<double> fd(x.size()), tol(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    auto xp = x, xm = x;
    xp[i] += h;
    xm[i] -= h;
    fd[i] = (loss(xp) - loss(xm)) / (2 * h);
    tol[i] = 1e-6 * (std::fabs(grad[i]) + 1.0);
  }
  expect_close("rope ref backward vs central differences", grad, fd, tol);
}

// The fp32 kernels: d/dh sum dy . rope_forward(x + h v) against <rope_backward(dy), v>.
TEST(Rope, Fp32KernelDirectionalDerivative) {
  const RopeShape s{2, 1, 8, 10000.0f};
  const std::vector<int> pos = {0, 1, 2, 40, 41};
  const int n_rows = static_cast<int>(pos.size());
  const std::size_t size = static_cast<std::size_t>(n_rows) * s.width();
  auto P = make_int_view("pos", pos);
  const auto x = random_values<float>(size, -2.0, 2.0, 56);
  const auto v = random_values<float>(size, -1.0, 1.0, 57);
  const auto dy = random_values<float>(size, -1.0, 1.0, 58);
  double abs_l = 0.0;
  auto loss = [&](double h) {
    std::vector<double> xs(size);
    for (std::size_t i = 0; i < size; ++i) xs[i] = x[i] + h * v[i];
    auto X = make_view2<float>("qkv", xs, n_rows, s.width());
    rope_forward<float>(ExecSpace(), X, P, s.n_head, s.n_kv_head, s.head_dim, s.theta);
    const auto y = to_host(X);
    double l = 0.0;
    abs_l = 0.0;
    for (std::size_t i = 0; i < size; ++i) {
      l += dy[i] * y[i];
      abs_l += std::fabs(dy[i] * y[i]);
    }
    return l;
  };
  auto DY = make_view2<float>("dqkv", dy, n_rows, s.width());
  rope_backward<float>(ExecSpace(), DY, P, s.n_head, s.n_kv_head, s.head_dim, s.theta);
  const auto g = to_host(DY);
  double predicted = 0.0;
  for (std::size_t i = 0; i < size; ++i) predicted += g[i] * v[i];
  // The map is linear (no truncation error); each fp32 output has relative error ~(6 + 4|angle| +
  // 1) 2^-24 with |angle| <= 41, and x + h v rounds to fp32 (2^-24 |x|), so the difference quotient
  // carries ~ 2 * 200 2^-24 sum|dy y| / h.
  const double h = 1e-2;
  const double fd = (loss(h) - loss(-h)) / (2 * h);
  const double tol = 1e-6 * std::fabs(predicted) + 2 * 200 * kU32 * abs_l / h;
  std::printf("  directional derivative %.6e, central difference %.6e, tol %.2e\n", predicted, fd, tol);
  expect_close("rope fp32 kernel directional derivative", {predicted}, {fd}, {tol});
}

// The engines pass a RopeTable (cos/sin computed once): the same bits as computing them per call,
// also for rows whose position lies past the table (they compute their own), forward and backward.
TYPED_TEST(Rope, TableGivesTheSameBits) {
  using T = TypeParam;
  const RopeShape s{4, 2, 16, 10000.0f};
  const std::vector<int> pos = packed_positions();  // 0..11 and 500..505: the table below holds 0..502
  const int n_rows = static_cast<int>(pos.size());
  auto P = make_int_view("pos", pos);
  const RopeTable table = rope_table(ExecSpace(), 503, s.head_dim, s.theta);
  for (int dir : {1, -1}) {
    const auto x = random_values<T>(static_cast<std::size_t>(n_rows) * s.width(), -2.0, 2.0, 60 + dir);
    auto A = make_view2<T>("qkv_a", x, n_rows, s.width());
    auto B = make_view2<T>("qkv_b", x, n_rows, s.width());
    if (dir > 0) {
      rope_forward<T>(ExecSpace(), A, P, s.n_head, s.n_kv_head, s.head_dim, s.theta);
      rope_forward<T>(ExecSpace(), B, P, s.n_head, s.n_kv_head, s.head_dim, s.theta, table);
    } else {
      rope_backward<T>(ExecSpace(), A, P, s.n_head, s.n_kv_head, s.head_dim, s.theta);
      rope_backward<T>(ExecSpace(), B, P, s.n_head, s.n_kv_head, s.head_dim, s.theta, table);
    }
    const auto a = to_host(A), b = to_host(B);
    ASSERT_EQ(a.size(), b.size());
    for (std::size_t i = 0; i < a.size(); ++i) ASSERT_EQ(float_bits(static_cast<float>(a[i])), float_bits(static_cast<float>(b[i]))) << i;
  }
  View2<T> X("qkv", 3, s.width());
  View1<int> Q("pos", 3);
  EXPECT_THROW(rope_forward<T>(ExecSpace(), X, Q, s.n_head, s.n_kv_head, s.head_dim, 500000.0f, table),
               std::invalid_argument);  // built for another theta
}

TEST(Rope, BadShapesThrow) {
  View2<float> X("qkv", 3, 4 * 16);
  View1<int> P("pos", 3);
  EXPECT_THROW(rope_forward<float>(ExecSpace(), X, P, 2, 2, 16, 1e4f), std::invalid_argument);  // width 96 != 64
  EXPECT_THROW(rope_forward<float>(ExecSpace(), X, P, 2, 1, 15, 1e4f), std::invalid_argument);  // odd head_dim
  EXPECT_NO_THROW(rope_backward<float>(ExecSpace(), X, P, 2, 1, 16, 1e4f));
}

}  // namespace
