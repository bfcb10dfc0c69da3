#include "mantissa/kernels/swiglu.hpp"

namespace mantissa {

MANTISSA_SWIGLU_DECLARE(, float)
MANTISSA_SWIGLU_DECLARE(, fp16_t)
MANTISSA_SWIGLU_DECLARE(, bf16_t)

}  // namespace mantissa
