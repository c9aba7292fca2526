#!/usr/bin/env bash
# Installs the Debian 12 packages kiln needs when they are missing. As root it runs apt-get itself;
# otherwise it prints the exact command and stops, so nothing is installed behind the user's back.
set -euo pipefail
packages=(build-essential cmake ninja-build ccache pkg-config
          nlohmann-json3-dev libcli11-dev libgtest-dev libgmock-dev libopenblas-dev libdnnl-dev ocl-icd-opencl-dev
          pybind11-dev python3-dev python3-numpy python3-pytest python3-pip python3-venv
          libtorch-dev python3-torch python3-torchvision clang libclang-rt-14-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
cmd="apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "kiln: missing Debian packages; run as root:  apt-get update && $cmd" >&2
  exit 1
fi
echo "kiln: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
$cmd
