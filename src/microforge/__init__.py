"""microforge: int8 neural networks onto microcontrollers, with measured costs.

    import microforge
    graph = microforge.load("model.tflite")      # untrusted bytes in, checked Graph IR out
    probs = microforge.run(graph, x)              # bit-exact with TFLite Micro, whole batches at once
"""

from __future__ import annotations

import sys
from pathlib import Path

# OR-Tools must load before TensorFlow or its solver crashes (see microforge.plan.exact.solver_module);
# after TensorFlow, leave it unloaded so the exact strategy knows to step aside.
if "tensorflow" not in sys.modules:
    try:
        from ortools.sat.python import cp_model as _cp_model  # noqa: F401
    except ImportError:
        pass

from microforge.errors import (
    InputError,
    MicroforgeError,
    ModelError,
    PlanError,
    TargetError,
    UnsupportedError,
)
from microforge.frontend.reader import read_tflite
from microforge.frontend.writer import write_tflite
from microforge.graph.analysis import analyze
from microforge.graph.ir import Graph
from microforge.reference.interpreter import check_supported, run

__all__ = ["load", "run", "analyze", "write_tflite", "Graph", "MicroforgeError", "ModelError",
           "UnsupportedError", "InputError", "PlanError", "TargetError"]
__version__ = "0.1.0"


def load(source: str | Path | bytes) -> Graph:
    """Read a .tflite model (path or bytes), check it, and fail early on anything microforge cannot run."""
    graph = read_tflite(source)
    check_supported(graph)
    return graph
