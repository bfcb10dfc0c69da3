// Training-engine attention (mantissa/kernels/attention.hpp): causal, grouped-query heads, packed
// variable-length sequences, forward and backward, for T = float, bf16_t, fp16_t.
//  (1) the double reference backward against central differences of the double reference forward;
//  (2) the kernels against the double reference, element by element, within first-order roundoff
//      bounds derived from the documented rounding points (attention_test_util.hpp says how);
//  (3) a directional central difference directly on the fp32 kernels;
//  plus: sequences never see each other (bit-identical outputs), outputs are written not
//  accumulated, the first token of a sequence returns its v exactly, bad shapes are rejected;
//  and the team-parallel path (detail::TrainAttentionPath::team, what a GPU runs) gives the item
//  path's bits (and the emulation's) for team sizes 1, 2, 4 and the chosen one, and rejects team
//  sizes the backend refuses.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "attention_test_util.hpp"
#include "kernel_test_util.hpp"
#include "mantissa/kernels/attention.hpp"

using namespace mantissa;
using mantissa::test::AttnShape;
using mantissa::test::make_shape;

namespace {

struct Case {
  const char* name;
  std::vector<int> lengths;
  int n_head, n_kv_head, head_dim;
};

// Several sequences of different lengths (with length 1, and an empty one), GQA (4/2, 6/2), MHA
// (4/4), MQA (4/1), head_dim 8 and 16 (and 12: not a multiple of the 8 dot-product lanes), and
// one row of 130 keys.
const std::vector<Case>& cases() {
  static const std::vector<Case> c = {
      {"gqa_hd8", {5, 1, 17, 0, 9, 3}, 4, 2, 8},  {"gqa_hd16", {12, 1, 30, 7}, 4, 2, 16},
      {"mha_hd8", {1, 9, 21, 4}, 4, 4, 8},        {"mha_hd16", {6, 1, 25, 14}, 4, 4, 16},
      {"mqa_long_hd16", {130, 1, 40}, 4, 1, 16}, {"gqa3_hd12", {3, 1, 11, 2}, 6, 2, 12},
      {"mha_hd32", {9, 1, 20}, 2, 2, 32},         {"gqa_hd64", {11, 1, 6}, 4, 2, 64},
      {"mha_hd5", {6, 1, 3}, 2, 2, 5},
  };
  return c;
}

// Random values, representable in T, returned as double. q and k in [-2, 2] so that the scaled
// scores spread over a few units (softmax far from uniform), v and dout in [-1, 1].
template <class T>
std::vector<double> random_values(std::size_t n, double lo, double hi, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<double> v(n);
  for (auto& x : v) x = round_to<T>(static_cast<float>(dist(rng)));
  return v;
}
template <class T>
std::vector<double> random_qkv(const AttnShape& sh, std::uint64_t seed) {
  std::vector<double> x = random_values<T>(static_cast<std::size_t>(sh.n()) * sh.width(), -2.0, 2.0, seed);
  const int W = sh.width(), vc0 = sh.v_col(0);
  for (int i = 0; i < sh.n(); ++i)
    for (int c = vc0; c < W; ++c) x[i * W + c] *= 0.5;  // exact in T (a power of two; values far from subnormal)
  return x;
}

template <class T>
View2<T> to_device(const std::vector<double>& h, std::size_t n0, std::size_t n1, const char* label) {
  View2<T> v(std::string(label), n0, n1);
  auto m = Kokkos::create_mirror_view(v);
  for (std::size_t r = 0; r < n0; ++r)
    for (std::size_t c = 0; c < n1; ++c) m(r, c) = from_float<T>(static_cast<float>(h[r * n1 + c]));
  Kokkos::deep_copy(v, m);
  return v;
}
View1<int> offsets_to_device(const AttnShape& sh) {
  View1<int> v("mantissa::test::seq_offsets", sh.offsets.size());
  auto m = Kokkos::create_mirror_view(v);
  for (std::size_t s = 0; s < sh.offsets.size(); ++s) m(s) = sh.offsets[s];
  Kokkos::deep_copy(v, m);
  return v;
}
template <class V>
std::vector<double> to_host(const V& v) {
  ExecSpace().fence();
  auto m = Kokkos::create_mirror_view(v);
  Kokkos::deep_copy(m, v);
  std::vector<double> h(v.extent(0) * v.extent(1));
  for (std::size_t r = 0; r < v.extent(0); ++r)
    for (std::size_t c = 0; c < v.extent(1); ++c) h[r * v.extent(1) + c] = to_float(m(r, c));
  return h;
}
// The raw bits of a View's elements, for bit-identity checks.
template <class T>
std::vector<std::uint32_t> bits_of(const View2<T>& v) {
  ExecSpace().fence();
  auto m = Kokkos::create_mirror_view(v);
  Kokkos::deep_copy(m, v);
  std::vector<std::uint32_t> b;
  for (std::size_t r = 0; r < v.extent(0); ++r)
    for (std::size_t c = 0; c < v.extent(1); ++c) b.push_back(float_bits(to_float(m(r, c))) ^ 0u);
  return b;
}

// Runs forward and backward of the kernels on host data.
template <class T>
struct KernelRun {
  View2<T> out, dqkv;
  View2<float> lse;
};
template <class T>
KernelRun<T> run_kernels(const AttnShape& sh, const std::vector<double>& qkv, const std::vector<double>& dout) {
  const std::size_t N = sh.n();
  const View2<T> x = to_device<T>(qkv, N, sh.width(), "mantissa::test::qkv");
  const View2<T> g = to_device<T>(dout, N, sh.qcols(), "mantissa::test::dout");
  const View1<int> off = offsets_to_device(sh);
  KernelRun<T> r{View2<T>("mantissa::test::out", N, sh.qcols()), View2<T>("mantissa::test::dqkv", N, sh.width()),
                 View2<float>("mantissa::test::lse", N, sh.n_head)};
  const ExecSpace space;
  attention_forward<T>(space, x, off, sh.n_head, sh.n_kv_head, sh.head_dim, r.out, r.lse);
  attention_backward<T>(space, x, off, sh.n_head, sh.n_kv_head, sh.head_dim, r.out, g, r.lse, r.dqkv);
  space.fence();
  return r;
}

// Checks |got - ref| <= factor * bound element-wise; returns the largest |got - ref| / bound.
double check_bounded(const std::string& what, const std::vector<double>& got, const std::vector<double>& ref,
                     const std::vector<double>& bound, double factor = 2.0) {
  EXPECT_EQ(got.size(), ref.size());
  double worst = 0;
  int reported = 0;
  for (std::size_t e = 0; e < got.size() && e < ref.size(); ++e) {
    const double err = std::fabs(got[e] - ref[e]);
    worst = std::max(worst, err / bound[e]);
    if (!(err <= factor * bound[e]) && reported++ < 5)
      ADD_FAILURE() << what << "[" << e << "]: got " << got[e] << " ref " << ref[e] << " err " << err << " > "
                    << factor << " * bound " << bound[e];
  }
  return worst;
}

template <class T>
struct TypeName;
template <>
struct TypeName<float> {
  static constexpr const char* value = "fp32";
};
template <>
struct TypeName<bf16_t> {
  static constexpr const char* value = "bf16";
};
template <>
struct TypeName<fp16_t> {
  static constexpr const char* value = "fp16";
};
struct PrecisionNames {
  template <class T>
  static std::string GetName(int) {
    return TypeName<T>::value;
  }
};

// ---------------------------------------------------------------------------------------------
// (1) The double reference backward is the gradient of the double reference forward.
TEST(AttentionReference, BackwardMatchesCentralDifferences) {
  for (const Case& c : {cases()[0], cases()[3]}) {
    SCOPED_TRACE(c.name);
    const AttnShape sh = make_shape(c.lengths, c.n_head, c.n_kv_head, c.head_dim);
    std::vector<double> qkv = random_qkv<float>(sh, 11);
    const std::vector<double> w = random_values<float>(static_cast<std::size_t>(sh.n()) * sh.qcols(), -1, 1, 12);
    const auto f = [&](const std::vector<double>& x) {  // the functional sum(w * out)
      const std::vector<double> out = test::ref_attention_forward(sh, x).out;
      double s = 0;
      for (std::size_t e = 0; e < out.size(); ++e) s += w[e] * out[e];
      return s;
    };
    const std::vector<double> grad = test::ref_attention_backward(sh, qkv, test::ref_attention_forward(sh, qkv).out, w).dqkv;
    double gmax = 0, worst = 0;
    for (double g : grad) gmax = std::max(gmax, std::fabs(g));
    ASSERT_GT(gmax, 0.1);
    for (std::size_t e = 0; e < qkv.size(); ++e) {
      // step 1e-5: truncation ~ h^2 f''' ~ 1e-10, cancellation ~ 1e-16 |f| / h ~ 1e-10
      const double x0 = qkv[e], h = 1e-5;
      qkv[e] = x0 + h;
      const double fp = f(qkv);
      qkv[e] = x0 - h;
      const double fm = f(qkv);
      qkv[e] = x0;
      const double fd = (fp - fm) / (2 * h);
      worst = std::max(worst, std::fabs(fd - grad[e]) / gmax);
      EXPECT_NEAR(fd, grad[e], 1e-6 * gmax) << "qkv element " << e;  // double: ~1e-9 expected
    }
    std::printf("[ reference ] %s: max |FD - grad| / max|grad| = %.2e (tolerance 1e-6)\n", c.name, worst);
  }
}

template <class T>
class Attention : public ::testing::Test {};
using StorageTypes = ::testing::Types<float, bf16_t, fp16_t>;
TYPED_TEST_SUITE(Attention, StorageTypes, PrecisionNames);

// (2a) forward: out and lse against the double reference within the roundoff bound.
TYPED_TEST(Attention, ForwardMatchesReference) {
  using T = TypeParam;
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name);
    const AttnShape sh = make_shape(c.lengths, c.n_head, c.n_kv_head, c.head_dim);
    const std::vector<double> qkv = random_qkv<T>(sh, 21);
    const std::vector<double> dout(static_cast<std::size_t>(sh.n()) * sh.qcols(), 0.0);
    const KernelRun<T> k = run_kernels<T>(sh, qkv, dout);
    const test::RefForward ref = test::ref_attention_forward(sh, qkv, test::roundoff_of<T>());
    // Bound per element (first order): u_T (P rounded to T) + 2 x (score error (hd+2) u32 |q||k|
    // scale, exp/subtraction) + (2L+3) u32 (fp32 sums over L keys), all times sum_j P_ij |v_j|,
    // + u_T |out| (the one rounding of out); lse: fp32 only. Allowed: 2 x bound.
    const double r_out = check_bounded("out", to_host(k.out), ref.out, ref.out_bound);
    const double r_lse = check_bounded("lse", to_host(k.lse), ref.lse, ref.lse_bound);
    std::printf("[ %s ] forward %-14s max err/bound: out %.3f lse %.3f\n", TypeName<T>::value, c.name, r_out, r_lse);
  }
}

// (2b) backward: dq, dk, dv against the double reference backward evaluated on the same inputs
// (qkv, the kernel's out in T, dout), within the roundoff bound.
TYPED_TEST(Attention, BackwardMatchesReference) {
  using T = TypeParam;
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name);
    const AttnShape sh = make_shape(c.lengths, c.n_head, c.n_kv_head, c.head_dim);
    const std::vector<double> qkv = random_qkv<T>(sh, 31);
    const std::vector<double> dout = random_values<T>(static_cast<std::size_t>(sh.n()) * sh.qcols(), -1, 1, 32);
    const KernelRun<T> k = run_kernels<T>(sh, qkv, dout);
    const test::RefBackward ref = test::ref_attention_backward(sh, qkv, to_host(k.out), dout, test::roundoff_of<T>());
    // Bound per element (first order): dS = P (dP - D) rounded to T costs u_T |dS| + eta; its fp32
    // error is P's relative error (scores and the fp32 lse) |dS| + P hd u32 (|dout||v| + |dout||out|);
    // dq sums L terms, dk/dv sum group*L terms (gamma_n); dv uses round_T(P): u_T P |dout|; each
    // output rounded once to T: u_T |x|. Allowed: 2 x bound.
    const std::vector<double> got = to_host(k.dqkv);
    const int W = sh.width();
    double worst[3] = {0, 0, 0};
    const char* names[3] = {"dq", "dk", "dv"};
    for (int part = 0; part < 3; ++part) {
      const int c0 = part == 0 ? 0 : part == 1 ? sh.k_col(0) : sh.v_col(0);
      const int c1 = part == 0 ? sh.k_col(0) : part == 1 ? sh.v_col(0) : W;
      std::vector<double> g, r, b;
      for (int i = 0; i < sh.n(); ++i)
        for (int col = c0; col < c1; ++col) {
          g.push_back(got[i * W + col]);
          r.push_back(ref.dqkv[i * W + col]);
          b.push_back(ref.dqkv_bound[i * W + col]);
        }
      worst[part] = check_bounded(names[part], g, r, b);
    }
    std::printf("[ %s ] backward %-14s max err/bound: dq %.3f dk %.3f dv %.3f\n", TypeName<T>::value, c.name,
                worst[0], worst[1], worst[2]);
  }
}

// The first token of a sequence sees only itself: p = round_T(exp(0)) = 1, l = 1, so out = v bit
// for bit, lse = its fp32 score (m + log 1); and its dq is exactly 0 (dS = P (dP - D) with D = dP).
TYPED_TEST(Attention, FirstTokenOfSequenceReturnsItsValue) {
  using T = TypeParam;
  const Case& c = cases()[0];
  const AttnShape sh = make_shape(c.lengths, c.n_head, c.n_kv_head, c.head_dim);
  const std::vector<double> qkv = random_qkv<T>(sh, 41);
  const std::vector<double> dout = random_values<T>(static_cast<std::size_t>(sh.n()) * sh.qcols(), -1, 1, 42);
  const KernelRun<T> k = run_kernels<T>(sh, qkv, dout);
  const std::vector<double> out = to_host(k.out), lse = to_host(k.lse), dq = to_host(k.dqkv);
  const int hd = sh.head_dim, W = sh.width();
  int checked = 0;
  for (std::size_t s = 0; s + 1 < sh.offsets.size(); ++s) {
    const int i = sh.offsets[s];
    if (i == sh.offsets[s + 1]) continue;  // empty sequence
    for (int h = 0; h < sh.n_head; ++h) {
      const int vc = sh.v_col(h / sh.group()), kc = sh.k_col(h / sh.group());
      double dot = 0, dot_abs = 0;
      for (int d = 0; d < hd; ++d) {
        dot += qkv[i * W + h * hd + d] * qkv[i * W + kc + d];
        dot_abs += std::fabs(qkv[i * W + h * hd + d] * qkv[i * W + kc + d]);
      }
      // lse = m + log(1) = the fp32 score: fp32 dot of hd terms, the scale and its rounding
      EXPECT_NEAR(lse[i * sh.n_head + h], dot * sh.scale(), (hd + 2) * test::u32 * dot_abs * sh.scale()) << "token " << i;
      for (int d = 0; d < hd; ++d) {
        EXPECT_EQ(out[i * sh.qcols() + h * hd + d], qkv[i * W + vc + d]) << "token " << i << " head " << h;
        ++checked;
      }
    }
  }
  EXPECT_GT(checked, 0);
  // dq of a length-1 sequence: dS = P (dP - D) with P = 1 and D = dout . out = dout . v = dP.
  const int i1 = sh.offsets[1];  // cases()[0] has a length-1 sequence second
  ASSERT_EQ(sh.offsets[2] - i1, 1);
  for (int col = 0; col < sh.qcols(); ++col) EXPECT_EQ(dq[i1 * W + col], 0.0) << "dq of the length-1 sequence";
}

// Tokens of different sequences never attend to each other: changing every value of one
// sequence (qkv and dout) leaves the outputs of all other sequences bit-identical.
TYPED_TEST(Attention, SequencesAreIsolated) {
  using T = TypeParam;
  for (const Case& c : {cases()[0], cases()[2]}) {
    SCOPED_TRACE(c.name);
    const AttnShape sh = make_shape(c.lengths, c.n_head, c.n_kv_head, c.head_dim);
    std::vector<double> qkv = random_qkv<T>(sh, 51);
    std::vector<double> dout = random_values<T>(static_cast<std::size_t>(sh.n()) * sh.qcols(), -1, 1, 52);
    const KernelRun<T> a = run_kernels<T>(sh, qkv, dout);
    const int victim = 2;  // the third sequence (17 and 21 tokens)
    const int r0 = sh.offsets[victim], r1 = sh.offsets[victim + 1];
    const std::vector<double> qkv2 = random_qkv<T>(sh, 53);
    const std::vector<double> dout2 = random_values<T>(dout.size(), -1, 1, 54);
    for (int i = r0; i < r1; ++i) {
      for (int col = 0; col < sh.width(); ++col) qkv[i * sh.width() + col] = qkv2[i * sh.width() + col];
      for (int col = 0; col < sh.qcols(); ++col) dout[i * sh.qcols() + col] = dout2[i * sh.qcols() + col];
    }
    const KernelRun<T> b = run_kernels<T>(sh, qkv, dout);
    const auto compare = [&](const char* what, const std::vector<std::uint32_t>& x,
                             const std::vector<std::uint32_t>& y) {
      const std::size_t cols = x.size() / sh.n();
      int changed_inside = 0, changed_outside = 0;
      for (int i = 0; i < sh.n(); ++i)
        for (std::size_t col = 0; col < cols; ++col) {
          const bool differs = x[i * cols + col] != y[i * cols + col];
          (i >= r0 && i < r1 ? changed_inside : changed_outside) += differs;
        }
      EXPECT_EQ(changed_outside, 0) << what << " changed outside the modified sequence";
      EXPECT_GT(changed_inside, 0) << what << " did not change inside the modified sequence";
    };
    compare("out", bits_of(a.out), bits_of(b.out));
    compare("lse", bits_of(a.lse), bits_of(b.lse));
    compare("dqkv", bits_of(a.dqkv), bits_of(b.dqkv));
  }
}

// Every output element is written (not accumulated): results are bit-identical whether the
// output Views start as zeros or as NaN.
TYPED_TEST(Attention, OutputsAreWrittenNotAccumulated) {
  using T = TypeParam;
  const Case& c = cases()[1];
  const AttnShape sh = make_shape(c.lengths, c.n_head, c.n_kv_head, c.head_dim);
  const std::size_t N = sh.n();
  const View2<T> x = to_device<T>(random_qkv<T>(sh, 61), N, sh.width(), "mantissa::test::qkv");
  const View2<T> g = to_device<T>(random_values<T>(N * sh.qcols(), -1, 1, 62), N, sh.qcols(), "mantissa::test::dout");
  const View1<int> off = offsets_to_device(sh);
  const ExecSpace space;
  std::vector<std::uint32_t> bits[2];
  for (int fill = 0; fill < 2; ++fill) {
    const float init = fill == 0 ? 0.0f : std::numeric_limits<float>::quiet_NaN();
    View2<T> out("mantissa::test::out", N, sh.qcols()), dqkv("mantissa::test::dqkv", N, sh.width());
    View2<float> lse("mantissa::test::lse", N, sh.n_head);
    Kokkos::deep_copy(out, from_float<T>(init));
    Kokkos::deep_copy(dqkv, from_float<T>(init));
    Kokkos::deep_copy(lse, init);
    attention_forward<T>(space, x, off, sh.n_head, sh.n_kv_head, sh.head_dim, out, lse);
    attention_backward<T>(space, x, off, sh.n_head, sh.n_kv_head, sh.head_dim, out, g, lse, dqkv);
    for (const auto& v : {bits_of(out), bits_of(lse), bits_of(dqkv)}) bits[fill].insert(bits[fill].end(), v.begin(), v.end());
  }
  ASSERT_EQ(bits[0].size(), bits[1].size());
  for (std::size_t e = 0; e < bits[0].size(); ++e) {
    ASSERT_EQ(bits[0][e], bits[1][e]) << "element " << e;
    ASSERT_FALSE(std::isnan(bits_float(bits[0][e]))) << "element " << e;
  }
}

// ---------------------------------------------------------------------------------------------
// The documented rounding points F1-F6 / B1-B6 (attention.hpp), emulated on the host in plain
// float loops in the documented order. On a host backend (same compiler, same libm expf/logf) built
// without FMA (g++ contracts a*b+c into an FMA whenever the target has one, e.g. the native preset)
// the kernels must agree with it bit for bit. Switching off one
// rounding point of the emulation must change the bits for bf16/fp16: each point is observable.
struct RoundingPoints {
  bool p_forward = true;   // F4 round_T(e_ij)
  bool ds = true;          // B3 round_T(dS_ij)
  bool p_backward = true;  // B6 round_T(P_ij) in dv
};
template <class T>
struct Emulated {
  std::vector<std::uint32_t> out, lse, dqkv;  // bits
};
template <class T>
Emulated<T> emulate(const AttnShape& sh, const std::vector<double>& qkv_d, const std::vector<double>& dout_d,
                    RoundingPoints rp) {
  const int N = sh.n(), H = sh.n_head, hd = sh.head_dim, W = sh.width(), HD = sh.qcols(), G = sh.group();
  const float scale = attention_scale(hd);
  const std::vector<float> x(qkv_d.begin(), qkv_d.end()), g(dout_d.begin(), dout_d.end());
  const auto rnd = [](bool on, float f) { return on ? round_to<T>(f) : f; };
  // dot products of length hd: lane r sums d = r mod 8 in ascending d, lanes combined as below
  const auto dot = [hd](const float* a, const float* b) {
    float lane[8] = {};
    for (int d = 0; d < hd; ++d) lane[d % 8] += a[d] * b[d];
    return ((lane[0] + lane[4]) + (lane[2] + lane[6])) + ((lane[1] + lane[5]) + (lane[3] + lane[7]));
  };
  std::vector<float> out(static_cast<std::size_t>(N) * HD), lse(static_cast<std::size_t>(N) * H), dqkv(x.size());
  for (int i = 0; i < N; ++i)
    for (int h = 0; h < H; ++h) {
      int start = 0, end = 0;
      sh.seq_of(i, start, end);
      const float* q = &x[i * W + h * hd];
      const int kc = sh.k_col(h / G), vc = sh.v_col(h / G);
      float m = dot(q, &x[start * W + kc]) * scale;  // F2, F3
      for (int j = start + 1; j <= i; ++j) m = std::max(m, dot(q, &x[j * W + kc]) * scale);
      std::vector<float> acc(hd, 0.0f);
      float l = 0.0f;
      for (int j = start; j <= i; ++j) {
        const float e = exp_fp32(dot(q, &x[j * W + kc]) * scale - m);
        l += e;
        const float p = rnd(rp.p_forward, e);  // F4
        for (int d = 0; d < hd; ++d) acc[d] += p * x[j * W + vc + d];
      }
      const float inv_l = 1.0f / l;
      for (int d = 0; d < hd; ++d) out[i * HD + h * hd + d] = round_to<T>(acc[d] * inv_l);  // F5
      lse[i * H + h] = m + std::log(l);                                                     // F6
    }
  std::vector<float> D(static_cast<std::size_t>(N) * H);
  for (int i = 0; i < N; ++i)
    for (int h = 0; h < H; ++h) D[i * H + h] = dot(&g[i * HD + h * hd], &out[i * HD + h * hd]);  // B2
  for (int i = 0; i < N; ++i)
    for (int h = 0; h < H; ++h) {  // B4
      int start = 0, end = 0;
      sh.seq_of(i, start, end);
      const float* q = &x[i * W + h * hd];
      const float* go = &g[i * HD + h * hd];
      const int kc = sh.k_col(h / G), vc = sh.v_col(h / G);
      std::vector<float> acc(hd, 0.0f);
      for (int j = start; j <= i; ++j) {
        const float p = exp_fp32(dot(q, &x[j * W + kc]) * scale - lse[i * H + h]);           // B1
        const float ds = rnd(rp.ds, p * (dot(go, &x[j * W + vc]) - D[i * H + h]));           // B3
        for (int d = 0; d < hd; ++d) acc[d] += ds * x[j * W + kc + d];
      }
      for (int d = 0; d < hd; ++d) dqkv[i * W + h * hd + d] = round_to<T>(scale * acc[d]);
    }
  for (int j = 0; j < N; ++j)
    for (int c = 0; c < sh.n_kv_head; ++c) {  // B5, B6
      int start = 0, end = 0;
      sh.seq_of(j, start, end);
      const float* k = &x[j * W + sh.k_col(c)];
      const float* v = &x[j * W + sh.v_col(c)];
      std::vector<float> acc_k(hd, 0.0f), acc_v(hd, 0.0f);
      for (int h = c * G; h < (c + 1) * G; ++h)
        for (int i = j; i < end; ++i) {
          const float* q = &x[i * W + h * hd];
          const float* go = &g[i * HD + h * hd];
          const float p = exp_fp32(dot(q, k) * scale - lse[i * H + h]);
          const float pt = rnd(rp.p_backward, p);
          const float ds = rnd(rp.ds, p * (dot(go, v) - D[i * H + h]));
          for (int d = 0; d < hd; ++d) {
            acc_v[d] += pt * go[d];
            acc_k[d] += ds * q[d];
          }
        }
      for (int d = 0; d < hd; ++d) {
        dqkv[j * W + sh.k_col(c) + d] = round_to<T>(scale * acc_k[d]);
        dqkv[j * W + sh.v_col(c) + d] = round_to<T>(acc_v[d]);
      }
    }
  const auto bits = [](const std::vector<float>& v) {
    std::vector<std::uint32_t> b;
    for (float f : v) b.push_back(float_bits(f));
    return b;
  };
  return {bits(out), bits(lse), bits(dqkv)};
}

TYPED_TEST(Attention, FollowsTheDocumentedRoundingPointsBitForBit) {
  using T = TypeParam;
  if (!mantissa::test::kernels_run_on_host())
    GTEST_SKIP() << "device expf/logf and FMA contraction differ from the host emulation; the bound tests apply";
#if defined(__FMA__) || defined(__FP_FAST_FMAF)
  GTEST_SKIP() << "built with FMA contraction (e.g. -march=native): the plain-float emulation differs; the bound "
                  "tests apply";
#endif
  // Both host code paths: the AVX-compiled items (where the CPU has AVX) and the generic ones.
  for (const bool avx : {true, false}) {
    for (const Case& c : cases()) {
      SCOPED_TRACE(std::string(c.name) + (avx ? " (AVX path where available)" : " (generic path)"));
      const AttnShape sh = make_shape(c.lengths, c.n_head, c.n_kv_head, c.head_dim);
      const std::vector<double> qkv = random_qkv<T>(sh, 81);
      const std::vector<double> dout = random_values<T>(static_cast<std::size_t>(sh.n()) * sh.qcols(), -1, 1, 82);
      detail::attention_allow_host_avx() = avx;
      const KernelRun<T> k = run_kernels<T>(sh, qkv, dout);
      detail::attention_allow_host_avx() = true;
      const std::vector<std::uint32_t> out = bits_of(k.out), lse = bits_of(k.lse), dqkv = bits_of(k.dqkv);
      const Emulated<T> e = emulate<T>(sh, qkv, dout, RoundingPoints{});
      EXPECT_TRUE(out == e.out) << "out";
      EXPECT_TRUE(lse == e.lse) << "lse";
      EXPECT_TRUE(dqkv == e.dqkv) << "dqkv";
      if (std::is_same<T, float>::value) continue;  // round_T is the identity: nothing to switch off
      // Negative controls: each rounding point, switched off, is visible in the bits.
      EXPECT_FALSE(emulate<T>(sh, qkv, dout, RoundingPoints{false, true, true}).out == out) << "F4 not observable";
      EXPECT_FALSE(emulate<T>(sh, qkv, dout, RoundingPoints{true, false, true}).dqkv == dqkv) << "B3 not observable";
      EXPECT_FALSE(emulate<T>(sh, qkv, dout, RoundingPoints{true, true, false}).dqkv == dqkv) << "B6 not observable";
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The team-parallel path (detail::TrainAttentionPath::team: query / key tiles of team-size rows,
// key tiles staged in team scratch; what a GPU runs) gives the bits of the item path, for team
// sizes 1, 2, 4 (those the backend allows) and the chosen one (0), key tiles of 8 (many tile
// boundaries) and the chosen size. Sequences longer than a tile and not multiples of it, empty
// and length-1 sequences, GQA groups 1, 2, 3 and 4, head_dim 8, 16, 24, 32, 64 and 256 (16, 32 and 64 are
// compiled as constants).
const std::vector<Case>& team_cases() {
  static const std::vector<Case> c = {
      {"team_gqa2_hd32", {70, 0, 1, 33, 19, 5}, 4, 2, 32}, {"team_mha_hd8", {1, 45, 0, 17}, 2, 2, 8},
      {"team_gqa3_hd64", {40, 1, 23}, 6, 2, 64},           {"team_mqa_hd24", {29, 0, 3, 1, 37}, 4, 1, 24},
      {"team_mha_hd256", {9, 1, 3}, 1, 1, 256},          {"team_gqa2_hd16", {50, 1, 0, 21}, 4, 2, 16},
  };
  return c;
}

template <class T>
KernelRun<T> run_path(const AttnShape& sh, const std::vector<double>& qkv, const std::vector<double>& dout,
                      detail::TrainAttentionPath path, int team_size, int key_tile) {
  const std::size_t N = sh.n();
  const View2<T> x = to_device<T>(qkv, N, sh.width(), "mantissa::test::qkv");
  const View2<T> g = to_device<T>(dout, N, sh.qcols(), "mantissa::test::dout");
  const View1<int> off = offsets_to_device(sh);
  KernelRun<T> r{View2<T>("mantissa::test::out", N, sh.qcols()), View2<T>("mantissa::test::dqkv", N, sh.width()),
                 View2<float>("mantissa::test::lse", N, sh.n_head)};
  // NaN-filled outputs: every element must be written
  Kokkos::deep_copy(r.out, from_float<T>(std::numeric_limits<float>::quiet_NaN()));
  Kokkos::deep_copy(r.dqkv, from_float<T>(std::numeric_limits<float>::quiet_NaN()));
  Kokkos::deep_copy(r.lse, std::numeric_limits<float>::quiet_NaN());
  const ExecSpace space;
  detail::attention_forward_path<T>(space, x, off, sh.n_head, sh.n_kv_head, sh.head_dim, r.out, r.lse, path,
                                    team_size, key_tile);
  detail::attention_backward_path<T>(space, x, off, sh.n_head, sh.n_kv_head, sh.head_dim, r.out, g, r.lse, r.dqkv,
                                     path, team_size, key_tile);
  space.fence();
  return r;
}

std::size_t count_differing(const std::vector<std::uint32_t>& a, const std::vector<std::uint32_t>& b) {
  std::size_t n = a.size() == b.size() ? 0 : std::max(a.size(), b.size());
  for (std::size_t e = 0; e < a.size() && e < b.size(); ++e) n += a[e] != b[e];
  return n;
}

TYPED_TEST(Attention, TeamPathGivesTheItemPathBits) {
  using T = TypeParam;
  // The plain-float host emulation (and the item path) give the team path's bits where the
  // kernels run on the host without FMA contraction; elsewhere (a GPU, -march=native) the
  // contraction of a*b+c may differ between the two code shapes, and the team path is held to
  // the roundoff bounds of the double reference instead (and the differing bits are counted).
  bool bitwise = mantissa::test::kernels_run_on_host();
#if defined(__FMA__) || defined(__FP_FAST_FMAF)
  bitwise = false;
#endif
  const ExecSpace space;
  int ts_max = std::numeric_limits<int>::max();
  for (const Case& c : team_cases()) ts_max = std::min(ts_max, detail::attention_team_size_max<T>(space, c.head_dim));
  std::printf("[ %s ] team path: backend %s, concurrency %d, team size limit %d, comparison %s\n", TypeName<T>::value,
              ExecSpace::name(), static_cast<int>(space.concurrency()), ts_max,
              bitwise ? "bit for bit (item path and emulation)" : "roundoff bounds");
  int largest_ran = 0;
  for (const int ts : {0, 1, 2, 4}) {
    if (ts > ts_max) {
      std::printf("[ %s ] team size %d: skipped (the backend allows at most %d)\n", TypeName<T>::value, ts, ts_max);
      continue;
    }
    largest_ran = std::max(largest_ran, ts == 0 ? std::min(ts_max, detail::attention_team_default_rows) : ts);
    for (const int key_tile : {8, 0}) {
      for (const Case& c : team_cases()) {
        SCOPED_TRACE(std::string(c.name) + " team size " + std::to_string(ts) + " key tile " + std::to_string(key_tile));
        const AttnShape sh = make_shape(c.lengths, c.n_head, c.n_kv_head, c.head_dim);
        const std::vector<double> qkv = random_qkv<T>(sh, 91);
        const std::vector<double> dout = random_values<T>(static_cast<std::size_t>(sh.n()) * sh.qcols(), -1, 1, 92);
        const KernelRun<T> t = run_path<T>(sh, qkv, dout, detail::TrainAttentionPath::team, ts, key_tile);
        detail::attention_allow_host_avx() = false;  // the generic items
        const KernelRun<T> it = run_path<T>(sh, qkv, dout, detail::TrainAttentionPath::item, 0, 0);
        detail::attention_allow_host_avx() = true;
        const std::vector<std::uint32_t> out = bits_of(t.out), lse = bits_of(t.lse), dqkv = bits_of(t.dqkv);
        std::size_t nan = 0;
        for (const auto* b : {&out, &lse, &dqkv})
          for (const std::uint32_t u : *b) nan += std::isnan(bits_float(u));
        EXPECT_EQ(nan, 0u) << "elements left unwritten (NaN) by the team path";
        const std::size_t d_out = count_differing(out, bits_of(it.out)), d_lse = count_differing(lse, bits_of(it.lse)),
                          d_dqkv = count_differing(dqkv, bits_of(it.dqkv));
        if (bitwise) {
          EXPECT_EQ(d_out, 0u) << "out differs from the item path";
          EXPECT_EQ(d_lse, 0u) << "lse differs from the item path";
          EXPECT_EQ(d_dqkv, 0u) << "dqkv differs from the item path";
          const Emulated<T> e = emulate<T>(sh, qkv, dout, RoundingPoints{});
          EXPECT_TRUE(out == e.out) << "out differs from the emulation";
          EXPECT_TRUE(lse == e.lse) << "lse differs from the emulation";
          EXPECT_TRUE(dqkv == e.dqkv) << "dqkv differs from the emulation";
        } else {
          if (d_out + d_lse + d_dqkv > 0)
            std::printf("[ %s ] %s team size %d key tile %d: %zu out, %zu lse, %zu dqkv elements differ from the item "
                        "path\n",
                        TypeName<T>::value, c.name, ts, key_tile, d_out, d_lse, d_dqkv);
          const test::RefForward rf = test::ref_attention_forward(sh, qkv, test::roundoff_of<T>());
          check_bounded("out", to_host(t.out), rf.out, rf.out_bound);
          check_bounded("lse", to_host(t.lse), rf.lse, rf.lse_bound);
          const test::RefBackward rb = test::ref_attention_backward(sh, qkv, to_host(t.out), dout, test::roundoff_of<T>());
          check_bounded("dqkv", to_host(t.dqkv), rb.dqkv, rb.dqkv_bound);
        }
      }
    }
  }
  std::printf("[ %s ] team path: largest team size that ran %d\n", TypeName<T>::value, largest_ran);
  if (space.concurrency() > 1) {
    EXPECT_GT(largest_ran, 1) << "no team size > 1 ran on a backend with concurrency > 1";
  }
}

// The team path rejects a team size the backend refuses (and a negative one) on any input.
TEST(AttentionShapes, TeamPathRejectsBadTeamSizes) {
  const ExecSpace space;
  const int ts_max = detail::attention_team_size_max<float>(space, 8);
  ASSERT_GE(ts_max, 1);
  const std::size_t N = 4;
  const View1<int> off("mantissa::test::seq_offsets", 2);
  Kokkos::deep_copy(off, 0);
  View2<float> qkv("mantissa::test::qkv", N, 3 * 8), out("mantissa::test::out", N, 8);
  View2<float> lse("mantissa::test::lse", N, 1), dqkv("mantissa::test::dqkv", N, 3 * 8);
  for (const int ts : {-1, ts_max + 1}) {
    EXPECT_THROW(detail::attention_forward_path<float>(space, qkv, off, 1, 1, 8, out, lse,
                                                       detail::TrainAttentionPath::team, ts),
                 std::invalid_argument)
        << ts;
    EXPECT_THROW(detail::attention_backward_path<float>(space, qkv, off, 1, 1, 8, out, out, lse, dqkv,
                                                        detail::TrainAttentionPath::team, ts),
                 std::invalid_argument)
        << ts;
  }
  EXPECT_NO_THROW(detail::attention_forward_path<float>(space, qkv, off, 1, 1, 8, out, lse,
                                                        detail::TrainAttentionPath::team, ts_max));
}

// (3) Directional central difference on the fp32 kernels themselves: for f(x) = sum(w * out(x)),
// (f(x + t e) - f(x - t e)) / 2t against sum(dqkv * e) from the backward with dout = w.
// Loose tolerance 1e-3 relative to sum |dqkv * e|: the fp32 roundoff of f (a few u32 per output,
// random signs over ~10^3 outputs, ~1e-5 absolute) is amplified by 1/(2t) = 500, and the O(t^2)
// truncation adds ~1e-6 relative; expected ~1e-5, observed ~3e-6.
TEST(AttentionFp32, DirectionalDerivative) {
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name);
    const AttnShape sh = make_shape(c.lengths, c.n_head, c.n_kv_head, c.head_dim);
    const std::size_t N = sh.n();
    const std::vector<double> qkv = random_qkv<float>(sh, 71);
    const std::vector<double> w = random_values<float>(N * sh.qcols(), -1, 1, 72);
    const std::vector<double> dir = random_values<float>(qkv.size(), -1, 1, 73);
    const double t = 1e-3;
    const auto f = [&](double sign) {
      std::vector<double> x(qkv.size());
      for (std::size_t e = 0; e < x.size(); ++e) x[e] = static_cast<float>(qkv[e] + sign * t * dir[e]);
      const std::vector<double> out = to_host(run_kernels<float>(sh, x, w).out);
      double s = 0;
      for (std::size_t e = 0; e < out.size(); ++e) s += w[e] * out[e];
      return s;
    };
    // the perturbed inputs are rounded to fp32: use the realised steps in the directional derivative
    const std::vector<double> grad = to_host(run_kernels<float>(sh, qkv, w).dqkv);
    double dd = 0, dd_abs = 0;
    for (std::size_t e = 0; e < qkv.size(); ++e) {
      const double step = static_cast<float>(qkv[e] + t * dir[e]) - static_cast<float>(qkv[e] - t * dir[e]);
      dd += grad[e] * step / (2 * t);
      dd_abs += std::fabs(grad[e] * step / (2 * t));
    }
    const double fd = (f(+1) - f(-1)) / (2 * t);
    std::printf("[ fp32 kernel ] %-14s directional FD %.6f backward %.6f, |diff| / sum|terms| = %.2e (tolerance 1e-3)\n",
                c.name, fd, dd, std::fabs(fd - dd) / dd_abs);
    EXPECT_NEAR(fd, dd, 1e-3 * dd_abs);
  }
}

TEST(AttentionShapes, RejectsInconsistentArguments) {
  const std::size_t N = 4;
  const View1<int> off("mantissa::test::seq_offsets", 2);
  Kokkos::deep_copy(off, 0);
  const ExecSpace space;
  View2<float> qkv("mantissa::test::qkv", N, (4 + 2 * 2) * 8), out("mantissa::test::out", N, 4 * 8);
  View2<float> lse("mantissa::test::lse", N, 4), dqkv("mantissa::test::dqkv", N, (4 + 2 * 2) * 8);
  EXPECT_THROW(attention_forward<float>(space, qkv, off, 4, 3, 8, out, lse), std::invalid_argument);  // 4 % 3
  EXPECT_THROW(attention_forward<float>(space, qkv, off, 4, 2, 16, out, lse), std::invalid_argument);  // width
  EXPECT_THROW(attention_forward<float>(space, qkv, off, 4, 2, 8, out, View2<float>("mantissa::test::lse", N, 2)),
               std::invalid_argument);
  View2<float> big("mantissa::test::qkv", N, 3 * 257);
  EXPECT_THROW(attention_forward<float>(space, big, off, 1, 1, 257, View2<float>("mantissa::test::out", N, 257),
                                        View2<float>("mantissa::test::lse", N, 1)),
               std::invalid_argument);  // head_dim above attention_max_head_dim
  EXPECT_THROW(attention_backward<float>(space, qkv, off, 4, 2, 8, out, View2<float>("mantissa::test::dout", N, 8),
                                         lse, dqkv),
               std::invalid_argument);  // dout shape
}

}  // namespace
