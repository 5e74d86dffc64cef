# shellcheck shell=bash
# Sourced by the scripts that run on a GPU machine (gpu-check.sh,
# ab-bench.sh) with BUILD set: NVLink multicast off, libnccl.so.2 on the
# library path, and the soname link of a carried build restored.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1

# libnccl.so.2: the system's, else the one in the Python NCCL wheel.
if ! ldconfig -p 2>/dev/null | grep -q 'libnccl.so.2'; then
  nccl_lib=$(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib"))' 2>/dev/null)
  [ -n "$nccl_lib" ] && export LD_LIBRARY_PATH="$nccl_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
# A build carried without its symlinks (only the versioned library, the
# benchmark and the test binary copied over): restore the soname link.
for lib in "$BUILD"/src/libarnorm.so.*.*.*; do
  [ -e "$lib" ] && [ ! -e "$BUILD/src/libarnorm.so.0" ] && ln -s "$(basename "$lib")" "$BUILD/src/libarnorm.so.0"
done
