#include "mantissa/kernels/rope.hpp"

namespace mantissa {

MANTISSA_ROPE_DECLARE(, float)
MANTISSA_ROPE_DECLARE(, fp16_t)
MANTISSA_ROPE_DECLARE(, bf16_t)

}  // namespace mantissa
