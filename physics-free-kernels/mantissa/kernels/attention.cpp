// Explicit instantiations of the training engine's attention for every storage type on the
// default execution space (the header declares them extern): the public entry points, the
// path-naming detail:: entry points the tests call, and the team-size query.
#include "mantissa/kernels/attention.hpp"

namespace mantissa {

MANTISSA_ATTENTION_DECLARE(, float)
MANTISSA_ATTENTION_DECLARE(, fp16_t)
MANTISSA_ATTENTION_DECLARE(, bf16_t)

}  // namespace mantissa
