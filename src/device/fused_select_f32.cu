#include "device/fused_select.cuh"

namespace arnorm {
FusedKernel select_fused_kernel_f32(const AddRmsNormLaunch& l) { return fused_select::for_activation<float>(l); }
}  // namespace arnorm
