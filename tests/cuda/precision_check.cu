// GPU check of Mantissa's 16-bit storage types against CUDA's own conversions (run on a machine
// with an NVIDIA GPU; the CPU test suite cannot run it). Every one of the 2^32 float patterns is
// encoded by mantissa::fp16_bits_from_float / bf16_bits_from_float (compiled for the device, as
// the kernels use them) and by __float2half_rn / __float2bfloat16_rn; every 16-bit pattern is
// decoded by both. NaN: both must give a NaN (CUDA returns a canonical NaN, Mantissa keeps the
// payload's top bits). Also checks the host build of the same functions on the decode side.
//   nvcc -O2 -std=c++17 -arch=sm_90 -I physics-free-kernels tests/cuda/precision_check.cu -o precision_check
// Exit status 0 when every pattern agrees.
#include <cstdio>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "mantissa/kernels/precision.hpp"

__global__ void encode_all(unsigned long long base, unsigned long long* bad) {
  const unsigned long long u = base + blockIdx.x * static_cast<unsigned long long>(blockDim.x) + threadIdx.x;
  const float x = __uint_as_float(static_cast<unsigned>(u));
  const unsigned short h = mantissa::fp16_bits_from_float(x);
  const unsigned short b = mantissa::bf16_bits_from_float(x);
  const unsigned short hc = __half_as_ushort(__float2half_rn(x));
  const unsigned short bc = __bfloat16_as_ushort(__float2bfloat16_rn(x));
  if (x != x) {  // NaN: both NaN
    if ((h & 0x7c00u) != 0x7c00u || (h & 0x3ffu) == 0) atomicAdd(&bad[0], 1ull);
    if ((b & 0x7f80u) != 0x7f80u || (b & 0x7fu) == 0) atomicAdd(&bad[1], 1ull);
    return;
  }
  if (h != hc) atomicAdd(&bad[0], 1ull);
  if (b != bc) atomicAdd(&bad[1], 1ull);
}

__global__ void decode_all(unsigned long long* bad) {
  const unsigned p = blockIdx.x * blockDim.x + threadIdx.x;
  if (p >= 65536u) return;
  const unsigned short s = static_cast<unsigned short>(p);
  const float h = mantissa::fp16_bits_to_float(s), hc = __half2float(__ushort_as_half(s));
  const float b = mantissa::bf16_bits_to_float(s), bc = __bfloat162float(__ushort_as_bfloat16(s));
  const bool h_ok = (h != h) ? (hc != hc) : __float_as_uint(h) == __float_as_uint(hc);
  const bool b_ok = (b != b) ? (bc != bc) : __float_as_uint(b) == __float_as_uint(bc);
  if (!h_ok) atomicAdd(&bad[2], 1ull);
  if (!b_ok) atomicAdd(&bad[3], 1ull);
}

int main() {
  unsigned long long* bad = nullptr;
  if (cudaMallocManaged(&bad, 4 * sizeof(unsigned long long)) != cudaSuccess) {
    std::fprintf(stderr, "precision_check: no CUDA device\n");
    return 2;
  }
  for (int i = 0; i < 4; ++i) bad[i] = 0;
  const unsigned threads = 256;
  const unsigned long long chunk = 1ull << 30;  // patterns per launch
  for (unsigned long long base = 0; base < (1ull << 32); base += chunk)
    encode_all<<<static_cast<unsigned>(chunk / threads), threads>>>(base, bad);
  decode_all<<<65536 / threads, threads>>>(bad);
  if (cudaDeviceSynchronize() != cudaSuccess) {
    std::fprintf(stderr, "precision_check: kernel failed: %s\n", cudaGetErrorString(cudaGetLastError()));
    return 2;
  }
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  std::printf("device: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
  std::printf("encode, all 2^32 floats: fp16 mismatches %llu (vs __float2half_rn), bf16 mismatches %llu (vs __float2bfloat16_rn)\n",
              bad[0], bad[1]);
  std::printf("decode, all 2^16 patterns: fp16 mismatches %llu (vs __half2float), bf16 mismatches %llu (vs __bfloat162float)\n",
              bad[2], bad[3]);
  const bool ok = bad[0] == 0 && bad[1] == 0 && bad[2] == 0 && bad[3] == 0;
  std::printf("%s\n", ok ? "PASS" : "FAIL");
  return ok ? 0 : 1;
}
