"""What TFLite Micro itself says about a model's arena: the head size from `print_allocations()`.

TFLM's RecordingMicroAllocator prints its report with the C library, on file descriptor 2, so Python's
`sys.stderr` never sees it: the helper points fd 2 at a temporary file for the call and reads it back.
"""

from __future__ import annotations

import os
import re
import tempfile

from oracle import tflm_interpreter

_HEAD = re.compile(rb"Arena allocation head (\d+) bytes")


def tflm_allocation_report(model: bytes, arena_size: int = 4 << 20) -> str:
    """The text TFLM's `print_allocations()` writes for `model` (loaded into an arena of `arena_size`)."""
    interpreter = tflm_interpreter(model, arena_size)
    with tempfile.TemporaryFile() as capture:
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)
        try:
            interpreter.print_allocations()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        return capture.read().decode("utf-8", errors="replace")


def tflm_reported_head_bytes(model: bytes, arena_size: int = 4 << 20) -> int:
    """The "Arena allocation head N bytes" TFLM reports: the size of its planned (non-persistent) section."""
    report = tflm_allocation_report(model, arena_size)
    found = _HEAD.search(report.encode())
    if found is None:
        raise AssertionError(f"TFLM printed no head size; its report was:\n{report}")
    return int(found.group(1))
