#include "rollout/rollout_engine.hpp"

#include <algorithm>
#include <stdexcept>

#include "mantissa/kernels/decode.hpp"
#include "mantissa/kernels/decode_gemm.hpp"
#include "mantissa/kernels/embedding.hpp"
#include "mantissa/kernels/fp8_round.hpp"
#include "mantissa/kernels/region.hpp"
#include "mantissa/kernels/rmsnorm.hpp"
#include "mantissa/kernels/rope.hpp"
#include "mantissa/kernels/sampling.hpp"
#include "mantissa/kernels/swiglu.hpp"
#include "mantissa/kernels/convert.hpp"
#include "model/workspace.hpp"

namespace mantissa::rollout {

namespace {

// Rows of prompt positions one batched-prefill call may hold in all (bounds the activations).
constexpr int max_prefill_rows = 4096;

using model::LayerSlices;
using model::Rows;

template <class V>
void upload(const std::vector<typename V::value_type>& h, V& d, const char* label) {
  if (d.extent(0) < h.size()) d = V(Kokkos::view_alloc(std::string(label), Kokkos::WithoutInitializing), h.size());
  auto sub = V(d.data(), h.size());
  Kokkos::View<const typename V::value_type*, Kokkos::LayoutRight, HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>
      hv(h.data(), h.size());
  Kokkos::deep_copy(sub, hv);
}

template <class T>
class Engine final : public RolloutEngine {
 public:
  Engine(const config::ModelConfig& m, const config::RolloutConfig& r, const model::ParamTable& table, int eos,
         Fp8Format fp8)
      : m_(m), r_(r), table_(table), eos_(eos), fp8_(fp8),
        w_(Kokkos::view_alloc("mantissa::rollout::weights", Kokkos::WithoutInitializing), table.total()),
        rope_(rope_table(ExecSpace(), m.max_seq, m.head_dim(), static_cast<float>(m.rope_theta))) {
    params_.temperature = static_cast<float>(r.temperature);
    params_.top_p = static_cast<float>(r.top_p);
    params_.top_k = r.top_k;
    validate_sampling_params(params_);
  }
  Precision precision() const override { return precision_traits<T>::precision; }
  Fp8Format fp8() const override { return fp8_; }
  void load_weights(const ConstView1<float>& master) override {
    if (fp8_ == Fp8Format::none) {
      convert<float, T>(space_, master, w_);
    } else {  // the weight sync of an FP8 engine: every linear layer's weights rounded per 128 x 128 block
      ScopedRegion region("mantissa::rollout::fp8_weights");
      const View1<float> w32(Kokkos::view_alloc("mantissa::rollout::fp8_master", Kokkos::WithoutInitializing),
                             master.extent(0));
      Kokkos::deep_copy(space_, w32, master);
      for (const LayerSlices& ls : table_.layers())
        for (const std::size_t i : {ls.wqkv, ls.wo, ls.wgu, ls.wd})
          fp8_round_blocks(space_, model::slice2(w32, table_[i]), fp8_weight_block, fp8_weight_block, fp8_,
                           static_cast<float>(precision_traits<T>::max));
      convert<float, T>(space_, w32, w_);  // exact: power-of-two-scaled FP8 values within T's range are T values
    }
    packed_valid_ = false;  // repacked at the next default-mode generate
  }
  void set_consistent(bool on) override {
    if (on && fp8_ != Fp8Format::none)
      throw std::invalid_argument("rollout engine: consistent mode needs both engines in one precision, not an FP8 rollout");
    consistent_ = on;
  }

  Rollout generate(const std::vector<std::vector<int>>& prompts, const std::vector<std::uint64_t>& seq_ids,
                   std::uint64_t seed, std::uint64_t step, const RolloutOptions& opt) override {
    ScopedRegion region("mantissa::rollout::generate");
    const int B = static_cast<int>(prompts.size());
    if (seq_ids.size() != prompts.size()) throw std::invalid_argument("generate: one seq_id per prompt is needed");
    const int D = m_.d_model, H = m_.n_head, Hkv = m_.n_kv_head, hd = m_.head_dim(), F = m_.d_ff, V = m_.vocab;
    const int QKV = (H + 2 * Hkv) * hd, L = m_.n_layer;
    const int max_new = opt.max_new_tokens > 0 ? opt.max_new_tokens : (r_.max_new_tokens > 0 ? r_.max_new_tokens : m_.max_seq);
    for (const auto& p : prompts) {
      if (p.empty() || static_cast<int>(p.size()) >= m_.max_seq) {
        throw std::invalid_argument("generate: a prompt is empty or does not leave room in model.max_seq");
      }
    }
    if (cache_k_.size() != static_cast<std::size_t>(L) || cache_k_[0].extent(0) < static_cast<std::size_t>(B)) {
      cache_k_.clear(), cache_v_.clear();
      for (int l = 0; l < L; ++l) {  // one cache per layer, in storage precision P
        cache_k_.emplace_back(Kokkos::view_alloc(std::string("mantissa::rollout::kv_cache_k"), Kokkos::WithoutInitializing),
                              B, m_.max_seq, Hkv * hd);
        cache_v_.emplace_back(Kokkos::view_alloc(std::string("mantissa::rollout::kv_cache_v"), Kokkos::WithoutInitializing),
                              B, m_.max_seq, Hkv * hd);
      }
    }
    const bool gemm = !consistent_ && decode_gemm_available();
    if (gemm && !packed_valid_) pack_weights();
    Rollout out;
    out.response.assign(B, {});
    out.logmu.assign(B, {});
    out.finished.assign(B, 0);
    out.nonfinite.assign(B, 0);
    if (opt.record_full_logprobs) out.full_logprobs.assign(B, {});
    if (opt.record_hidden) out.hidden.assign(B, std::vector<std::vector<float>>(L));
    std::vector<int> pos(B, 0), cur(B), done(B, 0);
    for (int b = 0; b < B; ++b) cur[b] = prompts[b][0];
    std::vector<int> h_tok, h_pos, h_slot, h_len, rows;
    std::vector<std::uint64_t> h_seq;
    kv_scale_.assign(2 * L, 0.0f);  // FP8 KV cache: recalibrated at every generate (one RL step), from its prefill
    while (true) {
      rows.clear();
      h_tok.clear(), h_pos.clear(), h_slot.clear(), h_len.clear(), h_seq.clear();
      // One row per active sequence; a sequence still in its prompt contributes the rest of the
      // prompt but its last token at once (up to prefill_rows_per_seq rows): a batched prefill, the
      // same bits as one position per step (the decode kernels are batch-invariant, D3, and each
      // row's attention reads only positions < its len, all appended before the attention call).
      int active = 0;
      for (int b = 0; b < B; ++b) active += !done[b];
      const int prefill_rows_per_seq = std::max(1, max_prefill_rows / std::max(1, active));
      for (int b = 0; b < B; ++b) {
        if (done[b]) continue;
        const int plen = static_cast<int>(prompts[b].size());
        const int last = pos[b] + 1 < plen ? std::min(plen - 2, pos[b] + prefill_rows_per_seq - 1) : pos[b];
        for (int p = pos[b]; p <= last; ++p) {
          rows.push_back(b);
          h_tok.push_back(p == pos[b] ? cur[b] : prompts[b][p]);
          h_pos.push_back(p);
          h_slot.push_back(b);
          h_len.push_back(p + 1);
          h_seq.push_back(seq_ids[b]);
        }
      }
      const int R = static_cast<int>(rows.size());
      if (R == 0) break;
      out.tokens_processed += R;
      upload(h_tok, d_tok_, "mantissa::rollout::tokens");
      upload(h_pos, d_pos_, "mantissa::rollout::pos");
      upload(h_slot, d_slot_, "mantissa::rollout::slot");
      upload(h_len, d_len_, "mantissa::rollout::len");
      upload(h_seq, d_seq_, "mantissa::rollout::seq_id");
      // sampled token i sits at position pos+1: the RNG is keyed by that position
      std::vector<int> next_pos(h_pos);
      for (auto& p : next_pos) ++p;
      upload(next_pos, d_next_pos_, "mantissa::rollout::next_pos");
      const View1<int> tok(d_tok_.data(), R), ps(d_pos_.data(), R), slot(d_slot_.data(), R), len(d_len_.data(), R),
          nps(d_next_pos_.data(), R);
      const View1<std::uint64_t> seq(d_seq_.data(), R);

      View2<T> x = x_.get(R, D), x2 = x2_.get(R, D), h = h_.get(R, D), qkv = qkv_.get(R, QKV);
      View2<T> att = att_.get(R, H * hd), gu = gu_.get(R, 2 * F), s = s_.get(R, F);
      View1<float> rstd = rstd_.get1(R);
      View2<float> lse = lse_.get(R, H);
      const View2<T> none;
      embedding_forward<T>(space_, tok, weight2(table_.embed()), x);
      for (int l = 0; l < L; ++l) {
        const LayerSlices& ls = table_.layers()[l];
        rmsnorm_forward<T>(space_, x, weight1(ls.attn_norm), eps(), h, rstd);
        fp8_activations(h);
        linear(gemm, 4 * l + 0, h, weight2(ls.wqkv), none, qkv);
        rope_forward<T>(space_, qkv, ps, H, Hkv, hd, static_cast<float>(m_.rope_theta), rope_);
        fp8_kv(l, qkv, H * hd, Hkv * hd);
        kv_cache_append<T>(space_, qkv, slot, ps, H, Hkv, hd, cache_k_[l], cache_v_[l]);
        attention_decode<T>(space_, qkv, cache_k_[l], cache_v_[l], slot, len, H, Hkv, hd, r_.kv_split, att, lse);
        fp8_activations(att);
        linear(gemm, 4 * l + 1, att, weight2(ls.wo), x, x2);  // residual fused
        rmsnorm_forward<T>(space_, x2, weight1(ls.mlp_norm), eps(), h, rstd);
        fp8_activations(h);
        if (gemm) {  // SwiGLU fused into the gate/up GEMM's epilogue: the bits of the two calls below
          decode_gemm_swiglu<T>(space_, h, packed_[4 * l + 2], s);
        } else {
          linear(gemm, 4 * l + 2, h, weight2(ls.wgu), none, gu);
          swiglu_forward<T>(space_, gu, s);
        }
        fp8_activations(s);
        linear(gemm, 4 * l + 3, s, weight2(ls.wd), x2, x);  // residual fused
        if (opt.record_hidden) {
          auto hx = Kokkos::create_mirror_view_and_copy(HostSpace(), x);
          for (int i = 0; i < R; ++i) {
            auto& dst = out.hidden[rows[i]][l];
            for (int d = 0; d < D; ++d) dst.push_back(to_float(hx(i, d)));
          }
        }
      }
      View2<T> logits = logits_.get(R, V);
      rmsnorm_forward<T>(space_, x, weight1(table_.final_norm()), eps(), h, rstd);
      linear(gemm, 4 * L, h, weight2(table_.head()), none, logits);
      View1<int> sampled = sampled_.get1(R);
      View1<float> logmu = logmu_.get1(R);
      View2<float> full = opt.record_full_logprobs ? full_.get(R, V) : View2<float>();
      sample_tokens<T>(space_, logits, seq, nps, params_, seed, step, sampled, logmu, full);
      auto h_sampled = Kokkos::create_mirror_view_and_copy(HostSpace(), sampled);
      auto h_logmu = Kokkos::create_mirror_view_and_copy(HostSpace(), logmu);
      auto h_full = Kokkos::create_mirror_view_and_copy(HostSpace(), full);
      for (int i = 0; i < R; ++i) {
        const int b = rows[i];
        const int plen = static_cast<int>(prompts[b].size());
        if (h_pos[i] + 1 < plen) {  // a prompt position: the next token is the prompt's
          pos[b] = h_pos[i] + 1;
          cur[b] = prompts[b][pos[b]];
          continue;
        }
        const int t = h_sampled(i);
        if (t < 0) {  // non-finite logits (overflow): the sequence ends here, no invalid token is kept
          out.nonfinite[b] = 1;
          done[b] = 1;
          continue;
        }
        out.response[b].push_back(t);
        out.logmu[b].push_back(h_logmu(i));
        if (opt.record_full_logprobs) {
          for (int v = 0; v < V; ++v) out.full_logprobs[b].push_back(h_full(i, v));
        }
        const int generated = static_cast<int>(out.response[b].size());
        if (t == eos_) {
          out.finished[b] = 1;
          done[b] = 1;
        } else if (generated >= max_new || pos[b] + 2 >= m_.max_seq) {
          done[b] = 1;  // truncated: no <eos>
        }
        cur[b] = t;
        ++pos[b];
      }
    }
    return out;
  }

 private:
  // FP8 mode (fp8_round.hpp): a linear layer's input rounded per token in 1 x 128 groups, each with
  // its power-of-two scale; the layer's weights were rounded per 128 x 128 block at load_weights.
  void fp8_activations(const View2<T>& x) {
    if (fp8_ != Fp8Format::none) fp8_round_groups<T>(space_, x, fp8_activation_group, fp8_);
  }
  // FP8 KV cache: the K and V columns of this layer's qkv rows rounded with one scale each per
  // layer, set from the amax of the first rows of this generate (the prefill) and kept for its
  // decode steps (larger values saturate, as in an FP8 engine with calibrated KV scales).
  void fp8_kv(int l, const View2<T>& qkv, int k0, int nkv) {
    if (fp8_ == Fp8Format::none) return;
    for (int kv = 0; kv < 2; ++kv) {
      float& s = kv_scale_[2 * l + kv];
      const int c0 = k0 + kv * nkv;
      if (s == 0.0f) s = fp8_pow2_scale(fp8_amax_columns<T>(space_, qkv, c0, nkv), fp8_);
      fp8_round_columns<T>(space_, qkv, c0, nkv, s, fp8_);
    }
  }
  static constexpr int fp8_weight_block = 128, fp8_activation_group = 128;

  // y = round_T(x W^T (+ residual)): the default mode's GEMM over all rows on packed weights
  // (decode_gemm.hpp), or linear_decode's batch-invariant split-K kernel (consistent mode, or where
  // decode_gemm is not available). Both are batch-invariant (D1/D1g, D3 in decode.hpp).
  void linear(bool gemm, int which, const View2<T>& x, const View2<T>& W, const View2<T>& residual,
              const View2<T>& y) {
    if (gemm)
      decode_gemm<T>(space_, x, packed_[which], residual, y);
    else
      linear_decode<T>(space_, x, W, residual, y, r_.split_k);
  }
  // The packed fp32 copies of every linear layer's weights: 4 per layer (wqkv, wo, wgu for the fused
  // SwiGLU, wd)
  // and the head at 5 L.
  void pack_weights() {
    const int L = m_.n_layer;
    packed_.resize(4 * L + 1);
    for (int l = 0; l < L; ++l) {
      const LayerSlices& ls = table_.layers()[l];
      decode_gemm_pack<T>(space_, weight2(ls.wqkv), packed_[4 * l + 0]);
      decode_gemm_pack<T>(space_, weight2(ls.wo), packed_[4 * l + 1]);
      decode_gemm_pack_swiglu<T>(space_, weight2(ls.wgu), packed_[4 * l + 2]);
      decode_gemm_pack<T>(space_, weight2(ls.wd), packed_[4 * l + 3]);
    }
    decode_gemm_pack<T>(space_, weight2(table_.head()), packed_[4 * L]);
    packed_valid_ = true;
  }

  float eps() const { return static_cast<float>(m_.norm_eps); }
  View2<T> weight2(std::size_t i) const { return model::slice2(w_, table_[i]); }
  View1<T> weight1(std::size_t i) const { return model::slice1(w_, table_[i]); }

  config::ModelConfig m_;
  config::RolloutConfig r_;
  model::ParamTable table_;
  int eos_;
  Fp8Format fp8_;
  std::vector<float> kv_scale_;  // FP8 KV cache: [2 l + (0 K, 1 V)], 0 = not yet calibrated in this generate
  ExecSpace space_;
  View1<T> w_;
  RopeTable rope_;  // cos/sin of positions < max_seq
  std::vector<View3<T>> cache_k_, cache_v_;  // per layer: [slot, position, n_kv_head * head_dim]
  SamplingParams params_;
  View1<int> d_tok_, d_pos_, d_slot_, d_len_, d_next_pos_;
  View1<std::uint64_t> d_seq_;
  Rows<T> x_, x2_, h_, qkv_, att_, gu_, s_, logits_;
  Rows<float> rstd_, lse_, logmu_, full_;
  Rows<int> sampled_;
  bool consistent_ = false;
  std::vector<DecodeGemmWeights> packed_;  // default mode: packed weights (pack_weights)
  bool packed_valid_ = false;
};

}  // namespace

std::unique_ptr<RolloutEngine> make_rollout_engine(const config::ModelConfig& model,
                                                   const config::RolloutConfig& rollout,
                                                   const model::ParamTable& table, Precision p, int eos_id,
                                                   Fp8Format fp8) {
  return dispatch_precision(p, [&](auto t) -> std::unique_ptr<RolloutEngine> {
    return std::make_unique<Engine<decltype(t)>>(model, rollout, table, eos_id, fp8);
  });
}

}  // namespace mantissa::rollout
