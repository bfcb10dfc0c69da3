#pragma once
// The parameter table: every parameter is a named slice [offset, offset + rows*cols) of one flat
// fp32 master buffer; gradients and AdamW moments use the same table. Weight matrices are
// [out, in] row-major (y = x W^T). Names are the checkpoint's dataset names.
#include <cstddef>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "mantissa/kernels/types.hpp"

namespace mantissa::model {

enum class ParamKind { matrix, norm, embedding };

struct ParamSlice {
  std::string name;
  std::size_t offset = 0;
  std::size_t rows = 0, cols = 0;  // a vector has rows = 1
  ParamKind kind = ParamKind::matrix;
  double init_std = 0.0;           // 0 for norm weights (initialised to 1)
  std::size_t size() const { return rows * cols; }
};

struct LayerSlices {
  std::size_t attn_norm, wqkv, wo, mlp_norm, wgu, wd;  // indices into ParamTable::slices
};

class ParamTable {
 public:
  explicit ParamTable(const config::ModelConfig& m);
  const std::vector<ParamSlice>& slices() const { return slices_; }
  const ParamSlice& operator[](std::size_t i) const { return slices_[i]; }
  const ParamSlice& find(const std::string& name) const;  // throws std::out_of_range
  std::size_t total() const { return total_; }
  std::size_t embed() const { return embed_; }
  std::size_t final_norm() const { return final_norm_; }
  std::size_t head() const { return head_; }  // == embed() when tied
  const std::vector<LayerSlices>& layers() const { return layers_; }

 private:
  std::size_t add(const std::string& name, std::size_t rows, std::size_t cols, ParamKind kind, double std);
  std::vector<ParamSlice> slices_;
  std::vector<LayerSlices> layers_;
  std::size_t total_ = 0, embed_ = 0, final_norm_ = 0, head_ = 0;
};

// Views of one parameter's slice of a flat buffer laid out by the table (weights, gradients, moments).
template <class T>
View2<T> slice2(const View1<T>& flat, const ParamSlice& s) {
  return View2<T>(flat.data() + s.offset, s.rows, s.cols);
}
template <class T>
View1<T> slice1(const View1<T>& flat, const ParamSlice& s) {
  return View1<T>(flat.data() + s.offset, s.size());
}

}  // namespace mantissa::model
