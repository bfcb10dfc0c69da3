#include "mantissa/kernels/rmsnorm.hpp"

namespace mantissa {

MANTISSA_RMSNORM_DECLARE(, float)
MANTISSA_RMSNORM_DECLARE(, fp16_t)
MANTISSA_RMSNORM_DECLARE(, bf16_t)

}  // namespace mantissa
