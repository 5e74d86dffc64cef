#include "device/fused_select.cuh"

namespace arnorm {
FusedKernel select_fused_kernel_bf16(const AddRmsNormLaunch& l) { return fused_select::for_activation<__nv_bfloat16>(l); }
}  // namespace arnorm
