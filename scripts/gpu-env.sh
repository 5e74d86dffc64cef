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
# The library of this checkout's version (the public header's), for builds
# carried to a lent machine, where files of earlier calls may remain.
arnorm_version=$(awk '/^#define ARNORM_VERSION_(MAJOR|MINOR|PATCH) / {printf "%s%s", sep, $3; sep = "."}' \
  "$(dirname "${BASH_SOURCE[0]}")/../include/arnorm/arnorm.h")
arnorm_lib="$BUILD/src/libarnorm.so.$arnorm_version"
# Unpacks an xz-compressed library ($1) to $2 (ab-bench.sh's variants too).
arnorm_unpack() {
  python3 -c 'import lzma, sys; open(sys.argv[2], "wb").write(lzma.open(sys.argv[1]).read())' "$1" "$2"
}
# Carried compressed ($BUILD/libarnorm.so.xz, scripts/pack-lease.sh): unpacked
# unless the library there already is that archive's (a stamp holds the
# archive's digest; pack-lease.sh writes it for the library it packed, so a
# newer local build is never overwritten by an older archive).
if [ -e "$BUILD/libarnorm.so.xz" ]; then
  arnorm_stamp="$BUILD/src/.libarnorm.so.xz.sha256"
  arnorm_digest=$(sha256sum "$BUILD/libarnorm.so.xz" | cut -d' ' -f1)
  if [ ! -e "$arnorm_lib" ] || [ "$(cat "$arnorm_stamp" 2>/dev/null)" != "$arnorm_digest" ]; then
    mkdir -p "$BUILD/src"
    if arnorm_unpack "$BUILD/libarnorm.so.xz" "$arnorm_lib"; then
      echo "$arnorm_digest" > "$arnorm_stamp"
    else
      echo "cannot unpack $BUILD/libarnorm.so.xz" >&2
    fi
  fi
fi
# Carried without its symlinks: the soname link names this version's
# library, not one an earlier call left on the machine.
if [ -e "$arnorm_lib" ]; then ln -sfn "$(basename "$arnorm_lib")" "$BUILD/src/libarnorm.so.0"; fi
