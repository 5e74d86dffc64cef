#!/usr/bin/env bash
# CMake accepts CUDA 12.8, but this machine (and CI) build with CUDA 13,
# whose runtime API renamed some calls (the graph queries with edge data:
# src/comm/graph_queries.h). This compiles the library's host sources
# (syntax only, g++) against CUDA 12.8's runtime headers, taken from the
# nvidia-cuda-runtime-cu12 wheel, so that a CUDA 13-only call fails here
# instead of on a user's machine. The .cu files need a 12.x nvcc and are
# not checked.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Offline, it says so and passes, unless ARNORM_REQUIRE_CUDA12_CHECK=1 (CI).
if ! python3 -m pip download --no-deps -q "nvidia-cuda-runtime-cu12==12.8.*" -d "$work"; then
  echo "CUDA 12.8 header check: SKIPPED (could not download nvidia-cuda-runtime-cu12 with pip)"
  [ "${ARNORM_REQUIRE_CUDA12_CHECK:-0}" = 1 ] && exit 1
  exit 0
fi
python3 -m zipfile -e "$work"/nvidia_cuda_runtime_cu12-*.whl "$work/x"
inc="$work/x/nvidia/cuda_runtime/include"
version=$(awk '/#define CUDART_VERSION/ {print $3}' "$inc/cuda_runtime_api.h")
fail=0
n=0
for f in src/*/*.cpp; do
  n=$((n + 1))
  g++ -std=c++17 -fsyntax-only -I"$inc" -Iinclude -Isrc "$f" || { echo "FAILED with CUDA $version headers: $f"; fail=1; }
done
[ "$fail" -eq 0 ] && echo "$n host sources compile against CUDA runtime headers $version"
exit $fail
