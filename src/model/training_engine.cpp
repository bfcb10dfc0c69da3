#include "model/training_engine.hpp"

#include <cmath>
#include <vector>

#include "mantissa/kernels/attention.hpp"
#include "mantissa/kernels/convert.hpp"
#include "mantissa/kernels/decode.hpp"
#include "mantissa/kernels/sampling.hpp"
#include "mantissa/kernels/elementwise.hpp"
#include "mantissa/kernels/embedding.hpp"
#include "mantissa/kernels/gemm.hpp"
#include "mantissa/kernels/logsoftmax.hpp"
#include "mantissa/kernels/region.hpp"
#include "mantissa/kernels/rmsnorm.hpp"
#include "mantissa/kernels/rope.hpp"
#include "mantissa/kernels/swiglu.hpp"
#include "mantissa/kernels/team.hpp"
#include "model/decode_block.hpp"
#include "model/workspace.hpp"

namespace mantissa::model {

// Named, not anonymous: CUDA's extended (KOKKOS_LAMBDA) lambdas need enclosing functions with linkage.
namespace training_engine_detail {

template <class T>
struct LayerActs {  // what the backward needs, per layer
  Rows<T> x_in, h1, qkv, att, x_mid, h2, gu, s;
  Rows<float> rstd1, rstd2, lse;
};

template <class T>
class Engine final : public TrainingEngine {
 public:
  Engine(const config::ModelConfig& cfg, const ParamTable& table)
      : cfg_(cfg), table_(table), acts_(cfg.n_layer),
        w_(Kokkos::view_alloc("mantissa::model::weights", Kokkos::WithoutInitializing), table.total()),
        rope_(rope_table(ExecSpace(), cfg.max_seq, cfg.head_dim(), static_cast<float>(cfg.rope_theta))) {}

  Precision precision() const override { return precision_traits<T>::precision; }

  void load_weights(const ConstView1<float>& master) override {
    convert<float, T>(space_, master, w_);
  }

  void set_temperature(float t) override { head_alpha_ = t > 0.0f ? 1.0f / t : 1.0f; }
  void set_consistent(bool on, int split_k, int kv_split) override {
    consistent_ = on, split_k_ = split_k, kv_split_ = kv_split;
  }

  std::vector<float> log_softmax_rows(const std::vector<int>& rows) const override {
    const std::size_t V = cfg_.vocab;
    auto h = Kokkos::create_mirror_view_and_copy(HostSpace(), logits_.view(n_, V));
    std::vector<float> out;
    out.reserve(rows.size() * V);
    for (int r : rows) {
      double m = -INFINITY, s = 0.0;
      for (std::size_t v = 0; v < V; ++v) m = std::max(m, static_cast<double>(to_float(h(r, v))));
      for (std::size_t v = 0; v < V; ++v) s += std::exp(static_cast<double>(to_float(h(r, v))) - m);
      const double lse = m + std::log(s);
      for (std::size_t v = 0; v < V; ++v) out.push_back(static_cast<float>(to_float(h(r, v)) - lse));
    }
    return out;
  }

  std::vector<float> hidden_after_layer(int layer) const override {
    const std::size_t D = cfg_.d_model;
    const auto& rows = layer + 1 < cfg_.n_layer ? acts_[layer + 1].x_in : x_last_;
    auto h = Kokkos::create_mirror_view_and_copy(HostSpace(), rows.view(n_, D));
    std::vector<float> out(n_ * D);
    for (std::size_t i = 0; i < n_; ++i) {
      for (std::size_t d = 0; d < D; ++d) out[i * D + d] = to_float(h(i, d));
    }
    return out;
  }

  void forward(const PackedBatch& b) override {
    if (consistent_) return forward_consistent(b);
    ScopedRegion region("mantissa::train_engine::forward");
    const std::size_t N = b.n_tokens(), D = cfg_.d_model, F = cfg_.d_ff, V = cfg_.vocab;
    const int H = cfg_.n_head, Hkv = cfg_.n_kv_head, hd = cfg_.head_dim();
    const std::size_t QKV = static_cast<std::size_t>(H + 2 * Hkv) * hd, A = static_cast<std::size_t>(H) * hd;
    n_ = N;
    View2<T> x = acts_[0].x_in.get(N, D);
    embedding_forward<T>(space_, b.d_tokens, weight2(table_.embed()), x);
    for (int l = 0; l < cfg_.n_layer; ++l) {
      const LayerSlices& s = table_.layers()[l];
      LayerActs<T>& a = acts_[l];
      View2<T> x_in = a.x_in.get(N, D);
      View2<T> h1 = a.h1.get(N, D), qkv = a.qkv.get(N, QKV), att = a.att.get(N, A);
      View1<float> rstd1 = a.rstd1.get1(N), rstd2 = a.rstd2.get1(N);
      View2<float> lse = a.lse.get(N, H);
      rmsnorm_forward<T>(space_, x_in, weight1(s.attn_norm), eps(), h1, rstd1);
      gemm<T, T, T>(space_, 'N', 'T', 1.0f, h1, weight2(s.wqkv), 0.0f, qkv);
      rope_forward<T>(space_, qkv, b.d_pos, H, Hkv, hd, theta(), rope_);
      attention_forward<T>(space_, qkv, b.d_seq_offsets, H, Hkv, hd, att, lse);
      View2<T> o = tmp_.get(N, D);
      gemm<T, T, T>(space_, 'N', 'T', 1.0f, att, weight2(s.wo), 0.0f, o);
      View2<T> x_mid = a.x_mid.get(N, D);
      add_forward<T>(space_, x_in, o, x_mid);
      View2<T> h2 = a.h2.get(N, D), gu = a.gu.get(N, 2 * F), sw = a.s.get(N, F);
      rmsnorm_forward<T>(space_, x_mid, weight1(s.mlp_norm), eps(), h2, rstd2);
      gemm<T, T, T>(space_, 'N', 'T', 1.0f, h2, weight2(s.wgu), 0.0f, gu);
      swiglu_forward<T>(space_, gu, sw);
      gemm<T, T, T>(space_, 'N', 'T', 1.0f, sw, weight2(s.wd), 0.0f, o);
      View2<T> x_out = (l + 1 < cfg_.n_layer) ? acts_[l + 1].x_in.get(N, D) : x_last_.get(N, D);
      add_forward<T>(space_, x_mid, o, x_out);
    }
    View2<T> xl = x_last_.get(N, D), hf = hf_.get(N, D), logits = logits_.get(N, V);
    rmsnorm_forward<T>(space_, xl, weight1(table_.final_norm()), eps(), hf, rstdf_.get1(N));
    gemm<T, T, T>(space_, 'N', 'T', head_alpha_, hf, weight2(table_.head()), 0.0f, logits);
    logsoftmax_gather_forward<T>(space_, logits, b.d_targets, logp_.get1(N), entropy_.get1(N), lse_logits_.get1(N));
  }

  // The same function through the rollout engine's kernels (decode.hpp) on all N rows at once: every
  // row's result is the one the rollout engine computes for that token, bit for bit.
  void forward_consistent(const PackedBatch& b) {
    ScopedRegion region("mantissa::train_engine::forward_consistent");
    if (head_alpha_ != 1.0f) throw std::invalid_argument("consistent mode needs rollout.temperature = 1");
    const std::size_t N = b.n_tokens(), D = cfg_.d_model, F = cfg_.d_ff, V = cfg_.vocab;
    const int H = cfg_.n_head, Hkv = cfg_.n_kv_head, hd = cfg_.head_dim(), S = b.n_seqs();
    const std::size_t QKV = static_cast<std::size_t>(H + 2 * Hkv) * hd, A = static_cast<std::size_t>(H) * hd;
    n_ = N;
    // Row n of sequence s is the query at position pos[n] over the cache slot s, len = pos + 1.
    std::vector<int> h_slot(N), h_len(N);
    for (int s = 0; s < S; ++s) {
      for (int i = b.seq_offsets[s]; i < b.seq_offsets[s + 1]; ++i) h_slot[i] = s, h_len[i] = b.pos[i] + 1;
    }
    View1<int> slot = slot_.get1(N), len = len_.get1(N);
    Kokkos::deep_copy(slot, Kokkos::View<const int*, HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>(h_slot.data(), N));
    Kokkos::deep_copy(len, Kokkos::View<const int*, HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>(h_len.data(), N));
    int max_len = 1;
    for (int s = 0; s < S; ++s) max_len = std::max(max_len, b.seq_offsets[s + 1] - b.seq_offsets[s]);
    if (cache_k_.extent(0) < static_cast<std::size_t>(S) || cache_k_.extent(1) < static_cast<std::size_t>(max_len)) {
      cache_k_ = View3<T>(Kokkos::view_alloc(std::string("mantissa::train_engine::kv_k"), Kokkos::WithoutInitializing),
                          S, max_len, Hkv * hd);
      cache_v_ = View3<T>(Kokkos::view_alloc(std::string("mantissa::train_engine::kv_v"), Kokkos::WithoutInitializing),
                          S, max_len, Hkv * hd);
    }
    const View2<T> none;
    View2<T> x = acts_[0].x_in.get(N, D);
    embedding_forward<T>(space_, b.d_tokens, weight2(table_.embed()), x);
    const model::DecodeBlockShape shape = model::decode_block_shape(cfg_, kv_split_);
    const model::DecodeRowIndex at{slot, b.d_pos, len};
    model::DecodeBlockLinear<T> hooks{space_, split_k_};
    for (int l = 0; l < cfg_.n_layer; ++l) {  // the rollout engine's block, on all N rows at once
      const LayerSlices& s = table_.layers()[l];
      LayerActs<T>& a = acts_[l];
      model::DecodeBlockRows<T> rows;
      rows.x_in = a.x_in.get(N, D), rows.h1 = a.h1.get(N, D), rows.qkv = a.qkv.get(N, QKV), rows.att = a.att.get(N, A);
      rows.rstd1 = a.rstd1.get1(N), rows.rstd2 = a.rstd2.get1(N), rows.lse = a.lse.get(N, H);
      rows.x_mid = a.x_mid.get(N, D), rows.h2 = a.h2.get(N, D), rows.gu = a.gu.get(N, 2 * F), rows.s = a.s.get(N, F);
      rows.x_out = (l + 1 < cfg_.n_layer) ? acts_[l + 1].x_in.get(N, D) : x_last_.get(N, D);
      const model::DecodeBlockWeights<T> w{weight1(s.attn_norm), weight1(s.mlp_norm), weight2(s.wqkv),
                                           weight2(s.wo),        weight2(s.wgu),      weight2(s.wd)};
      model::decode_block_forward<T>(space_, shape, w, rows, at, cache_k_, cache_v_, rope_, decode_ws_, hooks);
    }
    View2<T> xl = x_last_.get(N, D), hf = hf_.get(N, D), logits = logits_.get(N, V);
    rmsnorm_forward<T>(space_, xl, weight1(table_.final_norm()), eps(), hf, rstdf_.get1(N));
    linear_decode<T>(space_, hf, weight2(table_.head()), none, logits, split_k_);
    View1<float> logp = logp_.get1(N);
    logsoftmax_gather_forward<T>(space_, logits, b.d_targets, logp, entropy_.get1(N), lse_logits_.get1(N));
    // log pi exactly as the sampler computes log mu (sampling.hpp: row_softmax_stats, row_logprob).
    const auto targets = b.d_targets;
    const int Vi = static_cast<int>(V);
    // One team per row (threads over the vocabulary, team_row_softmax_stats: the same bits as the
    // sampler's row_softmax_stats for every team size).
    using scratch = Kokkos::View<float*, ExecSpace::scratch_memory_space, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
    const std::size_t lane_bytes = scratch::shmem_size(mantissa::detail::kSumLanes);
    Kokkos::parallel_for(
        "mantissa::train_engine::consistent_logp",
        auto_team_policy(space_, static_cast<int>(N)).set_scratch_size(0, Kokkos::PerTeam(lane_bytes)),
        KOKKOS_LAMBDA(const Kokkos::TeamPolicy<ExecSpace>::member_type& team) {
          const int n = team.league_rank(), t = targets(n);
          if (t < 0) return;
          scratch lane(team.team_scratch(0), mantissa::detail::kSumLanes);
          const T* row = &logits(n, 0);
          const RowSoftmaxStats st = team_row_softmax_stats(team, row, Vi, 1.0f, lane.data());
          Kokkos::single(Kokkos::PerTeam(team), [&]() { logp(n) = row_logprob(row[t], 1.0f, st); });
        });
  }

  ConstView1<float> logp() const override { return View1<float>(logp_.buf.data(), n_); }
  ConstView1<float> entropy() const override { return View1<float>(entropy_.buf.data(), n_); }

  View1<int> argmax() override {
    View1<int> out = argmax_.get1(n_);
    View2<T> logits(logits_.buf.data(), n_, cfg_.vocab);
    const int V = cfg_.vocab;
    Kokkos::parallel_for(
        "mantissa::train_engine::argmax", Kokkos::RangePolicy<ExecSpace>(space_, 0, n_),
        KOKKOS_LAMBDA(const std::size_t n) {
          int best = 0;
          float bv = to_float(logits(n, 0));
          for (int v = 1; v < V; ++v) {
            const float x = to_float(logits(n, v));
            if (x > bv) bv = x, best = v;
          }
          out(n) = best;
        });
    return out;
  }

  void backward(const PackedBatch& b, const ConstView1<float>& dlogp, const View1<float>& grads) override {
    ScopedRegion region("mantissa::train_engine::backward");
    const std::size_t N = b.n_tokens(), D = cfg_.d_model, F = cfg_.d_ff, V = cfg_.vocab;
    const int H = cfg_.n_head, Hkv = cfg_.n_kv_head, hd = cfg_.head_dim();
    const std::size_t QKV = static_cast<std::size_t>(H + 2 * Hkv) * hd, A = static_cast<std::size_t>(H) * hd;
    View2<T> logits(logits_.buf.data(), N, V), hf(hf_.buf.data(), N, D), xl(x_last_.buf.data(), N, D);
    View2<T> dlogits = d_logits_.get(N, V), dh = d_h_.get(N, D), dx = d_x_.get(N, D);
    logsoftmax_gather_backward<T>(space_, logits, b.d_targets, View1<float>(lse_logits_.buf.data(), N), dlogp,
                                  dlogits);
    gemm<T, T, T>(space_, 'N', 'N', head_alpha_, dlogits, weight2(table_.head()), 0.0f, dh);
    gemm<T, T, float>(space_, 'T', 'N', head_alpha_, dlogits, hf, 1.0f, grad2(grads, table_.head()));
    rmsnorm_backward<T>(space_, xl, weight1(table_.final_norm()), View1<float>(rstdf_.buf.data(), N), dh, dx,
                        grad1(grads, table_.final_norm()), false);
    for (int l = cfg_.n_layer - 1; l >= 0; --l) {
      const LayerSlices& s = table_.layers()[l];
      LayerActs<T>& a = acts_[l];
      View2<T> x_in(a.x_in.buf.data(), N, D), h1(a.h1.buf.data(), N, D), qkv(a.qkv.buf.data(), N, QKV);
      View2<T> att(a.att.buf.data(), N, A), x_mid(a.x_mid.buf.data(), N, D), h2(a.h2.buf.data(), N, D);
      View2<T> gu(a.gu.buf.data(), N, 2 * F), sw(a.s.buf.data(), N, F);
      View1<float> rstd1(a.rstd1.buf.data(), N), rstd2(a.rstd2.buf.data(), N);
      View2<float> lse(a.lse.buf.data(), N, H);
      // MLP branch: x_out = x_mid + swiglu(h2 Wgu^T) Wd^T
      View2<T> ds = d_s_.get(N, F), dgu = d_gu_.get(N, 2 * F);
      gemm<T, T, T>(space_, 'N', 'N', 1.0f, dx, weight2(s.wd), 0.0f, ds);
      gemm<T, T, float>(space_, 'T', 'N', 1.0f, dx, sw, 1.0f, grad2(grads, s.wd));
      swiglu_backward<T>(space_, gu, ds, dgu);
      gemm<T, T, T>(space_, 'N', 'N', 1.0f, dgu, weight2(s.wgu), 0.0f, dh);
      gemm<T, T, float>(space_, 'T', 'N', 1.0f, dgu, h2, 1.0f, grad2(grads, s.wgu));
      rmsnorm_backward<T>(space_, x_mid, weight1(s.mlp_norm), rstd2, dh, dx, grad1(grads, s.mlp_norm), true);
      // attention branch: x_mid = x_in + attention(rope(h1 Wqkv^T)) Wo^T
      View2<T> da = d_att_.get(N, A), dqkv = d_qkv_.get(N, QKV);
      gemm<T, T, T>(space_, 'N', 'N', 1.0f, dx, weight2(s.wo), 0.0f, da);
      gemm<T, T, float>(space_, 'T', 'N', 1.0f, dx, att, 1.0f, grad2(grads, s.wo));
      attention_backward<T>(space_, qkv, b.d_seq_offsets, H, Hkv, hd, att, da, lse, dqkv);
      rope_backward<T>(space_, dqkv, b.d_pos, H, Hkv, hd, theta(), rope_);
      gemm<T, T, T>(space_, 'N', 'N', 1.0f, dqkv, weight2(s.wqkv), 0.0f, dh);
      gemm<T, T, float>(space_, 'T', 'N', 1.0f, dqkv, h1, 1.0f, grad2(grads, s.wqkv));
      rmsnorm_backward<T>(space_, x_in, weight1(s.attn_norm), rstd1, dh, dx, grad1(grads, s.attn_norm), true);
    }
    embedding_backward<T>(space_, b.d_tokens, dx, grad2(grads, table_.embed()));
  }

 private:
  float eps() const { return static_cast<float>(cfg_.norm_eps); }
  float theta() const { return static_cast<float>(cfg_.rope_theta); }
  View2<T> weight2(std::size_t i) const { return slice2(w_, table_[i]); }
  View1<T> weight1(std::size_t i) const { return slice1(w_, table_[i]); }
  View2<float> grad2(const View1<float>& g, std::size_t i) const { return slice2(g, table_[i]); }
  View1<float> grad1(const View1<float>& g, std::size_t i) const { return slice1(g, table_[i]); }

  config::ModelConfig cfg_;
  ParamTable table_;
  ExecSpace space_;
  std::vector<LayerActs<T>> acts_;
  View1<T> w_;
  RopeTable rope_;  // cos/sin of positions < max_seq
  std::size_t n_ = 0;
  Rows<T> tmp_, x_last_, hf_, logits_, d_logits_, d_h_, d_x_, d_s_, d_gu_, d_att_, d_qkv_;
  Rows<float> rstdf_, logp_, entropy_, lse_logits_;
  Rows<int> argmax_, slot_, len_;
  View3<T> cache_k_, cache_v_;
  DecodeWorkspace decode_ws_;  // consistent mode: the decode kernels' buffers
  float head_alpha_ = 1.0f;
  bool consistent_ = false;
  int split_k_ = 64, kv_split_ = 16;
};

}  // namespace training_engine_detail

std::unique_ptr<TrainingEngine> make_training_engine(const config::ModelConfig& cfg, const ParamTable& table,
                                                     Precision p) {
  return dispatch_precision(p, [&](auto t) -> std::unique_ptr<TrainingEngine> {
    return std::make_unique<training_engine_detail::Engine<decltype(t)>>(cfg, table);
  });
}

}  // namespace mantissa::model
