#!/usr/bin/env bash
# Configures and builds into ${BUILD:-build} (Release, Ninja).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
command -v nvcc >/dev/null || export PATH=/usr/local/cuda/bin:$PATH
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build "$BUILD" -j "$(nproc)"
