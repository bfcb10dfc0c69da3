// GPU check of exp_fp32 (mantissa/kernels/exp.hpp): the device build against the host build of the
// same function on every 2^32 float pattern (NaN: both NaN). Build it twice to see what FMA
// contraction does: nvcc contracts a*b+c into FMAs by default (-fmad=true), the portable host build
// does not.
//   nvcc -O2 -std=c++17 -arch=sm_90 -fmad=false -I physics-free-kernels tests/cuda/exp_check.cu -o exp_check_nofma
//   nvcc -O2 -std=c++17 -arch=sm_90 -I physics-free-kernels tests/cuda/exp_check.cu -o exp_check_fma
// Prints the number of patterns whose bits differ and the largest difference in ulp; exit 0 when none differ.
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "mantissa/kernels/exp.hpp"

__global__ void exp_chunk(unsigned long long base, unsigned n, float* out) {
  const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = mantissa::exp_fp32(__uint_as_float(static_cast<unsigned>(base + i)));
}

int main() {
  const unsigned chunk = 1u << 28;
  float* d = nullptr;
  if (cudaMalloc(&d, chunk * sizeof(float)) != cudaSuccess) {
    std::fprintf(stderr, "exp_check: no CUDA device\n");
    return 2;
  }
  std::vector<float> h(chunk);
  unsigned long long differ = 0;
  long long worst_ulp = 0;
  for (unsigned long long base = 0; base < (1ull << 32); base += chunk) {
    exp_chunk<<<chunk / 256, 256>>>(base, chunk, d);
    if (cudaMemcpy(h.data(), d, chunk * sizeof(float), cudaMemcpyDeviceToHost) != cudaSuccess) {
      std::fprintf(stderr, "exp_check: kernel or copy failed\n");
      return 2;
    }
#pragma omp parallel for reduction(+ : differ) reduction(max : worst_ulp)
    for (long long i = 0; i < static_cast<long long>(chunk); ++i) {
      const float x = mantissa::bits_float(static_cast<unsigned>(base + i));
      const float want = mantissa::exp_fp32(x);
      const float got = h[i];
      if (want != want && got != got) continue;
      const unsigned a = mantissa::float_bits(want), b = mantissa::float_bits(got);
      if (a != b) {
        ++differ;
        const long long u = static_cast<long long>(a) - static_cast<long long>(b);
        worst_ulp = (u < 0 ? -u : u) > worst_ulp ? (u < 0 ? -u : u) : worst_ulp;
      }
    }
  }
  std::printf("exp_fp32, all 2^32 floats, device vs host: %llu patterns differ, at most %lld ulp\n", differ, worst_ulp);
  return differ == 0 ? 0 : 1;
}
