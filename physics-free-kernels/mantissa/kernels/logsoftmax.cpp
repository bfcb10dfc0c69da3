#include "mantissa/kernels/logsoftmax.hpp"

namespace mantissa {

MANTISSA_LOGSOFTMAX_DECLARE(, float)
MANTISSA_LOGSOFTMAX_DECLARE(, fp16_t)
MANTISSA_LOGSOFTMAX_DECLARE(, bf16_t)

}  // namespace mantissa
