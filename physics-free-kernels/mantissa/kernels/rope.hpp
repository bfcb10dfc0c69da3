#pragma once
// Rotary position embedding, Llama "rotate_half" convention: in every q and k head of size hd,
// element i is paired with element i + hd/2 (i < hd/2) and the pair is rotated by
//   angle = pos * inv_freq_i,   inv_freq_i = 1 / theta^(2i/hd)
// (both in fp32, as Hugging Face computes inv_freq; cos/sin in fp32, not rounded to T):
//   out_i = x_i cos - x_{i+hd/2} sin,   out_{i+hd/2} = x_{i+hd/2} cos + x_i sin,  each rounded once to T.
// The backward pass applies the inverse rotation (the transpose) to the gradient in place.
// qkv rows hold [q: n_head heads | k: n_kv_head heads | v: n_kv_head heads]; v is untouched.
// One work item per (row, i): cos/sin are computed once and applied to all q and k heads.
#include <cstdint>
#include <stdexcept>
#include <string>

#include "mantissa/kernels/types.hpp"

namespace mantissa {

namespace detail {
// Rotates pair (i, i + hd/2) of every rotated head of row n by sign * angle(pos[n], i).
template <class T>
struct RopeRotate {
  View2<T> qkv;
  ConstView1<int> pos;
  int n_rot_heads;  // n_head + n_kv_head: the q and k heads
  int head_dim;
  float theta;
  float sign;  // +1 forward, -1 backward (inverse rotation)

  KOKKOS_INLINE_FUNCTION void operator()(const std::int64_t idx) const {
    const int half = head_dim / 2;
    const int n = static_cast<int>(idx / half);
    const int i = static_cast<int>(idx % half);
    const float inv_freq = 1.0f / kmath::pow(theta, static_cast<float>(2 * i) / static_cast<float>(head_dim));
    const float angle = static_cast<float>(pos(n)) * inv_freq;
    const float c = kmath::cos(angle);
    const float s = sign * kmath::sin(angle);
    for (int h = 0; h < n_rot_heads; ++h) {
      const int j1 = h * head_dim + i;
      const int j2 = j1 + half;
      const float x1 = to_float(qkv(n, j1));
      const float x2 = to_float(qkv(n, j2));
      qkv(n, j1) = from_float<T>(x1 * c - x2 * s);
      qkv(n, j2) = from_float<T>(x2 * c + x1 * s);
    }
  }
};

template <class T>
RopeRotate<T> make_rope_rotate(const char* who, const View2<T>& qkv, const ConstView1<int>& pos, int n_head,
                               int n_kv_head, int head_dim, float theta, float sign) {
  if (head_dim <= 0 || head_dim % 2 != 0 || n_head < 0 || n_kv_head < 0)
    throw std::invalid_argument(std::string(who) + ": head_dim must be positive and even, head counts >= 0");
  if (qkv.extent(1) != static_cast<std::size_t>((n_head + 2 * n_kv_head) * head_dim) || pos.extent(0) != qkv.extent(0))
    throw std::invalid_argument(std::string(who) + ": expected qkv (N, (n_head + 2 n_kv_head) head_dim), pos (N)");
  return RopeRotate<T>{qkv, pos, n_head + n_kv_head, head_dim, theta, sign};
}
}  // namespace detail

// rotate q and k heads of qkv in place by pos * inv_freq       qkv (N, (n_head + 2 n_kv_head) hd), pos (N)
template <class T, class Exec>
void rope_forward(const Exec& space, const View2<T>& qkv, const ConstView1<int>& pos, int n_head, int n_kv_head,
                  int head_dim, float theta) {
  const auto f =
      detail::make_rope_rotate<T>("mantissa::rope_forward", qkv, pos, n_head, n_kv_head, head_dim, theta, 1.0f);
  const std::int64_t work = static_cast<std::int64_t>(qkv.extent(0)) * (head_dim / 2);
  Kokkos::parallel_for("mantissa::rope::forward",
                       Kokkos::RangePolicy<Exec, Kokkos::IndexType<std::int64_t>>(space, 0, work), f);
}

// inverse rotation of the q and k gradients in place          dqkv (N, (n_head + 2 n_kv_head) hd), pos (N)
template <class T, class Exec>
void rope_backward(const Exec& space, const View2<T>& dqkv, const ConstView1<int>& pos, int n_head, int n_kv_head,
                   int head_dim, float theta) {
  const auto f =
      detail::make_rope_rotate<T>("mantissa::rope_backward", dqkv, pos, n_head, n_kv_head, head_dim, theta, -1.0f);
  const std::int64_t work = static_cast<std::int64_t>(dqkv.extent(0)) * (head_dim / 2);
  Kokkos::parallel_for("mantissa::rope::backward",
                       Kokkos::RangePolicy<Exec, Kokkos::IndexType<std::int64_t>>(space, 0, work), f);
}

#define MANTISSA_ROPE_DECLARE(EXTERN, T)                                                                               \
  EXTERN template void rope_forward<T, ExecSpace>(const ExecSpace&, const View2<T>&, const ConstView1<int>&, int, int, \
                                                  int, float);                                                         \
  EXTERN template void rope_backward<T, ExecSpace>(const ExecSpace&, const View2<T>&, const ConstView1<int>&, int,     \
                                                   int, int, float);
MANTISSA_ROPE_DECLARE(extern, float)
MANTISSA_ROPE_DECLARE(extern, fp16_t)
MANTISSA_ROPE_DECLARE(extern, bf16_t)

}  // namespace mantissa
