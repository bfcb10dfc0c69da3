// logsoftmax_gather forward (logp, entropy, lse) and backward against a double reference of the
// same T logits, rows without a target, the double reference backward against central
// differences, and the fp32 kernels against a directional central difference.
#include <Kokkos_Core.hpp>
#include <algorithm>

#include "kernel_test_util.hpp"
#include "mantissa/kernels/logsoftmax.hpp"

using namespace mantissa;
using namespace mantissa::test;

namespace {

struct RowStats {
  double lse, logp, entropy;
  double max_dev;     // max_v |x_v - max x|
  double log_s;       // log sum exp(x - max)
  double mean_shift;  // |sum_v p_v (x_v - max)|
};

// Exact row statistics in double.                                     logits (N,V) -> per row
std::vector<RowStats> ref_forward(const std::vector<double>& x, const std::vector<int>& targets, int vocab) {
  std::vector<RowStats> out(targets.size());
  for (std::size_t n = 0; n < targets.size(); ++n) {
    const double* row = &x[n * vocab];
    const double m = *std::max_element(row, row + vocab);
    double s = 0.0, t = 0.0, max_dev = 0.0;
    for (int v = 0; v < vocab; ++v) {
      const double e = std::exp(row[v] - m);
      s += e;
      t += e * (row[v] - m);
      max_dev = std::max(max_dev, m - row[v]);
    }
    RowStats r;
    r.log_s = std::log(s);
    r.lse = m + r.log_s;
    r.entropy = r.log_s - t / s;
    r.logp = targets[n] < 0 ? 0.0 : row[targets[n]] - r.lse;
    r.max_dev = max_dev;
    r.mean_shift = std::fabs(t / s);
    out[n] = r;
  }
  return out;
}

// dlogits = dlogp (1[v == t] - p_v), zero rows without a target.
std::vector<double> ref_backward(const std::vector<double>& x, const std::vector<int>& targets,
                                 const std::vector<double>& dlogp, int vocab) {
  const auto stats = ref_forward(x, targets, vocab);
  std::vector<double> g(x.size(), 0.0);
  for (std::size_t n = 0; n < targets.size(); ++n) {
    if (targets[n] < 0) continue;
    for (int v = 0; v < vocab; ++v)
      g[n * vocab + v] = dlogp[n] * ((v == targets[n] ? 1.0 : 0.0) - std::exp(x[n * vocab + v] - stats[n].lse));
  }
  return g;
}

// Absolute error bound of the fp32 lse: exp(fl(x - m)) carries (2 + |x - m|) u relative (the
// argument's rounding and 2 ulp of exp), the sum of V positive terms (V - 1) u, then log (u |log S|)
// and the final add (u |lse|).
double lse_tol(const RowStats& r, int vocab) {
  return (vocab + 2 + r.max_dev + std::fabs(r.log_s) + std::fabs(r.lse)) * kU32;
}

std::vector<int> make_targets(int n_rows, int vocab, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int> t(n_rows);
  for (auto& x : t) x = static_cast<int>(rng() % vocab);
  t[1] = -1;  // rows without a target
  t[n_rows - 1] = -7;
  return t;
}

template <class T>
class LogSoftmax : public ::testing::Test {};
TYPED_TEST_SUITE(LogSoftmax, StorageTypes, StorageTypeNames);

TYPED_TEST(LogSoftmax, ForwardMatchesDoubleReference) {
  using T = TypeParam;
  for (int vocab : {37, 1000}) {
    const int n_rows = 13;
    const auto x = random_values<T>(static_cast<std::size_t>(n_rows) * vocab, -8.0, 8.0, 71 + vocab);
    const auto targets = make_targets(n_rows, vocab, 72);
    auto X = make_view2<T>("logits", x, n_rows, vocab);
    auto TG = make_int_view("targets", targets);
    View1<float> LOGP("logp", n_rows), H("entropy", n_rows), LSE("lse", n_rows);
    logsoftmax_gather_forward<T>(ExecSpace(), X, TG, LOGP, H, LSE);
    const auto stats = ref_forward(x, targets, vocab);
    std::vector<double> lse(n_rows), logp(n_rows), ent(n_rows), t_lse(n_rows), t_logp(n_rows), t_ent(n_rows);
    for (int n = 0; n < n_rows; ++n) {
      const RowStats& r = stats[n];
      lse[n] = r.lse;
      logp[n] = r.logp;
      ent[n] = r.entropy;
      t_lse[n] = lse_tol(r, vocab);
      // logp = x_t - lse: the lse error and one subtraction; exactly 0 without a target.
      t_logp[n] = targets[n] < 0 ? 0.0 : t_lse[n] + kU32 * std::fabs(r.logp);
      // entropy = log S - T/S: T's terms e (x - m) have one sign, (4 + |x - m|) u each plus (V - 1) u
      // for the sum; T/S adds S's relative error and a division: (2V + 8 + 2 max|x - m|) u of |T/S|;
      // log S as in lse; the difference u |H|.
      t_ent[n] = ((2.0 * vocab + 8 + 2 * r.max_dev) * r.mean_shift + vocab + 2 + r.max_dev + std::fabs(r.log_s) +
                  std::fabs(r.entropy)) *
                 kU32;
    }
    const std::string tag = std::string(precision_traits<T>::name) + " V=" + std::to_string(vocab);
    expect_close("logsoftmax fwd lse " + tag, to_host(LSE), lse, t_lse);
    expect_close("logsoftmax fwd logp " + tag, to_host(LOGP), logp, t_logp);
    expect_close("logsoftmax fwd entropy " + tag, to_host(H), ent, t_ent);
  }
}

TYPED_TEST(LogSoftmax, BackwardMatchesDoubleReference) {
  using T = TypeParam;
  const int n_rows = 13, vocab = 1000;
  const auto x = random_values<T>(static_cast<std::size_t>(n_rows) * vocab, -8.0, 8.0, 81);
  const auto targets = make_targets(n_rows, vocab, 82);
  const auto dlogp = random_values<float>(n_rows, -2.0, 2.0, 83);
  auto X = make_view2<T>("logits", x, n_rows, vocab);
  auto TG = make_int_view("targets", targets);
  auto DLOGP = make_view1<float>("dlogp", dlogp);
  View1<float> LOGP("logp", n_rows), H("entropy", n_rows), LSE("lse", n_rows);
  View2<T> DX("dlogits", n_rows, vocab);
  Kokkos::deep_copy(DX, from_float<T>(NAN));  // every element must be written
  logsoftmax_gather_forward<T>(ExecSpace(), X, TG, LOGP, H, LSE);
  logsoftmax_gather_backward<T>(ExecSpace(), X, TG, LSE, DLOGP, DX);

  const auto stats = ref_forward(x, targets, vocab);
  const auto g = ref_backward(x, targets, dlogp, vocab);
  std::vector<double> tol(g.size());
  for (int n = 0; n < n_rows; ++n)
    for (int v = 0; v < vocab; ++v) {
      const std::size_t i = static_cast<std::size_t>(n) * vocab + v;
      const double xv = x[i], p = std::exp(xv - stats[n].lse);
      // p = exp(fl(x - lse)) with the forward's fp32 lse: relative lse_tol + u |x - lse| + 2 ulp of
      // exp; then 1[v=t] - p (u) and the product with dlogp (u); one rounding to T. Zero rows exact.
      tol[i] = targets[n] < 0
                   ? 0.0
                   : std::fabs(dlogp[n]) *
                             (p * (lse_tol(stats[n], vocab) + (std::fabs(xv - stats[n].lse) + 3) * kU32) + 2 * kU32) +
                         rounding_tol<T>(g[i]);
    }
  expect_close(std::string("logsoftmax bwd ") + precision_traits<T>::name, to_host(DX), g, tol);
}

// L = sum_n dlogp_n logp_n: the reference gradient against central differences, every logit.
TEST(LogSoftmax, ReferenceBackwardMatchesFiniteDifferences) {
  const int n_rows = 3, vocab = 7;
  const auto x = random_values<double>(static_cast<std::size_t>(n_rows) * vocab, -3.0, 3.0, 91);
  const std::vector<int> targets = {4, -1, 0};
  const auto dlogp = random_values<double>(n_rows, -2.0, 2.0, 92);
  auto loss = [&](const std::vector<double>& xv) {
    const auto stats = ref_forward(xv, targets, vocab);
    double l = 0.0;
    for (int n = 0; n < n_rows; ++n) l += dlogp[n] * stats[n].logp;
    return l;
  };
  const auto grad = ref_backward(x, targets, dlogp, vocab);
  // h = 1e-5: truncation h^2 |L'''| ~ 1e-10, cancellation 1e-16 |L| / h ~ 1e-11.
  const double h = 1e-5;
  std::vector<double> fd(x.size()), tol(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    auto p = x, m = x;
    p[i] += h;
    m[i] -= h;
    fd[i] = (loss(p) - loss(m)) / (2 * h);
    tol[i] = 1e-6 * (std::fabs(grad[i]) + 1.0);
  }
  expect_close("logsoftmax ref backward vs central differences", grad, fd, tol);
}

// The fp32 kernels: d/dh sum dlogp . logp(x + h v) against <logsoftmax_gather_backward, v>.
TEST(LogSoftmax, Fp32KernelDirectionalDerivative) {
  const int n_rows = 4, vocab = 16;
  const std::size_t size = static_cast<std::size_t>(n_rows) * vocab;
  const auto x = random_values<float>(size, -3.0, 3.0, 93);
  const auto v = random_values<float>(size, -1.0, 1.0, 94);
  const std::vector<int> targets = {3, 15, -1, 0};
  const auto dlogp = random_values<float>(n_rows, -2.0, 2.0, 95);
  auto TG = make_int_view("targets", targets);
  double abs_l = 0.0;
  auto run_forward = [&](const std::vector<double>& xs, View1<float>& lse_out) {
    auto X = make_view2<float>("logits", xs, n_rows, vocab);
    View1<float> LOGP("logp", n_rows), H("entropy", n_rows);
    lse_out = View1<float>("lse", n_rows);
    logsoftmax_gather_forward<float>(ExecSpace(), X, TG, LOGP, H, lse_out);
    return to_host(LOGP);
  };
  auto loss = [&](double h) {
    std::vector<double> xs(size);
    for (std::size_t i = 0; i < size; ++i) xs[i] = x[i] + h * v[i];
    View1<float> lse;
    const auto logp = run_forward(xs, lse);
    double l = 0.0;
    abs_l = 0.0;
    for (int n = 0; n < n_rows; ++n) {
      l += dlogp[n] * logp[n];
      abs_l += std::fabs(dlogp[n]) * (std::fabs(logp[n]) + vocab + 20);  // see tol below
    }
    return l;
  };
  View1<float> LSE;
  run_forward(x, LSE);
  auto X = make_view2<float>("logits", x, n_rows, vocab);
  auto DLOGP = make_view1<float>("dlogp", dlogp);
  View2<float> DX("dlogits", n_rows, vocab);
  logsoftmax_gather_backward<float>(ExecSpace(), X, TG, LSE, DLOGP, DX);
  const auto g = to_host(DX);
  double predicted = 0.0;
  for (std::size_t i = 0; i < size; ++i) predicted += g[i] * v[i];
  // Truncation O(h^2) ~ 1e-4 relative; cancellation: each fp32 logp has absolute error
  // (V + 2 + max|x - m| + |log S| + |lse|) 2^-24 + u |logp| (lse_tol), <= (V + 20 + |logp|) 2^-24
  // for |x| <= 3.01, in each of the two evaluations, divided by 2h.
  const double h = 1e-2;
  const double fd = (loss(h) - loss(-h)) / (2 * h);
  const double tol = 1e-3 * std::fabs(predicted) + 2 * kU32 * abs_l / h;
  std::printf("  directional derivative %.6e, central difference %.6e, tol %.2e\n", predicted, fd, tol);
  expect_close("logsoftmax fp32 kernel directional derivative", {predicted}, {fd}, {tol});
}

// A target >= V reads no memory and is loud: NaN logp and a NaN gradient row.
TEST(LogSoftmax, TargetOutOfRangeIsNaN) {
  const int vocab = 5;
  const auto x = random_values<float>(2 * vocab, -1.0, 1.0, 96);
  auto X = make_view2<float>("logits", x, 2, vocab);
  auto TG = make_int_view("targets", {vocab, 2});
  View1<float> LOGP("logp", 2), H("entropy", 2), LSE("lse", 2);
  logsoftmax_gather_forward<float>(ExecSpace(), X, TG, LOGP, H, LSE);
  const auto logp = to_host(LOGP);
  EXPECT_TRUE(std::isnan(logp[0]));
  EXPECT_TRUE(std::isfinite(logp[1]));
  auto DLOGP = make_view1<float>("dlogp", {1.0, 1.0});
  View2<float> DX("dlogits", 2, vocab);
  logsoftmax_gather_backward<float>(ExecSpace(), X, TG, LSE, DLOGP, DX);
  const auto g = to_host(DX);
  for (int v = 0; v < vocab; ++v) {
    EXPECT_TRUE(std::isnan(g[v]));
    EXPECT_TRUE(std::isfinite(g[vocab + v]));
  }
}

}  // namespace
