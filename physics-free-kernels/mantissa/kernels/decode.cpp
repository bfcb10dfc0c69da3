// Explicit instantiations of the rollout engine's decode kernels for every storage type on the
// default execution space (the header declares them extern).
#include "mantissa/kernels/decode.hpp"

namespace mantissa {

MANTISSA_DECODE_DECLARE(, float)
MANTISSA_DECODE_DECLARE(, fp16_t)
MANTISSA_DECODE_DECLARE(, bf16_t)

}  // namespace mantissa
