#pragma once
// Double-precision reference of causal grouped-query attention over packed sequences (the
// layout of mantissa/kernels/attention.hpp), written plainly, plus first-order roundoff bounds
// for a kernel that follows the training engine's rounding points F1-F6 / B1-B6 documented in
// attention.hpp. Host code only; reusable by the decode-attention tests.
//
// Error model. A value rounded to T gets |error| <= u_T |x| + eta_T (eta_T = half the spacing of
// T's subnormals, e.g. 2^-25 for fp16); every fp32 operation costs u32 = 2^-24 relative; an fp32
// sum of n terms costs n u32 times the sum of the terms' magnitudes (gamma_n). The bounds below
// are first order in these; the tests allow twice the bound for the second-order remainder.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "mantissa/kernels/precision.hpp"

namespace mantissa::test {

struct AttnShape {
  std::vector<int> offsets;  // S+1, offsets[0] = 0
  int n_head = 1, n_kv_head = 1, head_dim = 1;
  int n() const { return offsets.back(); }
  int width() const { return (n_head + 2 * n_kv_head) * head_dim; }
  int qcols() const { return n_head * head_dim; }
  int group() const { return n_head / n_kv_head; }
  double scale() const { return 1.0 / std::sqrt(static_cast<double>(head_dim)); }
  int k_col(int c) const { return n_head * head_dim + c * head_dim; }
  int v_col(int c) const { return (n_head + n_kv_head) * head_dim + c * head_dim; }
  // [start, end) of the sequence that holds token i
  void seq_of(int i, int& start, int& end) const {
    for (std::size_t s = 0; s + 1 < offsets.size(); ++s)
      if (offsets[s] <= i && i < offsets[s + 1]) {
        start = offsets[s];
        end = offsets[s + 1];
        return;
      }
    start = end = -1;
  }
};

inline AttnShape make_shape(const std::vector<int>& lengths, int n_head, int n_kv_head, int head_dim) {
  AttnShape sh;
  sh.offsets = {0};
  for (int len : lengths) sh.offsets.push_back(sh.offsets.back() + len);
  sh.n_head = n_head;
  sh.n_kv_head = n_kv_head;
  sh.head_dim = head_dim;
  return sh;
}

struct Roundoff {
  double u = 0.0;    // unit roundoff of the storage type
  double eta = 0.0;  // absolute rounding error floor (subnormals) of the storage type
};
template <class T>
Roundoff roundoff_of() {
  return {precision_traits<T>::unit_roundoff, precision_traits<T>::min_normal * precision_traits<T>::unit_roundoff};
}
constexpr double u32 = 5.9604644775390625e-08;  // 2^-24: fp32 arithmetic

// One softmax row (query i, head h) in double, with the magnitudes the bounds need.
struct RefRow {
  int start = 0, len = 0;
  std::vector<double> s, sabs, p;  // scaled scores, scale * sum_d |q_d k_d|, probabilities
  double m = 0, l = 0, lse = 0;    // max, sum exp(s - m), logsumexp
  double es = 0;                   // bound on |fp32 score - s| (F2): fp32 dot of hd terms, scale multiply
  double rel_e = 0;                // bound on the relative error of the fp32 e_ij = exp(s_ij - m_i) (F3)
  double lse_bound = 0;            // bound on |fp32 lse - lse| (F6)
};

inline RefRow ref_row(const AttnShape& sh, const std::vector<double>& qkv, int i, int h) {
  RefRow r;
  int end = 0;
  sh.seq_of(i, r.start, end);
  r.len = i - r.start + 1;
  const int hd = sh.head_dim, W = sh.width(), kc = sh.k_col(h / sh.group());
  r.s.resize(r.len);
  r.sabs.resize(r.len);
  r.p.resize(r.len);
  double sabs_max = 0;
  for (int t = 0; t < r.len; ++t) {
    const int j = r.start + t;
    double dot = 0, dabs = 0;
    for (int d = 0; d < hd; ++d) {
      const double a = qkv[i * W + h * hd + d], b = qkv[j * W + kc + d];
      dot += a * b;
      dabs += std::fabs(a * b);
    }
    r.s[t] = dot * sh.scale();
    r.sabs[t] = dabs * sh.scale();
    sabs_max = std::max(sabs_max, r.sabs[t]);
  }
  r.m = *std::max_element(r.s.begin(), r.s.end());
  double spread = 0;
  for (int t = 0; t < r.len; ++t) {
    r.l += std::exp(r.s[t] - r.m);
    spread = std::max(spread, r.m - r.s[t]);
  }
  r.lse = r.m + std::log(r.l);
  for (int t = 0; t < r.len; ++t) r.p[t] = std::exp(r.s[t] - r.lse);
  // fp32 dot of hd terms (gamma_hd), times fp32 scale (+1 u32) which is itself rounded (+1 u32)
  r.es = (hd + 2) * u32 * sabs_max;
  // argument s - m: both scores perturbed (2 es), the subtraction (u32 |s - m|); exp itself ~2 ulp
  r.rel_e = 2 * r.es + u32 * (spread + 3);
  // lse = m + log(l): |dm| <= es, |dl|/l <= rel_e + L u32 (sum of L terms), + log and add roundings
  r.lse_bound = r.es + r.rel_e + (r.len + 2) * u32 + u32 * (std::fabs(r.lse) + std::fabs(std::log(r.l)));
  return r;
}

struct RefForward {
  std::vector<double> out, lse;              // (N, H*hd), (N, H)
  std::vector<double> out_bound, lse_bound;  // first-order error bounds of a kernel with roundoff `ro`
};

// out = softmax(q k^T scale, causal within each sequence) v, lse = logsumexp of the scaled scores.
inline RefForward ref_attention_forward(const AttnShape& sh, const std::vector<double>& qkv, Roundoff ro = {}) {
  const int N = sh.n(), H = sh.n_head, hd = sh.head_dim, W = sh.width();
  RefForward f;
  f.out.assign(static_cast<std::size_t>(N) * H * hd, 0.0);
  f.out_bound = f.out;
  f.lse.assign(static_cast<std::size_t>(N) * H, 0.0);
  f.lse_bound = f.lse;
  for (int i = 0; i < N; ++i)
    for (int h = 0; h < H; ++h) {
      const RefRow r = ref_row(sh, qkv, i, h);
      const int vc = sh.v_col(h / sh.group());
      f.lse[i * H + h] = r.lse;
      f.lse_bound[i * H + h] = r.lse_bound;
      for (int d = 0; d < hd; ++d) {
        double o = 0, pv = 0, vsum = 0;
        for (int t = 0; t < r.len; ++t) {
          const double v = qkv[(r.start + t) * W + vc + d];
          o += r.p[t] * v;
          pv += r.p[t] * std::fabs(v);
          vsum += std::fabs(v);
        }
        f.out[(i * H + h) * hd + d] = o;
        // F4: each e_ij rounded to T (u_T relative + eta absolute, divided by l); e_ij carries
        // rel_e, l carries rel_e + L u32; the fp32 P V sum L u32; 1/l and the product 2 u32;
        // F5: the final rounding u_T |out| + eta.
        f.out_bound[(i * H + h) * hd + d] = (ro.u + 2 * r.rel_e + (2 * r.len + 3) * u32) * pv + ro.eta * vsum / r.l +
                                            ro.u * std::fabs(o) + ro.eta;
      }
    }
  return f;
}

struct RefBackward {
  std::vector<double> dqkv;        // (N, (H+2Hkv)hd)
  std::vector<double> dqkv_bound;  // first-order error bounds of a kernel with roundoff `ro`
};

// Gradient of sum(dout * out) with respect to qkv, where `out` is the given forward output (it
// enters through D_i = dout_i . out_i, exactly as in the kernel; pass the exact forward output to
// get the true gradient).
inline RefBackward ref_attention_backward(const AttnShape& sh, const std::vector<double>& qkv,
                                          const std::vector<double>& out, const std::vector<double>& dout,
                                          Roundoff ro = {}) {
  const int N = sh.n(), H = sh.n_head, hd = sh.head_dim, W = sh.width(), HD = sh.qcols();
  const double scale = sh.scale();
  RefBackward b;
  b.dqkv.assign(static_cast<std::size_t>(N) * W, 0.0);
  b.dqkv_bound = b.dqkv;
  std::vector<double> kv_abs(b.dqkv.size(), 0.0);  // sum of |terms| of dk, dv (for gamma_n)
  for (int i = 0; i < N; ++i)
    for (int h = 0; h < H; ++h) {
      const RefRow r = ref_row(sh, qkv, i, h);
      const int c = h / sh.group(), kc = sh.k_col(c), vc = sh.v_col(c);
      const double* q = &qkv[i * W + h * hd];
      const double* go = &dout[i * HD + h * hd];
      double D = 0, Dabs = 0;
      for (int d = 0; d < hd; ++d) {
        D += go[d] * out[i * HD + h * hd + d];
        Dabs += std::fabs(go[d] * out[i * HD + h * hd + d]);
      }
      // B1: the fp32 P = exp(s - lse) with both s and the saved lse perturbed, the subtraction, exp
      double spread = 0;
      for (int t = 0; t < r.len; ++t) spread = std::max(spread, std::fabs(r.s[t] - r.lse));
      const double rel_p = r.es + r.lse_bound + u32 * (spread + 3);
      std::vector<double> dq(hd, 0.0), dq_b(hd, 0.0);
      for (int t = 0; t < r.len; ++t) {
        const int j = r.start + t;
        const double* k = &qkv[j * W + kc];
        const double* v = &qkv[j * W + vc];
        double dP = 0, dPabs = 0;
        for (int d = 0; d < hd; ++d) {
          dP += go[d] * v[d];
          dPabs += std::fabs(go[d] * v[d]);
        }
        const double P = r.p[t], dS = P * (dP - D);
        // B3: dS = round_T(P (dP - D)): the rounding (u_T, eta), P's relative error, the fp32 dots
        // dP and D of hd terms each, the subtraction and the product.
        const double e_dS = (ro.u + rel_p + 2 * u32) * std::fabs(dS) + P * hd * u32 * (dPabs + Dabs) + ro.eta;
        // B6: round_T(P) costs u_T P + eta on top of P's own error.
        const double e_P = (ro.u + rel_p) * P + ro.eta;
        for (int d = 0; d < hd; ++d) {
          dq[d] += scale * dS * k[d];
          dq_b[d] += scale * (e_dS + (r.len + 1) * u32 * std::fabs(dS)) * std::fabs(k[d]);  // B4: gamma_L, scale
          b.dqkv[j * W + kc + d] += scale * dS * q[d];
          b.dqkv_bound[j * W + kc + d] += scale * e_dS * std::fabs(q[d]);
          kv_abs[j * W + kc + d] += scale * std::fabs(dS * q[d]);
          b.dqkv[j * W + vc + d] += P * go[d];
          b.dqkv_bound[j * W + vc + d] += e_P * std::fabs(go[d]);
          kv_abs[j * W + vc + d] += P * std::fabs(go[d]);
        }
      }
      for (int d = 0; d < hd; ++d) {
        b.dqkv[i * W + h * hd + d] = dq[d];
        b.dqkv_bound[i * W + h * hd + d] = dq_b[d] + ro.u * std::fabs(dq[d]) + ro.eta;  // one rounding to T
      }
    }
  // B5, B6: dk_j, dv_j are fp32 sums over group * (end - j) terms (+1 for the scale), then one rounding.
  for (int j = 0; j < N; ++j) {
    int start = 0, end = 0;
    sh.seq_of(j, start, end);
    const double n_terms = static_cast<double>(sh.group()) * (end - j) + 1;
    for (int c = 0; c < sh.n_kv_head; ++c)
      for (int col : {sh.k_col(c), sh.v_col(c)})
        for (int d = 0; d < hd; ++d) {
          const std::size_t e = static_cast<std::size_t>(j) * W + col + d;
          b.dqkv_bound[e] += n_terms * u32 * kv_abs[e] + ro.u * std::fabs(b.dqkv[e]) + ro.eta;
        }
  }
  return b;
}

}  // namespace mantissa::test
