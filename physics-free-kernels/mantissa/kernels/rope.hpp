#pragma once
// Rotary position embedding, Llama "rotate_half" convention: in every q and k head of size hd,
// element i is paired with element i + hd/2 (i < hd/2) and the pair is rotated by
//   angle = pos * inv_freq_i,   inv_freq_i = 1 / theta^(2i/hd)
// (both in fp32, as Hugging Face computes inv_freq; cos/sin in fp32, not rounded to T):
//   out_i = x_i cos - x_{i+hd/2} sin,   out_{i+hd/2} = x_{i+hd/2} cos + x_i sin,  each rounded once to T.
// The backward pass applies the inverse rotation (the transpose) to the gradient in place.
// qkv rows hold [q: n_head heads | k: n_kv_head heads | v: n_kv_head heads]; v is untouched.
// One work item per (row, rotated head), looping over the head's pairs.
// RopeTable: cos/sin of every (position < max_pos, pair i) computed once (rope_table), with the
// same fp32 expressions, so a kernel that reads it gives the same bits as one that computes them;
// the engines build one at construction and pass it to every call (no pow/cos/sin per call).
// Rows whose position lies outside the table compute their angle as without one.
#include <cstdint>
#include <stdexcept>
#include <string>

#include "mantissa/kernels/types.hpp"

namespace mantissa {

// cos(pos * inv_freq_i) at [pos, i] and sin(...) at [pos, hd/2 + i], pos < max_pos, i < hd/2.
struct RopeTable {
  View2<float> cs;  // (max_pos, head_dim); empty: no table
  float theta = 0.0f;
};

namespace detail {
// The angle of pair i at position p (every RoPE cos/sin comes from here).
KOKKOS_INLINE_FUNCTION float rope_angle(int p, int i, int head_dim, float theta) {
  const float inv_freq = 1.0f / kmath::pow(theta, static_cast<float>(2 * i) / static_cast<float>(head_dim));
  return static_cast<float>(p) * inv_freq;
}

// Rotates the pairs (i, i + hd/2) of one rotated head of row n by sign * angle(pos[n], i).
template <class T>
struct RopeRotate {
  View2<T> qkv;
  ConstView1<int> pos;
  int n_rot_heads;  // n_head + n_kv_head: the q and k heads
  int head_dim;
  float theta;
  float sign;  // +1 forward, -1 backward (inverse rotation)
  ConstView2<float> table;  // RopeTable::cs or empty

  // Work item (row n, rotated head h): the pairs i < hd/2 of that head, contiguous, so that the
  // loop over i vectorises on a CPU (with the table, cos/sin are contiguous rows too).
  KOKKOS_INLINE_FUNCTION void operator()(const std::int64_t idx) const {
    const int half = head_dim / 2;
    const int n = static_cast<int>(idx / n_rot_heads);
    const int h = static_cast<int>(idx % n_rot_heads);
    const int p = pos(n);
    T* row = &qkv(n, h * head_dim);
    if (p >= 0 && static_cast<std::size_t>(p) < table.extent(0)) {
      const float* cs = &table(p, 0);
      for (int i = 0; i < half; ++i) rotate(row, i, half, cs[i], sign * cs[half + i]);
    } else {
      for (int i = 0; i < half; ++i) {
        const float angle = rope_angle(p, i, head_dim, theta);
        rotate(row, i, half, kmath::cos(angle), sign * kmath::sin(angle));
      }
    }
  }
  KOKKOS_INLINE_FUNCTION static void rotate(T* row, int i, int half, float c, float s) {
    const float x1 = to_float(row[i]);
    const float x2 = to_float(row[i + half]);
    row[i] = from_float<T>(x1 * c - x2 * s);
    row[i + half] = from_float<T>(x2 * c + x1 * s);
  }
};

template <class T>
RopeRotate<T> make_rope_rotate(const char* who, const View2<T>& qkv, const ConstView1<int>& pos, int n_head,
                               int n_kv_head, int head_dim, float theta, float sign, const RopeTable& table) {
  if (head_dim <= 0 || head_dim % 2 != 0 || n_head < 0 || n_kv_head < 0)
    throw std::invalid_argument(std::string(who) + ": head_dim must be positive and even, head counts >= 0");
  if (qkv.extent(1) != static_cast<std::size_t>((n_head + 2 * n_kv_head) * head_dim) || pos.extent(0) != qkv.extent(0))
    throw std::invalid_argument(std::string(who) + ": expected qkv (N, (n_head + 2 n_kv_head) head_dim), pos (N)");
  if (table.cs.extent(0) != 0 && (table.cs.extent(1) != static_cast<std::size_t>(head_dim) || table.theta != theta))
    throw std::invalid_argument(std::string(who) + ": the RoPE table was built for another head_dim or theta");
  return RopeRotate<T>{qkv, pos, n_head + n_kv_head, head_dim, theta, sign, table.cs};
}
}  // namespace detail

// The cos/sin table of positions [0, max_pos) (see RopeTable).
template <class Exec>
RopeTable rope_table(const Exec& space, int max_pos, int head_dim, float theta) {
  if (max_pos < 0 || head_dim <= 0 || head_dim % 2 != 0)
    throw std::invalid_argument("mantissa::rope_table: max_pos >= 0 and a positive even head_dim needed");
  RopeTable t{View2<float>(Kokkos::view_alloc(std::string("mantissa::rope::table"), Kokkos::WithoutInitializing),
                           static_cast<std::size_t>(max_pos), static_cast<std::size_t>(head_dim)),
              theta};
  const View2<float> cs = t.cs;
  const int half = head_dim / 2;
  Kokkos::parallel_for(
      "mantissa::rope::table", Kokkos::RangePolicy<Exec>(space, 0, static_cast<std::size_t>(max_pos) * half),
      KOKKOS_LAMBDA(const std::size_t idx) {
        const int p = static_cast<int>(idx / half), i = static_cast<int>(idx % half);
        const float angle = detail::rope_angle(p, i, head_dim, theta);
        cs(p, i) = kmath::cos(angle);
        cs(p, half + i) = kmath::sin(angle);
      });
  return t;
}

// rotate q and k heads of qkv in place by pos * inv_freq       qkv (N, (n_head + 2 n_kv_head) hd), pos (N)
template <class T, class Exec>
void rope_forward(const Exec& space, const View2<T>& qkv, const ConstView1<int>& pos, int n_head, int n_kv_head,
                  int head_dim, float theta, const RopeTable& table = RopeTable{}) {
  const auto f = detail::make_rope_rotate<T>("mantissa::rope_forward", qkv, pos, n_head, n_kv_head, head_dim, theta,
                                             1.0f, table);
  const std::int64_t work = static_cast<std::int64_t>(qkv.extent(0)) * (n_head + n_kv_head);
  Kokkos::parallel_for("mantissa::rope::forward",
                       Kokkos::RangePolicy<Exec, Kokkos::IndexType<std::int64_t>>(space, 0, work), f);
}

// inverse rotation of the q and k gradients in place          dqkv (N, (n_head + 2 n_kv_head) hd), pos (N)
template <class T, class Exec>
void rope_backward(const Exec& space, const View2<T>& dqkv, const ConstView1<int>& pos, int n_head, int n_kv_head,
                   int head_dim, float theta, const RopeTable& table = RopeTable{}) {
  const auto f = detail::make_rope_rotate<T>("mantissa::rope_backward", dqkv, pos, n_head, n_kv_head, head_dim, theta,
                                             -1.0f, table);
  const std::int64_t work = static_cast<std::int64_t>(dqkv.extent(0)) * (n_head + n_kv_head);
  Kokkos::parallel_for("mantissa::rope::backward",
                       Kokkos::RangePolicy<Exec, Kokkos::IndexType<std::int64_t>>(space, 0, work), f);
}

#define MANTISSA_ROPE_DECLARE(EXTERN, T)                                                                               \
  EXTERN template void rope_forward<T, ExecSpace>(const ExecSpace&, const View2<T>&, const ConstView1<int>&, int, int, \
                                                  int, float, const RopeTable&);                                       \
  EXTERN template void rope_backward<T, ExecSpace>(const ExecSpace&, const View2<T>&, const ConstView1<int>&, int,     \
                                                   int, int, float, const RopeTable&);
MANTISSA_ROPE_DECLARE(extern, float)
MANTISSA_ROPE_DECLARE(extern, fp16_t)
MANTISSA_ROPE_DECLARE(extern, bf16_t)

}  // namespace mantissa
