#include "mantissa/kernels/embedding.hpp"

namespace mantissa {

MANTISSA_EMBEDDING_DECLARE(, float)
MANTISSA_EMBEDDING_DECLARE(, fp16_t)
MANTISSA_EMBEDDING_DECLARE(, bf16_t)

}  // namespace mantissa
