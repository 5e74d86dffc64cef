// Which fused kernel instance serves a launch. One definition per activation
// type, each in its own translation unit (fused_select_<type>.cu), so that
// their kernels compile in parallel.
#pragma once

#include "device/launch.h"

namespace arnorm {

using FusedKernel = void (*)(FusedParams);

// nullptr when no instance fits (an internal error for the caller to report).
FusedKernel select_fused_kernel_f32(const AddRmsNormLaunch& l);
FusedKernel select_fused_kernel_f16(const AddRmsNormLaunch& l);
FusedKernel select_fused_kernel_bf16(const AddRmsNormLaunch& l);

}  // namespace arnorm
