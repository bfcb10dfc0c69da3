#include "model/batch.hpp"

namespace mantissa::model {

void PackedBatch::clear() {
  tokens.clear();
  targets.clear();
  pos.clear();
  seq_offsets.assign(1, 0);
}

void PackedBatch::add_sequence(const std::vector<int>& ids, int loss_begin) {
  const int L = static_cast<int>(ids.size());
  for (int t = 0; t < L; ++t) {
    tokens.push_back(ids[t]);
    pos.push_back(t);
    targets.push_back(t + 1 < L && t >= loss_begin ? ids[t + 1] : -1);
  }
  seq_offsets.push_back(seq_offsets.back() + L);
}

int PackedBatch::n_loss_tokens() const {
  int n = 0;
  for (int t : targets) n += t >= 0;
  return n;
}

namespace {
void upload_vector(const std::vector<int>& h, View1<int>& d, const char* label) {
  if (d.extent(0) != h.size()) d = View1<int>(Kokkos::view_alloc(std::string(label), Kokkos::WithoutInitializing), h.size());
  Kokkos::View<const int*, Kokkos::LayoutRight, HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>> hv(h.data(),
                                                                                                     h.size());
  Kokkos::deep_copy(d, hv);
}
}  // namespace

void PackedBatch::upload() {
  upload_vector(tokens, d_tokens, "mantissa::batch::tokens");
  upload_vector(targets, d_targets, "mantissa::batch::targets");
  upload_vector(pos, d_pos, "mantissa::batch::pos");
  upload_vector(seq_offsets, d_seq_offsets, "mantissa::batch::seq_offsets");
}

}  // namespace mantissa::model
