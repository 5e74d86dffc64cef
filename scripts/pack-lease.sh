#!/usr/bin/env bash
# Packs a build for a lent GPU machine (the device tool carries at most
# 64 MiB a call): the library xz-compressed to $BUILD/libarnorm.so.xz (about
# 31 -> 9 MB), which scripts/gpu-env.sh unpacks there, plus the benchmark and
# the GPU test binary as they are. Prints the carry list. Then on the lent
# machine: scripts/gpu-check.sh [tests|bench|...] or scripts/ab-bench.sh.
set -euo pipefail
BUILD=${BUILD:-build}
# The library the build's soname link names (CMake keeps it on the current version).
lib=$(readlink -f "$BUILD/src/libarnorm.so.0" || true)
if [ -z "$lib" ] || [ ! -e "$lib" ]; then
  echo "no $BUILD/src/libarnorm.so.0: build first (scripts/build.sh)" >&2
  exit 2
fi
xz -T0 -6 < "$lib" > "$BUILD/libarnorm.so.xz"
# The library here is the archive's: gpu-env.sh must not unpack it over a
# later build of this machine.
sha256sum "$BUILD/libarnorm.so.xz" | cut -d' ' -f1 > "$BUILD/src/.libarnorm.so.xz.sha256"
ls -l "$BUILD/libarnorm.so.xz" "$BUILD/tools/bench/arnorm-bench" "$BUILD/tests/arnorm-gpu-tests" >&2
printf 'carry: ["%s", "%s", "%s"]\n' "$BUILD/libarnorm.so.xz" "$BUILD/tools/bench/arnorm-bench" \
  "$BUILD/tests/arnorm-gpu-tests"
