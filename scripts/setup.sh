#!/usr/bin/env bash
# Install what microforge needs: system packages (Debian, no recommends) and a virtual environment.
# Idempotent: a second run with nothing missing only checks and returns.
set -euo pipefail
cd "$(dirname "$0")/.."

# gcc builds the host target; the Arm toolchain, newlib and QEMU build and run the emulated Cortex-M targets.
# espeak-ng (synthetic speech) and alsa-utils (its /usr/share/sounds/alsa wavs) are far-OOD audio for the
# OOD benchmark's keyword-spotting sets (src/microforge/robust/ood/tasks.py).
SYSTEM_PACKAGES=(python3-venv gcc make gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm espeak-ng alsa-utils)
missing=()
for pkg in "${SYSTEM_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import microforge, pytest, tflite_micro, tensorflow" 2>/dev/null \
   || [ pyproject.toml -nt .venv/.installed ]; then
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e ".[test]"
    touch .venv/.installed
fi
