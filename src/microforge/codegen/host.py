"""The host target: the generated C built by gcc, run from Python.

Fast path: a shared library loaded with ctypes, with a batch entry point so thousands of samples cost one
call. Sanitized path (AddressSanitizer + UndefinedBehaviorSanitizer): the same C linked into a small
executable that reads samples on stdin and writes outputs on stdout, because a sanitized shared library
cannot be loaded into an unsanitized Python.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from microforge.codegen.emit import GeneratedModel, generate
from microforge.errors import InputError, TargetError
from microforge.graph.ir import Graph
from microforge.reference.interpreter import from_batch, to_batch

WARNINGS = ["-std=c99", "-Wall", "-Wextra", "-Werror"]
# Built and loaded on the same machine, so tuned for it; no contraction of a * b + c into FMA, which would
# round float32 kernels differently from the reference.
HOST_CFLAGS = ("-O3", "-march=native", "-ffp-contract=off")
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g"]
LIBS = ["-lm"]  # the kernels' expf; after the sources, as the linker resolves left to right


def _host_glue(graph: Graph) -> str:
    """mf_run_batch over all inputs/outputs, and a main() for the sanitized executable."""
    return host_glue([t.nbytes for t in graph.inputs], [t.nbytes for t in graph.outputs])


def host_glue(input_bytes: list[int], output_bytes: list[int]) -> str:
    """The host glue of any folder with the generated model's interface (mf_init, mf_invoke, mf_input,
    mf_output) and these input and output sizes."""
    n_in, n_out = len(input_bytes), len(output_bytes)
    in_bytes = ", ".join(map(str, input_bytes))
    out_bytes = ", ".join(map(str, output_bytes))
    return f"""#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "model.h"

static const long mf_in_bytes[{n_in}] = {{{in_bytes}}};
static const long mf_out_bytes[{n_out}] = {{{out_bytes}}};

void mf_run_batch(const unsigned char *const *inputs, unsigned char *const *outputs, long count) {{
    for (long n = 0; n < count; ++n) {{
        for (int i = 0; i < {n_in}; ++i) memcpy(mf_input(i), inputs[i] + n * mf_in_bytes[i], (size_t)mf_in_bytes[i]);
        mf_invoke();
        for (int i = 0; i < {n_out}; ++i) memcpy(outputs[i] + n * mf_out_bytes[i], mf_output(i), (size_t)mf_out_bytes[i]);
    }}
}}

#ifdef MF_HOST_MAIN
/* argv[1] = sample count; stdin: all samples of input 0, then of input 1, ...; stdout: likewise outputs. */
int main(int argc, char **argv) {{
    long count = argc > 1 ? atol(argv[1]) : 0;
    unsigned char *inputs[{n_in}], *outputs[{n_out}];
    for (int i = 0; i < {n_in}; ++i) {{
        inputs[i] = malloc((size_t)(mf_in_bytes[i] * count + 1));
        if (!inputs[i] || fread(inputs[i], 1, (size_t)(mf_in_bytes[i] * count), stdin) != (size_t)(mf_in_bytes[i] * count)) return 3;
    }}
    for (int i = 0; i < {n_out}; ++i) outputs[i] = malloc((size_t)(mf_out_bytes[i] * count + 1));
    mf_init();
    mf_run_batch((const unsigned char *const *)inputs, outputs, count);
    for (int i = 0; i < {n_out}; ++i) fwrite(outputs[i], 1, (size_t)(mf_out_bytes[i] * count), stdout);
    for (int i = 0; i < {n_in}; ++i) free(inputs[i]);
    for (int i = 0; i < {n_out}; ++i) free(outputs[i]);
    return 0;
}}
#endif
"""


def _compile(cmd: list[str], cwd: Path) -> None:
    if shutil.which(cmd[0]) is None:
        raise TargetError(f"host target needs the C compiler '{cmd[0]}' (Debian package gcc)")
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise TargetError(f"compiling the generated C failed:\n{' '.join(cmd)}\n{done.stderr[-4000:]}")


class HostModel:
    """The generated C of a graph, compiled for this machine; `run` evaluates batches like microforge.run."""

    def __init__(self, graph: Graph, generated: GeneratedModel, workdir: tempfile.TemporaryDirectory | None,
                 sanitize: bool, cflags: list[str]):
        self.graph = graph
        self.generated = generated
        self._workdir = workdir  # kept alive as long as the model
        self.sanitize = sanitize
        d = generated.directory
        glue = d / "mf_host.c"
        glue.write_text(_host_glue(graph))
        sources = [str(d / s) for s in generated.sources] + [str(glue)]
        if sanitize:
            self._exe = d / "model_host"
            _compile(["gcc", *WARNINGS, *cflags, *SANITIZE, "-DMF_HOST_MAIN", "-I", str(d), *sources,
                      *LIBS, "-o", str(self._exe)], d)
        else:
            library = d / "libmodel.so"
            _compile(["gcc", *WARNINGS, *cflags, "-shared", "-fPIC", "-I", str(d), *sources, *LIBS, "-o", str(library)],
                     d)
            self._lib = ctypes.CDLL(str(library))
            self._lib.mf_run_batch.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long]
            self._lib.mf_init()

    def run_batched(self, batches: list[np.ndarray]) -> list[np.ndarray]:
        """(N, *shape) arrays in, (N, *shape) arrays out: the interpreter's batch form."""
        count = len(batches[0])
        inputs = [np.ascontiguousarray(b) for b in batches]
        outputs = [np.empty((count,) + t.shape, dtype=t.dtype) for t in self.graph.outputs]
        if self.sanitize:
            payload = b"".join(x.tobytes() for x in inputs)
            done = subprocess.run([str(self._exe), str(count)], input=payload, capture_output=True, timeout=600)
            if done.returncode != 0:
                raise TargetError(f"the sanitized model failed (exit {done.returncode}):\n"
                                  f"{done.stderr.decode(errors='replace')[-4000:]}")
            data, pos = done.stdout, 0
            for out in outputs:
                out.reshape(-1).view(np.uint8)[:] = np.frombuffer(data, np.uint8, out.nbytes, pos)
                pos += out.nbytes
            return outputs
        in_ptrs = (ctypes.c_void_p * len(inputs))(*[x.ctypes.data for x in inputs])
        out_ptrs = (ctypes.c_void_p * len(outputs))(*[y.ctypes.data for y in outputs])
        self._lib.mf_run_batch(in_ptrs, out_ptrs, count)
        return outputs

    def run(self, *inputs: np.ndarray) -> np.ndarray | list[np.ndarray]:
        """Same calling convention as microforge.run: arrays (N, ...) in, arrays out."""
        if len(inputs) != len(self.graph.inputs):
            raise InputError(f"the model has {len(self.graph.inputs)} inputs; got {len(inputs)} arrays")
        batches = [to_batch(t, x) for t, x in zip(self.graph.inputs, inputs)]
        outputs = [from_batch(t, y) for t, y in zip(self.graph.outputs, self.run_batched(batches))]
        return outputs[0] if len(outputs) == 1 else outputs


def compile_host(graph: Graph, target: str = "host", sanitize: bool = False, out_dir: str | Path | None = None,
                 cflags: list[str] | None = None) -> HostModel:
    """Generate C for `graph` and build it for this machine (in `out_dir`, or a temporary folder)."""
    workdir = None
    if out_dir is None:
        workdir = tempfile.TemporaryDirectory(prefix="microforge-")
        out_dir = workdir.name
    generated = generate(graph, out_dir, target=target)
    return HostModel(graph, generated, workdir, sanitize, cflags if cflags is not None else list(HOST_CFLAGS))
