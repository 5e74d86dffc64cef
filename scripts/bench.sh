#!/usr/bin/env bash
# One command on a fresh GPU machine: install the build dependencies, build,
# run arnorm-bench over every visible GPU (extra flags pass through).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
export NCCL_NVLS_ENABLE=0
exec "${BUILD:-build}/tools/bench/arnorm-bench" "$@"
