#pragma once
// One transformer block through the ROLLOUT engine's kernels (decode.hpp: linear layers, KV cache,
// flash-decoding attention): the one function that both the rollout engine's layer loop and the
// training engine's consistent-mode forward call, so that in consistent mode log pi == log mu holds
// by construction (the same code on the same rows), not by two copies kept equal by tests.
//
//   h1 = rmsnorm(x_in); qkv = linear(h1, wqkv); rope(qkv, pos); cache[slot, pos] = k, v;
//   att = attention_decode(q, cache[slot, < len]); x_mid = linear(att, wo) + x_in (residual fused);
//   h2 = rmsnorm(x_mid); s = swiglu(linear(h2, wgu)); x_out = linear(s, wd) + x_mid (residual fused)
//
// What differs between the callers is given by the Hooks object (host code, called between the
// kernels): which linear kernel runs (linear_decode's split-K order, or the default mode's GEMM on
// packed weights), the fused gate/up + SwiGLU of that GEMM, and the FP8 rounding of an FP8 rollout
// engine (activations before each linear layer, K/V before the cache). Hooks must provide
//   void linear(int which, const View2<T>& x, const View2<T>& W, const View2<T>& residual, const View2<T>& y);
//     which: 0 wqkv, 1 wo, 2 wgu, 3 wd; residual empty (extent 0) or the residual rows
//   void mlp_up(const View2<T>& h2, const View2<T>& Wgu, const View2<T>& gu, const View2<T>& s);
//   void activations(const View2<T>& x);     // FP8: a linear layer's input; else nothing
//   void kv(const View2<T>& qkv);            // FP8 KV cache: the K and V columns; else nothing
// DecodeBlockLinear below is the plain consistent-mode set (linear_decode, no FP8).
// x_out may be the same rows as x_in (the rollout engine reuses one buffer): x_in is last read by
// the wo projection, before x_out is written.
#include "config/config.hpp"
#include "mantissa/kernels/decode.hpp"
#include "mantissa/kernels/region.hpp"
#include "mantissa/kernels/rmsnorm.hpp"
#include "mantissa/kernels/rope.hpp"
#include "mantissa/kernels/swiglu.hpp"


namespace mantissa::model {

template <class T>
struct DecodeBlockWeights {
  View1<T> attn_norm, mlp_norm;
  View2<T> wqkv, wo, wgu, wd;
};

// The block's rows: activations (R rows each) and the per-row statistics the kernels write.
template <class T>
struct DecodeBlockRows {
  View2<T> x_in, h1, qkv, att, x_mid, h2, gu, s, x_out;
  View1<float> rstd1, rstd2;
  View2<float> lse;
};

// Where each row sits: its cache slot, its position (RoPE and the cache row), and len = pos + 1.
struct DecodeRowIndex {
  ConstView1<int> slot, pos, len;
};

// The block's fixed parameters.
struct DecodeBlockShape {
  int n_head, n_kv_head, head_dim, kv_split;
  float eps, rope_theta;
};
inline DecodeBlockShape decode_block_shape(const config::ModelConfig& m, int kv_split) {
  return DecodeBlockShape{m.n_head, m.n_kv_head, m.head_dim(), kv_split, static_cast<float>(m.norm_eps),
                          static_cast<float>(m.rope_theta)};
}

template <class T, class Hooks>
void decode_block_forward(const ExecSpace& space, const DecodeBlockShape& m, const DecodeBlockWeights<T>& w,
                          const DecodeBlockRows<T>& r, const DecodeRowIndex& at, const View3<T>& cache_k,
                          const View3<T>& cache_v, const RopeTable& rope, DecodeWorkspace& ws, Hooks& hooks) {
  const View2<T> none;
  rmsnorm_forward<T>(space, r.x_in, w.attn_norm, m.eps, r.h1, r.rstd1);
  hooks.activations(r.h1);
  hooks.linear(0, r.h1, w.wqkv, none, r.qkv);
  rope_forward<T>(space, r.qkv, at.pos, m.n_head, m.n_kv_head, m.head_dim, m.rope_theta, rope);
  hooks.kv(r.qkv);
  kv_cache_append<T>(space, r.qkv, at.slot, at.pos, m.n_head, m.n_kv_head, m.head_dim, cache_k, cache_v, ws);
  attention_decode<T>(space, r.qkv, cache_k, cache_v, at.slot, at.len, m.n_head, m.n_kv_head, m.head_dim, m.kv_split,
                      r.att, r.lse, ws);
  hooks.activations(r.att);
  hooks.linear(1, r.att, w.wo, r.x_in, r.x_mid);  // residual fused (D2)
  rmsnorm_forward<T>(space, r.x_mid, w.mlp_norm, m.eps, r.h2, r.rstd2);
  hooks.activations(r.h2);
  hooks.mlp_up(r.h2, w.wgu, r.gu, r.s);
  hooks.activations(r.s);
  hooks.linear(3, r.s, w.wd, r.x_mid, r.x_out);  // residual fused (D2)
}

// Consistent mode's hooks: every linear layer through linear_decode's split-K kernel, no FP8.
template <class T>
struct DecodeBlockLinear {
  ExecSpace space;
  int split_k;
  void linear(int, const View2<T>& x, const View2<T>& W, const View2<T>& residual, const View2<T>& y) {
    linear_decode<T>(space, x, W, residual, y, split_k);
  }
  void mlp_up(const View2<T>& h2, const View2<T>& Wgu, const View2<T>& gu, const View2<T>& s) {
    linear_decode<T>(space, h2, Wgu, View2<T>(), gu, split_k);
    swiglu_forward<T>(space, gu, s);
  }
  void activations(const View2<T>&) {}
  void kv(const View2<T>&) {}
};

}  // namespace mantissa::model
