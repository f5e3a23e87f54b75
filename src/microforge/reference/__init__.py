"""numpy reference kernels (one module per op family) and the interpreter that runs them.

Importing the package registers every kernel in `registry.KERNELS`.
"""

from microforge.reference import (  # noqa: F401
    activations,
    conv,
    dynamic,
    elementwise,
    movement,
    ood,
    pad,
    pool,
    quantize,
    reduce,
    shape,
)
