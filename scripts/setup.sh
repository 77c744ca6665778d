#!/usr/bin/env bash
# Set up napari-sbl in ./.venv on a fresh Linux machine. Safe to rerun: it only installs what is missing.
#
# Order matters: torch and torchvision go in first as a matching pair (a bare torch requirement with no
# torch installed pulls a different build, and a mismatched torchvision fails to import), then sam2 is
# built against that torch without build isolation and without its optional CUDA extension.
set -euo pipefail
cd "$(dirname "$0")/.."

# Headless napari needs an X server with OpenGL (Xvfb + Mesa) and the libraries Qt's xcb platform loads.
debian_packages=(xvfb xauth libgl1-mesa-dri libegl1 libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0
  libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0
  libxcb-cursor0 libdbus-1-3 libfontconfig1)
missing=()
if command -v dpkg >/dev/null 2>&1; then
  for pkg in "${debian_packages[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
fi
if ((${#missing[@]})) && command -v apt-get >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "setup: installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q --upgrade pip "setuptools>=68" wheel

if ! python -c "import torch, torchvision" >/dev/null 2>&1; then
  if [ "$(uname -m)" = "aarch64" ]; then
    pip install -q torch==2.9.1 torchvision==0.24.1
  else
    pip install -q torch==2.14.1 torchvision==0.29.1
  fi
fi
SAM2_BUILD_CUDA=0 pip install -q --no-build-isolation -e ".[all,test]"
echo "setup: done (.venv)"
