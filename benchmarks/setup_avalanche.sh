#!/usr/bin/env bash
# The peer venv of benchmarks/learn_avalanche.py: .venv-avalanche in the project root with torch,
# torchvision and avalanche-lib 0.6.0, for the Avalanche comparison only (never part of `make test`).
#
#     benchmarks/setup_avalanche.sh
#
# Idempotent and fast when the venv is there: it then only compares a stamp written after the last
# successful install with the pinned versions. torch 2.14.1 and torchvision 0.29.1 are pinned together
# because they are the pair built for each other that this machine's pip configuration serves (torch's
# CUDA wheel and its libraries take about 6 GB; the first install takes a few minutes). Python 3.11 is
# what those wheels are built for: set PYTHON to use another interpreter than python3.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-avalanche
TORCH=2.14.1
TORCHVISION=0.29.1
AVALANCHE=0.6.0
PYTHON=${PYTHON:-python3}
STAMP="$VENV/.installed"
WANTED="torch==$TORCH torchvision==$TORCHVISION avalanche-lib==$AVALANCHE"

if [ -x "$VENV/bin/python" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$WANTED" ]; then
    exit 0
fi

# The full check imports all four together (avalanche alone takes seconds to import), so it runs only
# after an install; its success is what the stamp records.
imports() {
    "$VENV/bin/python" - "$TORCH" "$TORCHVISION" "$AVALANCHE" <<'PY'
import sys
from importlib.metadata import version

import avalanche, numpy, torch, torchvision  # noqa: F401  (all four must import together)

wanted = dict(zip(("torch", "torchvision", "avalanche-lib"), sys.argv[1:]))
found = {name: version(name).split("+")[0] for name in wanted}
sys.exit(0 if found == wanted else f"found {found}, wanted {wanted}")
PY
}

# pip warns once per package about each configured local index that lacks it; only that noise is dropped.
pip() {
    "$VENV/bin/pip" "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
rm -f "$STAMP"
pip install -q --upgrade pip
# torch first, on its own: the pair must resolve to the wheels on disk before avalanche-lib pulls in
# torchvision/torchmetrics, which would otherwise be free to pick another torchvision.
pip install -q "torch==$TORCH" "torchvision==$TORCHVISION"
pip install -q "avalanche-lib==$AVALANCHE" numpy "torch==$TORCH" "torchvision==$TORCHVISION"
if ! imports; then
    echo "setup_avalanche: $VENV was installed but torch $TORCH, torchvision $TORCHVISION and" \
         "avalanche-lib $AVALANCHE do not import together; see: $VENV/bin/python -c 'import avalanche'" >&2
    exit 1
fi
echo "$WANTED" > "$STAMP"
