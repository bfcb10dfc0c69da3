// Token sampler (sample_tokens): chi-square goodness of fit of the drawn tokens, the exact support
// of top-k / top-p (ties and exact top-p boundaries included), log mu against a double reference,
// invariance to batching, row order and rank split, greedy decoding, the full log-softmax rows,
// non-finite rows, a 1e5-token vocabulary, parameter validation and the workspace reuse; the exact
// mass arithmetic; the team path (team sizes 1, 2, 4) against the per-row path bit for bit, and both
// against a host emulation of the documented definitions (lane sum, exact masses) bit for bit;
// team_row_softmax_stats against row_softmax_stats. The statistical tests run the default path.
//
// The host reference takes the kernel's fp32 tempered logit z = fl(x / temperature) (IEEE division
// is correctly rounded on every backend, so z is exactly the kernel's), then works in double:
// p = softmax(z), order by z descending and id ascending, top-k, top-p on the renormalised top-k
// distribution, renormalise. Where a top-p boundary is decided by the fp32 arithmetic of the kernel
// (mass within its error of top_p), the test moves top_p away from it, except in the constructed
// cases whose masses are exact (ties at the maximum: exp(0) = 1, small integer sums).
#include <Kokkos_Core.hpp>
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <tuple>
#include <type_traits>

#include "kernel_test_util.hpp"
#include "mantissa/kernels/sampling.hpp"

using namespace mantissa;
using namespace mantissa::test;

// Named, not anonymous: CUDA's extended (KOKKOS_LAMBDA) lambdas need enclosing functions with linkage.
namespace sampling_test {

struct Draws {
  std::vector<int> token;
  std::vector<float> logmu;
  std::vector<float> full;  // B*V when asked for
};

View1<std::uint64_t> make_u64_view(const std::vector<std::uint64_t>& v) {
  View1<std::uint64_t> d("mantissa::test::seq_id", v.size());
  auto h = Kokkos::create_mirror_view(d);
  for (std::size_t i = 0; i < v.size(); ++i) h(i) = v[i];
  Kokkos::deep_copy(d, h);
  return d;
}

// Runs sample_tokens<T> on B rows of V logits (values exactly representable in T).
// path automatic: sample_tokens itself; otherwise detail::sample_tokens on that path and team size
// (which throws std::invalid_argument for a team size the backend refuses).
template <class T>
Draws sample(const std::vector<double>& logits, int B, int V, const std::vector<std::uint64_t>& seq,
             const std::vector<int>& pos, const SamplingParams& p, std::uint64_t seed, std::uint64_t step,
             bool want_full = false, SamplingPath path = SamplingPath::automatic, int team_size = 0) {
  const View2<T> x = make_view2<T>("mantissa::test::logits", logits, B, V);
  const View1<std::uint64_t> s = make_u64_view(seq);
  const View1<int> ps = make_int_view("mantissa::test::pos", pos);
  const View1<int> tok("mantissa::test::token", B);
  const View1<float> lm("mantissa::test::logmu", B);
  const View2<float> full = want_full ? View2<float>("mantissa::test::full", B, V) : View2<float>();
  if (path == SamplingPath::automatic)
    sample_tokens<T>(ExecSpace(), x, s, ps, p, seed, step, tok, lm, full);
  else
    detail::sample_tokens<T>(ExecSpace(), x, s, ps, p, seed, step, tok, lm, full, path, team_size);
  ExecSpace().fence();
  Draws d;
  auto ht = Kokkos::create_mirror_view_and_copy(HostSpace(), tok);
  auto hl = Kokkos::create_mirror_view_and_copy(HostSpace(), lm);
  for (int b = 0; b < B; ++b) {
    d.token.push_back(ht(b));
    d.logmu.push_back(hl(b));
  }
  if (want_full) {
    auto hf = Kokkos::create_mirror_view_and_copy(HostSpace(), full);
    for (int b = 0; b < B; ++b)
      for (int v = 0; v < V; ++v) d.full.push_back(hf(b, v));
  }
  return d;
}

// n rows that all hold `row`, for repeated independent draws (pos = 0..n-1 of one sequence).
std::vector<double> repeat_row(const std::vector<double>& row, int n) {
  std::vector<double> x;
  for (int i = 0; i < n; ++i) x.insert(x.end(), row.begin(), row.end());
  return x;
}
std::vector<int> iota_pos(int n) {
  std::vector<int> p(n);
  std::iota(p.begin(), p.end(), 0);
  return p;
}

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

// The kernel's tempered logit, exactly.
double z32(double x, float temperature) { return static_cast<double>(static_cast<float>(x) / temperature); }

// The distribution the sampler draws from, in double from the fp32 z.
struct Reference {
  std::vector<double> q;     // renormalised probabilities (0 outside the kept set)
  std::vector<double> logq;  // (z - m) - log S_kept on the kept set
  std::vector<char> kept;    // the kept set (may contain tokens of probability 0, e.g. -inf logits)
  int n_kept = 0;
  double max_dev = 0.0;     // max over kept tokens of |z - m|
  double log_s_kept = 0.0;  // log sum_kept exp(z - m)
  double margin = INFINITY;  // min over the top-p prefixes up to the boundary of |mass - top_p mass_k| / mass_k
  std::vector<double> prefix;  // prefix masses / mass_k in order (within the top-k set)
};

Reference reference(const double* x, int V, const SamplingParams& p) {
  std::vector<double> z(V);
  for (int v = 0; v < V; ++v) z[v] = z32(x[v], p.temperature);
  const double m = *std::max_element(z.begin(), z.end());
  std::vector<double> e(V);
  for (int v = 0; v < V; ++v) e[v] = std::exp(z[v] - m);
  std::vector<int> order(V);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int a, int b) { return z[a] > z[b] || (z[a] == z[b] && a < b); });
  const int k = p.top_k > 0 && p.top_k < V ? p.top_k : V;
  double mass_k = 0.0;
  for (int i = 0; i < k; ++i) mass_k += e[order[i]];
  Reference r;
  r.n_kept = k;
  double cum = 0.0;
  for (int i = 0; i < k; ++i) {
    cum += e[order[i]];
    r.prefix.push_back(cum / mass_k);
  }
  if (p.top_p < 1.0f) {
    for (int i = 0; i < k; ++i) {
      const double gap = r.prefix[i] - static_cast<double>(p.top_p);
      r.margin = std::min(r.margin, std::fabs(gap));
      if (gap >= 0.0) {
        r.n_kept = i + 1;
        break;
      }
    }
  }
  r.kept.assign(V, 0);
  double s_kept = 0.0;
  for (int i = 0; i < r.n_kept; ++i) {
    r.kept[order[i]] = 1;
    s_kept += e[order[i]];
    r.max_dev = std::max(r.max_dev, m - z[order[i]]);
  }
  r.log_s_kept = std::log(s_kept);
  r.q.assign(V, 0.0);
  r.logq.assign(V, -INFINITY);
  for (int v = 0; v < V; ++v)
    if (r.kept[v]) {
      r.q[v] = e[v] / s_kept;
      r.logq[v] = (z[v] - m) - r.log_s_kept;
    }
  return r;
}

// Relative error of one kernel mass term exp(fl(z - m)): the subtraction (u |z - m|) and exp
// (at most 2 ulp = 4u, CUDA's expf bound; glibc's is < 1 ulp); mass ratios carry twice that.
// A top-p boundary closer than twice the ratio's error may be decided either way by the kernel.
double needed_margin(double max_dev) { return 4.0 * (max_dev + 4.0) * kU32; }

// Error bound of the kernel's logmu = fl(fl(z - m) - fl(log S_kept)) against the double logq of the
// same fp32 z: each of the n kept terms exp(fl(z - m)) has relative error (|z - m| + 4) u (see
// above), their fp32 sum (n - 1) u more; log adds 2u |log S| (its 1 ulp plus the sum's error passes
// through as an absolute error); the final subtraction u |logq| and the token's own z - m, u max_dev.
double logmu_tol(const Reference& r, double logq) {
  return (r.n_kept + 4 + 2.0 * r.max_dev + 2.0 * std::fabs(r.log_s_kept) + std::fabs(logq)) * kU32;
}

// 99.9% quantiles of the chi-square distribution, dof 1..7 (standard tables, e.g. NIST/SEMATECH
// e-Handbook 1.3.6.7.4).
double chi2_999(int dof) {
  static const double q[] = {10.828, 13.816, 16.266, 18.467, 20.515, 22.458, 24.322};
  if (dof < 1 || dof > 7) throw std::out_of_range("chi2_999: dof");
  return q[dof - 1];
}

// A user kernel (the training engine's consistent mode) on the per-row building blocks: the full
// row through row_log_softmax, and row_logprob at one token from row_softmax_stats.
// (A free function: CUDA's extended lambdas may not sit in a test's private TestBody.)
template <class T>
void user_kernel_log_softmax(const View2<T>& x, float t, const View1<int>& tok, const View2<float>& out,
                             const View1<float>& at_token) {
  const int V = static_cast<int>(x.extent(1));
  Kokkos::parallel_for(
      "mantissa::test::row_log_softmax", Kokkos::RangePolicy<ExecSpace>(0, x.extent(0)),
      KOKKOS_LAMBDA(const std::size_t b) {
        const T* row = &x(b, 0);
        row_log_softmax(row, V, t, &out(b, 0));
        const RowSoftmaxStats s = row_softmax_stats(row, V, t);
        at_token(b) = row_logprob(row[tok(b)], t, s);
      });
}

template <class T>
class Sampling : public ::testing::Test {};
TYPED_TEST_SUITE(Sampling, StorageTypes, StorageTypeNames);

// ---- chi-square goodness of fit ---------------------------------------------------------------
// V = 8 categories with distinct probabilities, stored out of order. For each configuration,
// N = 200k draws of one row (pos = 0..N-1, independent counter-based uniforms), Pearson's
// statistic over the kept tokens against the double reference, which must stay below the 99.9%
// quantile of chi-square with (kept - 1) dof; a token outside the kept set fails outright.
// Expected counts are >= 200k * 0.02 = 4000, where the chi-square approximation is excellent.
// False failures: for a correct sampler, one configuration exceeds its quantile with probability
// 0.001 over the choice of seed, so the 5 configurations x 3 types here reject a correct sampler
// for at most 15 x 0.001 = 1.5% of seeds. The seed is fixed, so the outcome is deterministic:
// it passes or fails the same way on every run.
TYPED_TEST(Sampling, ChiSquareGoodnessOfFit) {
  using T = TypeParam;
  const int V = 8, N = 200000;
  const double probs[V] = {0.07, 0.30, 0.02, 0.15, 0.12, 0.20, 0.04, 0.10};
  std::vector<double> row(V);
  for (int v = 0; v < V; ++v) row[v] = round_double<T>(std::log(probs[v]));
  const std::vector<double> x = repeat_row(row, N);
  const std::vector<std::uint64_t> seq(N, 12345);
  const std::vector<int> pos = iota_pos(N);
  struct Case {
    SamplingParams p;
    int expected_kept;  // known from the probabilities: a check on the reference
  };
  const Case cases[] = {
      {{1.0f, 0, 1.0f}, 8},
      {{0.7f, 0, 1.0f}, 8},
      {{1.0f, 3, 1.0f}, 3},   // {1, 5, 3}
      {{1.0f, 0, 0.8f}, 5},   // .30 .20 .15 .12 = .77 < .8, + .10 = .87
      {{1.0f, 4, 0.8f}, 3},   // top-4 renormalised: .39 .65 .84 >= .8 (the raw mass .65 would keep 4)
  };
  std::uint64_t step = 0;
  for (const Case& c : cases) {
    const Reference ref = reference(row.data(), V, c.p);
    ASSERT_EQ(ref.n_kept, c.expected_kept);
    ASSERT_GT(ref.margin, needed_margin(ref.max_dev));
    const Draws d = sample<T>(x, N, V, seq, pos, c.p, 2024, step++);
    std::vector<long> counts(V, 0);
    long outside = 0;
    for (int t : d.token) {
      ASSERT_TRUE(t >= 0 && t < V);
      ++counts[t];
      if (!ref.kept[t]) ++outside;
    }
    EXPECT_EQ(outside, 0);
    double chi2 = 0.0;
    for (int v = 0; v < V; ++v) {
      if (!ref.kept[v]) continue;
      const double expected = N * ref.q[v];
      chi2 += (counts[v] - expected) * (counts[v] - expected) / expected;
    }
    const int dof = ref.n_kept - 1;
    std::printf("  T=%-4s t=%.1f top_k=%d top_p=%.1f: chi2 %.3f, 99.9%% quantile (dof %d) %.3f\n",
                precision_traits<T>::name, c.p.temperature, c.p.top_k, c.p.top_p, chi2, dof, chi2_999(dof));
    EXPECT_LT(chi2, chi2_999(dof)) << "temperature " << c.p.temperature << " top_k " << c.p.top_k << " top_p "
                                   << c.p.top_p;
  }
}

// ---- support and logmu ----------------------------------------------------------------------
// Draws n tokens of `row` and checks each against the reference: inside the support (q > 0), and
// logmu within logmu_tol of log q. With require_all, every token of q >= 0.01 must appear at
// least once (n = 4000: a correct sampler misses one with probability < 0.99^4000 = 4e-18), so the
// support is exactly the kept set, not a subset of it. Returns the worst logmu err/tol.
template <class T>
double check_support(const std::vector<double>& row, const SamplingParams& p, int n, std::uint64_t seed,
                     bool require_all, const std::string& what) {
  const int V = static_cast<int>(row.size());
  const Reference ref = reference(row.data(), V, p);
  const Draws d = sample<T>(repeat_row(row, n), n, V, std::vector<std::uint64_t>(n, seed ^ 0x9e37u), iota_pos(n), p,
                            seed, 3);
  std::vector<long> counts(V, 0);
  double worst = 0.0;
  for (int i = 0; i < n; ++i) {
    const int t = d.token[i];
    if (t < 0 || t >= V || !(ref.q[t] > 0.0)) {
      ADD_FAILURE() << what << ": draw " << i << " token " << t << " outside the support";
      return INFINITY;
    }
    ++counts[t];
    const double tol = logmu_tol(ref, ref.logq[t]);
    const double err = std::fabs(d.logmu[i] - ref.logq[t]);
    EXPECT_LE(err, tol) << what << ": token " << t << " logmu " << d.logmu[i] << " ref " << ref.logq[t];
    worst = std::max(worst, err / tol);
  }
  if (require_all)
    for (int v = 0; v < V; ++v)
      if (ref.q[v] >= 0.01) {
        EXPECT_GT(counts[v], 0) << what << ": token " << v << " (q " << ref.q[v] << ") never drawn";
      }
  return worst;
}

std::vector<int> kept_ids(const Reference& r) {
  std::vector<int> ids;
  for (std::size_t v = 0; v < r.kept.size(); ++v)
    if (r.kept[v] && r.q[v] > 0.0) ids.push_back(static_cast<int>(v));
  return ids;
}

// Constructed cases with ties at the top-k boundary and top-p masses reaching top_p exactly; the
// expected support is written out by hand and must also be what the reference computes.
TYPED_TEST(Sampling, SupportOfTiesAndExactBoundaries) {
  using T = TypeParam;
  const double ninf = -INFINITY;
  const std::vector<double> flat(8, 0.5);                           // every p = 1/8 exactly (e = 1, S = 8)
  const std::vector<double> stairs = {3, 1, 2, 2, 2, 0, 2, -1};     // a 4-way tie below the maximum
  const std::vector<double> top4 = {0, 1, 1, ninf, 1, 0, -1, 1};   // a 4-way tie at the maximum, one masked
  struct Case {
    const std::vector<double>* row;
    SamplingParams p;
    std::vector<int> expected;
  };
  const float just_above_quarter = std::nextafter(0.25f, 1.0f);
  const Case cases[] = {
      {&flat, {1.0f, 0, 0.25f}, {0, 1}},                 // mass 2/8 reaches 0.25 exactly
      {&flat, {1.0f, 0, just_above_quarter}, {0, 1, 2}},  // ... and one ulp more needs a third token
      {&flat, {1.0f, 0, 0.375f}, {0, 1, 2}},             // 3/8 exactly
      {&flat, {1.0f, 0, 1.0f}, {0, 1, 2, 3, 4, 5, 6, 7}},
      {&flat, {1.0f, 3, 1.0f}, {0, 1, 2}},               // an 8-way tie cut by id
      {&flat, {1.0f, 4, 0.5f}, {0, 1}},                  // renormalised over 4: 2/4 reaches 0.5 exactly
      {&flat, {1.0f, 3, 0.5f}, {0, 1}},                  // 1/3 < 0.5 <= 2/3
      {&flat, {0.7f, 1, 1.0f}, {0}},
      {&stairs, {1.0f, 1, 1.0f}, {0}},
      {&stairs, {1.0f, 2, 1.0f}, {0, 2}},                // the 2-tie at 2 is cut by id: 2 before 3, 4, 6
      {&stairs, {1.0f, 3, 1.0f}, {0, 2, 3}},
      {&stairs, {1.0f, 5, 1.0f}, {0, 2, 3, 4, 6}},
      {&stairs, {1.0f, 6, 1.0f}, {0, 1, 2, 3, 4, 6}},
      {&stairs, {1.3f, 6, 1.0f}, {0, 1, 2, 3, 4, 6}},
      {&top4, {1.0f, 4, 1.0f}, {1, 2, 4, 7}},
      {&top4, {1.0f, 4, 0.5f}, {1, 2}},                  // 2/4 exactly
      {&top4, {1.0f, 4, 0.75f}, {1, 2, 4}},              // 3/4 exactly
      {&top4, {1.0f, 2, 1.0f}, {1, 2}},
      {&top4, {1.0f, 0, 0.5f}, {1, 2, 4}},               // mass 4 + 2/e + 1/e^2 = 4.87: 2.44 needs 3
      {&top4, {1.0f, 0, 1.0f}, {0, 1, 2, 4, 5, 6, 7}},   // the -inf token is never drawn
      {&top4, {1.0f, 8, 1.0f}, {0, 1, 2, 4, 5, 6, 7}},
      {&top4, {1.0f, 100, 1.0f}, {0, 1, 2, 4, 5, 6, 7}},  // top_k > V is off
  };
  double worst = 0.0;
  int i = 0;
  for (const Case& c : cases) {
    std::vector<double> row(c.row->size());
    for (std::size_t v = 0; v < row.size(); ++v) row[v] = round_double<T>((*c.row)[v]);
    const std::string what = "case " + std::to_string(i);
    const Reference ref = reference(row.data(), static_cast<int>(row.size()), c.p);
    EXPECT_EQ(kept_ids(ref), c.expected) << what << " (reference)";
    worst = std::max(worst, check_support<T>(row, c.p, 4000, 100 + i, true, what));
    ++i;
  }
  std::printf("  %d constructed cases: logmu max err/tol %.3f\n", i, worst);
}

// Random rows with many ties (logits on a grid of 0.25, exact in every T), random temperature,
// top_k and top_p; top_p is redrawn while a prefix mass lies within the kernel's error of it.
TYPED_TEST(Sampling, SupportOfRandomTruncations) {
  using T = TypeParam;
  const int V = 50, cases = 150, draws = 200;
  std::mt19937_64 rng(77);
  std::uniform_int_distribution<int> grid(-16, 8), top_k(0, 55);
  std::uniform_real_distribution<double> top_p(0.05, 1.0);
  const float temperatures[] = {1.0f, 0.7f, 1.5f};
  double worst = 0.0;
  for (int c = 0; c < cases; ++c) {
    std::vector<double> row(V);
    for (double& x : row) x = 0.25 * grid(rng);
    SamplingParams p;
    p.temperature = temperatures[c % 3];
    p.top_k = (c % 4 == 0) ? 0 : top_k(rng);
    p.top_p = 1.0f;
    if (c % 3 != 0) {
      for (;;) {
        p.top_p = static_cast<float>(top_p(rng));
        const Reference r = reference(row.data(), V, p);
        if (r.margin > needed_margin(r.max_dev)) break;
      }
    }
    worst = std::max(worst, check_support<T>(row, p, draws, 1000 + c, false, "random case " + std::to_string(c)));
  }
  std::printf("  %d random cases x %d draws: logmu max err/tol %.3f\n", cases, draws, worst);
}

// ---- invariance to batching, order and ranks ---------------------------------------------------
// 64 rows with their own (seq_id, pos): one batch of 64, 64 batches of 1, a permuted batch, and
// two "ranks" (halves) must give bit-identical tokens, logmu and full rows. A different step must
// change some tokens (the draws really depend on the counters).
TYPED_TEST(Sampling, InvariantToBatchingOrderAndRanks) {
  using T = TypeParam;
  const int B = 64, V = 300;
  const std::vector<double> x = random_values<T>(std::size_t(B) * V, -4.0, 4.0, 5);
  std::mt19937_64 rng(9);
  std::vector<std::uint64_t> seq(B);
  std::vector<int> pos(B);
  for (int b = 0; b < B; ++b) {
    seq[b] = rng();
    pos[b] = static_cast<int>(rng() % 1000);
  }
  std::vector<int> perm(B);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  const auto rows = [&](const std::vector<int>& ids) {
    std::vector<double> xs;
    std::vector<std::uint64_t> ss;
    std::vector<int> ps;
    for (int b : ids) {
      xs.insert(xs.end(), x.begin() + std::size_t(b) * V, x.begin() + std::size_t(b + 1) * V);
      ss.push_back(seq[b]);
      ps.push_back(pos[b]);
    }
    return std::make_tuple(xs, ss, ps);
  };
  const SamplingParams params[] = {{1.0f, 0, 1.0f}, {0.8f, 40, 0.9f}, {1.2f, 0, 0.5f}, {0.0f, 0, 1.0f}};
  for (const SamplingParams& p : params) {
    const Draws all = sample<T>(x, B, V, seq, pos, p, 31, 7, true);
    std::vector<Draws> got(B);  // got[b]: row b as computed in some other batch
    const auto check = [&](const std::vector<int>& ids, const Draws& d, const char* how) {
      for (std::size_t i = 0; i < ids.size(); ++i) {
        const int b = ids[i];
        EXPECT_EQ(d.token[i], all.token[b]) << how << " row " << b;
        EXPECT_TRUE(same_bits(d.logmu[i], all.logmu[b])) << how << " row " << b;
        for (int v = 0; v < V; ++v)
          if (!same_bits(d.full[i * V + v], all.full[std::size_t(b) * V + v])) {
            ADD_FAILURE() << how << " row " << b << " full_logprobs[" << v << "]";
            break;
          }
      }
    };
    for (int b = 0; b < B; ++b) {
      const auto [xs, ss, ps] = rows({b});
      check({b}, sample<T>(xs, 1, V, ss, ps, p, 31, 7, true), "batch of 1");
    }
    {
      const auto [xs, ss, ps] = rows(perm);
      check(perm, sample<T>(xs, B, V, ss, ps, p, 31, 7, true), "permuted");
    }
    for (int r = 0; r < 2; ++r) {
      std::vector<int> half(B / 2);
      std::iota(half.begin(), half.end(), r * B / 2);
      const auto [xs, ss, ps] = rows(half);
      check(half, sample<T>(xs, B / 2, V, ss, ps, p, 31, 7, true), r == 0 ? "rank 0 of 2" : "rank 1 of 2");
    }
    const Draws other = sample<T>(x, B, V, seq, pos, p, 31, 8);
    int changed = 0;
    for (int b = 0; b < B; ++b) changed += other.token[b] != all.token[b];
    if (p.temperature != 0.0f) {
      EXPECT_GT(changed, B / 4) << "another step should redraw most tokens";
    } else {
      EXPECT_EQ(changed, 0) << "greedy does not depend on the counters";
    }
  }
}

// ---- greedy ------------------------------------------------------------------------------------
// temperature 0: token = argmax (lowest id on ties), logmu = 0, the full row is the point mass
// (0 at the token, -inf elsewhere), whatever the seed, step and top_k/top_p.
TYPED_TEST(Sampling, GreedyPicksArgmax) {
  using T = TypeParam;
  const int B = 16, V = 37;
  std::mt19937_64 rng(3);
  std::uniform_int_distribution<int> grid(-8, 8);
  std::vector<double> x(std::size_t(B) * V);
  for (double& v : x) v = 0.5 * grid(rng);  // many ties at the maximum
  x[5 * V + 36] = 100.0;                    // a unique maximum at the last id
  for (int v = 0; v < V; ++v) x[6 * V + v] = -3.0;  // all equal: id 0
  std::vector<int> expected(B);
  for (int b = 0; b < B; ++b) expected[b] = int(std::max_element(&x[b * V], &x[b * V] + V) - &x[b * V]);  // first max
  const std::vector<std::uint64_t> seq(B, 1);
  for (const SamplingParams& p : {SamplingParams{0.0f, 0, 1.0f}, SamplingParams{0.0f, 3, 0.2f}}) {
    for (std::uint64_t seed : {1u, 2u}) {
      const Draws d = sample<T>(x, B, V, seq, iota_pos(B), p, seed, seed, true);
      for (int b = 0; b < B; ++b) {
        EXPECT_EQ(d.token[b], expected[b]) << "row " << b;
        EXPECT_EQ(d.logmu[b], 0.0f) << "row " << b;
        for (int v = 0; v < V; ++v) {
          const float f = d.full[std::size_t(b) * V + v];
          EXPECT_EQ(f, v == expected[b] ? 0.0f : -INFINITY) << "row " << b << " token " << v;
        }
      }
    }
  }
}

// ---- full_logprobs and the per-row building block ------------------------------------------------
// full_logprobs against log_softmax(x / t) in double (the exact division: its fp32 rounding is in
// the tolerance). The untruncated logmu is the full row's value at the token bit for bit, and a
// user kernel calling row_log_softmax / row_logprob (the training engine's consistent mode)
// reproduces the full rows bit for bit.
TYPED_TEST(Sampling, FullLogprobsMatchDoubleLogSoftmax) {
  using T = TypeParam;
  const int B = 8, V = 1000;
  const std::vector<double> x = random_values<T>(std::size_t(B) * V, -8.0, 8.0, 11);
  const std::vector<std::uint64_t> seq(B, 4);
  for (float t : {1.0f, 0.7f, 2.0f}) {
    const SamplingParams p{t, 0, 1.0f};
    const Draws d = sample<T>(x, B, V, seq, iota_pos(B), p, 5, 5, true);
    std::vector<double> got, ref, tol;
    for (int b = 0; b < B; ++b) {
      const double* row = &x[std::size_t(b) * V];
      std::vector<double> z(V);
      double zmax_abs = 0.0;
      for (int v = 0; v < V; ++v) {
        z[v] = row[v] / t;
        zmax_abs = std::max(zmax_abs, std::fabs(z[v]));
      }
      const double m = *std::max_element(z.begin(), z.end());
      double s = 0.0, max_dev = 0.0;
      for (int v = 0; v < V; ++v) {
        s += std::exp(z[v] - m);
        max_dev = std::max(max_dev, m - z[v]);
      }
      const double log_s = std::log(s);
      for (int v = 0; v < V; ++v) {
        const double r = (z[v] - m) - log_s;
        got.push_back(d.full[std::size_t(b) * V + v]);
        ref.push_back(r);
        // logmu_tol's terms for the full row (n = V), plus the fp32 division x / t: u |z| on each z,
        // so u (|z_v| + |m|) on z_v - m and on every exp argument of S: 4 u max|z| in all.
        tol.push_back((V + 4 + 2.0 * max_dev + 4.0 * zmax_abs + 2.0 * std::fabs(log_s) + std::fabs(r)) * kU32);
      }
      EXPECT_TRUE(same_bits(d.logmu[b], d.full[std::size_t(b) * V + d.token[b]])) << "row " << b;
    }
    expect_close(std::string(precision_traits<T>::name) + " full_logprobs t=" + std::to_string(t), got, ref, tol);

    // The building block inside a user kernel.
    const View2<float> out("mantissa::test::row_log_softmax", B, V);
    const View1<float> at_token("mantissa::test::row_logprob", B);
    user_kernel_log_softmax<T>(make_view2<T>("mantissa::test::logits", x, B, V), t,
                               make_int_view("mantissa::test::token", d.token), out, at_token);
    ExecSpace().fence();
    auto ho = Kokkos::create_mirror_view_and_copy(HostSpace(), out);
    auto ha = Kokkos::create_mirror_view_and_copy(HostSpace(), at_token);
    int mismatches = 0;
    for (int b = 0; b < B; ++b) {
      for (int v = 0; v < V; ++v) mismatches += !same_bits(ho(b, v), d.full[std::size_t(b) * V + v]);
      EXPECT_TRUE(same_bits(ha(b), d.logmu[b])) << "row " << b;
    }
    EXPECT_EQ(mismatches, 0);
  }
}

// ---- non-finite rows -----------------------------------------------------------------------------
// NaN anywhere, a +inf logit or an all -inf row: token -1, logmu NaN, NaN full row (sampling and
// greedy). -inf elsewhere is a masked token: never drawn.
TYPED_TEST(Sampling, NonFiniteRowsAreLoud) {
  using T = TypeParam;
  const int V = 6, B = 4;
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = INFINITY;
  const std::vector<double> x = {0, 1, nan, 2, 0, 1,  0, inf, 1, 1, 0, 0,
                                 -inf, -inf, -inf, -inf, -inf, -inf,  -inf, 0, -inf, 0, -inf, -inf};
  const std::vector<std::uint64_t> seq(B, 2);
  for (const SamplingParams& p : {SamplingParams{1.0f, 0, 1.0f}, SamplingParams{1.0f, 2, 0.9f},
                                  SamplingParams{0.0f, 0, 1.0f}}) {
    for (int rep = 0; rep < 20; ++rep) {
      const Draws d = sample<T>(x, B, V, seq, std::vector<int>(B, rep), p, 8, 8, true);
      for (int b = 0; b < 3; ++b) {
        EXPECT_EQ(d.token[b], -1) << "row " << b;
        EXPECT_TRUE(std::isnan(d.logmu[b])) << "row " << b;
        for (int v = 0; v < V; ++v) EXPECT_TRUE(std::isnan(d.full[std::size_t(b) * V + v]));
      }
      EXPECT_TRUE(d.token[3] == 1 || d.token[3] == 3) << d.token[3];
      EXPECT_FLOAT_EQ(d.logmu[3], p.temperature == 0.0f ? 0.0f : std::log(0.5f));
    }
  }
}

// ---- a 1e5-token vocabulary ---------------------------------------------------------------------
// The heap selection on V = 100000: top_p = 0.5 of a flat distribution keeps ~11k tokens (that many
// heap pops), top_k = 1000 and 5000. top_p is then moved halfway between the two prefix masses
// around its boundary, so that the kept set is decided by more than the kernel's fp32 error. (With
// 1e5 tokens the steps near a 0.95 boundary of a flat row are ~1e-6, the size of that error: there
// the fp32 kernel and a double reference may legitimately disagree on the last token.)
TYPED_TEST(Sampling, LargeVocabulary) {
  using T = TypeParam;
  const int V = 100000, n = 12;
  const std::vector<double> row = random_values<T>(V, -3.0, 3.0, 21);
  const SamplingParams params[] = {{1.0f, 0, 0.5f}, {1.0f, 1000, 1.0f}, {0.8f, 5000, 0.3f}, {1.0f, 0, 1.0f}};
  int i = 0;
  for (SamplingParams p : params) {
    if (p.top_p < 1.0f) {
      const Reference r = reference(row.data(), V, p);
      const int n_kept = r.n_kept;
      p.top_p = static_cast<float>(0.5 * (r.prefix[n_kept - 1] + (n_kept >= 2 ? r.prefix[n_kept - 2] : 0.0)));
      const Reference moved = reference(row.data(), V, p);
      ASSERT_GT(moved.margin, needed_margin(moved.max_dev)) << "case " << i;
      std::printf("  V=%d t=%.1f top_k=%d top_p=%.7f keeps %d tokens\n", V, p.temperature, p.top_k, p.top_p,
                  moved.n_kept);
    }
    const double worst = check_support<T>(row, p, n, 500 + i, false, "V=1e5 case " + std::to_string(i));
    std::printf("  V=%d case %d: logmu max err/tol %.3f\n", V, i, worst);
    ++i;
  }
}

// ---- the team path against the per-row path and the documented definitions -------------------------
// Host emulation of the header comment's definitions, float for float (fp32 z, m, e = expf, the
// 256-lane sum, E = floor(e 2^63), exact masses in unsigned __int128, the order by z then id).
// Only where the kernels run on the host (same libm) are its bits the kernels' bits.
using u128 = unsigned __int128;

float lane_sum_emulated(const std::vector<float>& e, const std::vector<char>& keep) {
  float lane[256] = {};
  for (std::size_t v = 0; v < e.size(); ++v)
    if (keep[v]) lane[v % 256] += e[v];
  for (int w = 128; w >= 1; w /= 2)
    for (int i = 0; i < w; ++i) lane[i] += lane[i + w];
  return lane[0];
}

// ceil(top_p M) and floor(u M) exactly, written differently from the kernel's 64-bit limbs.
u128 top_p_target(float top_p, u128 M) {
  int e2 = 0;
  const double mant = std::frexp(static_cast<double>(top_p), &e2);  // top_p = mant 2^e2, mant in [0.5, 1)
  const u128 f = static_cast<u128>(std::ldexp(mant, 24));          // an integer: top_p = f 2^-(24 - e2)
  const int s = 24 - e2;
  if (s >= 128) return 1;
  return (f * M + ((u128(1) << s) - 1)) >> s;
}
u128 uniform_target(double u, u128 M) {
  const u128 j = static_cast<u128>(std::ldexp(u, 54));  // exact: u is an odd multiple of 2^-54
  const u128 hi = M >> 64, lo = M & ~std::uint64_t(0);
  return ((j * hi) << 10) + ((j * lo) >> 54);  // floor(j (hi 2^64 + lo) / 2^54)
}

struct Emulated {
  int token;
  float logmu;
  std::vector<float> full;
};

Emulated emulate_row(const std::vector<float>& x, const SamplingParams& p, double u) {
  const int V = static_cast<int>(x.size());
  const float nanf = std::numeric_limits<float>::quiet_NaN(), inf = INFINITY;
  Emulated r{-1, nanf, std::vector<float>(V, nanf)};
  if (p.temperature == 0.0f) {
    int best = 0;
    bool nan = false;
    for (int v = 0; v < V; ++v) {
      nan = nan || std::isnan(x[v]);
      if (x[v] > x[best]) best = v;
    }
    if (nan || !std::isfinite(x[best])) return r;
    for (int v = 0; v < V; ++v) r.full[v] = v == best ? 0.0f : -inf;
    r.token = best;
    r.logmu = 0.0f;
    return r;
  }
  std::vector<float> z(V);
  float m = -inf;
  for (int v = 0; v < V; ++v) {
    z[v] = x[v] / p.temperature;
    if (std::isnan(z[v])) return r;
    m = std::max(m, z[v]);
  }
  if (!std::isfinite(m)) return r;
  if (m == 0.0f) m = 0.0f;  // +0
  std::vector<float> e(V);
  std::vector<u128> E(V);
  for (int v = 0; v < V; ++v) {
    e[v] = std::exp(z[v] - m);
    E[v] = static_cast<u128>(static_cast<std::uint64_t>(e[v] * 9223372036854775808.0f));
  }
  const float S = lane_sum_emulated(e, std::vector<char>(V, 1));
  const float log_s = std::log(S);
  for (int v = 0; v < V; ++v) r.full[v] = (z[v] - m) - log_s;
  std::vector<int> order(V);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return z[a] > z[b]; });
  const int k = p.top_k > 0 && p.top_k < V ? p.top_k : V;
  int n = k;
  if (p.top_p < 1.0f) {
    u128 mass_k = 0, prefix = 0;
    for (int i = 0; i < k; ++i) mass_k += E[order[i]];
    const u128 target = top_p_target(p.top_p, mass_k);
    for (n = 1; n <= k; ++n) {
      prefix += E[order[n - 1]];
      if (prefix >= target) break;
    }
  }
  std::vector<char> kept(V, 0);
  for (int i = 0; i < n; ++i) kept[order[i]] = 1;
  u128 mass_kept = 0;
  for (int v = 0; v < V; ++v)
    if (kept[v]) mass_kept += E[v];
  const u128 target = uniform_target(u, mass_kept);
  u128 c = 0;
  for (int v = 0; v < V; ++v)
    if (kept[v]) {
      c += E[v];
      if (c > target) {
        r.token = v;
        break;
      }
    }
  const bool truncating = (p.top_k > 0 && p.top_k < V) || p.top_p < 1.0f;
  const float log_kept = truncating ? std::log(lane_sum_emulated(e, kept)) : log_s;
  r.logmu = (z[r.token] - m) - log_kept;
  return r;
}

// The exact mass arithmetic against unsigned __int128.
TEST(Sampling, ExactMassArithmetic) {
  std::mt19937_64 rng(41);
  const float top_ps[] = {1.0f, 0.9f, 0.3f, 0.5f, std::nextafter(0.25f, 1.0f), 1e-30f, 1e-40f /* subnormal */,
                          std::nextafter(0.0f, 1.0f), std::nextafter(1.0f, 0.0f)};
  int checked = 0;
  for (int i = 0; i < 2000; ++i) {
    const int bits = 63 + static_cast<int>(rng() % 31);  // M in [2^63, 2^94): a kept mass
    const u128 M = (u128(1) << (bits - 1)) | ((u128(rng()) << 64 | rng()) & ((u128(1) << (bits - 1)) - 1));
    const detail::Mass128 m{static_cast<std::uint64_t>(M >> 64), static_cast<std::uint64_t>(M)};
    const auto as_u128 = [](const detail::Mass128& a) { return (u128(a.hi) << 64) | a.lo; };
    const double u = uniform_open01(rng());
    ASSERT_TRUE(as_u128(detail::mass_times_uniform(m, u)) == uniform_target(u, M)) << i;
    ASSERT_TRUE(uniform_target(u, M) < M);
    for (float tp : top_ps) {
      ASSERT_TRUE(as_u128(detail::mass_times_top_p(m, tp)) == top_p_target(tp, M)) << i << " top_p " << tp;
      ++checked;
    }
    const float tp = static_cast<float>(std::uniform_real_distribution<double>(1e-6, 1.0)(rng));
    ASSERT_TRUE(as_u128(detail::mass_times_top_p(m, tp)) == top_p_target(tp, M)) << i << " top_p " << tp;
    const std::uint64_t a = rng(), b = rng();
    ASSERT_TRUE(as_u128(detail::mul_64x64(a, b)) == u128(a) * b);
    detail::Mass128 s = m;
    detail::mass_add(s, detail::Mass128{b >> 40, a});
    ASSERT_TRUE(as_u128(s) == M + ((u128(b >> 40) << 64) | a));
    ASSERT_TRUE(as_u128(detail::mass_sub(s, m)) == ((u128(b >> 40) << 64) | a));
    ++checked;
  }
  EXPECT_EQ(top_p_target(1.0f, u128(12345)), u128(12345));
  std::printf("  %d exact products checked\n", checked);
}

// Rows for the path comparison: random logits on a grid of 0.25 (ties), continuous ones, and the
// special rows (-inf entries, NaN, all -inf, +inf, all equal).
template <class T>
std::vector<double> path_rows(int V, int& B) {
  const double ninf = -INFINITY, nan = std::numeric_limits<double>::quiet_NaN();
  std::mt19937_64 rng(1000 + V);
  std::uniform_int_distribution<int> grid(-16, 8);
  std::vector<std::vector<double>> rows;
  const int n_random = V >= 32000 ? 2 : 12;
  for (int i = 0; i < n_random; ++i) {
    std::vector<double> r(V);
    if (i % 3 == 2) {
      r = random_values<T>(V, -6.0, 6.0, 77 + i);
    } else {
      for (double& x : r) x = 0.25 * grid(rng);
    }
    if (i % 2 == 1)
      for (int v = 0; v < V; v += 3) r[v] = ninf;  // masked tokens (V = 1: the whole row, loud)
    rows.push_back(r);
  }
  std::vector<double> r(V, 0.5);
  rows.push_back(r);  // all equal
  r[V / 2] = nan;
  rows.push_back(r);
  rows.push_back(std::vector<double>(V, ninf));
  r = std::vector<double>(V, -1.0);
  r[V - 1] = INFINITY;
  rows.push_back(r);
  r = std::vector<double>(V, -0.0);  // zeros of both signs: m is +0
  for (int v = 0; v < V; v += 2) r[v] = 0.0;
  if (V > 2) r[1] = -2.0;
  rows.push_back(r);
  B = static_cast<int>(rows.size());
  std::vector<double> x;
  for (const auto& row : rows)
    for (double v : row) x.push_back(round_double<T>(v));
  return x;
}

// Rows of per-row draws (seed 77, step 5, with full rows) against emulate_row, bit for bit; returns
// the number of rows checked (0 after a failure).
long check_against_emulation(const std::vector<double>& x, int B, int V, const std::vector<std::uint64_t>& seq,
                             const std::vector<int>& pos, const SamplingParams& p, const Draws& ref,
                             const std::string& what) {
  for (int b = 0; b < B; ++b) {
    std::vector<float> row(V);
    for (int v = 0; v < V; ++v) row[v] = static_cast<float>(x[std::size_t(b) * V + v]);
    const double u = uniform_open01(counter_hash(77, 5, seq[b], static_cast<std::uint64_t>(pos[b])));
    const Emulated em = emulate_row(row, p, u);
    EXPECT_EQ(ref.token[b], em.token) << what << " row " << b << " (emulation)";
    EXPECT_TRUE(same_bits(ref.logmu[b], em.logmu))
        << what << " row " << b << " (emulation): " << ref.logmu[b] << " vs " << em.logmu;
    int mismatches = 0;
    for (int v = 0; v < V; ++v) mismatches += !same_bits(ref.full[std::size_t(b) * V + v], em.full[v]);
    EXPECT_EQ(mismatches, 0) << what << " row " << b << " full_logprobs (emulation)";
    if (::testing::Test::HasFailure()) return 0;
  }
  return B;
}

// For V in {1, 7, 100, 32000}, temperatures {0, 0.7, 1}, top_k {0, 1, 5, V-1}, top_p {1, 0.9, 0.3}:
// the team path with team sizes 1, 2, 4 (those the backend allows) gives the per-row path's tokens,
// logmu and full_logprobs bit for bit; where the kernels run on the host, both also equal the host
// emulation of the documented definitions bit for bit. On a backend with concurrency > 1 some team
// size > 1 must have run.
TYPED_TEST(Sampling, TeamPathMatchesPerRowPath) {
  using T = TypeParam;
  std::vector<int> ran_sizes;
  long compared = 0, emulated = 0;
  for (int V : {1, 7, 100, 32000}) {
    int B = 0;
    const std::vector<double> x = path_rows<T>(V, B);
    std::vector<std::uint64_t> seq(B);
    std::vector<int> pos(B);
    for (int b = 0; b < B; ++b) {
      seq[b] = 0x1234567u + 977u * b;
      pos[b] = 3 * b + V;
    }
    for (float t : {0.0f, 0.7f, 1.0f})
      for (int k : {0, 1, 5, V - 1})
        for (float tp : {1.0f, 0.9f, 0.3f}) {
          const SamplingParams p{t, k, tp};
          const std::string what = "V=" + std::to_string(V) + " t=" + std::to_string(t) + " top_k=" +
                                   std::to_string(k) + " top_p=" + std::to_string(tp);
          const Draws ref = sample<T>(x, B, V, seq, pos, p, 77, 5, true, SamplingPath::per_row);
          for (int ts : {1, 2, 4}) {
            Draws d;
            try {
              d = sample<T>(x, B, V, seq, pos, p, 77, 5, true, SamplingPath::team, ts);
            } catch (const std::invalid_argument& e) {
              ASSERT_GT(ts, 1) << "team size 1 refused: " << e.what();
              continue;
            }
            if (std::find(ran_sizes.begin(), ran_sizes.end(), ts) == ran_sizes.end()) ran_sizes.push_back(ts);
            for (int b = 0; b < B; ++b) {
              ASSERT_EQ(d.token[b], ref.token[b]) << what << " team " << ts << " row " << b;
              ASSERT_TRUE(same_bits(d.logmu[b], ref.logmu[b]))
                  << what << " team " << ts << " row " << b << ": " << d.logmu[b] << " vs " << ref.logmu[b];
            }
            int full_mismatch = 0;
            for (std::size_t i = 0; i < d.full.size(); ++i) full_mismatch += !same_bits(d.full[i], ref.full[i]);
            ASSERT_EQ(full_mismatch, 0) << what << " team " << ts;
            ++compared;
          }
          // Only where the kernels run on the host are the emulation's (glibc's) exp and log theirs.
          if constexpr (std::is_same<MemSpace, HostSpace>::value)
            emulated += check_against_emulation(x, B, V, seq, pos, p, ref, what);
        }
  }
  std::sort(ran_sizes.begin(), ran_sizes.end());
  std::string sizes;
  for (int ts : ran_sizes) sizes += " " + std::to_string(ts);
  std::printf("  team sizes run:%s (concurrency %d); %ld team/per-row comparisons, %ld rows against the emulation\n",
              sizes.c_str(), static_cast<int>(ExecSpace().concurrency()), compared, emulated);
  if (ExecSpace().concurrency() > 1) {
    EXPECT_TRUE(!ran_sizes.empty() && ran_sizes.back() > 1) << "no team size > 1 ran on a parallel backend";
  }
}

// Many rows and draws at V = 32000 with the truncations of the rollout decks: the team path (its
// default team size and 2) and the per-row path agree on every token and logmu bit.
TYPED_TEST(Sampling, TeamPathMatchesPerRowOnManyRows) {
  using T = TypeParam;
  const int B = 48, V = 32000;
  std::vector<double> x = random_values<T>(std::size_t(B) * V, -8.0, 8.0, 13);
  for (int b = 0; b < B; b += 5) x[std::size_t(b) * V + (b * 97) % V] = round_double<T>(12.0);  // peaked rows
  std::vector<std::uint64_t> seq(B);
  for (int b = 0; b < B; ++b) seq[b] = 5000 + b;
  for (const SamplingParams& p : {SamplingParams{1.0f, 0, 1.0f}, SamplingParams{0.7f, 50, 0.9f},
                                  SamplingParams{1.0f, 0, 0.95f}}) {
    const Draws ref = sample<T>(x, B, V, seq, iota_pos(B), p, 9, 2, false, SamplingPath::per_row);
    for (int ts : {0, 2}) {
      Draws d;
      try {
        d = sample<T>(x, B, V, seq, iota_pos(B), p, 9, 2, false, SamplingPath::team, ts);
      } catch (const std::invalid_argument&) {
        continue;  // team size 2 on a backend that allows only 1
      }
      for (int b = 0; b < B; ++b) {
        EXPECT_EQ(d.token[b], ref.token[b]) << "team " << ts << " row " << b;
        EXPECT_TRUE(same_bits(d.logmu[b], ref.logmu[b])) << "team " << ts << " row " << b;
      }
    }
  }
}

// The largest team size of a trivial team kernel (a KOKKOS_LAMBDA: on CUDA, team_size_max
// instantiates the functor as a kernel).
int max_team_size(int league) {
  using policy = Kokkos::TeamPolicy<ExecSpace>;
  return policy(ExecSpace(), league, 1)
      .team_size_max(KOKKOS_LAMBDA(const policy::member_type&){}, Kokkos::ParallelForTag());
}

// team_row_softmax_stats in a user team kernel: the bits of row_softmax_stats (team sizes 1, 2, 4).
template <class T>
void user_team_kernel_log_softmax(const View2<T>& x, float t, int team_size, const View2<float>& out) {
  const int V = static_cast<int>(x.extent(1));
  using policy = Kokkos::TeamPolicy<ExecSpace>;
  using scratch = Kokkos::View<float*, ExecSpace::scratch_memory_space, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
  const int bytes = static_cast<int>(scratch::shmem_size(detail::kSumLanes));
  Kokkos::parallel_for(
      "mantissa::test::team_row_softmax_stats",
      policy(ExecSpace(), static_cast<int>(x.extent(0)), team_size).set_scratch_size(0, Kokkos::PerTeam(bytes)),
      KOKKOS_LAMBDA(const policy::member_type& team) {
        const int b = team.league_rank();
        const scratch lane(team.team_scratch(0), detail::kSumLanes);
        const T* row = &x(b, 0);
        const RowSoftmaxStats s = team_row_softmax_stats(team, row, V, t, lane.data());
        Kokkos::parallel_for(Kokkos::TeamThreadRange(team, V),
                             [&](const int v) { out(b, v) = s.ok ? row_logprob(row[v], t, s) : -1.0f; });
      });
}

TYPED_TEST(Sampling, TeamRowSoftmaxStatsMatchesRowSoftmaxStats) {
  using T = TypeParam;
  for (int V : {1, 7, 300, 32000}) {
    int B = 0;
    const std::vector<double> xs = path_rows<T>(V, B);
    const View2<T> x = make_view2<T>("mantissa::test::logits", xs, B, V);
    for (float t : {1.0f, 0.7f}) {
      const View2<float> ref("mantissa::test::ref", B, V);
      const View1<int> tok("mantissa::test::token", B);
      const View1<float> at("mantissa::test::at", B);
      user_kernel_log_softmax<T>(x, t, tok, ref, at);
      auto hr = Kokkos::create_mirror_view_and_copy(HostSpace(), ref);
      for (int ts : {1, 2, 4}) {
        if (ts > max_team_size(B))
          continue;
        const View2<float> out("mantissa::test::out", B, V);
        user_team_kernel_log_softmax<T>(x, t, ts, out);
        ExecSpace().fence();
        auto ho = Kokkos::create_mirror_view_and_copy(HostSpace(), out);
        int mismatches = 0;
        for (int b = 0; b < B; ++b)
          for (int v = 0; v < V; ++v) {
            const float want = std::isnan(hr(b, v)) ? -1.0f : hr(b, v);  // NaN rows: !ok
            mismatches += !same_bits(ho(b, v), want);
          }
        EXPECT_EQ(mismatches, 0) << "V=" << V << " t=" << t << " team " << ts;
      }
    }
  }
}

// ---- the draw's strict boundaries ------------------------------------------------------------------
// With u chosen so that u M_kept is exactly a cumulative mass, the token is the next kept token
// (the cumulative mass must exceed u M_kept): a flat row of 8 (E = 2^63 each, M = 2^66) with
// u = i / 8 draws token i; renormalised over top_k = 4 (u = i / 4) token i; over top_p = 0.5 (the
// first 4 tokens) the same; with a masked token (-inf, E = 0) among 9, its successor. sample_row
// (per-row) and detail::team_sample_row (team sizes 1, 2, 4) in a user kernel, against the expected.
template <class T>
void user_team_kernel_sample(const View2<T>& x, const SamplingParams& p, const View1<double>& u, int team_size,
                             const View1<int>& tok_team, const View1<int>& tok_row, const View1<float>& lm_team,
                             const View1<float>& lm_row) {
  const int V = static_cast<int>(x.extent(1));
  using policy = Kokkos::TeamPolicy<ExecSpace>;
  using scratch = Kokkos::View<std::uint64_t*, ExecSpace::scratch_memory_space, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
  const int words = detail::sampling_team_scratch_words(team_size);
  const View1<std::uint64_t> work("mantissa::test::work", x.extent(0) * x.extent(1));
  Kokkos::parallel_for(
      "mantissa::test::team_sample_row",
      policy(ExecSpace(), static_cast<int>(x.extent(0)), team_size)
          .set_scratch_size(0, Kokkos::PerTeam(static_cast<int>(scratch::shmem_size(words)))),
      KOKKOS_LAMBDA(const policy::member_type& team) {
        const int b = team.league_rank();
        const scratch w(team.team_scratch(0), words);
        const SampledToken r =
            detail::team_sample_row(team, detail::sampling_team_scratch(w.data(), team.team_size()), &x(b, 0), V, p,
                                    u(b), static_cast<float*>(nullptr));
        Kokkos::single(Kokkos::PerTeam(team), [&]() {
          tok_team(b) = r.token;
          lm_team(b) = r.logmu;
          const SampledToken s = sample_row(&x(b, 0), V, p, u(b), &work(std::size_t(b) * V), nullptr);
          tok_row(b) = s.token;
          lm_row(b) = s.logmu;
        });
      });
}

TYPED_TEST(Sampling, DrawBoundariesAreStrict) {
  using T = TypeParam;
  struct Case {
    std::vector<double> row;
    SamplingParams p;
    double denom;               // u = i / denom (exact), i = 0 .. denom - 1 (u = 0 draws the first token)
    std::vector<int> expected;  // token for each i
  };
  const double ninf = -INFINITY;
  const std::vector<double> flat(8, 1.0);
  std::vector<double> masked(9, 1.0);  // 8 live tokens: M = 2^66 again
  masked[2] = ninf;
  const Case cases[] = {
      {flat, {1.0f, 0, 1.0f}, 8, {0, 1, 2, 3, 4, 5, 6, 7}},
      {flat, {0.7f, 4, 1.0f}, 4, {0, 1, 2, 3}},
      {flat, {1.0f, 0, 0.5f}, 4, {0, 1, 2, 3}},
      {masked, {1.0f, 0, 1.0f}, 8, {0, 1, 3, 4, 5, 6, 7, 8}},  // the masked token 2 is skipped
      {masked, {1.0f, 4, 1.0f}, 4, {0, 1, 3, 4}},              // top-4: 0 1 3 4 (-inf is last in the order)
  };
  int ran = 0;
  for (const Case& c : cases) {
    const int B = static_cast<int>(c.denom), V = static_cast<int>(c.row.size());
    std::vector<double> xs, us;
    for (int i = 0; i < B; ++i) {
      xs.insert(xs.end(), c.row.begin(), c.row.end());
      us.push_back(i / c.denom);
    }
    const View2<T> x = make_view2<T>("mantissa::test::logits", xs, B, V);
    View1<double> u("mantissa::test::u", B);
    {
      auto hu = Kokkos::create_mirror_view(u);
      for (int i = 0; i < B; ++i) hu(i) = us[i];
      Kokkos::deep_copy(u, hu);
    }
    for (int ts : {1, 2, 4}) {
      if (ts > max_team_size(B))
        continue;
      const View1<int> tt("mantissa::test::tok_team", B), tr("mantissa::test::tok_row", B);
      const View1<float> lt("mantissa::test::lm_team", B), lr("mantissa::test::lm_row", B);
      user_team_kernel_sample<T>(x, c.p, u, ts, tt, tr, lt, lr);
      ExecSpace().fence();
      auto htt = Kokkos::create_mirror_view_and_copy(HostSpace(), tt);
      auto htr = Kokkos::create_mirror_view_and_copy(HostSpace(), tr);
      auto hlt = Kokkos::create_mirror_view_and_copy(HostSpace(), lt);
      auto hlr = Kokkos::create_mirror_view_and_copy(HostSpace(), lr);
      for (int i = 0; i < B; ++i) {
        EXPECT_EQ(htr(i), c.expected[i]) << "per-row, u = " << us[i];
        EXPECT_EQ(htt(i), c.expected[i]) << "team " << ts << ", u = " << us[i];
        EXPECT_TRUE(same_bits(hlt(i), hlr(i))) << "team " << ts << ", u = " << us[i];
      }
      ++ran;
    }
  }
  EXPECT_GT(ran, 0);
}

// ---- parameters ---------------------------------------------------------------------------------
TEST(Sampling, BadParamsThrowNamingTheParameter) {
  const int B = 2, V = 4;
  const View2<float> x("mantissa::test::logits", B, V);
  const View1<std::uint64_t> seq("mantissa::test::seq_id", B);
  const View1<int> pos("mantissa::test::pos", B), tok("mantissa::test::token", B);
  const View1<float> lm("mantissa::test::logmu", B);
  struct Bad {
    SamplingParams p;
    const char* name;
    const char* value;
  };
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const Bad bad[] = {
      {{-1.0f, 0, 1.0f}, "temperature", "-1"},     {{nan, 0, 1.0f}, "temperature", "nan"},
      {{INFINITY, 0, 1.0f}, "temperature", "inf"}, {{1.0f, -3, 1.0f}, "top_k", "-3"},
      {{1.0f, 0, 0.0f}, "top_p", "0"},             {{1.0f, 0, -0.2f}, "top_p", "-0.2"},
      {{1.0f, 0, 1.5f}, "top_p", "1.5"},           {{1.0f, 0, 1.0000001f}, "top_p", "1.0000001"},
      {{1.0f, 0, nan}, "top_p", "nan"},
  };
  for (const Bad& b : bad) {
    try {
      sample_tokens<float>(ExecSpace(), x, seq, pos, b.p, 1, 1, tok, lm, View2<float>());
      ADD_FAILURE() << b.name << " = " << b.value << " was accepted";
    } catch (const std::invalid_argument& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(b.name), std::string::npos) << msg;
      EXPECT_NE(msg.find(std::string("got ") + b.value), std::string::npos) << msg;
    }
  }
  // Accepted edge values.
  for (const SamplingParams& p : {SamplingParams{0.0f, 0, 1.0f}, SamplingParams{1.0f, 0, 1e-30f},
                                  SamplingParams{1e-3f, 1000, 1.0f}})
    EXPECT_NO_THROW(sample_tokens<float>(ExecSpace(), x, seq, pos, p, 1, 1, tok, lm, View2<float>()));
  // Shapes.
  const View1<int> short_pos("mantissa::test::pos", B - 1);
  const View2<float> wrong_full("mantissa::test::full", B, V + 1);
  EXPECT_THROW(sample_tokens<float>(ExecSpace(), x, seq, short_pos, SamplingParams{}, 1, 1, tok, lm, View2<float>()),
               std::invalid_argument);
  EXPECT_THROW(sample_tokens<float>(ExecSpace(), x, seq, pos, SamplingParams{}, 1, 1, tok, lm, wrong_full),
               std::invalid_argument);
}

// ---- workspace ----------------------------------------------------------------------------------
// The per-row path's key buffer is allocated by its first truncating call and reused by calls that
// fit (counted through the Kokkos Tools allocation callback); untruncated calls need none, and the
// team path never does.
long& workspace_allocations() {
  static long n = 0;
  return n;
}
void count_allocation(Kokkos::Profiling::SpaceHandle, const char* label, const void*, std::uint64_t) {
  if (std::string(label) == "mantissa::sampling::workspace") ++workspace_allocations();
}

TEST(Sampling, WorkspaceIsReusedOnceWarm) {
  if (std::getenv("KOKKOS_TOOLS_LIBS") || std::getenv("KOKKOS_PROFILE_LIBRARY")) {
    GTEST_SKIP() << "a Kokkos Tools library is loaded";
  }
  const auto run = [](int B, int V, SamplingParams p, SamplingPath path = SamplingPath::per_row) {
    const std::vector<double> x = random_values<float>(std::size_t(B) * V, -2.0, 2.0, 1);
    sample<float>(x, B, V, std::vector<std::uint64_t>(B, 1), iota_pos(B), p, 1, 1, false, path);
  };
  sampling_release_workspace();
  Kokkos::Tools::Experimental::set_allocate_data_callback(count_allocation);
  workspace_allocations() = 0;
  run(16, 500, {1.0f, 0, 1.0f});
  EXPECT_EQ(workspace_allocations(), 0) << "no truncation, no workspace";
  run(16, 500, {1.0f, 10, 1.0f});
  EXPECT_EQ(workspace_allocations(), 1);
  run(16, 500, {1.0f, 0, 0.5f});
  run(8, 700, {1.0f, 5, 0.9f});
  EXPECT_EQ(workspace_allocations(), 1) << "calls that fit reuse the buffer";
  run(32, 500, {1.0f, 10, 1.0f});
  EXPECT_EQ(workspace_allocations(), 2) << "a larger call grows it once";
  run(64, 500, {1.0f, 10, 0.9f}, SamplingPath::team);
  run(64, 500, {1.0f, 0, 0.5f}, SamplingPath::team);
  EXPECT_EQ(workspace_allocations(), 2) << "the team path uses no workspace";
  Kokkos::Tools::Experimental::set_allocate_data_callback(nullptr);
}

}  // namespace sampling_test
