#include "model/params.hpp"

#include <cmath>
#include <stdexcept>

namespace mantissa::model {

ParamTable::ParamTable(const config::ModelConfig& m) {
  const std::size_t D = m.d_model, V = m.vocab, F = m.d_ff, hd = m.head_dim();
  const std::size_t qkv = (m.n_head + 2 * m.n_kv_head) * hd;
  // Residual-branch output projections are scaled by 1/sqrt(2 n_layer) (GPT-2's initialisation).
  const double out_std = m.init_std / std::sqrt(2.0 * m.n_layer);
  embed_ = add("embed", V, D, ParamKind::embedding, m.init_std);
  for (int l = 0; l < m.n_layer; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    LayerSlices s{};
    s.attn_norm = add(p + "attn_norm", 1, D, ParamKind::norm, 0.0);
    s.wqkv = add(p + "wqkv", qkv, D, ParamKind::matrix, m.init_std);
    s.wo = add(p + "wo", D, m.n_head * hd, ParamKind::matrix, out_std);
    s.mlp_norm = add(p + "mlp_norm", 1, D, ParamKind::norm, 0.0);
    s.wgu = add(p + "wgu", 2 * F, D, ParamKind::matrix, m.init_std);
    s.wd = add(p + "wd", D, F, ParamKind::matrix, out_std);
    layers_.push_back(s);
  }
  final_norm_ = add("final_norm", 1, D, ParamKind::norm, 0.0);
  head_ = m.tied_embeddings ? embed_ : add("head", V, D, ParamKind::matrix, m.init_std);
}

std::size_t ParamTable::add(const std::string& name, std::size_t rows, std::size_t cols, ParamKind kind,
                            double std) {
  slices_.push_back(ParamSlice{name, total_, rows, cols, kind, std});
  total_ += rows * cols;
  return slices_.size() - 1;
}

const ParamSlice& ParamTable::find(const std::string& name) const {
  for (const auto& s : slices_) {
    if (s.name == name) return s;
  }
  throw std::out_of_range("no parameter named " + name);
}

}  // namespace mantissa::model
