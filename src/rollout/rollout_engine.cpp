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
#include "model/decode_block.hpp"
#include "model/workspace.hpp"

namespace mantissa::rollout {

// The decode loop's device-side steps: free functions (CUDA's extended lambdas need an enclosing
// function with linkage, not a member of a class in an anonymous namespace).
namespace detail {

// The rows of one decode step: row i is sequence slot(i) at position pos(i) (len = pos + 1; its
// sampled token sits at next_pos = pos + 1, which keys the RNG).
struct DecodeRows {
  View1<int> slot, tok, pos, len, next_pos;
  View1<std::uint64_t> seq;
};
// Per sequence b: done, tokens generated, finished (<eos>), nonfinite; its current token and
// position; the generated tokens and their log mu [b, max_new].
struct DecodeState {
  View1<int> done, gen, finished, nonfinite, tok, pos;
  View2<int> resp;
  View2<float> resp_logmu;
};

// Records each live row's sampled token and log mu and moves the row to its next position, or marks
// its sequence done (<eos>: finished; max_new tokens or model.max_seq reached: truncated; a negative
// token = non-finite logits: nonfinite, the token not kept). emitted(i) = 1 where a token was kept.
void advance_rows(const ExecSpace& space, int n_rows, const DecodeRows& r, const View1<int>& sampled,
                  const View1<float>& logmu, const View1<int>& emitted, const DecodeState& st, int eos, int max_new,
                  int max_seq) {
  Kokkos::parallel_for(
      "mantissa::rollout::advance", Kokkos::RangePolicy<ExecSpace>(space, 0, n_rows), KOKKOS_LAMBDA(const int i) {
        const int b = r.slot(i);
        emitted(i) = 0;
        if (st.done(b)) return;
        const int tk = sampled(i);
        if (tk < 0) {  // non-finite logits (overflow): the sequence ends here, no invalid token is kept
          st.nonfinite(b) = 1;
          st.done(b) = 1;
          return;
        }
        const int g = st.gen(b), p = r.pos(i);
        st.resp(b, g) = tk;
        st.resp_logmu(b, g) = logmu(i);
        st.gen(b) = g + 1;
        emitted(i) = 1;
        if (tk == eos) {
          st.finished(b) = 1;
          st.done(b) = 1;
        } else if (g + 1 >= max_new || p + 2 >= max_seq) {
          st.done(b) = 1;  // truncated: no <eos>
        } else {  // the sampled token, at position p + 1, is the next input
          r.tok(i) = tk, st.tok(b) = tk;
          r.pos(i) = p + 1, st.pos(b) = p + 1;
          r.len(i) = p + 2;
          r.next_pos(i) = p + 2;
        }
      });
}

// Fills the rows' token, position, len, next_pos and seq id from the per-sequence state (r.slot set).
void gather_rows(const ExecSpace& space, int n_rows, const DecodeRows& r, const View1<int>& s_tok,
                 const View1<int>& s_pos, const View1<std::uint64_t>& s_seq) {
  Kokkos::parallel_for(
      "mantissa::rollout::gather_rows", Kokkos::RangePolicy<ExecSpace>(space, 0, n_rows), KOKKOS_LAMBDA(const int i) {
        const int b = r.slot(i);
        r.tok(i) = s_tok(b), r.pos(i) = s_pos(b), r.len(i) = s_pos(b) + 1, r.next_pos(i) = s_pos(b) + 1;
        r.seq(i) = s_seq(b);
      });
}

}  // namespace detail

namespace {

// Rows of prompt positions one batched-prefill call may hold in all (bounds the activations).
constexpr int max_prefill_rows = 4096;
// Decode steps between two checks of the done flags (the loop's only host synchronisation).
constexpr int finished_check_interval = 8;

using detail::DecodeRows;
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
    const int L = m_.n_layer, Hkv = m_.n_kv_head, hd = m_.head_dim();
    const int max_new = opt.max_new_tokens > 0 ? opt.max_new_tokens : (r_.max_new_tokens > 0 ? r_.max_new_tokens : m_.max_seq);
    for (const auto& p : prompts) {
      if (p.empty() || static_cast<int>(p.size()) >= m_.max_seq) {
        throw std::invalid_argument("generate: a prompt is empty or does not leave room in model.max_seq");
      }
    }
    Rollout out;
    out.response.assign(B, {});
    out.logmu.assign(B, {});
    out.finished.assign(B, 0);
    out.nonfinite.assign(B, 0);
    if (opt.record_full_logprobs) out.full_logprobs.assign(B, {});
    if (opt.record_hidden) out.hidden.assign(B, std::vector<std::vector<float>>(L));
    if (B == 0) return out;
    if (cache_k_.size() != static_cast<std::size_t>(L) || cache_k_[0].extent(0) < static_cast<std::size_t>(B)) {
      cache_k_.clear(), cache_v_.clear();
      for (int l = 0; l < L; ++l) {  // one cache per layer, in storage precision P
        cache_k_.emplace_back(Kokkos::view_alloc(std::string("mantissa::rollout::kv_cache_k"), Kokkos::WithoutInitializing),
                              B, m_.max_seq, Hkv * hd);
        cache_v_.emplace_back(Kokkos::view_alloc(std::string("mantissa::rollout::kv_cache_v"), Kokkos::WithoutInitializing),
                              B, m_.max_seq, Hkv * hd);
      }
    }
    gemm_ = !consistent_ && decode_gemm_available();
    if (gemm_ && !packed_valid_) pack_weights();
    kv_scale_.assign(2 * L, 0.0f);  // FP8 KV cache: recalibrated at every generate (one RL step), from its prefill

    prefill(prompts, opt, out);
    decode(prompts, seq_ids, seed, step, max_new, opt, out);
    for (int b = 0; b < B; ++b)
      out.tokens_processed += static_cast<long long>(prompts[b].size()) - 1 +
                              static_cast<long long>(out.response[b].size()) + out.nonfinite[b];
    return out;
  }

 private:
  // The prompts but their last token, through the decode kernels in calls of at most
  // max_prefill_rows rows (each sequence's positions ascending; no sampling: the next token of a
  // prompt position is the prompt's). The first call holds the first rows of every prompt (the
  // FP8 KV scales are calibrated on it).
  void prefill(const std::vector<std::vector<int>>& prompts, const RolloutOptions& opt, Rollout& out) {
    const int B = static_cast<int>(prompts.size());
    std::vector<int> next(B, 0);  // the next prompt position to prefill, per sequence
    std::vector<int> h_tok, h_pos, h_slot, h_len, rows;
    while (true) {
      int pending = 0;
      for (int b = 0; b < B; ++b) pending += next[b] + 1 < static_cast<int>(prompts[b].size());
      if (pending == 0) return;
      const int per_seq = std::max(1, max_prefill_rows / pending);
      rows.clear(), h_tok.clear(), h_pos.clear(), h_slot.clear(), h_len.clear();
      for (int b = 0; b < B; ++b) {
        const int last = std::min(static_cast<int>(prompts[b].size()) - 2, next[b] + per_seq - 1);
        for (int p = next[b]; p <= last; ++p) {
          rows.push_back(b), h_tok.push_back(prompts[b][p]), h_pos.push_back(p), h_slot.push_back(b);
          h_len.push_back(p + 1);
        }
        next[b] = std::max(next[b], last + 1);
      }
      const int R = static_cast<int>(rows.size());
      upload(h_tok, d_tok_, "mantissa::rollout::tokens");
      upload(h_pos, d_pos_, "mantissa::rollout::pos");
      upload(h_slot, d_slot_, "mantissa::rollout::slot");
      upload(h_len, d_len_, "mantissa::rollout::len");
      forward_blocks(R, opt.record_hidden ? &rows : nullptr, out);
    }
  }

  // The decode loop, device-resident: per generated token the kernels, the sampler and one small
  // kernel (advance) that records the token and moves each row to its next position, all on the
  // device; no allocation (buffers grown in the first step), no upload, no download, no blocking
  // reduction. Every finished_check_interval steps one download of the per-sequence done flags
  // ends the loop when all are done and drops finished rows (one upload of the new row -> slot
  // map). Finished rows carried until then recompute their last position (the same K/V into the
  // same cache row; their outputs are ignored). Diagnostic records (full log-probs, hidden states)
  // download per token.
  void decode(const std::vector<std::vector<int>>& prompts, const std::vector<std::uint64_t>& seq_ids,
              std::uint64_t seed, std::uint64_t step, int max_new, const RolloutOptions& opt, Rollout& out) {
    const int B = static_cast<int>(prompts.size()), V = m_.vocab, max_seq = m_.max_seq, eos = eos_;
    // Per-sequence state (slot b): its token and position now, done / finished / nonfinite, the
    // number generated and the generated tokens and log mu.
    std::vector<int> h_tok(B), h_pos(B);
    for (int b = 0; b < B; ++b) {
      h_pos[b] = static_cast<int>(prompts[b].size()) - 1;
      h_tok[b] = prompts[b].back();
    }
    upload(h_tok, s_tok_, "mantissa::rollout::seq_token");
    upload(h_pos, s_pos_, "mantissa::rollout::seq_pos");
    upload(seq_ids, s_seq_, "mantissa::rollout::seq_id");
    const View1<int> s_tok(s_tok_.data(), B), s_pos(s_pos_.data(), B);
    const View1<std::uint64_t> s_seq(s_seq_.data(), B);
    const View1<int> done = done_.get1(B), gen = gen_.get1(B), finished = finished_.get1(B),
                     nonfinite = nonfinite_.get1(B);
    const View2<int> resp = resp_.get(B, max_new);
    const View2<float> resp_logmu = resp_logmu_.get(B, max_new);
    const detail::DecodeState state{done, gen, finished, nonfinite, s_tok, s_pos, resp, resp_logmu};
    Kokkos::deep_copy(space_, done, 0);
    Kokkos::deep_copy(space_, gen, 0);
    Kokkos::deep_copy(space_, finished, 0);
    Kokkos::deep_copy(space_, nonfinite, 0);

    std::vector<int> active(B);
    for (int b = 0; b < B; ++b) active[b] = b;
    auto h_done = Kokkos::create_mirror_view(done);
    for (long long t = 0;; ++t) {
      if (t % finished_check_interval == 0 && t > 0) {  // the bounded check: done flags, drop finished rows
        Kokkos::deep_copy(space_, h_done, done);
        space_.fence();
        std::vector<int> still;
        for (const int b : active)
          if (!h_done(b)) still.push_back(b);
        if (still.empty()) break;
        if (still.size() != active.size()) active.swap(still), gather_rows(active);
      } else if (t == 0) {
        gather_rows(active);
      }
      const int R = static_cast<int>(active.size());
      forward_blocks(R, opt.record_hidden ? &hidden_rows(active, done) : nullptr, out);
      const View1<int> slot(d_slot_.data(), R), tok(d_tok_.data(), R), ps(d_pos_.data(), R), len(d_len_.data(), R),
          nps(d_next_pos_.data(), R);
      const View1<std::uint64_t> seq(d_seq_.data(), R);
      View2<T> logits = logits_.get(R, V);
      View2<T> x = x_.view(R, m_.d_model), h = h_.get(R, m_.d_model);
      rmsnorm_forward<T>(space_, x, weight1(table_.final_norm()), eps(), h, rstd_.get1(R));
      linear(gemm_, 4 * m_.n_layer, h, weight2(table_.head()), View2<T>(), logits);
      const View1<int> sampled = sampled_.get1(R), emitted = emitted_.get1(R);
      const View1<float> logmu = logmu_.get1(R);
      const View2<float> full = opt.record_full_logprobs ? full_.get(R, V) : View2<float>();
      sample_tokens<T>(space_, logits, seq, nps, params_, seed, step, sampled, logmu, full);
      detail::advance_rows(space_, R, DecodeRows{slot, tok, ps, len, nps, seq}, sampled, logmu, emitted, state, eos,
                           max_new, max_seq);
      if (opt.record_full_logprobs) {  // diagnostics: one download per token
        auto h_emitted = Kokkos::create_mirror_view_and_copy(HostSpace(), emitted);
        auto h_full = Kokkos::create_mirror_view_and_copy(HostSpace(), full);
        for (int i = 0; i < R; ++i) {
          if (!h_emitted(i)) continue;
          auto& dst = out.full_logprobs[active[i]];
          for (int v = 0; v < V; ++v) dst.push_back(h_full(i, v));
        }
      }
    }
    // The batch's results: one download each.
    auto h_gen = Kokkos::create_mirror_view_and_copy(HostSpace(), gen);
    auto h_fin = Kokkos::create_mirror_view_and_copy(HostSpace(), finished);
    auto h_nf = Kokkos::create_mirror_view_and_copy(HostSpace(), nonfinite);
    auto h_resp = Kokkos::create_mirror_view_and_copy(HostSpace(), resp);
    auto h_lm = Kokkos::create_mirror_view_and_copy(HostSpace(), resp_logmu);
    for (int b = 0; b < B; ++b) {
      out.finished[b] = static_cast<char>(h_fin(b));
      out.nonfinite[b] = static_cast<char>(h_nf(b));
      for (int g = 0; g < h_gen(b); ++g) {
        out.response[b].push_back(h_resp(b, g));
        out.logmu[b].push_back(h_lm(b, g));
      }
    }
  }

  // The decode rows for the sequences in `active` (row i = sequence active[i]): one upload of the
  // row -> slot map, then the rows' token, position, len, sampling position and seq id gathered
  // from the per-sequence state on the device.
  void gather_rows(const std::vector<int>& active) {
    const int R = static_cast<int>(active.size());
    upload(active, d_slot_, "mantissa::rollout::slot");
    grow(d_tok_, R, "mantissa::rollout::tokens"), grow(d_pos_, R, "mantissa::rollout::pos");
    grow(d_len_, R, "mantissa::rollout::len"), grow(d_next_pos_, R, "mantissa::rollout::next_pos");
    grow(d_seq_, R, "mantissa::rollout::seq_id");
    const View1<int> slot(d_slot_.data(), R), tok(d_tok_.data(), R), ps(d_pos_.data(), R), len(d_len_.data(), R),
        nps(d_next_pos_.data(), R);
    const View1<std::uint64_t> seq(d_seq_.data(), R);
    detail::gather_rows(space_, R, DecodeRows{slot, tok, ps, len, nps, seq}, s_tok_, s_pos_, s_seq_);
  }

  // record_hidden: the sequences whose row is live this step (not yet done), as row -> sequence
  // (-1 for a finished row carried until the next check). One download per token (diagnostics).
  std::vector<int>& hidden_rows(const std::vector<int>& active, const View1<int>& done) {
    auto h_done = Kokkos::create_mirror_view_and_copy(HostSpace(), done);
    hidden_map_.assign(active.size(), -1);
    for (std::size_t i = 0; i < active.size(); ++i)
      if (!h_done(active[i])) hidden_map_[i] = active[i];
    return hidden_map_;
  }

  // Embedding and every block for R rows (d_tok_, d_pos_, d_slot_, d_len_ hold them); the last
  // block's output is in x_. record: row -> sequence for the hidden-state record (-1: skip), or null.
  void forward_blocks(int R, const std::vector<int>* record, Rollout& out) {
    const int D = m_.d_model, H = m_.n_head, Hkv = m_.n_kv_head, hd = m_.head_dim(), F = m_.d_ff;
    const int QKV = (H + 2 * Hkv) * hd;
    const View1<int> tok(d_tok_.data(), R), ps(d_pos_.data(), R), slot(d_slot_.data(), R), len(d_len_.data(), R);
    model::DecodeBlockRows<T> rows;
    rows.x_in = rows.x_out = x_.get(R, D);
    rows.x_mid = x2_.get(R, D);
    rows.h1 = rows.h2 = h_.get(R, D);
    rows.qkv = qkv_.get(R, QKV), rows.att = att_.get(R, H * hd), rows.gu = gu_.get(R, 2 * F), rows.s = s_.get(R, F);
    rows.rstd1 = rows.rstd2 = rstd_.get1(R);
    rows.lse = lse_.get(R, H);
    const model::DecodeRowIndex at{slot, ps, len};
    const model::DecodeBlockShape shape = model::decode_block_shape(m_, r_.kv_split);
    embedding_forward<T>(space_, tok, weight2(table_.embed()), rows.x_in);
    for (int l = 0; l < m_.n_layer; ++l) {
      const LayerSlices& ls = table_.layers()[l];
      const model::DecodeBlockWeights<T> w{weight1(ls.attn_norm), weight1(ls.mlp_norm), weight2(ls.wqkv),
                                           weight2(ls.wo),        weight2(ls.wgu),      weight2(ls.wd)};
      Hooks hooks{this, l};
      model::decode_block_forward<T>(space_, shape, w, rows, at, cache_k_[l], cache_v_[l], rope_, ws_, hooks);
      if (record) {
        auto hx = Kokkos::create_mirror_view_and_copy(HostSpace(), rows.x_out);
        for (int i = 0; i < R; ++i) {
          if ((*record)[i] < 0) continue;
          auto& dst = out.hidden[(*record)[i]][l];
          for (int d = 0; d < D; ++d) dst.push_back(to_float(hx(i, d)));
        }
      }
    }
  }

  // The engine's side of decode_block_forward (model/decode_block.hpp): the linear kernel of this
  // mode, the fused SwiGLU of the default-mode GEMM, the FP8 roundings of an FP8 engine.
  struct Hooks {
    Engine* e;
    int layer;
    void linear(int which, const View2<T>& x, const View2<T>& W, const View2<T>& residual, const View2<T>& y) {
      e->linear(e->gemm_, 4 * layer + which, x, W, residual, y);
    }
    void mlp_up(const View2<T>& h2, const View2<T>& Wgu, const View2<T>& gu, const View2<T>& s) {
      if (e->gemm_) {  // SwiGLU fused into the gate/up GEMM's epilogue: the bits of the two calls below
        decode_gemm_swiglu<T>(e->space_, h2, e->packed_[4 * layer + 2], s);
      } else {
        e->linear(false, 4 * layer + 2, h2, Wgu, View2<T>(), gu);
        swiglu_forward<T>(e->space_, gu, s);
      }
    }
    void activations(const View2<T>& x) { e->fp8_activations(x); }
    void kv(const View2<T>& qkv) { e->fp8_kv(layer, qkv, e->m_.n_head * e->m_.head_dim(), e->m_.n_kv_head * e->m_.head_dim()); }
  };

  template <class W>
  static void grow(W& v, int n, const char* label) {
    if (v.extent(0) < static_cast<std::size_t>(n))
      v = W(Kokkos::view_alloc(std::string(label), Kokkos::WithoutInitializing), n);
  }

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
  bool gemm_ = false;  // this generate's linear layers: decode_gemm (default mode where available) or linear_decode
  DecodeWorkspace ws_;  // decode kernels' buffers, reused across calls
  // The decode loop's per-sequence state (slot b) and the generated tokens, on the device.
  View1<int> s_tok_, s_pos_;
  View1<std::uint64_t> s_seq_;
  Rows<int> done_, gen_, finished_, nonfinite_, resp_, emitted_;
  Rows<float> resp_logmu_;
  std::vector<int> hidden_map_;
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
