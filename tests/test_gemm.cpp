// gemm: C = alpha op(A) op(B) + beta C with fp32 compute and ONE rounding to TC, for every
// transpose combination, beta 0 and 1, alpha != 1, odd shapes, and the instantiated precision
// combinations (T,T,T) and (T,T,float). The reference is the exact double result of the same
// T-valued inputs.
#include <KokkosKernels_config.h>

#include <Kokkos_Core.hpp>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernel_test_util.hpp"
#include "mantissa/kernels/gemm.hpp"

using namespace mantissa;
using namespace mantissa::test;

namespace {

struct CaseResult {
  double worst_ratio = 0.0;
  double exact_fraction = 0.0;  // elements equal to round_TC(exact result)
};

// One gemm call of shape op(A) (m,k), op(B) (k,n) against the double reference.
template <class T, class TC>
CaseResult run_case(char ta, char tb, int m, int n, int k, float alpha, float beta, std::uint64_t seed) {
  const bool a_t = ta == 'T' || ta == 't', b_t = tb == 'T' || tb == 't';
  const std::vector<double> a = random_values<T>(static_cast<std::size_t>(m) * k, -1.0, 1.0, seed);
  const std::vector<double> b = random_values<T>(static_cast<std::size_t>(k) * n, -1.0, 1.0, seed + 1);
  const std::vector<double> c0 = random_values<TC>(static_cast<std::size_t>(m) * n, -2.0, 2.0, seed + 2);
  auto A = make_view2<T>("A", a, a_t ? k : m, a_t ? m : k);
  auto B = make_view2<T>("B", b, b_t ? n : k, b_t ? k : n);
  auto C = make_view2<TC>("C", c0, m, n);
  if (beta == 0.0f) Kokkos::deep_copy(C, from_float<TC>(NAN));  // beta == 0 must not read C
  gemm<T, T, TC>(ExecSpace(), ta, tb, alpha, A, B, beta, C);
  const std::vector<double> got = to_host(C);

  std::vector<double> ref(got.size()), tol(got.size());
  std::size_t exact = 0;
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < n; ++j) {
      double dot = 0.0, dot_abs = 0.0;
      for (int l = 0; l < k; ++l) {
        const double av = a_t ? a[static_cast<std::size_t>(l) * m + i] : a[static_cast<std::size_t>(i) * k + l];
        const double bv = b_t ? b[static_cast<std::size_t>(j) * k + l] : b[static_cast<std::size_t>(l) * n + j];
        dot += av * bv;
        dot_abs += std::fabs(av * bv);
      }
      const std::size_t idx = static_cast<std::size_t>(i) * n + j;
      const double cterm = beta == 0.0f ? 0.0 : beta * c0[idx];
      ref[idx] = alpha * dot + cterm;
      // fp32 dot product over k terms (any order, FMA or not): k 2^-24 sum|ab|; alpha*s, + beta*c:
      // 3 more fp32 roundings; then ONE rounding of the result to TC: u_TC |ref|.
      tol[idx] = (k + 3) * kU32 * (std::fabs(alpha) * dot_abs + std::fabs(cterm)) + rounding_tol<TC>(ref[idx]);
      if (got[idx] == round_double<TC>(ref[idx])) ++exact;
    }
  }
  char what[96];
  std::snprintf(what, sizeof what, "gemm<%s,%s> %c%c %dx%dx%d alpha %.2f beta %.0f", precision_traits<T>::name,
                precision_traits<TC>::name, ta, tb, m, n, k, alpha, beta);
  CaseResult r;
  r.worst_ratio = expect_close(what, got, ref, tol);
  r.exact_fraction = static_cast<double>(exact) / static_cast<double>(got.size());
  return r;
}

template <class T, class TC>
void run_all_cases() {
  std::uint64_t seed = 100;
  for (char ta : {'N', 'T'}) {
    for (char tb : {'N', 'T'}) {
      for (float beta : {0.0f, 1.0f}) {
        const CaseResult r = run_case<T, TC>(ta, tb, 37, 53, 29, -1.25f, beta, seed += 3);
        if (!std::is_same<TC, float>::value) {
          std::printf("    equal to round_%s(exact): %.4f of elements\n", precision_traits<TC>::name, r.exact_fraction);
          // fp32 accumulation error (~29 * 2^-24 relative) is far below TC's rounding step, so the
          // once-rounded result equals round_TC(exact) except where the exact value lies within
          // that error of a rounding boundary: a few per thousand at most.
          EXPECT_GE(r.exact_fraction, 0.99) << ta << tb << " beta " << beta;
        }
      }
    }
  }
}

template <class T>
class Gemm : public ::testing::Test {};
TYPED_TEST_SUITE(Gemm, StorageTypes, StorageTypeNames);

// Forces a host route for one scope (gemm.hpp, "Routes"), restoring the previous one after.
struct RouteScope {
  GemmRoute saved = gemm_route();
  explicit RouteScope(GemmRoute r) { set_gemm_route(r); }
  ~RouteScope() { set_gemm_route(saved); }
};

// Every host route this build and CPU can run for T, forced in turn, against the same double
// reference with the same tolerances; each says which implementation ran, and a forced route must
// really be the one that ran (a route the CPU lacks is reported and not run: oneDNN's fp32 route
// needs AVX-512, the native one a 16-bit matmul of oneDNN for this CPU, e.g. bf16 with AVX512-BF16).
TYPED_TEST(Gemm, EveryAvailableRoute) {
  using T = TypeParam;
  const Precision p = precision_traits<T>::precision;
  for (GemmRoute r : {GemmRoute::blas, GemmRoute::onednn_fp32, GemmRoute::onednn_native}) {
    if (!gemm_route_available(r, p)) {
      std::printf("  route %s: not available for %s in this build or on this CPU, not run\n", gemm_route_name(r),
                  precision_traits<T>::name);
      continue;
    }
    RouteScope scope(r);
    run_all_cases<T, T>();
    const std::string ran = gemm_last_implementation();
    if constexpr (!std::is_same<T, float>::value) run_all_cases<T, float>();
    run_case<T, T>('N', 'T', 19, 23, 517, 0.5f, 1.0f, 7);
    run_case<T, float>('T', 'N', 19, 23, 517, 2.0f, 1.0f, 8);
    std::printf("  route %s for %s: %s\n", gemm_route_name(r), precision_traits<T>::name, ran.c_str());
    if (r == GemmRoute::blas) {
      EXPECT_EQ(ran.rfind("KokkosBlas", 0), 0u) << ran;
    } else {
      EXPECT_EQ(ran.rfind("onednn", 0), 0u) << ran;
      const bool widened = ran.find("widened") != std::string::npos;
      const bool expect_widened = r == GemmRoute::onednn_fp32 && !std::is_same<T, float>::value;
      EXPECT_EQ(widened, expect_widened) << ran;
    }
  }
}

// Where oneDNN's fp32 route can run (a build with oneDNN on an AVX-512 CPU), the automatic route
// takes oneDNN for every precision: it is the one the engines use there.
TYPED_TEST(Gemm, AutomaticRouteTakesOnednnOnAvx512) {
  using T = TypeParam;
  if (!gemm_route_available(GemmRoute::onednn_fp32, precision_traits<T>::precision))
    GTEST_SKIP() << "no oneDNN in this build, or no AVX-512 on this CPU: the BLAS route is the automatic one";
  RouteScope scope(GemmRoute::automatic);
  run_case<T, T>('N', 'T', 16, 24, 40, 1.0f, 0.0f, 11);
  const std::string ran = gemm_last_implementation();
  std::printf("  automatic route for %s: %s\n", precision_traits<T>::name, ran.c_str());
  EXPECT_EQ(ran.rfind("onednn", 0), 0u) << ran;
}

TYPED_TEST(Gemm, AllTransposesBetasOutputTypes) {
  using T = TypeParam;
  run_all_cases<T, T>();
  if constexpr (!std::is_same<T, float>::value) run_all_cases<T, float>();
}

// Larger k: the fp32 accumulation term of the bound grows with k and must still hold.
TYPED_TEST(Gemm, LongReduction) {
  using T = TypeParam;
  run_case<T, T>('N', 'T', 19, 23, 517, 0.5f, 1.0f, 7);
  run_case<T, float>('T', 'N', 19, 23, 517, 2.0f, 1.0f, 8);
}

// Column subviews of wider matrices (LayoutRight with row stride > columns, e.g. the gate half
// of a fused projection): the BLAS gets the leading dimensions, the widening route the strides,
// and C's columns outside the subview stay untouched.
TYPED_TEST(Gemm, StridedSubviews) {
  using T = TypeParam;
  const int m = 9, n = 7, k = 5, pad = 3;
  const auto a = random_values<T>(m * (k + pad), -1.0, 1.0, 31);
  const auto b = random_values<T>(n * k, -1.0, 1.0, 32);
  const auto c0 = random_values<T>(m * (n + pad), -1.0, 1.0, 33);
  auto A_big = make_view2<T>("A_big", a, m, k + pad);
  auto B = make_view2<T>("B", b, n, k);
  auto C_big = make_view2<T>("C_big", c0, m, n + pad);
  ConstView2<T> A = Kokkos::subview(A_big, Kokkos::ALL, Kokkos::make_pair(1, 1 + k));
  View2<T> C = Kokkos::subview(C_big, Kokkos::ALL, Kokkos::make_pair(2, 2 + n));
  ASSERT_EQ(A.stride(0), static_cast<std::size_t>(k + pad));
  gemm<T, T, T>(ExecSpace(), 'N', 'T', 1.0f, A, B, 1.0f, C);
  const auto got = to_host(C_big);
  std::vector<double> ref(got.size()), tol(got.size());
  for (int i = 0; i < m; ++i)
    for (int jj = 0; jj < n + pad; ++jj) {
      const std::size_t idx = static_cast<std::size_t>(i) * (n + pad) + jj;
      ref[idx] = c0[idx];
      tol[idx] = 0.0;  // outside the subview: untouched
      const int j = jj - 2;
      if (j < 0 || j >= n) continue;
      double dot = 0.0, dot_abs = std::fabs(c0[idx]);
      for (int l = 0; l < k; ++l) {
        const double p = a[static_cast<std::size_t>(i) * (k + pad) + 1 + l] * b[static_cast<std::size_t>(j) * k + l];
        dot += p;
        dot_abs += std::fabs(p);
      }
      ref[idx] += dot;
      tol[idx] = (k + 3) * kU32 * dot_abs + rounding_tol<T>(ref[idx]);  // as in run_case
    }
  expect_close(std::string("gemm strided subviews ") + precision_traits<T>::name, got, ref, tol);
}

// K = 0: op(A) op(B) is an empty sum, so C = round(beta C).
TYPED_TEST(Gemm, EmptyReduction) {
  using T = TypeParam;
  const std::vector<double> c0 = random_values<T>(12, -2.0, 2.0, 3);
  auto C = make_view2<T>("C", c0, 3, 4);
  View2<T> A("A", 3, 0), B("B", 0, 4);
  gemm<T, T, T>(ExecSpace(), 'N', 'N', 1.0f, A, B, 0.5f, C);
  const auto got = to_host(C);
  for (std::size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], round_double<T>(0.5 * c0[i]));  // exact: *0.5
}

TEST(Gemm, LowercaseTransposeAndShapeErrors) {
  const auto a = random_values<float>(6, -1, 1, 1), b = random_values<float>(6, -1, 1, 2);
  auto A = make_view2<float>("A", a, 2, 3), B = make_view2<float>("B", b, 2, 3);
  View2<float> C("C", 2, 2);
  gemm<float, float, float>(ExecSpace(), 'n', 't', 1.0f, A, B, 0.0f, C);
  const auto got = to_host(C);
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j) {
      double ref = 0.0;
      for (int l = 0; l < 3; ++l) ref += a[i * 3 + l] * b[j * 3 + l];
      EXPECT_NEAR(got[i * 2 + j], ref, 3 * 3 * kU32 * 3);  // 3 terms of |ab| <= 1: fp32 dot error
    }
  EXPECT_THROW((gemm<float, float, float>(ExecSpace(), 'N', 'N', 1.0f, A, B, 0.0f, C)), std::invalid_argument);
  EXPECT_THROW((gemm<float, float, float>(ExecSpace(), 'X', 'T', 1.0f, A, B, 0.0f, C)), std::invalid_argument);
}

// The widening route keeps its fp32 work buffers: once warm, a call of the same or a smaller shape
// allocates nothing. Counted through the Kokkos Tools allocation callback.
int g_work_allocations = 0;
void count_allocation(const Kokkos::Tools::SpaceHandle, const char* label, const void*, const std::uint64_t) {
  if (std::string(label).rfind("mantissa::gemm::work", 0) == 0) ++g_work_allocations;
}

TEST(Gemm, WorkspaceReusedOnceWarm) {
  if (std::getenv("KOKKOS_TOOLS_LIBS") || std::getenv("KOKKOS_PROFILE_LIBRARY"))
    GTEST_SKIP() << "a Kokkos Tools library is loaded; its callbacks must not be replaced";
  const auto a = random_values<bf16_t>(64 * 48, -1, 1, 1), b = random_values<bf16_t>(32 * 48, -1, 1, 2);
  auto A = make_view2<bf16_t>("A", a, 64, 48), B = make_view2<bf16_t>("B", b, 32, 48);
  View2<bf16_t> C("C", 64, 32);
  View2<bf16_t> A_small("A_small", 10, 48);
  View2<bf16_t> C_small("C_small", 10, 32);
  RouteScope blas(GemmRoute::blas);  // the widening route's buffers (onednn_fp32 uses the same ones)
  gemm_release_workspace();
  Kokkos::Tools::Experimental::set_allocate_data_callback(count_allocation);
  gemm<bf16_t, bf16_t, bf16_t>(ExecSpace(), 'N', 'T', 1.0f, A, B, 1.0f, C);  // cold: a, b, c buffers
  const int cold = g_work_allocations;
  gemm<bf16_t, bf16_t, bf16_t>(ExecSpace(), 'N', 'T', 1.0f, A, B, 1.0f, C);
  gemm<bf16_t, bf16_t, bf16_t>(ExecSpace(), 'N', 'T', 1.0f, A_small, B, 0.0f, C_small);
  Kokkos::fence();
  const int warm = g_work_allocations - cold;
  Kokkos::Tools::Experimental::set_allocate_data_callback(nullptr);
  EXPECT_EQ(cold, 3);
  EXPECT_EQ(warm, 0);
}

// The BLAS route (forced) really reaches the BLAS TPL (Kokkos Kernels' region label says which
// implementation ran) for both the fp32 route and the widening route.
std::vector<std::string> g_regions;
void record_region(const char* label) { g_regions.emplace_back(label); }

TEST(Gemm, HostRouteCallsTheBlasTpl) {
#if defined(KOKKOS_ENABLE_CUDA) || !defined(KOKKOSKERNELS_ENABLE_TPL_BLAS)
  GTEST_SKIP() << "not a host build with Kokkos Kernels' BLAS TPL";
#endif
  if (std::getenv("KOKKOS_TOOLS_LIBS") || std::getenv("KOKKOS_PROFILE_LIBRARY"))
    GTEST_SKIP() << "a Kokkos Tools library is loaded; its callbacks must not be replaced";
  View2<float> A("A", 8, 4), B("B", 4, 6), C("C", 8, 6);
  View2<bf16_t> Ab("Ab", 8, 4), Bb("Bb", 4, 6), Cb("Cb", 8, 6);
  RouteScope blas(GemmRoute::blas);
  g_regions.clear();
  Kokkos::Tools::Experimental::set_push_region_callback(record_region);
  gemm<float, float, float>(ExecSpace(), 'N', 'N', 1.0f, A, B, 0.0f, C);
  gemm<bf16_t, bf16_t, bf16_t>(ExecSpace(), 'N', 'N', 1.0f, Ab, Bb, 0.0f, Cb);
  Kokkos::Tools::Experimental::set_push_region_callback(nullptr);
  ASSERT_EQ(g_regions.size(), 2u);
  for (const auto& r : g_regions) EXPECT_EQ(r.rfind("KokkosBlas::gemm[TPL_BLAS", 0), 0u) << r;  // 3.4: [TPL_BLAS,float]
}

}  // namespace
