// The rollout engine's decode kernels (mantissa/kernels/decode.hpp), for T = float, bf16_t, fp16_t:
//  - linear_decode against a double reference (odd shapes, with and without residual, several
//    split_k including split_k >= K), bit for bit against a host emulation of the documented
//    order D1/D2, and batch invariance (one row at a time, subsets, permutations: same bits);
//  - kv_cache_append places exact copies and touches nothing else;
//  - attention_decode against a double reference (several slots and lengths, GQA 4/2 and MHA
//    4/4, head_dim 8 and 16, kv_split 1, 4, 16 and larger than len), bit for bit against a host
//    emulation of D4-D8, batch invariance, and against the training engine's attention_forward
//    on the same packed sequences: the differences are within the bound implied by the two sets
//    of rounding points, they are observable for bf16/fp16, and lse agrees bit for bit when one
//    chunk covers the row (D5); every code path (host_avx's 8-key tiles, generic) gives the same
//    bits (head_dim 5 .. 256, multiples of 8 and not, special values included);
//  - the team paths (LinearPath::team, AttentionPath::team: what device builds run) with team sizes
//    1, 2, 4 (those the backend allows; printed; a failure when the space has more than one thread
//    but no size > 1 ran) give the generic path's bits and the emulation's: GQA groups 1-3,
//    head_dim 8/32/64/13, kv_split 1/3/64/one chunk, lens 1 .. 300 (several chunks per thread),
//    special values;
//  - the trusted-rows overloads (with a DecodeWorkspace): bad rows are skipped (kv_cache_append)
//    or give NaN (attention_decode, every path) and the good rows the checked call's bits; the
//    workspace is allocated once and reused;
//  - bad arguments are rejected.
// There are no backward passes here: the decode kernels are inference only.
#include <gtest/gtest.h>

#include <Kokkos_Core.hpp>
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "decode_test_util.hpp"
#include "kernel_test_util.hpp"
#include "mantissa/kernels/attention.hpp"
#include "mantissa/kernels/decode.hpp"
#include "mantissa/kernels/decode_gemm.hpp"
#include "mantissa/kernels/swiglu.hpp"

using namespace mantissa;
using namespace mantissa::test;

namespace {

// The bit-for-bit emulations need the kernels to run on the host, compiled without FMA
// contraction (decode.hpp: g++ contracts whenever the target has FMA, e.g. -march=native).
#if defined(__FMA__) || defined(__FP_FAST_FMAF)
constexpr bool kExactEmulation = false;
constexpr bool kContracting = true;
#else
constexpr bool kExactEmulation = std::is_same<MemSpace, Kokkos::HostSpace>::value;
constexpr bool kContracting = false;
#endif
// The skips read it through a volatile (kernels_run_on_host's reason).
bool exact_emulation() {
  volatile bool e = kExactEmulation;
  return e;
}
constexpr const char* kNoEmulation =
    "device arithmetic (expf/logf) or FMA contraction differs from the plain-float host emulation; the bound tests apply";

// float bits of host doubles that hold float values (for bit-identity checks)
std::vector<std::uint32_t> bits(const std::vector<double>& v) {
  std::vector<std::uint32_t> b(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) b[i] = float_bits(static_cast<float>(v[i]));
  return b;
}
std::vector<std::uint32_t> bits(const std::vector<float>& v) {
  std::vector<std::uint32_t> b(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) b[i] = float_bits(v[i]);
  return b;
}
std::size_t count_differences(const std::vector<std::uint32_t>& a, const std::vector<std::uint32_t>& b) {
  EXPECT_EQ(a.size(), b.size());
  std::size_t n = 0;
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i) n += a[i] != b[i];
  return n;
}
bool any_nan(const std::vector<double>& v) {
  return std::any_of(v.begin(), v.end(), [](double x) { return std::isnan(x); });
}

// rows `which` of a (rows, cols) host matrix
std::vector<double> take_rows(const std::vector<double>& a, std::size_t cols, const std::vector<int>& which) {
  std::vector<double> out;
  for (int r : which) out.insert(out.end(), a.begin() + r * cols, a.begin() + (r + 1) * cols);
  return out;
}
template <class V>
std::vector<V> take(const std::vector<V>& a, const std::vector<int>& which) {
  std::vector<V> out;
  for (int r : which) out.push_back(a[r]);
  return out;
}

template <class T>
View3<T> make_view3(const char* label, const std::vector<double>& v, std::size_t n0, std::size_t n1, std::size_t n2) {
  EXPECT_EQ(v.size(), n0 * n1 * n2);
  View3<T> d(std::string(label), n0, n1, n2);
  auto h = Kokkos::create_mirror_view(d);
  for (std::size_t i = 0; i < n0; ++i)
    for (std::size_t j = 0; j < n1; ++j)
      for (std::size_t k = 0; k < n2; ++k) h(i, j, k) = from_float<T>(static_cast<float>(v[(i * n1 + j) * n2 + k]));
  Kokkos::deep_copy(d, h);
  return d;
}
template <class T>
std::vector<double> view3_to_host(const View3<T>& d) {
  Kokkos::fence();
  auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), d);
  std::vector<double> v;
  for (std::size_t i = 0; i < h.extent(0); ++i)
    for (std::size_t j = 0; j < h.extent(1); ++j)
      for (std::size_t k = 0; k < h.extent(2); ++k) v.push_back(to_float(h(i, j, k)));
  return v;
}

// =============================================================================================
// The branch-free fp16 load of the decode kernels equals to_float on every one of the 2^16
// inputs, bit for bit (NaN payloads, signed zeros, subnormals, Inf included).
TEST(DecodeLoad, Fp16LoadIsExactOnAllInputs) {
  std::size_t mismatches = 0;
  for (std::uint32_t b = 0; b < 65536u; ++b) {
    const fp16_t h{static_cast<std::uint16_t>(b)};
    if (float_bits(detail::decode_load(h)) != float_bits(to_float(h)) && mismatches++ < 5)
      ADD_FAILURE() << "fp16 bits 0x" << std::hex << b;
  }
  EXPECT_EQ(mismatches, 0u);
  for (std::uint32_t b = 0; b < 65536u; ++b) {  // bf16 and float pass through to_float
    const bf16_t h{static_cast<std::uint16_t>(b)};
    ASSERT_EQ(float_bits(detail::decode_load(h)), float_bits(to_float(h)));
  }
}

#if defined(MANTISSA_HOST_SIMD)
// The F16C conversions of the host AVX path of linear_decode: widening (vcvtph2ps) equals
// to_float on all 2^16 fp16 inputs, except that a signalling NaN comes out quiet with its payload
// (which no product can tell apart: x86 returns the quieted NaN operand either way); rounding
// (vcvtps2ph, to nearest even) equals from_float<fp16_t> on every 4093rd fp32 bit pattern and on
// every fp16 value and midpoint (the full 2^32 sweep was run once: no difference). Both with
// lengths that leave a scalar tail.
TEST(DecodeLoad, F16cConversionsEqualTheSoftwareOnes) {
  if (!host_avx_f16c()) GTEST_SKIP() << "this CPU has no AVX + F16C";
  constexpr int kb = decode_k_block, len = kb - 3;  // 125 per row: 15 vectors and a tail of 5
  const int rows = (65536 + len - 1) / len;
  std::vector<fp16_t> h(static_cast<std::size_t>(rows) * len, fp16_t{0});
  for (std::uint32_t b = 0; b < 65536u; ++b) h[b].bits = static_cast<std::uint16_t>(b);
  struct alignas(32) Panel {
    float v[1024 * decode_k_block];
  };
  const std::unique_ptr<Panel> panel(new Panel);
  ASSERT_LE(rows, 1024);
  detail::decode_stage_f16c(h.data(), len, rows, panel->v, len);
  std::size_t mismatches = 0, snans = 0;
  for (std::uint32_t b = 0; b < 65536u; ++b) {
    const std::uint32_t want = float_bits(to_float(h[b])), got = float_bits(panel->v[(b / len) * kb + b % len]);
    const bool snan = (b & 0x7c00u) == 0x7c00u && (b & 0x3ffu) != 0 && (b & 0x200u) == 0;
    snans += snan;
    if (got != (snan ? (want | 0x00400000u) : want) && mismatches++ < 5) ADD_FAILURE() << "fp16 bits 0x" << std::hex << b;
  }
  EXPECT_EQ(mismatches, 0u);
  EXPECT_EQ(snans, 1022u);
  for (int r = 0; r < rows; ++r)  // the padding of every row: zeros up to the next multiple of 8
    for (int i = len; i < (len + 7) / 8 * 8; ++i) ASSERT_EQ(float_bits(panel->v[r * kb + i]), 0u);

  std::vector<float> f;
  for (std::uint64_t u = 0; u < (1ull << 32); u += 4093) f.push_back(bits_float(static_cast<std::uint32_t>(u)));
  for (std::uint32_t b = 0; b < 65536u; ++b) {  // every fp16 value and the midpoint above it
    const float v = fp16_bits_to_float(static_cast<std::uint16_t>(b));
    f.push_back(v);
    f.push_back(bits_float(float_bits(v) + 0x1000u));
  }
  const int m = 1021;  // columns per row: 127 vectors and a tail of 5
  f.resize((f.size() + m - 1) / m * m, 0.0f);
  std::vector<fp16_t> y(f.size());
  detail::decode_round_f16c(f.data(), m, static_cast<int>(f.size() / m), m, y.data(), m);
  mismatches = 0;
  for (std::size_t i = 0; i < f.size(); ++i)
    if (y[i].bits != fp16_bits_from_float(f[i]) && mismatches++ < 5)
      ADD_FAILURE() << "fp32 bits 0x" << std::hex << float_bits(f[i]);
  EXPECT_EQ(mismatches, 0u);
}
#endif

// =============================================================================================
// linear_decode

struct LinearCase {
  int R, K, N;
};
const std::vector<LinearCase>& linear_cases() {
  // odd shapes: K not a multiple of 8 or of split_k, N not a multiple of the 4-column block
  static const std::vector<LinearCase> c = {{5, 70, 33}, {3, 8, 4}, {4, 129, 9}, {1, 1, 1}};
  return c;
}
std::vector<int> split_ks(int K) { return {16, 64, 7, 1, K, K + 5}; }

struct LinearData {
  std::vector<double> x, w, res;  // (R,K), (N,K), (R,N)
};
template <class T>
LinearData linear_data(const LinearCase& c, std::uint64_t seed) {
  return {random_values<T>(static_cast<std::size_t>(c.R) * c.K, -1, 1, seed),
          random_values<T>(static_cast<std::size_t>(c.N) * c.K, -1, 1, seed + 1),
          random_values<T>(static_cast<std::size_t>(c.R) * c.N, -2, 2, seed + 2)};
}

// Runs linear_decode on host data (res empty: no residual); y starts as NaN (it must be written).
// path: which code computes it (automatic: what linear_decode runs).
template <class T>
std::vector<double> run_linear(const std::vector<double>& x, const std::vector<double>& w,
                               const std::vector<double>& res, int R, int K, int N, int split_k,
                               detail::LinearPath path = detail::LinearPath::automatic, int team_size = 0) {
  const View2<T> xd = make_view2<T>("mantissa::test::x", x, R, K);
  const View2<T> wd = make_view2<T>("mantissa::test::w", w, N, K);
  const View2<T> rd = res.empty() ? View2<T>() : make_view2<T>("mantissa::test::res", res, R, N);
  View2<T> y("mantissa::test::y", R, N);
  Kokkos::deep_copy(y, from_float<T>(std::numeric_limits<float>::quiet_NaN()));
  if (path == detail::LinearPath::automatic)
    linear_decode<T>(ExecSpace(), xd, wd, rd, y, split_k);
  else
    detail::linear_decode_path<T>(ExecSpace(), xd, wd, rd, y, split_k, path, team_size);
  return to_host(y);
}

// The linear paths compiled with the build's flags (FMA-contracting builds: other fp32 bits than the
// host tiles', which are compiled for "avx,f16c" or SSE2 only).
bool linear_compiled_plain(detail::LinearPath path) {
  return path == detail::LinearPath::generic || path == detail::LinearPath::team;
}

// The code paths of linear_decode that can run in this build on this machine (automatic first).
std::vector<std::pair<detail::LinearPath, const char*>> linear_paths() {
  std::vector<std::pair<detail::LinearPath, const char*>> all = {{detail::LinearPath::automatic, "automatic"},
                                                                 {detail::LinearPath::generic, "generic"},
                                                                 {detail::LinearPath::host_sse2, "host_sse2"},
                                                                 {detail::LinearPath::host_avx, "host_avx"},
                                                                 {detail::LinearPath::team, "team"}},
                                                                out;
  for (const auto& p : all)
    if (detail::decode_linear_path_available<ExecSpace>(p.first)) out.push_back(p);
  return out;
}

template <class T>
class Decode : public ::testing::Test {};
TYPED_TEST_SUITE(Decode, StorageTypes, StorageTypeNames);

TYPED_TEST(Decode, LinearMatchesReference) {
  using T = TypeParam;
  for (const LinearCase& c : linear_cases())
    for (int split_k : split_ks(c.K))
      for (bool with_res : {false, true}) {
        const std::string name = "linear R" + std::to_string(c.R) + " K" + std::to_string(c.K) + " N" +
                                 std::to_string(c.N) + " split_k " + std::to_string(split_k) +
                                 (with_res ? " +res" : "");
        SCOPED_TRACE(name);
        const LinearData dt = linear_data<T>(c, 100 + c.K + split_k);
        const std::vector<double> res = with_res ? dt.res : std::vector<double>();
        const std::vector<double> got = run_linear<T>(dt.x, dt.w, res, c.R, c.K, c.N, split_k);
        // Bound: every product x w (1 u32 for fp32 inputs; exact for 16-bit ones) passes through at
        // most ceil(chunk/8) lane additions, 3 lane-combining additions, C chunk additions and the
        // residual add: depth D = ceil(min(split_k, K)/8) + C + 5 fp32 roundings, D u32 (sum|x w| +
        // |res|); then ONE rounding to T of the computed value: u_T (|ref| + that) + eta_T.
        const int chunk = std::min(split_k, c.K), chunks = (c.K + split_k - 1) / split_k;
        const double depth = (chunk + 7) / 8 + chunks + 5;
        std::vector<double> ref(got.size()), tol(got.size());
        std::size_t exact = 0;
        for (int r = 0; r < c.R; ++r)
          for (int n = 0; n < c.N; ++n) {
            double dot = 0, mag = 0;
            for (int k = 0; k < c.K; ++k) {
              dot += dt.x[r * c.K + k] * dt.w[n * c.K + k];
              mag += std::fabs(dt.x[r * c.K + k] * dt.w[n * c.K + k]);
            }
            const double rv = with_res ? dt.res[r * c.N + n] : 0.0;
            const std::size_t e = static_cast<std::size_t>(r) * c.N + n;
            ref[e] = dot + rv;
            const double fp32_err = depth * kU32 * (mag + std::fabs(rv));
            tol[e] = fp32_err * (1 + unit_roundoff<T>()) + rounding_tol<T>(ref[e]);
            exact += got[e] == round_double<T>(ref[e]);
          }
        expect_close(std::string(precision_traits<T>::name) + " " + name, got, ref, tol);
        if (c.K == 70 && split_k == 16 && with_res)
          std::printf("  (%s R5 K70 N33 split_k 16 +res: %zu of %zu outputs equal round_T(exact))\n",
                      precision_traits<T>::name, exact, got.size());
      }
}

// On a host backend the kernel is bit-identical to the plain-float emulation of D1/D2 (same
// compiler, no FMA contraction in ISO mode). Negative controls: the training engine's two
// roundings around the residual add (D2) change bf16/fp16 bits; another split_k changes fp32 bits.
TYPED_TEST(Decode, LinearFollowsTheDocumentedOrderBitForBit) {
  using T = TypeParam;
  if (!exact_emulation()) GTEST_SKIP() << kNoEmulation;
  for (const LinearCase& c : linear_cases())
    for (int split_k : split_ks(c.K)) {
      SCOPED_TRACE("K " + std::to_string(c.K) + " split_k " + std::to_string(split_k));
      const LinearData dt = linear_data<T>(c, 200 + c.K + split_k);
      for (bool with_res : {false, true}) {
        const std::vector<double> res = with_res ? dt.res : std::vector<double>();
        const std::vector<double> got = run_linear<T>(dt.x, dt.w, res, c.R, c.K, c.N, split_k);
        EXPECT_EQ(count_differences(bits(got), bits(emulate_linear<T>(dt.x, dt.w, res, c.R, c.K, c.N, split_k))), 0u)
            << (with_res ? "with residual" : "without residual");
      }
    }
  const LinearCase big{16, 256, 64};
  const LinearData dt = linear_data<T>(big, 300);
  const std::vector<double> got = run_linear<T>(dt.x, dt.w, dt.res, big.R, big.K, big.N, 16);
  if (!std::is_same<T, float>::value) {
    const std::size_t d2 =
        count_differences(bits(got), bits(emulate_linear<T>(dt.x, dt.w, dt.res, big.R, big.K, big.N, 16, false)));
    std::printf("  %s: two roundings around the residual add (training) change %zu of %zu outputs\n",
                precision_traits<T>::name, d2, got.size());
    EXPECT_GT(d2, 0u) << "D2 (fused residual) not observable";
  } else {
    const std::vector<double> one_chunk = run_linear<T>(dt.x, dt.w, dt.res, big.R, big.K, big.N, big.K);
    const std::size_t d1 = count_differences(bits(got), bits(one_chunk));
    std::printf("  fp32: split_k 16 vs one chunk differ in %zu of %zu outputs\n", d1, got.size());
    EXPECT_GT(d1, 0u) << "the split-K order (D1) not observable in fp32";
  }
}

// Batch invariance (D3): each row computed alone, any subset of rows, the rows permuted, any
// subset of the columns (W rows), and the residual given as y itself (in place) all give the
// same bits as one call with every row. The second shape crosses the host code's row groups
// (decode_item_rows), column panels (decode_item_cols) and K blocks (decode_k_block): a row's
// result does not depend on the group, the register tile (2-row or 1-row) or the panel it lands in.
TYPED_TEST(Decode, LinearIsBatchInvariant) {
  using T = TypeParam;
  struct InvarianceCase {
    LinearCase c;
    std::vector<std::vector<int>> row_sets;       // besides one row per call and a permutation
    std::vector<std::pair<int, int>> col_ranges;  // W rows [n0, n1)
  };
  const std::vector<InvarianceCase> cases = {
      {{7, 70, 33}, {{5, 2, 3}, {6, 0}}, {{0, 1}, {3, 12}, {31, 33}, {32, 33}, {8, 16}}},
      {{37, 300, 45},
       {{36}, {15, 16, 17}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36}},
       {{0, 1}, {15, 17}, {16, 32}, {5, 44}, {44, 45}, {40, 45}}}};
  for (const InvarianceCase& ic : cases)
    for (int split_k : {16, 64, 200}) {
      const LinearCase& c = ic.c;
      SCOPED_TRACE("R " + std::to_string(c.R) + " K " + std::to_string(c.K) + " N " + std::to_string(c.N) +
                   " split_k " + std::to_string(split_k));
      const LinearData dt = linear_data<T>(c, 400 + split_k + c.K);
      const std::vector<double> all = run_linear<T>(dt.x, dt.w, dt.res, c.R, c.K, c.N, split_k);
      ASSERT_FALSE(any_nan(all));
      const std::vector<std::uint32_t> all_bits = bits(all);
      std::vector<double> alone;
      for (int r = 0; r < c.R; ++r) {
        const std::vector<double> y =
            run_linear<T>(take_rows(dt.x, c.K, {r}), dt.w, take_rows(dt.res, c.N, {r}), 1, c.K, c.N, split_k);
        alone.insert(alone.end(), y.begin(), y.end());
      }
      EXPECT_EQ(count_differences(bits(alone), all_bits), 0u) << "one row per call";
      std::vector<int> perm(c.R);
      std::iota(perm.begin(), perm.end(), 0);
      std::shuffle(perm.begin(), perm.end(), std::mt19937(split_k));
      std::vector<std::vector<int>> sets = ic.row_sets;
      sets.push_back(perm);
      for (const std::vector<int>& which : sets) {
        const std::vector<double> y = run_linear<T>(take_rows(dt.x, c.K, which), dt.w, take_rows(dt.res, c.N, which),
                                                    static_cast<int>(which.size()), c.K, c.N, split_k);
        EXPECT_EQ(count_differences(bits(y), bits(take_rows(all, c.N, which))), 0u)
            << "subset/permutation of " << which.size() << " rows";
      }
      // column subsets: a column computed in any column block, panel or register tile, or alone,
      // runs the same operations (D3)
      const auto cols_of = [&](const std::vector<double>& m, int n0, int n1) {
        std::vector<double> out;
        for (int r = 0; r < c.R; ++r)
          for (int n = n0; n < n1; ++n) out.push_back(m[r * c.N + n]);
        return out;
      };
      const auto w_rows = [&](int n0, int n1) {
        return std::vector<double>(dt.w.begin() + n0 * c.K, dt.w.begin() + n1 * c.K);
      };
      for (const auto& [n0, n1] : ic.col_ranges) {
        const std::vector<double> y =
            run_linear<T>(dt.x, w_rows(n0, n1), cols_of(dt.res, n0, n1), c.R, c.K, n1 - n0, split_k);
        EXPECT_EQ(count_differences(bits(y), bits(cols_of(all, n0, n1))), 0u) << "columns " << n0 << ".." << n1;
      }
      // in place: y holds the residual on entry
      const View2<T> xd = make_view2<T>("mantissa::test::x", dt.x, c.R, c.K);
      const View2<T> wd = make_view2<T>("mantissa::test::w", dt.w, c.N, c.K);
      const View2<T> y = make_view2<T>("mantissa::test::y", dt.res, c.R, c.N);
      linear_decode<T>(ExecSpace(), xd, wd, y, y, split_k);
      EXPECT_EQ(count_differences(bits(to_host(y)), all_bits), 0u) << "residual aliasing y";
    }
}

// Every code path of linear_decode (the host register-blocked tiles with AVX + F16C and with
// SSE2, the generic one-thread-per-column-block code that device builds run) gives the same bits,
// and on host builds the bits of the emulation of D1/D2. The shapes cross the host code's
// boundaries: row groups of decode_item_rows (R 37 = 2 x 16 + 5: an odd last row, 1-row register
// tiles), column panels of decode_item_cols (N 45, 17: partial last panels), K blocks of
// decode_k_block (K 129, 300, 688) with chunks that end inside a block, cross one (split_k 100,
// 200, K) or are shorter than 8 (split_k 1, 7), and K = 0. In a build that contracts a*b+c into
// FMAs (-march=native) the host paths contract every lane update (s = fma(x, w, s)) while the
// generic loop's contraction is the compiler's choice, loop by loop: there, for fp32 (whose
// products are inexact; 16-bit products are exact in fp32, so fma changes nothing), the generic
// path is left out of the comparison (it is still checked against the bounds, and for batch
// invariance on device builds, where it is the only path).
TYPED_TEST(Decode, LinearCodePathsAgreeBitForBit) {
  using T = TypeParam;
  const auto paths = linear_paths();
  std::string names;
  for (const auto& p : paths) names += std::string(" ") + p.second;
  std::printf("  linear_decode code paths run here:%s\n", names.c_str());
  const std::vector<LinearCase> cases = {{37, 300, 45}, {2, 129, 16}, {17, 64, 17}, {1, 688, 24}, {3, 0, 5}};
  for (const LinearCase& c : cases)
    for (int split_k : {1, 7, 16, 64, 100, 128, 200, std::max(c.K, 1), c.K + 5}) {
      SCOPED_TRACE("R " + std::to_string(c.R) + " K " + std::to_string(c.K) + " N " + std::to_string(c.N) +
                   " split_k " + std::to_string(split_k));
      const LinearData dt = linear_data<T>(c, 500 + c.K + split_k);
      for (bool with_res : {false, true}) {
        const std::vector<double> res = with_res ? dt.res : std::vector<double>();
        std::vector<std::uint32_t> ref;  // the emulation, or (no exact emulation) the first path
        if (kExactEmulation) ref = bits(emulate_linear<T>(dt.x, dt.w, res, c.R, c.K, c.N, split_k));
        for (const auto& [path, name] : paths) {
          if (kContracting && std::is_same<T, float>::value && linear_compiled_plain(path)) continue;
          const std::vector<std::uint32_t> got = bits(run_linear<T>(dt.x, dt.w, res, c.R, c.K, c.N, split_k, path));
          if (ref.empty()) ref = got;
          EXPECT_EQ(count_differences(got, ref), 0u) << name << (with_res ? " with residual" : " without residual");
        }
      }
    }
}

// The team path of linear_decode (threads over output elements, vector lanes over D1's 8 lanes)
// with team sizes 1, 2, 4 (those the backend allows) gives the generic path's bits (and, host
// without FMA, the emulation's), with and without residual, K = 0 and split_k >= K included.
TYPED_TEST(Decode, LinearTeamPathAgreesBitForBitForEveryTeamSize) {
  using T = TypeParam;
  const int tmax = detail::decode_linear_team_size_max<T>(ExecSpace());
  std::vector<int> sizes;
  std::string names;
  for (int ts : {1, 2, 4})
    if (ts <= tmax) {
      sizes.push_back(ts);
      names += " " + std::to_string(ts);
    }
  const int concurrency = ExecSpace().concurrency();
  std::printf("  %s linear team path: team sizes run:%s (team_size_max %d, concurrency %d)\n",
              precision_traits<T>::name, names.c_str(), tmax, concurrency);
  ASSERT_FALSE(sizes.empty());
  if (concurrency > 1) {
    EXPECT_GT(sizes.back(), 1) << "concurrency > 1 but no team size > 1 ran";
  }
  const bool plain_ref = !(kContracting && std::is_same<T, float>::value);
  const std::vector<LinearCase> cases = {{37, 300, 45}, {2, 129, 16}, {17, 64, 17},
                                         {1, 688, 24},  {3, 0, 5},     {5, 13, 1}};
  for (const LinearCase& c : cases)
    for (int split_k : {1, 7, 16, 64, std::max(c.K, 1), c.K + 5}) {
      SCOPED_TRACE("R " + std::to_string(c.R) + " K " + std::to_string(c.K) + " N " + std::to_string(c.N) +
                   " split_k " + std::to_string(split_k));
      const LinearData dt = linear_data<T>(c, 700 + c.K + split_k);
      for (bool with_res : {false, true}) {
        const std::vector<double> res = with_res ? dt.res : std::vector<double>();
        std::vector<std::uint32_t> ref;
        if (plain_ref) {
          ref = bits(run_linear<T>(dt.x, dt.w, res, c.R, c.K, c.N, split_k, detail::LinearPath::generic));
          if (kExactEmulation) {
            EXPECT_EQ(count_differences(ref, bits(emulate_linear<T>(dt.x, dt.w, res, c.R, c.K, c.N, split_k))), 0u)
                << "generic vs emulation";
          }
        }
        for (int ts : sizes) {
          const std::vector<std::uint32_t> got =
              bits(run_linear<T>(dt.x, dt.w, res, c.R, c.K, c.N, split_k, detail::LinearPath::team, ts));
          if (ref.empty()) ref = got;
          EXPECT_EQ(count_differences(got, ref), 0u) << "team size " << ts << (with_res ? " with residual" : "");
        }
      }
    }
  const LinearData dt = linear_data<T>({2, 8, 3}, 1);
  EXPECT_THROW(run_linear<T>(dt.x, dt.w, {}, 2, 8, 3, 4, detail::LinearPath::team, tmax + 1), std::invalid_argument);
}

// A signalling NaN of T (quiet bit clear, payload 1).
template <class T>
T signalling_nan() {
  if constexpr (std::is_same<T, float>::value) return bits_float(0x7f800001u);
  else if constexpr (std::is_same<T, bf16_t>::value) return bf16_t{0x7f81};
  else return fp16_t{0x7c01};
}

// Special values in x, W and the residual: +-Inf, quiet and signalling NaNs, signed zeros,
// subnormals of T, the largest finite T (fp32 products and sums that overflow; results that
// overflow T). Every code path gives the same result: a NaN where another gives a NaN (their
// payloads may differ where two NaNs meet: the operand order of a product is the compiler's),
// the same bits everywhere else. (FMA-contracting builds: fp32 without the generic path, as above.)
TYPED_TEST(Decode, LinearCodePathsAgreeOnSpecialValues) {
  using T = TypeParam;
  const int R = 19, K = 150, N = 21;
  const auto make = [](double f) { return from_float<T>(static_cast<float>(f)); };
  const double max = precision_traits<T>::max, sub = std::ldexp(precision_traits<T>::min_normal, -precision_traits<T>::mantissa_bits);
  const std::vector<T> special = {make(INFINITY), make(-INFINITY), make(NAN), make(0.0), make(-0.0), make(max), make(-max),
                                  make(sub), make(-sub), signalling_nan<T>()};
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  const auto fill = [&](View2<T> v, double p_special) {
    auto h = Kokkos::create_mirror_view(v);
    for (std::size_t i = 0; i < h.extent(0); ++i)
      for (std::size_t j = 0; j < h.extent(1); ++j)
        h(i, j) = std::uniform_real_distribution<double>(0, 1)(rng) < p_special ? special[rng() % special.size()]
                                                                                   : make(dist(rng));
    Kokkos::deep_copy(v, h);
  };
  const View2<T> x("mantissa::test::x", R, K), w("mantissa::test::w", N, K), res("mantissa::test::res", R, N);
  fill(x, 0.0005);
  fill(w, 0.0005);
  fill(res, 0.05);
  const auto paths = linear_paths();
  for (int split_k : {16, 64, 200})
    for (bool with_res : {false, true}) {
      std::vector<std::uint32_t> ref;
      for (const auto& [path, name] : paths) {
        if (kContracting && std::is_same<T, float>::value && linear_compiled_plain(path)) continue;
        View2<T> y("mantissa::test::y", R, N);
        detail::linear_decode_path<T>(ExecSpace(), x, w, with_res ? res : View2<T>(), y, split_k, path);
        const std::vector<double> got = to_host(y);
        std::vector<std::uint32_t> b(got.size());
        std::size_t nans = 0, infs = 0;
        for (std::size_t i = 0; i < got.size(); ++i) {
          b[i] = std::isnan(got[i]) ? 0x7fc00000u : float_bits(static_cast<float>(got[i]));
          nans += std::isnan(got[i]);
          infs += std::isinf(got[i]);
        }
        if (ref.empty()) {
          ref = b;
          if (split_k == 64 && with_res)
            std::printf("  %s: %zu NaN and %zu infinite outputs of %zu\n", precision_traits<T>::name, nans, infs, got.size());
          EXPECT_GT(nans, 0u);
          EXPECT_GT(infs + nans, nans) << "no infinite output";
          EXPECT_LT(nans, got.size() / 2) << "special values everywhere: too few ordinary outputs";
        }
        EXPECT_EQ(count_differences(b, ref), 0u) << name << " split_k " << split_k << (with_res ? " +res" : "");
      }
    }
}

TEST(DecodeArguments, LinearRejectsInconsistentShapes) {
  const ExecSpace space;
  View2<float> x("mantissa::test::x", 3, 8), w("mantissa::test::w", 4, 8), y("mantissa::test::y", 3, 4);
  EXPECT_NO_THROW(linear_decode<float>(space, x, w, View2<float>(), y, 4));
  EXPECT_THROW(linear_decode<float>(space, x, w, View2<float>(), y, 0), std::invalid_argument);  // split_k
  EXPECT_THROW(linear_decode<float>(space, x, View2<float>("mantissa::test::w", 4, 7), View2<float>(), y, 4),
               std::invalid_argument);  // K of W
  EXPECT_THROW(linear_decode<float>(space, x, w, View2<float>(), View2<float>("mantissa::test::y", 3, 5), 4),
               std::invalid_argument);  // y columns
  EXPECT_THROW(linear_decode<float>(space, x, w, View2<float>("mantissa::test::res", 2, 4), y, 4),
               std::invalid_argument);  // residual rows
}

// =============================================================================================
// kv_cache_append

TYPED_TEST(Decode, KvCacheAppendPlacesExactCopies) {
  using T = TypeParam;
  const int slots = 3, max_seq = 6, H = 4, Hkv = 2, hd = 8, W = (H + 2 * Hkv) * hd, C = Hkv * hd;
  const std::vector<int> slot = {2, 0, 2, 1}, pos = {0, 5, 3, 0};
  const int R = static_cast<int>(slot.size());
  const std::vector<double> qkv = random_values<T>(static_cast<std::size_t>(R) * W, -4, 4, 500);
  const double sentinel = -7.0;  // exact in every T
  const std::vector<double> fill(static_cast<std::size_t>(slots) * max_seq * C, sentinel);
  const View3<T> ck = make_view3<T>("mantissa::test::cache_k", fill, slots, max_seq, C);
  const View3<T> cv = make_view3<T>("mantissa::test::cache_v", fill, slots, max_seq, C);
  kv_cache_append<T>(ExecSpace(), make_view2<T>("mantissa::test::qkv", qkv, R, W),
                     make_int_view("mantissa::test::slot", slot), make_int_view("mantissa::test::pos", pos), H, Hkv,
                     hd, ck, cv);
  const std::vector<double> k = view3_to_host(ck), v = view3_to_host(cv);
  std::vector<double> want_k = fill, want_v = fill;
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) {
      const std::size_t e = (static_cast<std::size_t>(slot[r]) * max_seq + pos[r]) * C + c;
      want_k[e] = qkv[r * W + H * hd + c];
      want_v[e] = qkv[r * W + (H + Hkv) * hd + c];
    }
  EXPECT_EQ(count_differences(bits(k), bits(want_k)), 0u) << "cache_k";
  EXPECT_EQ(count_differences(bits(v), bits(want_v)), 0u) << "cache_v";
  EXPECT_EQ(std::count(k.begin(), k.end(), sentinel), static_cast<long>(fill.size()) - R * C) << "untouched elements";
}

TEST(DecodeArguments, KvCacheAppendRejectsBadIndicesAndShapes) {
  const ExecSpace space;
  const int H = 4, Hkv = 2, hd = 8;
  View2<float> qkv("mantissa::test::qkv", 2, (H + 2 * Hkv) * hd);
  View3<float> ck("mantissa::test::cache_k", 3, 6, Hkv * hd), cv("mantissa::test::cache_v", 3, 6, Hkv * hd);
  const auto append = [&](std::vector<int> slot, std::vector<int> pos) {
    kv_cache_append<float>(space, qkv, make_int_view("mantissa::test::slot", slot),
                           make_int_view("mantissa::test::pos", pos), H, Hkv, hd, ck, cv);
  };
  EXPECT_NO_THROW(append({2, 0}, {5, 0}));
  EXPECT_THROW(append({3, 0}, {0, 0}), std::invalid_argument);   // slot == slots
  EXPECT_THROW(append({0, -1}, {0, 0}), std::invalid_argument);  // negative slot
  EXPECT_THROW(append({0, 1}, {6, 0}), std::invalid_argument);   // pos == max_seq
  EXPECT_THROW(append({0, 1}, {0, -2}), std::invalid_argument);  // negative pos
  EXPECT_THROW(append({0}, {0}), std::invalid_argument);         // one index per qkv row
  EXPECT_THROW(kv_cache_append<float>(space, qkv, make_int_view("mantissa::test::slot", {0, 1}),
                                      make_int_view("mantissa::test::pos", {0, 1}), H, Hkv, hd, ck,
                                      View3<float>("mantissa::test::cache_v", 3, 5, Hkv * hd)),
               std::invalid_argument);  // cache_v shape
  EXPECT_THROW(kv_cache_append<float>(space, qkv, make_int_view("mantissa::test::slot", {0, 1}),
                                      make_int_view("mantissa::test::pos", {0, 1}), H, H, hd, ck, cv),
               std::invalid_argument);  // qkv width for n_kv_head = 4
}

// =============================================================================================
// attention_decode

struct AttnCase {
  const char* name;
  int n_head, n_kv_head, head_dim;
};
const std::vector<AttnCase>& attn_cases() {
  static const std::vector<AttnCase> c = {
      {"gqa4/2_hd8", 4, 2, 8}, {"gqa4/2_hd16", 4, 2, 16}, {"mha4/4_hd8", 4, 4, 8}, {"mha4/4_hd16", 4, 4, 16}};
  return c;
}
const std::vector<int>& kv_splits() {
  static const std::vector<int> s = {1, 4, 16, 1 << 20};  // the last: larger than every len (one chunk)
  return s;
}

// A cache of 4 slots x 40 positions with random k in [-2, 2] and v in [-1, 1] (values of T), and
// 6 query rows: slot 1 twice with different len (as in a prefill), len 1, len = max_seq.
template <class T>
DecodeProblem random_problem(const AttnCase& c, std::uint64_t seed) {
  DecodeProblem pb;
  pb.slots = 4;
  pb.max_seq = 40;
  pb.n_head = c.n_head;
  pb.n_kv_head = c.n_kv_head;
  pb.head_dim = c.head_dim;
  pb.slot = {0, 1, 2, 3, 1, 2};
  pb.len = {1, 17, 40, 5, 9, 23};
  const std::size_t cache = static_cast<std::size_t>(pb.slots) * pb.max_seq * pb.kv_cols();
  pb.cache_k = random_values<T>(cache, -2, 2, seed);
  pb.cache_v = random_values<T>(cache, -1, 1, seed + 1);
  pb.qkv = random_values<T>(static_cast<std::size_t>(pb.rows()) * pb.width(), -2, 2, seed + 2);
  return pb;
}

template <class T>
struct DeviceCache {
  View3<T> k, v;
};
template <class T>
DeviceCache<T> device_cache(const DecodeProblem& pb) {
  return {make_view3<T>("mantissa::test::cache_k", pb.cache_k, pb.slots, pb.max_seq, pb.kv_cols()),
          make_view3<T>("mantissa::test::cache_v", pb.cache_v, pb.slots, pb.max_seq, pb.kv_cols())};
}

struct DecodeOut {
  std::vector<double> out, lse;
};
// attention_decode for the rows `which` of the problem (all rows when empty); outputs start as NaN.
// team_size: the team path's threads per team (0: its choice). ws: run the trusted-rows overload
// with this workspace (the rows are not checked; bad rows give NaN).
template <class T>
DecodeOut run_decode(const DecodeProblem& pb, const DeviceCache<T>& cache, int kv_split, std::vector<int> which = {},
                     detail::AttentionPath path = detail::AttentionPath::automatic, int team_size = 0,
                     DecodeWorkspace* ws = nullptr) {
  if (which.empty()) {
    which.resize(pb.rows());
    std::iota(which.begin(), which.end(), 0);
  }
  const std::size_t R = which.size();
  const View2<T> qkv = make_view2<T>("mantissa::test::qkv", take_rows(pb.qkv, pb.width(), which), R, pb.width());
  View2<T> out("mantissa::test::out", R, pb.qcols());
  View2<float> lse("mantissa::test::lse", R, pb.n_head);
  Kokkos::deep_copy(out, from_float<T>(std::numeric_limits<float>::quiet_NaN()));
  Kokkos::deep_copy(lse, std::numeric_limits<float>::quiet_NaN());
  const View1<int> slot = make_int_view("mantissa::test::slot", take(pb.slot, which));
  const View1<int> len = make_int_view("mantissa::test::len", take(pb.len, which));
  if (ws != nullptr && path == detail::AttentionPath::automatic)
    attention_decode<T>(ExecSpace(), qkv, cache.k, cache.v, slot, len, pb.n_head, pb.n_kv_head, pb.head_dim, kv_split,
                        out, lse, *ws);
  else if (ws != nullptr)
    detail::attention_decode_path<T>(ExecSpace(), qkv, cache.k, cache.v, slot, len, pb.n_head, pb.n_kv_head,
                                     pb.head_dim, kv_split, out, lse, *ws, path, team_size);
  else if (path == detail::AttentionPath::automatic)
    attention_decode<T>(ExecSpace(), qkv, cache.k, cache.v, slot, len, pb.n_head, pb.n_kv_head, pb.head_dim, kv_split,
                        out, lse);
  else if (path == detail::AttentionPath::team)
    detail::attention_decode_path<T>(ExecSpace(), qkv, cache.k, cache.v, slot, len, pb.n_head, pb.n_kv_head,
                                     pb.head_dim, kv_split, out, lse, path, team_size);
  else
    detail::attention_decode_path<T>(ExecSpace(), qkv, cache.k, cache.v, slot, len, pb.n_head, pb.n_kv_head,
                                     pb.head_dim, kv_split, out, lse, path);
  return {to_host(out), to_host(lse)};
}

// The code paths of attention_decode that can run in this build on this machine (automatic first).
std::vector<std::pair<detail::AttentionPath, const char*>> attention_paths() {
  std::vector<std::pair<detail::AttentionPath, const char*>> all = {{detail::AttentionPath::automatic, "automatic"},
                                                                    {detail::AttentionPath::generic, "generic"},
                                                                    {detail::AttentionPath::host_avx, "host_avx"},
                                                                    {detail::AttentionPath::team, "team"}},
                                                                   out;
  for (const auto& p : all)
    if (detail::decode_attention_path_available<ExecSpace>(p.first)) out.push_back(p);
  return out;
}

// The attention paths compiled with the build's flags (in FMA-contracting builds their fp32 bits
// differ from the AVX path's, which is compiled for "avx,f16c" only, and from each other's).
bool compiled_plain(detail::AttentionPath path) {
  return path == detail::AttentionPath::generic || path == detail::AttentionPath::team;
}

// Checks |got - ref| <= 2 bound (first-order bound, twice for the second-order remainder); prints
// and returns the worst err/bound.
double check_within(const std::string& what, const std::vector<double>& got, const std::vector<double>& ref,
                    const std::vector<double>& bound) {
  std::vector<double> tol(bound.size());
  for (std::size_t i = 0; i < bound.size(); ++i) tol[i] = 2 * bound[i];
  return 2 * expect_close(what + " (err/tol, tol = 2 bound)", got, ref, tol);
}

TYPED_TEST(Decode, AttentionMatchesReference) {
  using T = TypeParam;
  for (const AttnCase& c : attn_cases()) {
    const DecodeProblem pb = random_problem<T>(c, 600);
    const DeviceCache<T> cache = device_cache<T>(pb);
    for (int kv_split : kv_splits()) {
      const std::string name = std::string(precision_traits<T>::name) + " " + c.name + " kv_split " +
                               std::to_string(kv_split);
      SCOPED_TRACE(name);
      const DecodeOut k = run_decode<T>(pb, cache, kv_split);
      // Bound (decode_test_util.hpp): score error (hd+2) u32 scale sum|q k|, the exps and
      // subtractions of D5, (2L + 2C + 8) u32 for the fp32 sums, products and the division, all
      // times sum_j P_j |v_j|; + u_T |out| + eta_T (D7's one rounding). No u_T term for P (D6).
      const DecodeRef ref = ref_attention_decode(pb, kv_split, roundoff_of<T>());
      check_within(name + " out", k.out, ref.out, ref.out_bound);
      check_within(name + " lse", k.lse, ref.lse, ref.lse_bound);
    }
  }
}

// Host backends: bit-identical to the plain-float emulation of D4-D8. Negative controls: rounding
// P to T (the training engine's F4) changes bf16/fp16 bits; o * (1/l) instead of o / l (D7) and
// another kv_split (D5) change fp32 bits.
TYPED_TEST(Decode, AttentionFollowsTheDocumentedRoundingPointsBitForBit) {
  using T = TypeParam;
  if (!exact_emulation()) GTEST_SKIP() << kNoEmulation;
  for (const AttnCase& c : attn_cases()) {
    SCOPED_TRACE(c.name);
    const DecodeProblem pb = random_problem<T>(c, 700);
    const DeviceCache<T> cache = device_cache<T>(pb);
    for (int kv_split : kv_splits()) {
      SCOPED_TRACE("kv_split " + std::to_string(kv_split));
      const DecodeOut k = run_decode<T>(pb, cache, kv_split);
      std::vector<float> out, lse;
      emulate_attention_decode<T>(pb, kv_split, DecodeVariant{}, out, lse);
      EXPECT_EQ(count_differences(bits(k.out), bits(out)), 0u) << "out";
      EXPECT_EQ(count_differences(bits(k.lse), bits(lse)), 0u) << "lse";
      if (std::is_same<T, float>::value) {
        emulate_attention_decode<T>(pb, kv_split, DecodeVariant{false, true}, out, lse);
        EXPECT_GT(count_differences(bits(k.out), bits(out)), 0u) << "D7 (o / l) not observable in fp32";
      } else if (kv_split > 1) {  // kv_split 1: every e_j = exp(0) = 1, which T holds exactly
        emulate_attention_decode<T>(pb, kv_split, DecodeVariant{true, false}, out, lse);
        EXPECT_GT(count_differences(bits(k.out), bits(out)), 0u) << "D6 (P not rounded) not observable";
      }
    }
    if (std::is_same<T, float>::value) {
      const DecodeOut split = run_decode<T>(pb, cache, 4), whole = run_decode<T>(pb, cache, 1 << 20);
      EXPECT_GT(count_differences(bits(split.out), bits(whole.out)), 0u) << "D5 (chunks) not observable in fp32";
    }
  }
}

// A row with len 1 sees only position 0: e = exp(0) = 1, l = 1, w = 1, so out is that position's
// v bit for bit and lse its fp32 score.
TYPED_TEST(Decode, AttentionOverOnePositionReturnsItsValue) {
  using T = TypeParam;
  DecodeProblem pb = random_problem<T>(attn_cases()[0], 800);
  pb.len = {1, 1, 1, 1, 1, 1};
  const DecodeOut k = run_decode<T>(pb, device_cache<T>(pb), 4);
  const int H = pb.n_head, hd = pb.head_dim;
  for (int r = 0; r < pb.rows(); ++r)
    for (int h = 0; h < H; ++h) {
      const int kc = (h / pb.group()) * hd;
      double dot = 0, mag = 0;
      for (int d = 0; d < hd; ++d) {
        EXPECT_EQ(k.out[(r * H + h) * hd + d], pb.v(pb.slot[r], 0, kc + d)) << "row " << r << " head " << h;
        dot += pb.q(r, h * hd + d) * pb.k(pb.slot[r], 0, kc + d);
        mag += std::fabs(pb.q(r, h * hd + d) * pb.k(pb.slot[r], 0, kc + d));
      }
      const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
      // lse = m + log(1) = the fp32 score: fp32 dot of hd terms, the scale and its rounding
      EXPECT_NEAR(k.lse[r * H + h], dot * scale, (hd + 2) * kU32 * mag * scale) << "row " << r << " head " << h;
    }
}

// Every code path of attention_decode (host_avx: 8-key register tiles, F16C; generic: one key
// at a time) gives the same bits, and (host, no FMA) those of the emulation of D4-D8: head_dim
// multiples of 8 and not (zero-padded last step), GQA and MHA, lens that end inside a key tile,
// kv_split 1 .. one chunk. In FMA-contracting builds the fp32 generic path is left out (see
// LinearCodePathsAgreeBitForBit).
TYPED_TEST(Decode, AttentionCodePathsAgreeBitForBit) {
  using T = TypeParam;
  const auto paths = attention_paths();
  std::string names;
  for (const auto& p : paths) names += std::string(" ") + p.second;
  std::printf("  attention_decode code paths run here:%s\n", names.c_str());
  const std::vector<AttnCase> cases = {{"gqa4/2_hd32", 4, 2, 32}, {"mha2/2_hd64", 2, 2, 64},  {"gqa4/1_hd12", 4, 1, 12},
                                       {"mha3/3_hd5", 3, 3, 5},   {"gqa2/1_hd40", 2, 1, 40},  {"mha1/1_hd256", 1, 1, 256},
                                       {"mha2/2_hd8", 2, 2, 8},   {"gqa4/2_hd20", 4, 2, 20}};
  for (const AttnCase& c : cases) {
    const DecodeProblem pb = random_problem<T>(c, 1000 + c.head_dim);
    const DeviceCache<T> cache = device_cache<T>(pb);
    for (int kv_split : {1, 3, 8, 16, 1 << 20}) {
      SCOPED_TRACE(std::string(c.name) + " kv_split " + std::to_string(kv_split));
      std::vector<std::uint32_t> ref_out, ref_lse;
      if (kExactEmulation) {
        std::vector<float> out, lse;
        emulate_attention_decode<T>(pb, kv_split, DecodeVariant{}, out, lse);
        ref_out = bits(out);
        ref_lse = bits(lse);
      }
      for (const auto& [path, name] : paths) {
        if (kContracting && std::is_same<T, float>::value && compiled_plain(path)) continue;
        const DecodeOut k = run_decode<T>(pb, cache, kv_split, {}, path);
        ASSERT_FALSE(any_nan(k.out) || any_nan(k.lse)) << name;
        if (ref_out.empty()) {
          ref_out = bits(k.out);
          ref_lse = bits(k.lse);
        }
        EXPECT_EQ(count_differences(bits(k.out), ref_out), 0u) << name << " out";
        EXPECT_EQ(count_differences(bits(k.lse), ref_lse), 0u) << name << " lse";
      }
    }
  }
}

// Special values in q, K and V (+-Inf, NaNs, signed zeros, subnormals of T, the largest finite
// T): every code path gives a NaN where another does and the same bits everywhere else.
TYPED_TEST(Decode, AttentionCodePathsAgreeOnSpecialValues) {
  using T = TypeParam;
  const auto make = [](double f) { return from_float<T>(static_cast<float>(f)); };
  const double max = precision_traits<T>::max,
               sub = std::ldexp(precision_traits<T>::min_normal, -precision_traits<T>::mantissa_bits);
  const std::vector<double> special = {INFINITY, -INFINITY, NAN, 0.0, -0.0, max, -max, sub, -sub};
  for (const AttnCase& c : {AttnCase{"gqa4/2_hd32", 4, 2, 32}, AttnCase{"mha2/2_hd12", 2, 2, 12}}) {
    DecodeProblem pb = random_problem<T>(c, 1100 + c.head_dim);
    std::mt19937 rng(11);
    const auto sprinkle = [&](std::vector<double>& v, double p) {
      for (double& x : v)
        if (std::uniform_real_distribution<double>(0, 1)(rng) < p) x = to_float(make(special[rng() % special.size()]));
    };
    sprinkle(pb.cache_k, 0.0005);
    sprinkle(pb.cache_v, 0.0005);
    sprinkle(pb.qkv, 0.0005);
    const DeviceCache<T> cache = device_cache<T>(pb);
    for (int kv_split : {4, 16}) {
      std::vector<std::uint32_t> ref;
      for (const auto& [path, name] : attention_paths()) {
        if (kContracting && std::is_same<T, float>::value && compiled_plain(path)) continue;
        const DecodeOut k = run_decode<T>(pb, cache, kv_split, {}, path);
        std::vector<double> all = k.out;
        all.insert(all.end(), k.lse.begin(), k.lse.end());
        std::vector<std::uint32_t> b(all.size());
        for (std::size_t i = 0; i < all.size(); ++i)
          b[i] = std::isnan(all[i]) ? 0x7fc00000u : float_bits(static_cast<float>(all[i]));
        if (ref.empty()) {
          ref = b;
          const auto nans = static_cast<std::size_t>(std::count(b.begin(), b.end(), 0x7fc00000u));
          EXPECT_GT(nans, 0u) << c.name << ": no NaN output";
          EXPECT_LT(nans, b.size() / 2) << c.name << ": special values everywhere";
        }
        EXPECT_EQ(count_differences(b, ref), 0u) << c.name << " " << name << " kv_split " << kv_split;
      }
    }
  }
}

// Batch invariance (D9): one row per call, subsets and permutations of the rows: same bits.
TYPED_TEST(Decode, AttentionIsBatchInvariant) {
  using T = TypeParam;
  for (const AttnCase& c : {attn_cases()[0], attn_cases()[3]}) {
    SCOPED_TRACE(c.name);
    const DecodeProblem pb = random_problem<T>(c, 900);
    const DeviceCache<T> cache = device_cache<T>(pb);
    for (int kv_split : {4, 16}) {
      SCOPED_TRACE("kv_split " + std::to_string(kv_split));
      const DecodeOut all = run_decode<T>(pb, cache, kv_split);
      ASSERT_FALSE(any_nan(all.out) || any_nan(all.lse));
      DecodeOut alone;
      for (int r = 0; r < pb.rows(); ++r) {
        const DecodeOut one = run_decode<T>(pb, cache, kv_split, {r});
        alone.out.insert(alone.out.end(), one.out.begin(), one.out.end());
        alone.lse.insert(alone.lse.end(), one.lse.begin(), one.lse.end());
      }
      EXPECT_EQ(count_differences(bits(alone.out), bits(all.out)), 0u) << "out, one row per call";
      EXPECT_EQ(count_differences(bits(alone.lse), bits(all.lse)), 0u) << "lse, one row per call";
      std::vector<int> perm(pb.rows());
      std::iota(perm.begin(), perm.end(), 0);
      std::shuffle(perm.begin(), perm.end(), std::mt19937(kv_split));
      for (const std::vector<int>& which : {perm, std::vector<int>{4, 2}, std::vector<int>{5, 1, 0}}) {
        const DecodeOut sub = run_decode<T>(pb, cache, kv_split, which);
        EXPECT_EQ(count_differences(bits(sub.out), bits(take_rows(all.out, pb.qcols(), which))), 0u)
            << "out, subset/permutation of " << which.size() << " rows";
        EXPECT_EQ(count_differences(bits(sub.lse), bits(take_rows(all.lse, pb.n_head, which))), 0u)
            << "lse, subset/permutation of " << which.size() << " rows";
      }
    }
  }
}

// The two engines on the same packed sequences. The cache is filled with kv_cache_append from the
// sequences' qkv rows (slot = sequence, pos = position in it); every token t queries with
// len = t + 1 (causal). Each engine is within its own bound of the exact attention (training: F1-F6,
// attention_test_util.hpp; rollout: D4-D8), so |decode - training| <= 2 (bound_train + bound_decode).
// The engines must really differ for bf16/fp16 (F4 vs D6, F5 vs D7, and the chunks of D5); with one
// chunk per row their lse is bit-identical (D4, D5).
TYPED_TEST(Decode, AttentionAgreesWithTheTrainingEngine) {
  using T = TypeParam;
  struct Packed {
    const char* name;
    std::vector<int> lengths;
    int n_head, n_kv_head, head_dim;
  };
  const std::vector<Packed> packed = {{"gqa4/2_hd16", {13, 1, 40, 7}, 4, 2, 16},
                                      {"mha4/4_hd8", {9, 33, 1, 20}, 4, 4, 8}};
  for (const Packed& p : packed) {
    const AttnShape sh = make_shape(p.lengths, p.n_head, p.n_kv_head, p.head_dim);
    const int N = sh.n(), W = sh.width(), S = static_cast<int>(p.lengths.size());
    const int max_seq = *std::max_element(p.lengths.begin(), p.lengths.end());
    // q, k in [-2, 2], v in [-1, 1]
    std::vector<double> qkv = random_values<T>(static_cast<std::size_t>(N) * W, -2, 2, 1000);
    for (int i = 0; i < N; ++i)
      for (int col = sh.v_col(0); col < W; ++col) qkv[i * W + col] *= 0.5;  // exact: a power of two
    // training engine
    const View2<T> qkv_d = make_view2<T>("mantissa::test::qkv", qkv, N, W);
    View2<T> out_t("mantissa::test::out_train", N, sh.qcols());
    View2<float> lse_t("mantissa::test::lse_train", N, sh.n_head);
    attention_forward<T>(ExecSpace(), qkv_d, make_int_view("mantissa::test::seq_offsets", sh.offsets), sh.n_head,
                         sh.n_kv_head, sh.head_dim, out_t, lse_t);
    const std::vector<double> train_out = to_host(out_t), train_lse = to_host(lse_t);
    const RefForward ref_t = ref_attention_forward(sh, qkv, roundoff_of<T>());
    // rollout engine: cache from the same rows
    std::vector<int> slot(N), pos(N), len(N);
    for (int s = 0; s < S; ++s)
      for (int i = sh.offsets[s]; i < sh.offsets[s + 1]; ++i) {
        slot[i] = s;
        pos[i] = i - sh.offsets[s];
        len[i] = pos[i] + 1;
      }
    DeviceCache<T> cache{View3<T>("mantissa::test::cache_k", S, max_seq, sh.n_kv_head * sh.head_dim),
                         View3<T>("mantissa::test::cache_v", S, max_seq, sh.n_kv_head * sh.head_dim)};
    kv_cache_append<T>(ExecSpace(), qkv_d, make_int_view("mantissa::test::slot", slot),
                       make_int_view("mantissa::test::pos", pos), sh.n_head, sh.n_kv_head, sh.head_dim, cache.k,
                       cache.v);
    DecodeProblem pb;
    pb.slots = S;
    pb.max_seq = max_seq;
    pb.n_head = sh.n_head;
    pb.n_kv_head = sh.n_kv_head;
    pb.head_dim = sh.head_dim;
    pb.cache_k = view3_to_host(cache.k);
    pb.cache_v = view3_to_host(cache.v);
    pb.qkv = qkv;
    pb.slot = slot;
    pb.len = len;
    for (int kv_split : {4, 16, 1 << 20}) {
      const std::string name = std::string(precision_traits<T>::name) + " " + p.name + " kv_split " +
                               std::to_string(kv_split);
      SCOPED_TRACE(name);
      const DecodeOut dec = run_decode<T>(pb, cache, kv_split);
      const DecodeRef ref_d = ref_attention_decode(pb, kv_split, roundoff_of<T>());
      check_within(name + " decode out vs exact", dec.out, ref_d.out, ref_d.out_bound);
      std::vector<double> bound_out(dec.out.size()), bound_lse(dec.lse.size());
      double max_diff = 0, max_lse_diff = 0;
      for (std::size_t e = 0; e < dec.out.size(); ++e) {
        bound_out[e] = ref_t.out_bound[e] + ref_d.out_bound[e];
        const double diff = std::fabs(dec.out[e] - train_out[e]);
        max_diff = std::max(max_diff, diff);
      }
      for (std::size_t e = 0; e < dec.lse.size(); ++e) {
        bound_lse[e] = ref_t.lse_bound[e] + ref_d.lse_bound[e];
        max_lse_diff = std::max(max_lse_diff, std::fabs(dec.lse[e] - train_lse[e]));
      }
      check_within(name + " |decode - training| out", dec.out, train_out, bound_out);
      check_within(name + " |decode - training| lse", dec.lse, train_lse, bound_lse);
      const std::size_t n_diff = count_differences(bits(dec.out), bits(train_out));
      const std::size_t n_lse_diff = count_differences(bits(dec.lse), bits(train_lse));
      std::printf("  [ %s ] decode vs training: out differs in %zu of %zu (max |diff| %.3e), "
                  "lse differs in %zu of %zu (max |diff| %.3e)\n",
                  name.c_str(), n_diff, dec.out.size(), max_diff, n_lse_diff, dec.lse.size(),
                  max_lse_diff);
      if (std::is_same<T, float>::value) {
        // |out| <= 1 (a convex combination of v in [-1, 1]); each engine is a few tens of u32 from
        // the exact value for these lengths (<= 40 keys), so they agree to well under 1e-6.
        EXPECT_LE(max_diff, 1e-6) << "fp32 engines should agree to ~1e-7";
      } else {
        EXPECT_GT(n_diff, 0u) << "the engines do not differ";
      }
      if (kv_split >= max_seq) {
        EXPECT_EQ(n_lse_diff, 0u) << "one chunk: lse must be bit-identical (D4, D5)";
      }
    }
  }
}

// ---- The team path (flash-decoding, one team per (row, head)) and the trusted-rows overloads ----

// The team sizes the team path runs with here among 1, 2, 4 (the backend refuses sizes above
// decode_attention_team_size_max: Serial 1, OpenMP its pool's threads); printed once per type.
template <class T>
std::vector<int> team_sizes() {
  const int tmax = detail::decode_attention_team_size_max<T>(ExecSpace());
  std::vector<int> sizes;
  for (int ts : {1, 2, 4})
    if (ts <= tmax) sizes.push_back(ts);
  return sizes;
}
// Fails when the execution space has more than one thread but no team size above 1 could run.
template <class T>
void expect_a_real_team(const std::vector<int>& sizes) {
  std::string names;
  for (int ts : sizes) names += " " + std::to_string(ts);
  const int concurrency = ExecSpace().concurrency();
  std::printf("  %s team path: team sizes run:%s (team_size_max %d, concurrency %d)\n", precision_traits<T>::name,
              names.c_str(), detail::decode_attention_team_size_max<T>(ExecSpace()), concurrency);
  ASSERT_FALSE(sizes.empty()) << "no team size runs";
  if (concurrency > 1) {
    EXPECT_GT(sizes.back(), 1) << "concurrency > 1 but no team size > 1 ran";
  }
}

// A cache of 3 slots x 300 positions and 10 rows with len 1 .. 300: with kv_split 1, 3 and 64
// (and team sizes up to 4) the longest rows need several rounds of chunks per team thread.
template <class T>
DecodeProblem long_problem(const AttnCase& c, std::uint64_t seed) {
  DecodeProblem pb;
  pb.slots = 3;
  pb.max_seq = 300;
  pb.n_head = c.n_head;
  pb.n_kv_head = c.n_kv_head;
  pb.head_dim = c.head_dim;
  pb.slot = {0, 1, 2, 0, 1, 2, 0, 1, 2, 1};
  pb.len = {1, 2, 3, 7, 13, 64, 65, 200, 257, 300};
  const std::size_t cache = static_cast<std::size_t>(pb.slots) * pb.max_seq * pb.kv_cols();
  pb.cache_k = random_values<T>(cache, -2, 2, seed);
  pb.cache_v = random_values<T>(cache, -1, 1, seed + 1);
  pb.qkv = random_values<T>(static_cast<std::size_t>(pb.rows()) * pb.width(), -2, 2, seed + 2);
  return pb;
}

// The team path with team sizes 1, 2, 4 gives the generic path's bits (and, host without FMA, the
// emulation's): GQA groups 1, 2 and 3, head_dim 8, 32, 64 and 13, kv_split 1, 3, 64 and one chunk,
// lens 1 .. 300 (> team size x kv_split for every size and kv_split < 300). Also through the trusted
// overload with a workspace.
TYPED_TEST(Decode, AttentionTeamPathAgreesBitForBitForEveryTeamSize) {
  using T = TypeParam;
  const std::vector<int> sizes = team_sizes<T>();
  expect_a_real_team<T>(sizes);
  const std::vector<AttnCase> cases = {{"mha2/2_hd8", 2, 2, 8},
                                       {"gqa4/2_hd32", 4, 2, 32},
                                       {"gqa3/1_hd64", 3, 1, 64},
                                       {"mha2/2_hd13", 2, 2, 13}};
  const bool plain_ref = !(kContracting && std::is_same<T, float>::value);  // generic comparable with team
  for (const AttnCase& c : cases) {
    const DecodeProblem pb = long_problem<T>(c, 1200 + c.head_dim);
    const DeviceCache<T> cache = device_cache<T>(pb);
    for (int kv_split : {1, 3, 64, 1 << 20}) {
      SCOPED_TRACE(std::string(c.name) + " kv_split " + std::to_string(kv_split));
      std::vector<std::uint32_t> ref_out, ref_lse;
      if (plain_ref) {
        const DecodeOut g = run_decode<T>(pb, cache, kv_split, {}, detail::AttentionPath::generic);
        ASSERT_FALSE(any_nan(g.out) || any_nan(g.lse));
        ref_out = bits(g.out);
        ref_lse = bits(g.lse);
        if (kExactEmulation) {
          std::vector<float> out, lse;
          emulate_attention_decode<T>(pb, kv_split, DecodeVariant{}, out, lse);
          EXPECT_EQ(count_differences(ref_out, bits(out)), 0u) << "generic vs emulation, out";
          EXPECT_EQ(count_differences(ref_lse, bits(lse)), 0u) << "generic vs emulation, lse";
        }
      }
      DecodeWorkspace ws;
      for (int ts : sizes) {
        const DecodeOut k = run_decode<T>(pb, cache, kv_split, {}, detail::AttentionPath::team, ts);
        if (ref_out.empty()) {
          ref_out = bits(k.out);
          ref_lse = bits(k.lse);
        }
        EXPECT_EQ(count_differences(bits(k.out), ref_out), 0u) << "team size " << ts << " out";
        EXPECT_EQ(count_differences(bits(k.lse), ref_lse), 0u) << "team size " << ts << " lse";
        const DecodeOut w = run_decode<T>(pb, cache, kv_split, {}, detail::AttentionPath::team, ts, &ws);
        EXPECT_EQ(count_differences(bits(w.out), ref_out), 0u) << "team size " << ts << " with workspace, out";
        EXPECT_EQ(count_differences(bits(w.lse), ref_lse), 0u) << "team size " << ts << " with workspace, lse";
      }
      // the team path's own choice of team size, and the automatic trusted overload
      const DecodeOut k0 = run_decode<T>(pb, cache, kv_split, {}, detail::AttentionPath::team, 0);
      EXPECT_EQ(count_differences(bits(k0.out), ref_out), 0u) << "team size 0 (chosen) out";
      EXPECT_EQ(count_differences(bits(k0.lse), ref_lse), 0u) << "team size 0 (chosen) lse";
      if (plain_ref || !std::is_same<MemSpace, Kokkos::HostSpace>::value) {
        const DecodeOut a = run_decode<T>(pb, cache, kv_split, {}, detail::AttentionPath::automatic, 0, &ws);
        EXPECT_EQ(count_differences(bits(a.out), ref_out), 0u) << "automatic with workspace, out";
        EXPECT_EQ(count_differences(bits(a.lse), ref_lse), 0u) << "automatic with workspace, lse";
      }
    }
  }
}

// Special values (as AttentionCodePathsAgreeOnSpecialValues, here with NaN and -inf scores at the
// start of rows and chunks, which decide m): the team path with every team size gives a NaN where
// the generic path does and its bits everywhere else.
TYPED_TEST(Decode, AttentionTeamPathAgreesOnSpecialValues) {
  using T = TypeParam;
  if (kContracting && std::is_same<T, float>::value) GTEST_SKIP() << "FMA contraction: fp32 paths differ";
  const auto make = [](double f) { return from_float<T>(static_cast<float>(f)); };
  const double max = precision_traits<T>::max,
               sub = std::ldexp(precision_traits<T>::min_normal, -precision_traits<T>::mantissa_bits);
  const std::vector<double> special = {INFINITY, -INFINITY, NAN, 0.0, -0.0, max, -max, sub, -sub};
  const AttnCase c{"gqa4/2_hd16", 4, 2, 16};
  DecodeProblem pb = long_problem<T>(c, 1300);
  std::mt19937 rng(13);
  for (double& x : pb.cache_k)
    if (std::uniform_real_distribution<double>(0, 1)(rng) < 0.0002) x = to_float(make(special[rng() % special.size()]));
  for (double& x : pb.cache_v)
    if (std::uniform_real_distribution<double>(0, 1)(rng) < 0.0002) x = to_float(make(special[rng() % special.size()]));
  // kv head 0: a NaN key at position 0 of slot 1 (m = NaN for its rows), an infinite one at
  // position 3 of slot 2 (scores +-Inf or NaN)
  for (int col = 0; col < pb.head_dim; ++col) {
    pb.cache_k[(static_cast<std::size_t>(1) * pb.max_seq + 0) * pb.kv_cols() + col] = NAN;
    pb.cache_k[(static_cast<std::size_t>(2) * pb.max_seq + 3) * pb.kv_cols() + col] = col % 2 ? INFINITY : 0.0;
  }
  const DeviceCache<T> cache = device_cache<T>(pb);
  const auto canon = [](const DecodeOut& k) {
    std::vector<double> all = k.out;
    all.insert(all.end(), k.lse.begin(), k.lse.end());
    std::vector<std::uint32_t> b(all.size());
    for (std::size_t i = 0; i < all.size(); ++i)
      b[i] = std::isnan(all[i]) ? 0x7fc00000u : float_bits(static_cast<float>(all[i]));
    return b;
  };
  for (int kv_split : {1, 3, 64}) {
    const std::vector<std::uint32_t> ref =
        canon(run_decode<T>(pb, cache, kv_split, {}, detail::AttentionPath::generic));
    const auto nans = static_cast<std::size_t>(std::count(ref.begin(), ref.end(), 0x7fc00000u));
    EXPECT_GT(nans, 0u);
    EXPECT_LT(nans, ref.size() / 2);
    for (int ts : team_sizes<T>()) {
      const std::vector<std::uint32_t> got =
          canon(run_decode<T>(pb, cache, kv_split, {}, detail::AttentionPath::team, ts));
      EXPECT_EQ(count_differences(got, ref), 0u) << "team size " << ts << " kv_split " << kv_split;
    }
  }
}

// Trusted rows (attention_decode with a workspace), every code path: rows with slot -1 or slots,
// len 0 or max_seq + 1 give NaN in all their out and lse entries (and read nothing); the other rows
// give the bits of the checked call on those rows alone.
TYPED_TEST(Decode, AttentionTrustedRowsGuardBadRows) {
  using T = TypeParam;
  DecodeProblem pb = random_problem<T>(attn_cases()[1], 1400);  // 4 slots x 40 positions
  pb.slot = {0, -1, 1, 4, 2, 3, 1, -7};
  pb.len = {5, 3, 40, 2, 0, 41, 17, 0};
  pb.qkv = random_values<T>(static_cast<std::size_t>(pb.rows()) * pb.width(), -2, 2, 1401);
  const std::vector<int> good = {0, 2, 6};
  const DeviceCache<T> cache = device_cache<T>(pb);
  const int H = pb.n_head, hd = pb.head_dim;
  for (const auto& [path, name] : attention_paths()) {
    DecodeWorkspace ws;
    const DecodeOut k = run_decode<T>(pb, cache, 4, {}, path, 0, &ws);
    const DecodeOut ref = run_decode<T>(pb, cache, 4, good, path);
    std::vector<double> got_out, got_lse;
    for (int r = 0; r < pb.rows(); ++r) {
      const bool ok = std::find(good.begin(), good.end(), r) != good.end();
      for (int e = 0; e < H * hd; ++e) {
        const double x = k.out[static_cast<std::size_t>(r) * H * hd + e];
        if (ok) got_out.push_back(x);
        else EXPECT_TRUE(std::isnan(x)) << name << " row " << r << " out " << e;
      }
      for (int h = 0; h < H; ++h) {
        const double x = k.lse[static_cast<std::size_t>(r) * H + h];
        if (ok) got_lse.push_back(x);
        else EXPECT_TRUE(std::isnan(x)) << name << " row " << r << " lse " << h;
      }
    }
    EXPECT_EQ(count_differences(bits(got_out), bits(ref.out)), 0u) << name << " good rows, out";
    EXPECT_EQ(count_differences(bits(got_lse), bits(ref.lse)), 0u) << name << " good rows, lse";
    EXPECT_THROW(run_decode<T>(pb, cache, 4, {}, path), std::invalid_argument) << name << ": the checked call";
  }
}

// The workspace grows once (rows * n_head * max_seq floats) and is reused: a second call, and a call
// with fewer rows, keep its buffer; the results do not change.
TYPED_TEST(Decode, AttentionWorkspaceIsReused) {
  using T = TypeParam;
  const DecodeProblem pb = random_problem<T>(attn_cases()[0], 1500);
  const DeviceCache<T> cache = device_cache<T>(pb);
  DecodeWorkspace ws;
  EXPECT_EQ(ws.scores.extent(0), 0u);
  const DecodeOut first = run_decode<T>(pb, cache, 16, {}, detail::AttentionPath::automatic, 0, &ws);
  const float* buffer = ws.scores.data();
  EXPECT_EQ(ws.scores.extent(0), static_cast<std::size_t>(pb.rows()) * pb.n_head * pb.max_seq);
  for (const auto& [path, name] : attention_paths()) {
    const DecodeOut again = run_decode<T>(pb, cache, 16, {}, path, 0, &ws);
    EXPECT_EQ(ws.scores.data(), buffer) << name << ": reallocated";
    if (!(kContracting && std::is_same<T, float>::value)) {
      EXPECT_EQ(count_differences(bits(again.out), bits(first.out)), 0u) << name;
      EXPECT_EQ(count_differences(bits(again.lse), bits(first.lse)), 0u) << name;
    }
    run_decode<T>(pb, cache, 16, {3, 1}, path, 0, &ws);
    EXPECT_EQ(ws.scores.data(), buffer) << name << ": reallocated for fewer rows";
  }
  DecodeWorkspace moved = std::move(ws);
  EXPECT_EQ(moved.scores.data(), buffer);
}

// kv_cache_append with a workspace (trusted rows): rows with slot or pos out of range are skipped,
// the others are placed as by the checked call, nothing else is touched.
TYPED_TEST(Decode, KvCacheAppendTrustedRowsSkipsBadRows) {
  using T = TypeParam;
  const int slots = 3, max_seq = 6, H = 4, Hkv = 2, hd = 8, W = (H + 2 * Hkv) * hd, C = Hkv * hd;
  const std::vector<int> slot = {2, -1, 0, 3, 2, 1, 0}, pos = {0, 1, 5, 0, 6, -1, 3};
  const std::vector<bool> ok = {true, false, true, false, false, false, true};
  const int R = static_cast<int>(slot.size());
  const std::vector<double> qkv = random_values<T>(static_cast<std::size_t>(R) * W, -4, 4, 1600);
  const double sentinel = -7.0;
  const std::vector<double> fill(static_cast<std::size_t>(slots) * max_seq * C, sentinel);
  const View3<T> ck = make_view3<T>("mantissa::test::cache_k", fill, slots, max_seq, C);
  const View3<T> cv = make_view3<T>("mantissa::test::cache_v", fill, slots, max_seq, C);
  DecodeWorkspace ws;
  const View2<T> qkv_d = make_view2<T>("mantissa::test::qkv", qkv, R, W);
  const View1<int> slot_d = make_int_view("mantissa::test::slot", slot);
  const View1<int> pos_d = make_int_view("mantissa::test::pos", pos);
  kv_cache_append<T>(ExecSpace(), qkv_d, slot_d, pos_d, H, Hkv, hd, ck, cv, ws);
  const std::vector<double> k = view3_to_host(ck), v = view3_to_host(cv);
  std::vector<double> want_k = fill, want_v = fill;
  for (int r = 0; r < R; ++r)
    if (ok[r])
      for (int c = 0; c < C; ++c) {
        const std::size_t e = (static_cast<std::size_t>(slot[r]) * max_seq + pos[r]) * C + c;
        want_k[e] = qkv[r * W + H * hd + c];
        want_v[e] = qkv[r * W + (H + Hkv) * hd + c];
      }
  EXPECT_EQ(count_differences(bits(k), bits(want_k)), 0u) << "cache_k";
  EXPECT_EQ(count_differences(bits(v), bits(want_v)), 0u) << "cache_v";
  EXPECT_THROW(kv_cache_append<T>(ExecSpace(), qkv_d, slot_d, pos_d, H, Hkv, hd, ck, cv), std::invalid_argument);
}

TEST(DecodeArguments, TeamPathRejectsTeamSizesTheBackendRefuses) {
  const ExecSpace space;
  const int H = 2, Hkv = 2, hd = 8, R = 1;
  View2<float> qkv("mantissa::test::qkv", R, (H + 2 * Hkv) * hd), out("mantissa::test::out", R, H * hd);
  View2<float> lse("mantissa::test::lse", R, H);
  View3<float> ck("mantissa::test::cache_k", 1, 4, Hkv * hd), cv("mantissa::test::cache_v", 1, 4, Hkv * hd);
  const View1<int> slot = make_int_view("mantissa::test::slot", {0}), len = make_int_view("mantissa::test::len", {4});
  const int tmax = detail::decode_attention_team_size_max<float>(space);
  EXPECT_NO_THROW(detail::attention_decode_path<float>(space, qkv, ck, cv, slot, len, H, Hkv, hd, 2, out, lse,
                                                       detail::AttentionPath::team, tmax));
  EXPECT_THROW(detail::attention_decode_path<float>(space, qkv, ck, cv, slot, len, H, Hkv, hd, 2, out, lse,
                                                    detail::AttentionPath::team, tmax + 1),
               std::invalid_argument);
  EXPECT_THROW(detail::attention_decode_path<float>(space, qkv, ck, cv, slot, len, H, Hkv, hd, 2, out, lse,
                                                    detail::AttentionPath::team, -1),
               std::invalid_argument);
}

TEST(DecodeArguments, AttentionRejectsBadIndicesAndShapes) {
  const ExecSpace space;
  const int H = 4, Hkv = 2, hd = 8, R = 2;
  View2<float> qkv("mantissa::test::qkv", R, (H + 2 * Hkv) * hd), out("mantissa::test::out", R, H * hd);
  View2<float> lse("mantissa::test::lse", R, H);
  View3<float> ck("mantissa::test::cache_k", 3, 6, Hkv * hd), cv("mantissa::test::cache_v", 3, 6, Hkv * hd);
  const auto attend = [&](std::vector<int> slot, std::vector<int> len, int kv_split) {
    attention_decode<float>(space, qkv, ck, cv, make_int_view("mantissa::test::slot", slot),
                            make_int_view("mantissa::test::len", len), H, Hkv, hd, kv_split, out, lse);
  };
  EXPECT_NO_THROW(attend({2, 0}, {6, 1}, 4));
  EXPECT_THROW(attend({2, 0}, {6, 1}, 0), std::invalid_argument);  // kv_split
  EXPECT_THROW(attend({3, 0}, {1, 1}, 4), std::invalid_argument);  // slot == slots
  EXPECT_THROW(attend({-1, 0}, {1, 1}, 4), std::invalid_argument); // negative slot
  EXPECT_THROW(attend({0, 0}, {0, 1}, 4), std::invalid_argument);  // len 0
  EXPECT_THROW(attend({0, 0}, {7, 1}, 4), std::invalid_argument);  // len > max_seq
  EXPECT_THROW(attend({0}, {1}, 4), std::invalid_argument);        // one index per row
  EXPECT_THROW(attention_decode<float>(space, qkv, ck, cv, make_int_view("mantissa::test::slot", {0, 1}),
                                       make_int_view("mantissa::test::len", {1, 1}), H, Hkv, hd, 4,
                                       View2<float>("mantissa::test::out", R, H * hd + 1), lse),
               std::invalid_argument);  // out shape
  EXPECT_THROW(attention_decode<float>(space, qkv, ck, cv, make_int_view("mantissa::test::slot", {0, 1}),
                                       make_int_view("mantissa::test::len", {1, 1}), H, 3, hd, 4, out, lse),
               std::invalid_argument);  // 4 % 3
}

}  // namespace

// ---- decode_gemm: the rollout engine's default-mode GEMM (decode_gemm.hpp, D1g) ------------------
namespace {

struct GemmRun {
  std::vector<double> got, ref;
};
// y = decode_gemm(x, pack(W), residual) and decode_gemm_reference on the same values.
template <class T>
GemmRun run_decode_gemm(const std::vector<double>& x, const std::vector<double>& w, const std::vector<double>& res,
                        int R, int K, int N) {
  auto X = make_view2<T>("x", x, R, K), W = make_view2<T>("w", w, N, K);
  View2<T> Res = res.empty() ? View2<T>() : make_view2<T>("res", res, R, N);
  View2<T> Y("y", R, N), Yref("yref", R, N);
  DecodeGemmWeights packed;
  decode_gemm_pack<T>(ExecSpace(), W, packed);
  decode_gemm<T>(ExecSpace(), X, packed, Res, Y);
  decode_gemm_reference<T>(X, W, Res, Yref);
  return {to_host(Y), to_host(Yref)};
}

}  // namespace

// Against the double reference: each product exact in fp32 for 16-bit inputs (1 u32 for fp32 ones),
// then K fused multiply-adds (one rounding each) and the residual add: K + 2 fp32 roundings of at
// most u32 (sum|x w| + |res|); then ONE rounding to T: u_T |ref| + eta_T (rounding_tol).
// And bit for bit against decode_gemm_reference (the documented order, std::fmaf per step).
TYPED_TEST(Decode, GemmMatchesReferenceAndItsOrderBitForBit) {
  using T = TypeParam;
  if (!decode_gemm_available()) GTEST_SKIP() << "decode_gemm needs a host build on a CPU with AVX-512F";
  const std::vector<std::array<int, 3>> shapes = {{1, 1, 1}, {5, 70, 33}, {8, 128, 64}, {9, 31, 32}, {19, 133, 70},
                                                  {64, 128, 384}};
  for (const auto& s : shapes)
    for (bool with_res : {false, true}) {
      const int R = s[0], K = s[1], N = s[2];
      SCOPED_TRACE("decode_gemm R" + std::to_string(R) + " K" + std::to_string(K) + " N" + std::to_string(N) +
                   (with_res ? " +res" : ""));
      const auto x = random_values<T>(static_cast<std::size_t>(R) * K, -1.0, 1.0, 500 + K);
      const auto w = random_values<T>(static_cast<std::size_t>(N) * K, -1.0, 1.0, 600 + N);
      const auto res = with_res ? random_values<T>(static_cast<std::size_t>(R) * N, -2.0, 2.0, 700 + R)
                                : std::vector<double>();
      const GemmRun g = run_decode_gemm<T>(x, w, res, R, K, N);
      EXPECT_EQ(count_differences(bits(g.got), bits(g.ref)), 0u) << "not the documented fma order";
      std::vector<double> ref(g.got.size()), tol(g.got.size());
      for (int r = 0; r < R; ++r)
        for (int n = 0; n < N; ++n) {
          double dot = 0, mag = 0;
          for (int k = 0; k < K; ++k) {
            dot += x[r * K + k] * w[n * K + k];
            mag += std::fabs(x[r * K + k] * w[n * K + k]);
          }
          const double rv = with_res ? res[r * N + n] : 0.0;
          const std::size_t e = static_cast<std::size_t>(r) * N + n;
          ref[e] = dot + rv;
          tol[e] = (K + 2) * kU32 * (mag + std::fabs(rv)) * (1 + unit_roundoff<T>()) + rounding_tol<T>(ref[e]);
        }
      expect_close(std::string(precision_traits<T>::name) + " decode_gemm", g.got, ref, tol);
    }
}

// Batch invariance (D3 for the default mode): every row computed alone, or in a call with other
// rows at another position (crossing the 8-row register tiles), gives the bits of the whole call.
// Negative control: the consistent mode's split-K order (linear_decode) gives other fp32 bits.
TYPED_TEST(Decode, GemmIsBatchInvariant) {
  using T = TypeParam;
  if (!decode_gemm_available()) GTEST_SKIP() << "decode_gemm needs a host build on a CPU with AVX-512F";
  const int R = 21, K = 200, N = 70;
  const auto x = random_values<T>(static_cast<std::size_t>(R) * K, -1.0, 1.0, 801);
  const auto w = random_values<T>(static_cast<std::size_t>(N) * K, -1.0, 1.0, 802);
  const auto res = random_values<T>(static_cast<std::size_t>(R) * N, -1.0, 1.0, 803);
  const std::vector<double> whole = run_decode_gemm<T>(x, w, res, R, K, N).got;
  const std::vector<std::vector<int>> sets = {{0}, {7}, {8}, {20}, {3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, {20, 0, 13}};
  for (const auto& set : sets) {
    std::vector<double> xs, rs;
    for (int r : set) {
      xs.insert(xs.end(), x.begin() + static_cast<long>(r) * K, x.begin() + static_cast<long>(r + 1) * K);
      rs.insert(rs.end(), res.begin() + static_cast<long>(r) * N, res.begin() + static_cast<long>(r + 1) * N);
    }
    const std::vector<double> part = run_decode_gemm<T>(xs, w, rs, static_cast<int>(set.size()), K, N).got;
    std::vector<double> expect;
    for (int r : set)
      expect.insert(expect.end(), whole.begin() + static_cast<long>(r) * N, whole.begin() + static_cast<long>(r + 1) * N);
    EXPECT_EQ(count_differences(bits(part), bits(expect)), 0u) << "rows " << set.size() << " first " << set[0];
  }
  if constexpr (std::is_same<T, float>::value) {
    const std::size_t d = count_differences(bits(whole), bits(run_linear<T>(x, w, res, R, K, N, 64)));
    std::printf("  fp32: decode_gemm vs linear_decode (split_k 64) differ in %zu of %zu outputs\n", d, whole.size());
    EXPECT_GT(d, 0u) << "the two orders (D1 vs D1g) not observable";
  }
}

// The fused SwiGLU epilogue (decode_gemm_swiglu) gives the bits of decode_gemm into gu followed by
// swiglu_forward (the rollout engine's unfused default-mode sequence), F crossing the 16-column
// half panels and the 8-row tiles.
TYPED_TEST(Decode, GemmSwigluEqualsGemmThenSwiglu) {
  using T = TypeParam;
  if (!decode_gemm_available()) GTEST_SKIP() << "decode_gemm needs a host build on a CPU with AVX-512F";
  for (const auto& s : std::vector<std::array<int, 3>>{{1, 8, 1}, {9, 70, 37}, {19, 128, 352}}) {
    const int R = s[0], K = s[1], F = s[2];
    SCOPED_TRACE("R" + std::to_string(R) + " K" + std::to_string(K) + " F" + std::to_string(F));
    const auto x = random_values<T>(static_cast<std::size_t>(R) * K, -1.0, 1.0, 900 + F);
    const auto w = random_values<T>(static_cast<std::size_t>(2 * F) * K, -0.5, 0.5, 901 + F);
    auto X = make_view2<T>("x", x, R, K), W = make_view2<T>("wgu", w, 2 * F, K);
    View2<T> gu("gu", R, 2 * F), s_ref("s_ref", R, F), s_fused("s_fused", R, F);
    DecodeGemmWeights plain, fused;
    decode_gemm_pack<T>(ExecSpace(), W, plain);
    decode_gemm<T>(ExecSpace(), X, plain, View2<T>(), gu);
    swiglu_forward<T>(ExecSpace(), gu, s_ref);
    decode_gemm_pack_swiglu<T>(ExecSpace(), W, fused);
    decode_gemm_swiglu<T>(ExecSpace(), X, fused, s_fused);
    EXPECT_EQ(count_differences(bits(to_host(s_fused)), bits(to_host(s_ref))), 0u);
  }
}
