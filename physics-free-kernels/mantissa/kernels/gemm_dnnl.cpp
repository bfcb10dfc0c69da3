// gemm's oneDNN route and the host route selection (gemm.hpp, "Routes"). oneDNN's header is
// included here and nowhere else: gemm.hpp and gemm_dnnl.hpp stay free of it, and builds without
// oneDNN (MANTISSA_HAVE_ONEDNN undefined: no libdnnl-dev, or a device build) compile the stubs
// at the end, which always choose the BLAS.
#include "mantissa/kernels/gemm_dnnl.hpp"

#include <cstdlib>
#include <cstring>
#include <map>
#include <stdexcept>
#include <string>

#if defined(MANTISSA_HAVE_ONEDNN)
#include <dlfcn.h>

#include <cstdint>
#include <oneapi/dnnl/dnnl.hpp>
#include <tuple>
#endif

namespace mantissa {
namespace gemm_detail {
namespace {

GemmRoute route_from_env() {
  const char* e = std::getenv("MANTISSA_GEMM_ROUTE");
  if (e == nullptr || *e == '\0' || std::strcmp(e, "auto") == 0) return GemmRoute::automatic;
  if (std::strcmp(e, "blas") == 0) return GemmRoute::blas;
  if (std::strcmp(e, "onednn_fp32") == 0) return GemmRoute::onednn_fp32;
  if (std::strcmp(e, "onednn_native") == 0) return GemmRoute::onednn_native;
  throw std::invalid_argument(std::string("MANTISSA_GEMM_ROUTE must be auto, blas, onednn_fp32 or onednn_native, got '") +
                              e + "'");
}
GemmRoute& route_setting() {
  static GemmRoute r = route_from_env();
  return r;
}
std::string& last_implementation() {
  static std::string s = "none";
  return s;
}
std::map<std::string, long long>& implementation_counts() {
  static std::map<std::string, long long> m;
  return m;
}
void note(const std::string& what) {
  last_implementation() = what;
  ++implementation_counts()[what];
}

}  // namespace

void note_blas_route(const char* what) { note(what); }

}  // namespace gemm_detail

void set_gemm_route(GemmRoute r) { gemm_detail::route_setting() = r; }
GemmRoute gemm_route() { return gemm_detail::route_setting(); }
const char* gemm_last_implementation() { return gemm_detail::last_implementation().c_str(); }
std::string gemm_implementations_used() {
  std::string s;
  for (const auto& [what, n] : gemm_detail::implementation_counts())
    s += (s.empty() ? "" : "; ") + what + ": " + std::to_string(n) + " calls";
  return s.empty() ? "none" : s;
}
const char* gemm_route_name(GemmRoute r) {
  switch (r) {
    case GemmRoute::automatic: return "auto";
    case GemmRoute::blas: return "blas";
    case GemmRoute::onednn_fp32: return "onednn_fp32";
    case GemmRoute::onednn_native: return "onednn_native";
  }
  return "?";
}

#if defined(MANTISSA_HAVE_ONEDNN)
namespace gemm_detail {
namespace {

using dnnl::memory;

dnnl::engine& cpu_engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}
dnnl::stream& cpu_stream() {
  static dnnl::stream s(cpu_engine());
  return s;
}

memory::data_type dnnl_type(Dt t) {
  return t == Dt::f32 ? memory::data_type::f32 : t == Dt::bf16 ? memory::data_type::bf16 : memory::data_type::f16;
}
memory::desc matrix_desc(std::size_t rows, std::size_t cols, std::size_t ld, bool trans, Dt dt) {
  const auto r = static_cast<memory::dim>(rows), c = static_cast<memory::dim>(cols);
  const auto l = static_cast<memory::dim>(ld > 0 ? ld : 1);
  return memory::desc({r, c}, dnnl_type(dt), trans ? memory::dims{1, l} : memory::dims{l, 1});
}

// oneDNN's OpenMP threads follow the execution space (Kokkos Serial: 1, as one rank uses one
// core). Debian's libdnnl uses the OpenMP runtime, which has no oneDNN call for this; libgomp is
// loaded with libdnnl, so omp_set_num_threads is looked up rather than linked (no -fopenmp here).
void set_threads(int threads) {
  static int current = -1;
  if (threads == current || threads < 1) return;
  using fn = void (*)(int);
  static fn set = reinterpret_cast<fn>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"));
  if (set != nullptr) set(threads);
  current = threads;
}

// The primitives, one per problem (shapes, strides, types, alpha, beta): oneDNN's own cache keeps
// primitives but not the primitive descriptors, whose creation costs ~0.1 ms (measured) per call.
using Key = std::tuple<std::size_t, std::size_t, std::size_t, std::size_t, std::size_t, std::size_t, int, int, int,
                       int, int, std::uint32_t, std::uint32_t>;
struct Entry {
  dnnl::matmul prim;
  memory::desc a, b, c;
  std::string impl;
  bool ok = false;
};
std::map<Key, Entry>& primitives() {
  static std::map<Key, Entry> m;
  return m;
}
std::uint32_t float_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

Entry make_entry(std::size_t m, std::size_t n, std::size_t k, float alpha, const DnnlMatrix& a, const DnnlMatrix& b,
                 float beta, Dt dtc, std::size_t ldc) {
  Entry e;
  e.a = matrix_desc(m, k, a.ld, a.trans, a.dt);
  e.b = matrix_desc(k, n, b.ld, b.trans, b.dt);
  e.c = matrix_desc(m, n, ldc, false, dtc);
  dnnl::primitive_attr attr;
  if (alpha != 1.0f) attr.set_output_scales(0, {alpha});  // dst = alpha acc (+ beta dst), in fp32
  if (beta != 0.0f) {
    dnnl::post_ops po;
    po.append_sum(beta);
    attr.set_post_ops(po);
  }
  try {
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(e.a, e.b, e.c), attr, cpu_engine());
    e.impl = "onednn " + std::to_string(dnnl_version()->major) + "." + std::to_string(dnnl_version()->minor) + "." +
             std::to_string(dnnl_version()->patch) + " " + pd.impl_info_str();
    // A reference implementation (scalar loops) would be far slower than the BLAS: not taken.
    if (std::string(pd.impl_info_str()).rfind("ref", 0) == 0) return e;
    e.prim = dnnl::matmul(pd);
    e.ok = true;
  } catch (const dnnl::error&) {
    e.ok = false;  // no implementation for these types on this CPU
  }
  return e;
}

// oneDNN's brgemm kernels (and this route) need AVX-512 (avx512_core: F, CD, BW, DQ, VL); on older
// CPUs the BLAS stays.
bool onednn_usable() {
  static const bool ok = [] {
    __builtin_cpu_init();
    if (!(__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
          __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")))
      return false;
    try {
      (void)cpu_engine();
      return dnnl::get_effective_cpu_isa() >= dnnl::cpu_isa::avx512_core;
    } catch (const dnnl::error&) {
      return false;
    }
  }();
  return ok;
}

// Whether oneDNN has a non-reference matmul on 16-bit inputs of type t with fp32 accumulation on
// this CPU (bf16: AVX512-BF16 vdpbf16ps or AMX; fp16: none in oneDNN 2.6, which has no AVX512-FP16
// matmul, later versions do), probed once with a small problem.
bool onednn_native_available(Dt t) {
  if (t == Dt::f32 || !onednn_usable()) return false;
  static int cached[3] = {-1, -1, -1};
  int& c = cached[static_cast<int>(t)];
  if (c < 0) {
    const DnnlMatrix a{nullptr, t, 64, 64, 64, false}, b{nullptr, t, 64, 64, 64, true};
    c = make_entry(64, 64, 64, 1.0f, a, b, 0.0f, t, 64).ok ? 1 : 0;
  }
  return c == 1;
}

// The CPU has AMX tiles for bf16 (and the OS granted them to oneDNN).
bool onednn_has_amx() {
  static const bool ok = [] {
    try {
      return dnnl::get_effective_cpu_isa() >= dnnl::cpu_isa::avx512_core_amx;
    } catch (const dnnl::error&) {
      return false;
    }
  }();
  return ok;
}

}  // namespace

GemmRoute resolve_host_route(Dt a) {
  if (!onednn_usable()) return GemmRoute::blas;
  const GemmRoute want = route_setting();
  const bool native = onednn_native_available(a);
  if (want == GemmRoute::blas || want == GemmRoute::onednn_fp32) return want;
  if (want == GemmRoute::onednn_native && native) return want;
  // automatic (or native where there is none): fp32 operands go to oneDNN's fp32 kernels; 16-bit
  // ones to the native kernels where they beat widening + fp32: with AMX. Without AMX (AVX512-BF16
  // only), vdpbf16ps does 32 multiply-adds per instruction on one port where two FMA ports do
  // 2 x 16, and oneDNN 2.6's bf16 brgemm measured slower than widening + its fp32 brgemm on the
  // training shapes here (docs/results.md), so widening stays.
  if (a != Dt::f32 && native && onednn_has_amx()) return GemmRoute::onednn_native;
  return GemmRoute::onednn_fp32;
}

bool onednn_matmul(std::size_t m, std::size_t n, std::size_t k, float alpha, const DnnlMatrix& a, const DnnlMatrix& b,
                   float beta, void* c, Dt dtc, std::size_t ldc, int threads, const char* widened) {
  const Key key{m,
                n,
                k,
                a.ld,
                b.ld,
                ldc,
                static_cast<int>(a.trans),
                static_cast<int>(b.trans),
                static_cast<int>(a.dt),
                static_cast<int>(b.dt),
                static_cast<int>(dtc),
                float_bits(alpha),
                float_bits(beta)};
  auto& cache = primitives();
  auto it = cache.find(key);
  if (it == cache.end()) {
    if (cache.size() >= 512) cache.clear();  // bounded; a model has a few dozen shapes
    it = cache.emplace(key, make_entry(m, n, k, alpha, a, b, beta, dtc, ldc)).first;
  }
  Entry& e = it->second;
  if (!e.ok) return false;
  set_threads(threads);
  memory ma(e.a, cpu_engine(), const_cast<void*>(a.data));
  memory mb(e.b, cpu_engine(), const_cast<void*>(b.data));
  memory mc(e.c, cpu_engine(), c);
  e.prim.execute(cpu_stream(), {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}});
  cpu_stream().wait();
  note(e.impl + widened);
  return true;
}

}  // namespace gemm_detail

bool gemm_route_available(GemmRoute r, Precision p) {
  using namespace gemm_detail;
  const Dt t = p == Precision::fp32 ? Dt::f32 : p == Precision::bf16 ? Dt::bf16 : Dt::f16;
  switch (r) {
    case GemmRoute::automatic:
    case GemmRoute::blas: return true;
    case GemmRoute::onednn_fp32: return onednn_usable();
    case GemmRoute::onednn_native: return onednn_native_available(t);
  }
  return false;
}

#else  // no oneDNN in this build: the BLAS (or cuBLAS) always

namespace gemm_detail {
GemmRoute resolve_host_route(Dt) { return GemmRoute::blas; }
bool onednn_matmul(std::size_t, std::size_t, std::size_t, float, const DnnlMatrix&, const DnnlMatrix&, float, void*, Dt,
                   std::size_t, int, const char*) {
  return false;
}
}  // namespace gemm_detail

bool gemm_route_available(GemmRoute r, Precision) { return r == GemmRoute::automatic || r == GemmRoute::blas; }

#endif

}  // namespace mantissa
