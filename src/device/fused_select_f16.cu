#include "device/fused_select.cuh"

namespace arnorm {
FusedKernel select_fused_kernel_f16(const AddRmsNormLaunch& l) { return fused_select::for_activation<__half>(l); }
}  // namespace arnorm
