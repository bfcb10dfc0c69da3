// embedding forward (an exact row gather) and backward (fp32 scatter-add with repeated tokens,
// accumulated into existing values) against a double reference; the reference backward against
// central differences; the fp32 kernels against a directional central difference; bad token ids.
#include <Kokkos_Core.hpp>

#include "kernel_test_util.hpp"
#include "mantissa/kernels/embedding.hpp"

using namespace mantissa;
using namespace mantissa::test;

namespace {

// Tokens with repeats: every id in [0, 7) appears several times among n tokens.
std::vector<int> tokens_with_repeats(int n, int vocab, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int> t(n);
  for (int i = 0; i < n; ++i) t[i] = i % 3 == 0 ? static_cast<int>(rng() % 7) : static_cast<int>(rng() % vocab);
  return t;
}

// L = sum dout . table[tokens]: dL/dtable[v,:] = sum over n with tokens[n] = v of dout[n,:].
std::vector<double> ref_backward(const std::vector<int>& tokens, const std::vector<double>& dout, int vocab, int dim) {
  std::vector<double> g(static_cast<std::size_t>(vocab) * dim, 0.0);
  for (std::size_t n = 0; n < tokens.size(); ++n)
    for (int d = 0; d < dim; ++d) g[tokens[n] * dim + d] += dout[n * dim + d];
  return g;
}

template <class T>
class Embedding : public ::testing::Test {};
TYPED_TEST_SUITE(Embedding, StorageTypes, StorageTypeNames);

TYPED_TEST(Embedding, ForwardIsExactGather) {
  using T = TypeParam;
  const int vocab = 50, dim = 24, n = 41;
  const auto table = random_values<T>(static_cast<std::size_t>(vocab) * dim, -1.0, 1.0, 101);
  const auto tokens = tokens_with_repeats(n, vocab, 102);
  auto TBL = make_view2<T>("table", table, vocab, dim);
  auto TOK = make_int_view("tokens", tokens);
  View2<T> OUT("out", n, dim);
  embedding_forward<T>(ExecSpace(), TOK, TBL, OUT);
  std::vector<double> ref(static_cast<std::size_t>(n) * dim);
  for (int i = 0; i < n; ++i)
    for (int d = 0; d < dim; ++d) ref[i * dim + d] = table[tokens[i] * dim + d];
  // A copy: no arithmetic, exact.
  expect_close(std::string("embedding fwd ") + precision_traits<T>::name, to_host(OUT), ref,
               std::vector<double>(ref.size(), 0.0));
}

TYPED_TEST(Embedding, BackwardAccumulatesInFp32) {
  using T = TypeParam;
  const int vocab = 50, dim = 24, n = 41;
  const auto tokens = tokens_with_repeats(n, vocab, 103);
  const auto dout = random_values<T>(static_cast<std::size_t>(n) * dim, -1.0, 1.0, 104);
  const auto dtable0 = random_values<float>(static_cast<std::size_t>(vocab) * dim, -1.0, 1.0, 105);
  auto TOK = make_int_view("tokens", tokens);
  auto DOUT = make_view2<T>("dout", dout, n, dim);
  auto DTBL = make_view2<float>("dtable", dtable0, vocab, dim);
  embedding_backward<T>(ExecSpace(), TOK, DOUT, DTBL);
  const auto g = ref_backward(tokens, dout, vocab, dim);
  std::vector<int> count(vocab, 0);
  for (int t : tokens) ++count[t];
  std::vector<double> ref(g.size()), abs_sum(g.size()), tol(g.size());
  for (std::size_t i = 0; i < tokens.size(); ++i)
    for (int d = 0; d < dim; ++d) abs_sum[tokens[i] * dim + d] += std::fabs(dout[i * dim + d]);
  for (int v = 0; v < vocab; ++v)
    for (int d = 0; d < dim; ++d) {
      const std::size_t i = static_cast<std::size_t>(v) * dim + d;
      ref[i] = dtable0[i] + g[i];
      // count[v] fp32 additions in any (atomic) order onto the existing value: count u of the
      // sum of magnitudes; untouched rows exact.
      tol[i] = count[v] * kU32 * (std::fabs(dtable0[i]) + abs_sum[i]);
    }
  expect_close(std::string("embedding bwd ") + precision_traits<T>::name, to_host(DTBL), ref, tol);
}

// The reference gradient against central differences of L(table) = sum dout . table[tokens].
TEST(Embedding, ReferenceBackwardMatchesFiniteDifferences) {
  const int vocab = 6, dim = 3;
  const std::vector<int> tokens = {2, 0, 2, 5, 2};
  const auto table = random_values<double>(static_cast<std::size_t>(vocab) * dim, -1.0, 1.0, 106);
  const auto dout = random_values<double>(tokens.size() * dim, -1.0, 1.0, 107);
  auto loss = [&](const std::vector<double>& tb) {
    double l = 0.0;
    for (std::size_t n = 0; n < tokens.size(); ++n)
      for (int d = 0; d < dim; ++d) l += dout[n * dim + d] * tb[tokens[n] * dim + d];
    return l;
  };
  const auto grad = ref_backward(tokens, dout, vocab, dim);
  // L is linear in the table: no truncation error; cancellation 1e-16 |L| / h.
  const double h = 1e-5;
  std::vector<double> fd(table.size()), tol(table.size());
  for (std::size_t i = 0; i < table.size(); ++i) {
    auto p = table, m = table;
    p[i] += h;
    m[i] -= h;
    fd[i] = (loss(p) - loss(m)) / (2 * h);
    tol[i] = 1e-6 * (std::fabs(grad[i]) + 1.0);
  }
  expect_close("embedding ref backward vs central differences", grad, fd, tol);
}

// The fp32 kernels: d/dh sum dout . embedding(table + h v) against <embedding_backward(dout), v>.
TEST(Embedding, Fp32KernelDirectionalDerivative) {
  const int vocab = 9, dim = 8;
  const std::vector<int> tokens = {1, 4, 1, 8, 0, 1};
  const int n = static_cast<int>(tokens.size());
  const auto table = random_values<float>(static_cast<std::size_t>(vocab) * dim, -1.0, 1.0, 108);
  const auto v = random_values<float>(table.size(), -1.0, 1.0, 109);
  const auto dout = random_values<float>(static_cast<std::size_t>(n) * dim, -1.0, 1.0, 110);
  auto TOK = make_int_view("tokens", tokens);
  auto loss = [&](double h) {
    std::vector<double> tb(table.size());
    for (std::size_t i = 0; i < tb.size(); ++i) tb[i] = table[i] + h * v[i];
    auto TBL = make_view2<float>("table", tb, vocab, dim);
    View2<float> OUT("out", n, dim);
    embedding_forward<float>(ExecSpace(), TOK, TBL, OUT);
    const auto out = to_host(OUT);
    double l = 0.0;
    for (std::size_t i = 0; i < out.size(); ++i) l += dout[i] * out[i];
    return l;
  };
  auto DOUT = make_view2<float>("dout", dout, n, dim);
  View2<float> DTBL("dtable", vocab, dim);
  embedding_backward<float>(ExecSpace(), TOK, DOUT, DTBL);
  const auto g = to_host(DTBL);
  double predicted = 0.0, abs_sum = 0.0;
  for (std::size_t i = 0; i < g.size(); ++i) predicted += g[i] * v[i];
  for (std::size_t i = 0; i < dout.size(); ++i) abs_sum += std::fabs(dout[i]) * 2.0;  // |table + h v| <= 2
  // Linear map (no truncation); the shifted table rounds to fp32 (2^-24 of |table + h v| <= 2) in
  // both evaluations; the gradient has (count) 2^-24 relative error in fp32.
  const double h = 1e-2;
  const double fd = (loss(h) - loss(-h)) / (2 * h);
  const double tol = 2 * kU32 * abs_sum / h + 8 * kU32 * std::fabs(predicted);
  std::printf("  directional derivative %.6e, central difference %.6e, tol %.2e\n", predicted, fd, tol);
  expect_close("embedding fp32 kernel directional derivative", {predicted}, {fd}, {tol});
}

// Token ids outside [0, V) read and write no memory: a NaN row forward, skipped backward.
TEST(Embedding, OutOfRangeTokens) {
  const int vocab = 4, dim = 3;
  const auto table = random_values<float>(vocab * dim, -1.0, 1.0, 111);
  auto TBL = make_view2<float>("table", table, vocab, dim);
  auto TOK = make_int_view("tokens", {-1, 2, vocab});
  View2<float> OUT("out", 3, dim);
  embedding_forward<float>(ExecSpace(), TOK, TBL, OUT);
  const auto out = to_host(OUT);
  for (int d = 0; d < dim; ++d) {
    EXPECT_TRUE(std::isnan(out[d]));
    EXPECT_EQ(out[dim + d], table[2 * dim + d]);
    EXPECT_TRUE(std::isnan(out[2 * dim + d]));
  }
  auto DOUT = make_view2<float>("dout", std::vector<double>(3 * dim, 1.0), 3, dim);
  View2<float> DTBL("dtable", vocab, dim);
  embedding_backward<float>(ExecSpace(), TOK, DOUT, DTBL);
  const auto g = to_host(DTBL);
  for (int v = 0; v < vocab; ++v)
    for (int d = 0; d < dim; ++d) EXPECT_EQ(g[v * dim + d], v == 2 ? 1.0 : 0.0);
}

}  // namespace
