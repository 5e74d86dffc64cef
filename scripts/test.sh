#!/usr/bin/env bash
# The test command: installs the build dependencies, builds, runs the host
# tests (no GPU needed), compiles the host sources against CUDA 12.8's
# headers (scripts/check-cuda12-headers.sh), checks that an installed
# arnorm works through find_package, and, on a machine with 2 or more GPUs,
# runs the multi-GPU tests too (scripts/gpu-check.sh tests).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
scripts/install-deps.sh
scripts/build.sh
ctest --test-dir "$BUILD" --output-on-failure

echo "== the library's host sources against CUDA 12.8's runtime headers"
scripts/check-cuda12-headers.sh

echo "== install + find_package example"
prefix=$(mktemp -d)
cmake --install "$BUILD" --prefix "$prefix" >/dev/null
cmake -S examples/find_package -B "$BUILD/example" -G Ninja -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$BUILD/example" >/dev/null
echo "example built against $prefix: $BUILD/example/allreduce_example"

ngpu=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
if [ "${ngpu:-0}" -ge 2 ]; then
  BUILD=$BUILD scripts/gpu-check.sh tests
else
  echo "multi-GPU tests: SKIPPED (${ngpu:-0} GPUs visible; they need 2 or more)"
fi
