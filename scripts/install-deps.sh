#!/usr/bin/env bash
# Installs the build dependencies from Debian/Ubuntu packages (root or sudo).
# The CUDA toolkit (nvcc, >= 12.8) and NCCL must already be installed, as on
# any CUDA machine; set CUDACXX or put nvcc on PATH if it is not found.
set -euo pipefail
pkgs=(cmake ninja-build g++ libgtest-dev libgmock-dev nlohmann-json3-dev libcli11-dev)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  SUDO=; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ] || { echo "nvcc not found: install the CUDA toolkit"; exit 1; }
