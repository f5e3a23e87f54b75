"""The generated C of CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED against the reference interpreter.

int8 outputs must be byte-identical with `microforge.run` (itself bit-exact with TFLite Micro), on the
portable kernels, on the Cortex-M DSP kernels (run on the host through MF_CONV_EMULATE_DSP, which emulates
SXTB16/SMLAD in C) and under AddressSanitizer + UndefinedBehaviorSanitizer. A gcc build costs most of a
second, so each hypothesis example puts several independent single ops (each with its own input and
output) into one graph and compiles once. Shapes are drawn to hit every kernel and fast path: 1x1
convolutions, 3x3 depthwise, in-place and gathered patches, groups, dilation, odd channel counts, depths
that are and are not multiples of four. The DSP path is also compiled with arm-none-eabi-gcc.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import microforge
from microforge.codegen import compile_host, generate
from microforge.codegen.emit import kernel_memory
from microforge.codegen.lowering import LOWERINGS
from microforge.graph.ir import Graph
from microforge.errors import ModelError, UnsupportedError
from microforge.graph.builder import GraphBuilder

BATCH = 6
ACTIVATIONS = ["NONE", "RELU", "RELU6", "RELU_N1_TO_1"]
DSP = ["-O2", "-DMF_CONV_EMULATE_DSP"]
FEW = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# --- random single-op specs (plain data), then one graph holding several of them --------------------------

def _out_size(size, k, s, d, padding):
    return -(-size // s) if padding == "SAME" else (size - (k - 1) * d - 1) // s + 1


@st.composite
def conv_specs(draw, depthwise=False):
    kh = draw(st.sampled_from([1, 1, 3, 3, 2, 4, 5]))
    kw = kh if draw(st.booleans()) else draw(st.sampled_from([1, 2, 3, 4]))
    unit = draw(st.booleans())  # stride 1, no dilation: the common case (and the 1x1 fast path)
    sh, sw = (1, 1) if unit else (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dh, dw = (1, 1) if unit else (draw(st.sampled_from([1, 2, 3])), draw(st.sampled_from([1, 2])))
    padding = draw(st.sampled_from(["SAME", "VALID"]))
    h = draw(st.integers(1, 9))
    w = draw(st.integers(1, 9))
    if padding == "VALID":
        h, w = max(h, (kh - 1) * dh + 1), max(w, (kw - 1) * dw + 1)
    spec = dict(kind="dw" if depthwise else "conv", kh=kh, kw=kw, sh=sh, sw=sw, dh=dh, dw=dw, padding=padding,
                h=h, w=w, batches=draw(st.sampled_from([1, 1, 1, 2])), act=draw(st.sampled_from(ACTIVATIONS)),
                per_channel=draw(st.booleans()), bias=depthwise or draw(st.booleans()),
                hot=draw(st.sampled_from([False, False, False, True])), seed=draw(st.integers(0, 2**32 - 1)))
    if depthwise:
        spec.update(c=draw(st.integers(1, 9)), mult=draw(st.sampled_from([1, 1, 1, 2, 3])))
    else:
        groups = draw(st.sampled_from([1, 1, 1, 2, 3]))
        spec.update(groups=groups, c=groups * draw(st.integers(1, 9)), out_c=groups * draw(st.integers(1, 7)))
    return spec


@st.composite
def fc_specs(draw):
    in_features = draw(st.integers(1, 70))
    keep = draw(st.booleans())
    lead = tuple(draw(st.lists(st.integers(1, 3), min_size=0, max_size=2)))
    return dict(kind="fc", in_shape=(1,) + lead + (in_features,), keep=keep, out=draw(st.integers(1, 13)),
                act=draw(st.sampled_from(ACTIVATIONS)), per_channel=draw(st.booleans()), bias=draw(st.booleans()),
                hot=draw(st.sampled_from([False, False, False, True])), seed=draw(st.integers(0, 2**32 - 1)))


def any_specs(min_size=1, max_size=6):
    return st.lists(st.one_of(conv_specs(), conv_specs(depthwise=True), fc_specs()), min_size=min_size,
                    max_size=max_size)


def _weights(b, rng, name, shape, axis, spec, in_scale, dtype):
    channels = shape[axis]
    if dtype == np.float32 and not spec.get("hybrid"):
        w = b.constant(name + "_w", rng.normal(0, 0.5, shape).astype(np.float32))
        bias = b.constant(name + "_b", rng.normal(0, 1, channels).astype(np.float32)) if spec["bias"] else None
        return w, bias, None
    scales = rng.uniform(0.002, 0.02, channels if spec["per_channel"] else 1).astype(np.float32)
    w = b.constant(name + "_w", rng.integers(-128, 128, shape, dtype=np.int8), scale=scales, zero_point=0, axis=axis)
    bias = None
    if spec["bias"] and dtype == np.float32:
        bias = b.constant(name + "_b", rng.normal(0, 1, channels).astype(np.float32))
    elif spec["bias"]:
        bias_scales = (np.float32(in_scale) * np.broadcast_to(scales, (channels,))).astype(np.float32)
        bias = b.constant(name + "_b", rng.integers(-30000, 30000, channels).astype(np.int32), scale=bias_scales,
                          zero_point=0)
    return w, bias, scales


def _out_scale(rng, spec, in_scale, in_zp, w_scales, depth):
    """An output scale that uses and sometimes clips the int8 range; "hot" ones make multipliers above 1
    (a left shift in the requantization, with its int32 wrap)."""
    acc_std = np.sqrt(depth) * np.sqrt(74.0**2 + in_zp**2) * 73.0 * in_scale * float(np.mean(w_scales))
    factor = rng.uniform(0.001, 0.01) if spec["hot"] else rng.uniform(0.3, 3.0)
    return np.float32(acc_std * factor / 64.0)


def add_op(b: GraphBuilder, spec: dict, name: str, dtype=np.int8):
    """Add the op of `spec` with its own input and output to `b`; return (input tensor, op)."""
    rng = np.random.default_rng(spec["seed"])
    quant = dtype == np.int8
    in_scale, in_zp = np.float32(rng.uniform(0.005, 0.1)), int(rng.integers(-128, 128))
    if spec["kind"] == "fc":
        in_shape, in_features = spec["in_shape"], spec["in_shape"][-1]
        rows = int(np.prod(in_shape)) // in_features
        out_shape = in_shape[:-1] + (spec["out"],) if spec["keep"] else (rows, spec["out"])
        w_shape, axis, depth = (spec["out"], in_features), 0, in_features
        options = dict(keep_num_dims=spec["keep"])
        op_type = "FULLY_CONNECTED"
    else:
        oh = _out_size(spec["h"], spec["kh"], spec["sh"], spec["dh"], spec["padding"])
        ow = _out_size(spec["w"], spec["kw"], spec["sw"], spec["dw"], spec["padding"])
        c = spec["c"]
        in_shape = (spec["batches"], spec["h"], spec["w"], c)
        options = dict(padding=spec["padding"], stride_h=spec["sh"], stride_w=spec["sw"],
                       dilation_h_factor=spec["dh"], dilation_w_factor=spec["dw"])
        if spec["kind"] == "dw":
            out_c = c * spec["mult"]
            w_shape, axis, depth = (1, spec["kh"], spec["kw"], out_c), 3, spec["kh"] * spec["kw"]
            options["depth_multiplier"] = spec["mult"]
            op_type = "DEPTHWISE_CONV_2D"
        else:
            out_c = spec["out_c"]
            w_shape, axis = (out_c, spec["kh"], spec["kw"], c // spec["groups"]), 0
            depth = spec["kh"] * spec["kw"] * c // spec["groups"]
            op_type = "CONV_2D"
        out_shape = (spec["batches"], oh, ow, out_c)
    if quant:
        x = b.input(name + "_x", in_shape, dtype, scale=in_scale, zero_point=in_zp)
    else:
        x = b.input(name + "_x", in_shape, dtype)
    w, bias, scales = _weights(b, rng, name, w_shape, axis, spec, in_scale, dtype)
    if quant:
        y = b.activation(name + "_y", out_shape, dtype, scale=_out_scale(rng, spec, in_scale, in_zp, scales, depth),
                         zero_point=int(rng.integers(-128, 128)))
    else:
        y = b.activation(name + "_y", out_shape, dtype)
    op = b.op(op_type, [x, w, bias], [y], fused_activation_function=spec["act"], **options)
    b.output(y)
    return x, op


def build(specs, dtype=np.int8, seed=0):
    """One graph of independent ops, and a batch for each of its inputs (sample 0 saturated)."""
    b = GraphBuilder()
    xs = [add_op(b, spec, f"op{i}", dtype)[0] for i, spec in enumerate(specs)]
    rng = np.random.default_rng(seed)
    feeds = []
    for x in xs:
        if dtype == np.int8:
            v = rng.integers(-128, 128, (BATCH,) + x.shape, dtype=np.int8)
            v[0] = rng.choice([-128, 127])
        else:
            v = rng.normal(0, 1, (BATCH,) + x.shape).astype(np.float32)
        feeds.append(v)
    return b.build(), feeds


def outputs_of(result):
    return result if isinstance(result, list) else [result]


def assert_bytes_equal(graph, model, feeds):
    expected = outputs_of(microforge.run(graph, *feeds))
    got = outputs_of(model.run(*feeds))
    for op, want, have in zip(graph.ops, expected, got):
        assert have.dtype == want.dtype and have.shape == want.shape
        diff = np.flatnonzero(have != want)
        assert diff.size == 0, (f"{op}: {diff.size} of {want.size} bytes differ, e.g. C {have.flat[diff[0]]} vs "
                                f"reference {want.flat[diff[0]]}")


# --- int8: byte-identical -------------------------------------------------------------------------------

@settings(max_examples=14, **FEW)
@given(any_specs(min_size=3, max_size=7))
def test_int8_portable_kernels_match_reference(specs):
    graph, feeds = build(specs)
    assert_bytes_equal(graph, compile_host(graph), feeds)


@settings(max_examples=7, **FEW)
@given(any_specs(min_size=3, max_size=7))
def test_int8_dsp_kernels_match_reference(specs):
    """The __ARM_FEATURE_DSP code (SXTB16 + SMLAD inner products), its instructions emulated in C."""
    graph, feeds = build(specs)
    assert_bytes_equal(graph, compile_host(graph, cflags=DSP), feeds)


@settings(max_examples=3, **FEW)
@given(any_specs(min_size=5, max_size=8), st.booleans())
def test_int8_kernels_are_sanitizer_clean(specs, dsp):
    graph, feeds = build(specs)
    model = compile_host(graph, sanitize=True, cflags=["-O1", "-DMF_CONV_EMULATE_DSP"] if dsp else ["-O1"])
    assert_bytes_equal(graph, model, feeds)


@settings(max_examples=7, **FEW)
@given(any_specs(min_size=3, max_size=7), st.booleans())
def test_int8_cortex_m_kernels_match_reference(specs, emulate):
    """Code generated for Cortex-M4 (the *_dsp kernels, re-laid-out weights, their requantization) built for
    the host: the kernels' portable C of SMLAD & co, with the generic kernels' DSP paths emulated or not."""
    graph, feeds = build(specs)
    model = compile_host(graph, target="cortex-m4", cflags=DSP if emulate else ["-O2"])
    assert_bytes_equal(graph, model, feeds)


@settings(max_examples=3, **FEW)
@given(any_specs(min_size=5, max_size=8))
def test_int8_cortex_m_kernels_are_sanitizer_clean(specs):
    graph, feeds = build(specs)
    assert_bytes_equal(graph, compile_host(graph, target="cortex-m4", sanitize=True, cflags=["-O1"]), feeds)


def test_dsp_requantization_is_tflites():
    """The *_dsp kernels' out = SMMLAR(acc << L, m, K + ((acc >> 31) & M)) >> E against TFLite's
    MultiplyByQuantizedMultiplier + offset, for accumulators up to the bound the generator proves, and
    for channels of zero weights (their one output whatever the input)."""
    from microforge.codegen.ops.conv import _dsp_requant
    from microforge.reference.fixedpoint import multiply_by_quantized_multiplier, quantize_multipliers

    rng = np.random.default_rng(5)
    checked = 0
    for trial in range(300):
        channels, depth = 3, int(rng.integers(1, 300))
        w = rng.integers(-128, 128, (channels, depth)).astype(np.int8)
        bias = rng.integers(-2**20, 2**20, channels)
        if trial % 5 == 0:  # a dead channel, with a bias no bound admits
            w[1] = 0
            bias[1] = int(rng.choice([-1, 1])) * 2**30
        real = np.exp(rng.uniform(np.log(1e-6), np.log(4.0), channels))
        sig, shift = quantize_multipliers(real)
        zp = int(rng.integers(-128, 128))
        dq = _dsp_requant(w, bias, sig, shift, zp, -128, 127, channels)
        if dq is None:
            continue
        checked += 1
        bound = np.abs(bias) + 128 * np.abs(w.astype(np.int64)).sum(axis=1)
        for c in range(channels):
            b, m, left, right, k, mask = (int(v) for v in dq[6 * c:6 * c + 6])
            acc = np.concatenate([rng.integers(-bound[c], bound[c] + 1, 400), [-bound[c], bound[c], 0, -1, 1]])
            if not w[c].any():
                acc[:] = bias[c]  # no product can move it
            want = np.clip(multiply_by_quantized_multiplier(acc, sig[c], shift[c]).astype(np.int64) + zp, -128, 127)
            a = acc - bias[c] + b  # the kernel's accumulator starts at dq's bias
            t = k + ((a >> 31) & mask)
            got = np.clip(((a << left) * m + (t << 32) + (1 << 31)) >> 32 >> right, -128, 127)
            assert np.array_equal(got, want), (trial, c)
    assert checked > 100


def _fixed_specs():
    """One op per kernel and fast path, shapes chosen by hand (large enough for the 4-wide DSP loops)."""
    base = dict(sh=1, sw=1, dh=1, dw=1, batches=1, act="RELU", per_channel=True, bias=True, hot=False)
    return [
        dict(base, kind="conv", kh=1, kw=1, padding="SAME", h=5, w=7, c=13, out_c=9, groups=1, seed=1),  # 1x1
        dict(base, kind="conv", kh=1, kw=1, padding="VALID", h=6, w=6, c=8, out_c=5, groups=1, seed=2,
             sh=2, sw=2),  # strided 1x1: patches in place, no scratch
        dict(base, kind="conv", kh=3, kw=3, padding="SAME", h=8, w=7, c=6, out_c=7, groups=1, seed=3),
        dict(base, kind="conv", kh=10, kw=4, padding="SAME", h=49, w=10, c=1, out_c=8, groups=1, seed=4,
             sh=2, sw=2, act="NONE"),  # KWS's first layer
        dict(base, kind="conv", kh=3, kw=2, padding="SAME", h=7, w=9, c=6, out_c=4, groups=2, seed=5, dh=2, dw=2),
        dict(base, kind="dw", kh=3, kw=3, padding="SAME", h=9, w=8, c=11, mult=1, seed=6),  # 3x3 fast path
        dict(base, kind="dw", kh=3, kw=3, padding="VALID", h=9, w=9, c=5, mult=1, seed=7, sh=2, sw=2, dh=2),
        dict(base, kind="dw", kh=5, kw=3, padding="SAME", h=6, w=6, c=3, mult=2, seed=8, per_channel=False),
        dict(base, kind="fc", in_shape=(1, 67), keep=False, out=10, seed=9, per_channel=False),
        dict(base, kind="fc", in_shape=(1, 3, 2, 16), keep=True, out=7, seed=10, hot=True),
    ]


def _dsp_specs():
    """Shapes for the Cortex-M4/M7 kernels' corners: depths not a multiple of 8 (zero groups), odd channel
    and row counts, channels a multiple of 4 (widened taps, 3x3 depthwise), strides, clamps."""
    base = dict(sh=1, sw=1, dh=1, dw=1, batches=1, act="NONE", per_channel=True, bias=True, hot=False)
    return [
        dict(base, kind="conv", kh=1, kw=1, padding="SAME", h=3, w=5, c=12, out_c=7, groups=1, seed=11),
        dict(base, kind="conv", kh=1, kw=1, padding="SAME", h=2, w=3, c=16, out_c=6, groups=1, seed=12,
             act="RELU6"),
        dict(base, kind="conv", kh=3, kw=3, padding="SAME", h=5, w=6, c=8, out_c=5, groups=1, seed=13),
        dict(base, kind="conv", kh=3, kw=3, padding="VALID", h=7, w=7, c=4, out_c=4, groups=1, seed=14, sh=2,
             sw=2, act="RELU"),
        dict(base, kind="conv", kh=3, kw=3, padding="SAME", h=6, w=5, c=3, out_c=9, groups=1, seed=15, sh=2,
             sw=2),
        dict(base, kind="conv", kh=1, kw=1, padding="VALID", h=5, w=5, c=8, out_c=6, groups=1, seed=16, sh=2,
             sw=2),
        dict(base, kind="dw", kh=3, kw=3, padding="SAME", h=5, w=4, c=12, mult=1, seed=17),
        dict(base, kind="dw", kh=3, kw=3, padding="SAME", h=6, w=7, c=8, mult=1, seed=18, sh=2, sw=2,
             act="RELU6"),
        dict(base, kind="dw", kh=3, kw=3, padding="VALID", h=8, w=8, c=4, mult=1, seed=19, dh=2, dw=2),
        dict(base, kind="fc", in_shape=(1, 3, 37), keep=True, out=9, seed=20),
        dict(base, kind="fc", in_shape=(1, 70), keep=False, out=5, seed=21, act="RELU"),
        dict(base, kind="fc", in_shape=(1, 64), keep=False, out=6, seed=22, act="RELU6"),  # row read in place
    ]


@pytest.mark.parametrize("target, cflags", [("host", ["-O2"]), ("host", DSP), ("cortex-m4", ["-O2"]),
                                            ("cortex-m4", DSP)],
                         ids=["portable", "dsp", "cortex-m4", "cortex-m4-emulated"])
def test_every_fast_path_matches_reference(target, cflags):
    graph, feeds = build(_fixed_specs() + _dsp_specs(), seed=1)
    assert_bytes_equal(graph, compile_host(graph, target=target, cflags=cflags), feeds)


def test_in_place_patches_are_not_overwritten():
    """A 1x4 SAME convolution reads its interior patches in place while it writes the pixel pair's outputs
    (mf_conv_s8): the output may overlap the dying input only below those reads too."""
    base = dict(sh=1, sw=1, dh=1, dw=1, batches=1, act="NONE", per_channel=False, bias=False, hot=False, seed=0)
    graph, feeds = build([dict(base, kind="conv", kh=1, kw=4, padding="SAME", h=6, w=9, groups=1, c=4, out_c=7)])
    for target in ("host", "cortex-m4"):
        assert_bytes_equal(graph, compile_host(graph, target=target), feeds)


def test_lowering_picks_the_fast_paths(tmp_path):
    graph, _ = build(_fixed_specs())
    generate(graph, tmp_path, target="host")
    body = (tmp_path / "model.c").read_text().split("void mf_invoke(void) {")[1]
    # each op is a comment naming its index, then the call
    calls = dict(re.findall(r"/\* op (\d+): .*?\*/\s*(mf_\w+\(.*\);)", body))
    kernels = [calls[str(i)].split("(")[0] for i in range(len(graph.ops))]
    assert kernels == ["mf_fc_s8", "mf_conv_s8", "mf_conv_s8", "mf_conv_s8", "mf_conv_s8", "mf_dwconv_3x3_s8",
                       "mf_dwconv_3x3_s8", "mf_dwconv_s8", "mf_fc_s8", "mf_fc_s8"]
    assert calls["1"].endswith("(int8_t *)0);")  # the strided 1x1's patches are read in place: no scratch
    assert not calls["2"].endswith("(int8_t *)0);")  # the padded 3x3's are gathered into scratch


def test_lowering_picks_the_cortex_m_kernels(tmp_path):
    graph, _ = build(_fixed_specs() + _dsp_specs())
    generate(graph, tmp_path, target="cortex-m4")
    body = (tmp_path / "model.c").read_text().split("void mf_invoke(void) {")[1]
    calls = dict(re.findall(r"/\* op (\d+): .*?\*/\s*(mf_\w+\(.*\);)", body))
    kernels = [calls[str(i)].split("(")[0] for i in range(len(graph.ops))]
    # grouped convolutions and depthwise with a multiplier or channels not a multiple of 4 keep the generic
    # kernels
    assert kernels == ["mf_fc_s8_dsp", "mf_conv_s8_dsp", "mf_conv_s8_dsp", "mf_conv_s8_dsp", "mf_conv_s8",
                       "mf_dwconv_3x3_s8", "mf_dwconv_3x3_s8", "mf_dwconv_s8", "mf_fc_s8_dsp", "mf_fc_s8_dsp",
                       "mf_fc_s8_dsp", "mf_fc_s8_dsp", "mf_conv_s8_dsp", "mf_conv_s8_dsp", "mf_conv_s8_dsp",
                       "mf_conv_s8_dsp", "mf_dwconv_3x3_s8_dsp", "mf_dwconv_3x3_s8_dsp", "mf_dwconv_3x3_s8_dsp",
                       "mf_fc_s8_dsp", "mf_fc_s8_dsp", "mf_fc_s8_dsp"]
    assert calls[str(len(graph.ops) - 1)].endswith("(int32_t *)0);")  # the 64-deep row is read in place
    assert not calls[str(len(graph.ops) - 2)].endswith("(int32_t *)0);")  # the 70-deep one is widened


# --- float32: TFLM's summation order, so agreement to float32 rounding ---------------------------------

@settings(max_examples=3, **FEW)
@given(any_specs(min_size=3, max_size=6), st.booleans())
def test_float_kernels_match_reference(specs, hybrid):
    for spec in specs:
        spec["hybrid"] = hybrid
    graph, feeds = build(specs, dtype=np.float32)
    expected = outputs_of(microforge.run(graph, *feeds))
    got = outputs_of(compile_host(graph).run(*feeds))
    for want, have in zip(expected, got):
        np.testing.assert_allclose(have, want, rtol=2e-5, atol=2e-5 * max(1.0, float(np.abs(want).max())))


# --- Cortex-M: the DSP path compiles warning-free and uses SMLAD ----------------------------------------

ARM_GCC = shutil.which("arm-none-eabi-gcc")


@pytest.mark.skipif(ARM_GCC is None, reason="arm-none-eabi-gcc is not installed")
@pytest.mark.parametrize("cpu, dsp", [("cortex-m4", True), ("cortex-m7", True), ("cortex-m0plus", False)])
def test_cortex_m_build_is_warning_free(tmp_path, cpu, dsp):
    graph, _ = build(_fixed_specs())
    graph_f, _ = build([dict(s, hybrid=False) for s in _fixed_specs()[:3]], dtype=np.float32)
    for g, sub in ((graph, "int8"), (graph_f, "float")):
        out = tmp_path / sub
        generate(g, out, target=cpu)
        fpu = ["-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"] if cpu == "cortex-m4" else []
        for source in ("model.c", "mf_conv.c"):
            cmd = [ARM_GCC, f"-mcpu={cpu}", "-mthumb", *fpu, "-O2", "-std=c99", "-Wall", "-Wextra", "-Werror",
                   "-c", source, "-o", source[:-2] + ".o"]
            done = subprocess.run(cmd, cwd=out, capture_output=True, text=True, check=False)
            assert done.returncode == 0, done.stderr
    objdump = shutil.which("arm-none-eabi-objdump")
    if objdump:
        text = subprocess.run([objdump, "-d", str(tmp_path / "int8" / "mf_conv.o")], capture_output=True, check=False,
                              text=True).stdout
        assert ("smlad" in text) == dsp
        assert ("sxtb16" in text) == dsp


# --- what the lowerings refuse --------------------------------------------------------------------------

class _StubContext:
    target = "host"

    def tensor(self, t):
        return f"((void *)0 /* {t.name} */)"

    def constant(self, name_hint, data, ctype=None):
        return "mf_" + name_hint

    def struct(self, ctype, name_hint, fields):
        return "&mf_" + name_hint

    def scratch(self):
        return "((uint8_t *)0)"


def test_unsupported_types_and_depths_are_reported():
    b = GraphBuilder()
    x = b.input("x", (1, 4, 4, 2), np.int16, scale=0.1, zero_point=0)
    w = b.constant("w", np.ones((3, 1, 1, 2), np.int16), scale=0.01, zero_point=0)  # int16 weights: TFLM has none
    y = b.activation("y", (1, 4, 4, 3), np.int16, scale=0.1, zero_point=0)
    conv = b.op("CONV_2D", [x, w, None], [y])
    x2 = b.input("x2", (1, 140_000), np.int8, scale=0.1, zero_point=0)
    w2 = b.constant("w2", np.ones((1, 140_000), np.int8), scale=0.01, zero_point=0)
    y2 = b.activation("y2", (1, 1), np.int8, scale=0.1, zero_point=0)
    fc = b.op("FULLY_CONNECTED", [x2, w2, None], [y2])
    b.build()
    with pytest.raises(UnsupportedError, match=r"op 0 \(CONV_2D\).*int16"):
        kernel_memory(Graph([x, w, y], [conv], [x], [y]))
    with pytest.raises(UnsupportedError, match=r"op 1 \(FULLY_CONNECTED\).*int32 accumulator"):
        LOWERINGS["FULLY_CONNECTED"](fc, _StubContext())


def test_malformed_conv_is_reported():
    b = GraphBuilder()
    x = b.input("x", (1, 6, 6, 3), np.int8, scale=0.05, zero_point=0)
    w = b.constant("w", np.ones((2, 3, 3, 3), np.int8), scale=0.01, zero_point=0)
    y = b.activation("y", (1, 5, 5, 2), np.int8, scale=0.1, zero_point=0)
    op = b.op("CONV_2D", [x, w, None], [y], padding="SAME")
    b.build()
    with pytest.raises(ModelError, match=r"op 0 .*'y'"):
        LOWERINGS["CONV_2D"](op, _StubContext())
