#pragma once
// Host-side helpers of the decode-kernel tests (mantissa/kernels/decode.hpp): a decode problem
// (a KV cache, query rows with their slot and len), its double-precision reference with
// first-order roundoff bounds for the rounding points D4-D8, and host emulations of the
// documented operation orders in plain float (for the bit-for-bit checks on host backends).
//
// Error model (as attention_test_util.hpp): a value rounded to T gets |error| <= u_T |x| + eta_T;
// every fp32 operation costs u32 = 2^-24 relative; a chain of n fp32 additions costs n u32 times
// the sum of the terms' magnitudes. Bounds are first order; the tests allow twice the bound.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "attention_test_util.hpp"
#include "mantissa/kernels/attention.hpp"
#include "mantissa/kernels/precision.hpp"

namespace mantissa::test {

// A KV cache [slots, max_seq, Hkv*hd] and query rows, all as doubles holding values of T.
struct DecodeProblem {
  int slots = 1, max_seq = 1, n_head = 1, n_kv_head = 1, head_dim = 1;
  std::vector<double> cache_k, cache_v;  // slots * max_seq * kv_cols()
  std::vector<double> qkv;               // rows() * width(); the q part is what attention_decode reads
  std::vector<int> slot, len;            // rows()
  int rows() const { return static_cast<int>(slot.size()); }
  int width() const { return (n_head + 2 * n_kv_head) * head_dim; }
  int qcols() const { return n_head * head_dim; }
  int kv_cols() const { return n_kv_head * head_dim; }
  int group() const { return n_head / n_kv_head; }
  double k(int s, int p, int col) const { return cache_k[(static_cast<std::size_t>(s) * max_seq + p) * kv_cols() + col]; }
  double v(int s, int p, int col) const { return cache_v[(static_cast<std::size_t>(s) * max_seq + p) * kv_cols() + col]; }
  double q(int r, int col) const { return qkv[static_cast<std::size_t>(r) * width() + col]; }
};

struct DecodeRef {
  std::vector<double> out, lse;              // (R, H*hd), (R, H)
  std::vector<double> out_bound, lse_bound;  // first-order error bounds (D4-D8) for roundoff `ro`
};

// Exact attention of every row over its slot's positions [0, len), and the bounds of a kernel
// that follows D4-D8 with chunks of kv_split positions.
inline DecodeRef ref_attention_decode(const DecodeProblem& pb, int kv_split, Roundoff ro) {
  const int R = pb.rows(), H = pb.n_head, hd = pb.head_dim;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  DecodeRef f;
  f.out.assign(static_cast<std::size_t>(R) * H * hd, 0.0);
  f.out_bound = f.out;
  f.lse.assign(static_cast<std::size_t>(R) * H, 0.0);
  f.lse_bound = f.lse;
  for (int r = 0; r < R; ++r)
    for (int h = 0; h < H; ++h) {
      const int s = pb.slot[r], L = pb.len[r], kc = (h / pb.group()) * hd;
      std::vector<double> sc(L);
      double sabs_max = 0;
      for (int j = 0; j < L; ++j) {
        double dot = 0, dabs = 0;
        for (int d = 0; d < hd; ++d) {
          dot += pb.q(r, h * hd + d) * pb.k(s, j, kc + d);
          dabs += std::fabs(pb.q(r, h * hd + d) * pb.k(s, j, kc + d));
        }
        sc[j] = dot * scale;
        sabs_max = std::max(sabs_max, dabs * scale);
      }
      const double m = *std::max_element(sc.begin(), sc.end());
      double l = 0, spread = 0;
      for (int j = 0; j < L; ++j) {
        l += std::exp(sc[j] - m);
        spread = std::max(spread, m - sc[j]);
      }
      const double lse = m + std::log(l);
      const int chunks = (L + kv_split - 1) / kv_split;
      // Scores: fp32 dot of hd terms and the scale (F2): (hd + 2) u32 scale sum|q k|.
      const double es = (hd + 2) * u32 * sabs_max;
      // Relative error of a term e_j w_c = exp(s_j - m_c) exp(m_c - m): the score error twice
      // (numerator and denominator do not cancel it), the two subtractions u32 |argument| (each
      // argument <= spread), the two fp32 exps (<= 2 ulp each) and their product.
      const double rel_e = 2 * es + u32 * (2 * spread + 6);
      f.lse[r * H + h] = lse;
      // lse = m + log(l): m carries es, l the term errors and L + C + 2 fp32 additions/products;
      // the log and the final add one u32 each.
      f.lse_bound[r * H + h] =
          es + rel_e + (L + chunks + 4) * u32 + u32 * (std::fabs(lse) + std::fabs(std::log(l)));
      for (int d = 0; d < hd; ++d) {
        double o = 0, pv = 0;
        for (int j = 0; j < L; ++j) {
          const double p = std::exp(sc[j] - lse), v = pb.v(s, j, kc + d);
          o += p * v;
          pv += p * std::fabs(v);
        }
        f.out[(static_cast<std::size_t>(r) * H + h) * hd + d] = o;
        // numerator and denominator: term errors rel_e each; the fp32 sums within a chunk (<= L),
        // the products e v and o_c w, the sums over chunks (C) and the division: (2L + 2C + 8) u32;
        // then D7's one rounding to T.
        f.out_bound[(static_cast<std::size_t>(r) * H + h) * hd + d] =
            (2 * rel_e + (2 * L + 2 * chunks + 8) * u32) * pv + ro.u * std::fabs(o) + ro.eta;
      }
    }
  return f;
}

// The 8-lane dot product of D1/D4 (attention_dot), in plain float.
inline float emulate_dot8(const float* a, const float* b, int n) {
  float lane[8] = {};
  for (int d = 0; d < n; ++d) lane[d % 8] += a[d] * b[d];
  return ((lane[0] + lane[4]) + (lane[2] + lane[6])) + ((lane[1] + lane[5]) + (lane[3] + lane[7]));
}

// linear_decode in the documented order D1, D2, in plain float; returns the float value of every
// output. fused = false rounds like the training engine instead: round_T(round_T(x W^T) + res).
template <class T>
std::vector<float> emulate_linear(const std::vector<double>& x, const std::vector<double>& w,
                                  const std::vector<double>& res, int R, int K, int N, int split_k, bool fused = true) {
  const std::vector<float> xf(x.begin(), x.end()), wf(w.begin(), w.end());
  std::vector<float> y(static_cast<std::size_t>(R) * N);
  for (int r = 0; r < R; ++r)
    for (int n = 0; n < N; ++n) {
      float acc = 0.0f;
      for (int c0 = 0; c0 < K; c0 += split_k) {
        const int c1 = std::min(K, c0 + split_k);
        acc += emulate_dot8(&xf[static_cast<std::size_t>(r) * K + c0], &wf[static_cast<std::size_t>(n) * K + c0],
                            c1 - c0);
      }
      float out = round_to<T>(acc);
      if (!res.empty()) {
        const float rv = static_cast<float>(res[static_cast<std::size_t>(r) * N + n]);
        out = fused ? round_to<T>(acc + rv) : round_to<T>(round_to<T>(acc) + rv);
      }
      y[static_cast<std::size_t>(r) * N + n] = out;
    }
  return y;
}

// Switches of the attention emulation, to show each documented difference is observable.
struct DecodeVariant {
  bool round_p = false;     // round e_j to T before it multiplies V (the training engine's F4)
  bool reciprocal = false;  // out = o * (1/l) (the training engine's F5) instead of o / l (D7)
};

// attention_decode in the documented order D4-D8, in plain float: out (R, H*hd), lse (R, H).
template <class T>
void emulate_attention_decode(const DecodeProblem& pb, int kv_split, DecodeVariant var, std::vector<float>& out,
                              std::vector<float>& lse) {
  const int R = pb.rows(), H = pb.n_head, hd = pb.head_dim;
  const float scale = attention_scale(hd);
  out.assign(static_cast<std::size_t>(R) * H * hd, 0.0f);
  lse.assign(static_cast<std::size_t>(R) * H, 0.0f);
  for (int r = 0; r < R; ++r)
    for (int h = 0; h < H; ++h) {
      const int s = pb.slot[r], L = pb.len[r], kc = (h / pb.group()) * hd;
      std::vector<float> q(hd), kj(hd), sc(L);
      for (int d = 0; d < hd; ++d) q[d] = static_cast<float>(pb.q(r, h * hd + d));
      for (int j = 0; j < L; ++j) {
        for (int d = 0; d < hd; ++d) kj[d] = static_cast<float>(pb.k(s, j, kc + d));
        sc[j] = emulate_dot8(q.data(), kj.data(), hd) * scale;
      }
      const float m = *std::max_element(sc.begin(), sc.end());
      std::vector<float> o(hd, 0.0f), oc(hd);
      float l = 0.0f;
      for (int c0 = 0; c0 < L; c0 += kv_split) {
        const int c1 = std::min(L, c0 + kv_split);
        const float mc = *std::max_element(sc.begin() + c0, sc.begin() + c1);
        float lc = 0.0f;
        std::fill(oc.begin(), oc.end(), 0.0f);
        for (int j = c0; j < c1; ++j) {
          const float e = exp_fp32(sc[j] - mc);
          lc += e;
          const float p = var.round_p ? round_to<T>(e) : e;
          for (int d = 0; d < hd; ++d) oc[d] += p * static_cast<float>(pb.v(s, j, kc + d));
        }
        const float wgt = exp_fp32(mc - m);
        l += lc * wgt;
        for (int d = 0; d < hd; ++d) o[d] += oc[d] * wgt;
      }
      const float inv_l = 1.0f / l;
      for (int d = 0; d < hd; ++d)
        out[(static_cast<std::size_t>(r) * H + h) * hd + d] = round_to<T>(var.reciprocal ? o[d] * inv_l : o[d] / l);
      lse[static_cast<std::size_t>(r) * H + h] = m + std::log(l);
    }
}

}  // namespace mantissa::test
