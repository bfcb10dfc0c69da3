// Token sampler (sample_tokens): chi-square goodness of fit of the drawn tokens, the exact support
// of top-k / top-p (ties and exact top-p boundaries included), log mu against a double reference,
// invariance to batching, row order and rank split, greedy decoding, the full log-softmax rows,
// non-finite rows, a 1e5-token vocabulary, parameter validation and the workspace reuse.
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
template <class T>
Draws sample(const std::vector<double>& logits, int B, int V, const std::vector<std::uint64_t>& seq,
             const std::vector<int>& pos, const SamplingParams& p, std::uint64_t seed, std::uint64_t step,
             bool want_full = false) {
  const View2<T> x = make_view2<T>("mantissa::test::logits", logits, B, V);
  const View1<std::uint64_t> s = make_u64_view(seq);
  const View1<int> ps = make_int_view("mantissa::test::pos", pos);
  const View1<int> tok("mantissa::test::token", B);
  const View1<float> lm("mantissa::test::logmu", B);
  const View2<float> full = want_full ? View2<float>("mantissa::test::full", B, V) : View2<float>();
  sample_tokens<T>(ExecSpace(), x, s, ps, p, seed, step, tok, lm, full);
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
// The key buffer is allocated by the first truncating call and reused by calls that fit (counted
// through the Kokkos Tools allocation callback); untruncated calls need none.
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
  const auto run = [](int B, int V, SamplingParams p) {
    const std::vector<double> x = random_values<float>(std::size_t(B) * V, -2.0, 2.0, 1);
    sample<float>(x, B, V, std::vector<std::uint64_t>(B, 1), iota_pos(B), p, 1, 1);
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
  Kokkos::Tools::Experimental::set_allocate_data_callback(nullptr);
}

}  // namespace sampling_test
