"""float32 SOFTMAX and LOGISTIC through the generated C (libm's expf) against the reference interpreter.

The C follows TFLM's float reference kernels step by step; only exp differs: glibc's and newlib's expf are
within about half an ulp of exp, numpy's float32 exp (the reference's) within a few ulps, and a third of
its results differ from glibc's in the last bit. Measured on this file's inputs with 2,000-sample batches
(host, three seeds; qemu-m4, 64 samples): at most 4.6e-7 relative (about 4 ulps; 4.0e-7 on qemu-m4) on
normal outputs, and two subnormal ulps (2.8e-45) below them. So the tolerance is rtol 1e-6 (8 ulps or more)
with atol 1e-44 (a few subnormal ulps: outputs below float32's normal range have few significant bits).
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

import microforge
from microforge.codegen import compile_host, generate
from microforge.codegen.targets.qemu import run_on_qemu
from microforge.graph.builder import GraphBuilder
from microforge.graph.ir import Graph
from microforge.reference.interpreter import run_batched

RTOL, ATOL = 1e-6, 1e-44
BATCH = 200
QEMU_TOOLS = ("arm-none-eabi-gcc", "arm-none-eabi-nm", "arm-none-eabi-size", "qemu-system-arm", "gcc")
needs_qemu = pytest.mark.skipif(any(shutil.which(t) is None for t in QEMU_TOOLS),
                                reason="needs gcc-arm-none-eabi, libnewlib-arm-none-eabi, qemu-system-arm and gcc")
# The reference's numpy exp warns where TFLM's arithmetic overflows on purpose (inf - inf in a row maximum).
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                                        "ignore:invalid value encountered:RuntimeWarning")

CUTOFF, LOWER = np.float32(16.619047164916992188), np.float32(-9)  # TFLM's logistic: 1 above, exp(x) below
LOGISTIC_EDGES = np.array([CUTOFF, np.nextafter(CUTOFF, np.float32(0)), np.nextafter(CUTOFF, np.float32(99)),
                           LOWER, np.nextafter(LOWER, np.float32(0)), np.nextafter(LOWER, np.float32(-99)),
                           0.0, -0.0, 1e-45, -1e-45, 88.8, -88.8, -103.0, -104.0, -150.0, 3e38, -3e38,
                           np.inf, -np.inf, np.nan], np.float32)


def float_graph(specs: list[tuple[str, tuple[int, ...], float]]) -> Graph:
    """One graph with an independent (op, shape, beta) per spec: one input and one output each."""
    b = GraphBuilder()
    for k, (op_type, shape, beta) in enumerate(specs):
        x = b.input(f"x{k}", shape, np.float32)
        y = b.activation(f"y{k}", shape, np.float32)
        b.op(op_type, [x], [y], **({"beta": beta} if op_type == "SOFTMAX" else {}))
        b.output(y)
    return b.build()


def softmax_inputs(rng, shape, batch=BATCH) -> np.ndarray:
    """Rows of N(0, 20) logits, then special samples: large logits (exp of the raw values would overflow),
    huge ones (1e30), ties, -inf entries (a row of only -inf gives NaN, as in TFLM), +-3e38 (x - max
    overflows to -inf) and far negative ones."""
    x = rng.normal(0, 20, (batch,) + shape).astype(np.float32)
    x[1] += np.float32(1e4)
    x[2] = rng.normal(1e30, 1e29, shape)
    x[3] = 7.0  # one value repeated: exactly 1/depth each
    x[4].flat[::2] = -np.inf
    x[5] = rng.choice(np.array([-3e38, 3e38], np.float32), shape)
    x[6] = rng.normal(-500, 3, shape)
    return x


def logistic_inputs(rng, shape, batch=BATCH) -> np.ndarray:
    """Uniform over [-120, 30] (exp(x) underflows to subnormals and 0 below about -87, exp(-x) would
    overflow above 88 without the cutoffs), N(0, 4) around the curve, and the edges above."""
    x = rng.uniform(-120, 30, (batch,) + shape).astype(np.float32)
    x[: batch // 2] = rng.normal(0, 4, (batch // 2,) + shape)
    flat = x.reshape(-1)
    flat[: LOGISTIC_EDGES.size] = LOGISTIC_EDGES
    return x


def assert_close(got: list[np.ndarray], want: list[np.ndarray], where: str) -> None:
    for k, (have, expected) in enumerate(zip(got, want)):
        assert have.shape == expected.shape and have.dtype == expected.dtype == np.float32
        np.testing.assert_allclose(have, expected, rtol=RTOL, atol=ATOL, err_msg=f"{where}: output {k}")


SOFTMAX_SPECS = [("SOFTMAX", (1, 10), 1.0), ("SOFTMAX", (4, 7), 0.731), ("SOFTMAX", (2, 3, 33), 2.5),
                 ("SOFTMAX", (1, 1000), 0.1), ("SOFTMAX", (5, 1), 1.0), ("SOFTMAX", (3, 2), 1e-3)]
LOGISTIC_SPECS = [("LOGISTIC", (64,), 0.0), ("LOGISTIC", (2, 3, 17), 0.0)]


def host_and_reference(specs, make_inputs, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The outputs of the graph of `specs` compiled for the host and of the reference interpreter."""
    rng = np.random.default_rng(seed)
    graph = float_graph(specs)
    feeds = [make_inputs(rng, shape) for _, shape, _ in specs]
    return compile_host(graph).run(*feeds), microforge.run(graph, *feeds)


def test_softmax_on_host():
    got, want = host_and_reference(SOFTMAX_SPECS, softmax_inputs, seed=0)
    assert_close(got, want, "SOFTMAX")
    for probs in got:  # every sample without NaN (a row of only -inf gives NaN, as in TFLM) sums to 1
        sums = probs[np.isfinite(probs).all(axis=tuple(range(1, probs.ndim)))].sum(axis=-1)
        np.testing.assert_allclose(sums, 1.0, rtol=1e-5)


def test_logistic_on_host():
    got, want = host_and_reference(LOGISTIC_SPECS, logistic_inputs, seed=1)
    assert_close(got, want, "LOGISTIC")
    edges = got[0][0, : LOGISTIC_EDGES.size]
    assert edges[0] < 1.0 and edges[2] == 1.0  # TFLM's upper cutoff: 1 - 2^-23 at it, 1 just above
    assert edges[-3] == 1.0 and edges[-2] == 0.0 and np.isnan(edges[-1])  # +inf, -inf, NaN
    assert 0.0 < edges[12] < np.finfo(np.float32).tiny and edges[13] == 0.0  # exp(-103) subnormal, exp(-104) 0


def test_both_under_sanitizers():
    rng = np.random.default_rng(2)
    specs = [("SOFTMAX", (3, 9), 0.5), ("LOGISTIC", (40,), 0.0)]
    graph = float_graph(specs)
    feeds = [softmax_inputs(rng, (3, 9), 8), logistic_inputs(rng, (40,), 8)]
    got = compile_host(graph, sanitize=True).run(*feeds)
    assert_close(got, microforge.run(graph, *feeds), "sanitized")


def test_generated_float_folder_builds_and_links_with_its_makefile(tmp_path):
    """`make` builds libmodel.a; a program linked with the Makefile's LDLIBS (libm) resolves expf."""
    graph = float_graph([("SOFTMAX", (2, 5), 1.0), ("LOGISTIC", (8,), 0.0)])
    generate(graph, tmp_path, target="portable")
    assert "expf" in (tmp_path / "mf_activations.c").read_text()
    (tmp_path / "demo.c").write_text('#include "model.h"\nint main(void) { mf_init(); mf_invoke(); return 0; }\n')
    (tmp_path / "demo.mk").write_text("demo: demo.c libmodel.a\n\t$(CC) $(CFLAGS) demo.c libmodel.a $(LDLIBS) -o $@\n")
    done = subprocess.run(["make", "-s", "-f", "Makefile", "-f", "demo.mk", "libmodel.a", "demo"], check=False,
                          cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert subprocess.run([str(tmp_path / "demo")], check=False).returncode == 0


@pytest.mark.skipif(shutil.which("cmake") is None, reason="needs cmake")
def test_generated_float_folder_links_libm_through_cmake(tmp_path):
    """A program that links the CMake target microforge_model gets libm from it (PUBLIC)."""
    generate(float_graph([("SOFTMAX", (2, 5), 1.0)]), tmp_path / "model", target="portable")
    (tmp_path / "demo.c").write_text('#include "model.h"\nint main(void) { mf_init(); mf_invoke(); return 0; }\n')
    (tmp_path / "CMakeLists.txt").write_text("cmake_minimum_required(VERSION 3.13)\nproject(demo C)\n"
                                             "add_subdirectory(model)\nadd_executable(demo demo.c)\n"
                                             "target_link_libraries(demo microforge_model)\n")
    for cmd in (["cmake", "-S", ".", "-B", "build"], ["cmake", "--build", "build"], ["build/demo"]):
        done = subprocess.run(cmd, check=False, cwd=tmp_path, capture_output=True, text=True)
        assert done.returncode == 0, f"{' '.join(cmd)}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"


@needs_qemu
def test_softmax_and_logistic_on_qemu_m4(tmp_path):
    """newlib's expf (libm linked into the firmware) on the emulated Cortex-M4F, same tolerance."""
    rng = np.random.default_rng(3)
    specs = [("SOFTMAX", (2, 10), 0.5), ("SOFTMAX", (1, 33), 2.0), ("LOGISTIC", (64,), 0.0)]
    graph = float_graph(specs)
    feeds = [softmax_inputs(rng, (2, 10), 8), softmax_inputs(rng, (1, 33), 8), logistic_inputs(rng, (64,), 8)]
    generated = generate(graph, tmp_path / "model", target="cortex-m4")
    result = run_on_qemu(generated.directory, "qemu-m4", [[f[n] for f in feeds] for n in range(8)])
    got = [np.stack([np.frombuffer(sample[k], np.float32).reshape(t.shape) for sample in result.output_tensors])
           for k, t in enumerate(graph.outputs)]
    assert_close(got, run_batched(graph, feeds), "qemu-m4")


def test_validate_reports_how_close_a_float_model_is():
    """A float model through `validate`: not bit-exact (libm's expf against numpy's exp), and the report
    says by how much (the KWS softmax outputs are probabilities: within a few float32 ulps of 1)."""
    from conftest import FLOAT_MODELS

    from microforge.codegen.validate import validate_target

    report = validate_target(microforge.load(FLOAT_MODELS["kws"]), "host", count=8)
    assert 0.0 <= report["max_abs_error"] < 1e-5
