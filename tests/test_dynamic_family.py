"""A weight-shared family: quantized with shared int8 weights, checked on load, and compiled into one C image
whose every width equals the reference interpreter (and TFLM on that width's own .tflite) byte for byte."""

from __future__ import annotations

import json

import numpy as np
import pytest

from microforge.codegen.emit import generate
from microforge.codegen.host import HostModel
from microforge.dynamic.family import load_family, quantize_family, save_family, weight_ops
from microforge.dynamic.image import generate_family
from microforge.dynamic.measure import measure_family
from microforge.errors import ModelError
from microforge.frontend.writer import write_tflite
from microforge.graph.builder import GraphBuilder
from microforge.reference.interpreter import run
from tests.oracle import tflm_run

WIDTHS = (0.25, 0.5, 0.75, 1.0)
FULL = 12  # channels of the widest member
CLASSES = 5


def _shared_parameters(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "conv": rng.normal(0, 0.4, (FULL, 3, 3, 1)), "dw": rng.normal(0, 0.4, (1, 3, 3, FULL)),
        "pw": rng.normal(0, 0.3, (FULL, 1, 1, FULL)), "fc": rng.normal(0, 0.3, (CLASSES, FULL)),
        # a batch norm per width: a positive gain and a shift per channel
        "gains": {w: rng.uniform(0.5, 1.5, (3, FULL)) for w in WIDTHS},
        "shifts": {w: rng.normal(0, 0.1, (3, FULL)) for w in WIDTHS},
        "fc_bias": rng.normal(0, 0.1, CLASSES),
    }


def float_member(p: dict, width: float) -> "Graph":
    """Width `width` of a small slimmable CNN with its batch norm folded: conv 3x3/2, depthwise 3x3, 1x1
    conv, average pool, dense, softmax on a (1, 8, 6, 1) input."""
    c = round(width * FULL)
    g, s = p["gains"][width], p["shifts"][width]
    b = GraphBuilder()
    f32 = np.float32
    x = b.input("x", (1, 8, 6, 1), f32)
    h1 = b.activation("h1", (1, 4, 3, c), f32)
    b.op("CONV_2D", [x, b.constant("conv/w", (p["conv"][:c] * g[0, :c, None, None, None]).astype(f32)),
                     b.constant("conv/b", s[0, :c].astype(f32))], [h1], padding="SAME", stride_h=2, stride_w=2,
         fused_activation_function="RELU")
    h2 = b.activation("h2", (1, 4, 3, c), f32)
    b.op("DEPTHWISE_CONV_2D", [h1, b.constant("dw/w", (p["dw"][..., :c] * g[1, :c]).astype(f32)),
                               b.constant("dw/b", s[1, :c].astype(f32))], [h2], padding="SAME",
         fused_activation_function="RELU")
    h3 = b.activation("h3", (1, 4, 3, c), f32)
    b.op("CONV_2D", [h2, b.constant("pw/w", (p["pw"][:c, :, :, :c] * g[2, :c, None, None, None]).astype(f32)),
                     b.constant("pw/b", s[2, :c].astype(f32))], [h3], fused_activation_function="RELU")
    pooled = b.activation("pool", (1, 1, 1, c), f32)
    b.op("AVERAGE_POOL_2D", [h3], [pooled], filter_height=4, filter_width=3)
    flat = b.activation("flat", (1, c), f32)
    b.op("RESHAPE", [pooled], [flat], new_shape=[1, c])
    logits = b.activation("logits", (1, CLASSES), f32)
    b.op("FULLY_CONNECTED", [flat, b.constant("fc/w", p["fc"][:, :c].astype(f32)),
                             b.constant("fc/b", p["fc_bias"].astype(f32))], [logits])
    probs = b.output(b.activation("probs", (1, CLASSES), f32))
    b.op("SOFTMAX", [logits], [probs])
    return b.build()


@pytest.fixture(scope="module")
def calibration() -> np.ndarray:
    return np.random.default_rng(1).normal(0, 1, (64, 1, 8, 6, 1)).astype(np.float32)


@pytest.fixture(scope="module")
def family_dir(tmp_path_factory, calibration):
    p = _shared_parameters()
    out = tmp_path_factory.mktemp("family")
    save_family(out, WIDTHS, [float_member(p, w) for w in WIDTHS], calibration, {"what": "test"}, name="tiny")
    return out


def test_members_share_the_widest_int8_weights(family_dir):
    family = load_family(family_dir)
    assert family.widths == list(WIDTHS) and family.name == "tiny"
    widest = weight_ops(family.graphs[-1])
    for k, graph in enumerate(family.graphs[:-1]):
        for op, wide in zip(weight_ops(graph), widest):
            w, full = op.inputs[1].data, wide.inputs[1].data
            assert np.array_equal(w, full[tuple(slice(0, d) for d in w.shape)])
        # ... but each width has its own activation ranges
        assert graph.outputs[0].quant is not None
    assert len({(g.inputs[0].scale, g.inputs[0].zero_point) for g in family.graphs}) == 1


def test_quantized_members_track_their_float_members(calibration):
    p = _shared_parameters()
    floats = [float_member(p, w) for w in WIDTHS]
    members = quantize_family(floats, WIDTHS, calibration)
    x = calibration[:32]
    for f, q in zip(floats, members):
        expected = run(f, x)
        scale, zp = q.inputs[0].scale, q.inputs[0].zero_point
        xq = np.clip(np.round(x / scale) + zp, -128, 127).astype(np.int8)
        got = (run(q, xq).astype(np.float32) - q.outputs[0].zero_point) * q.outputs[0].scale
        assert np.abs(got - expected).max() < 0.08


def test_each_member_equals_tflm_on_its_own_tflite(family_dir, calibration):
    family = load_family(family_dir)
    x = np.random.default_rng(2).integers(-128, 128, (16, 1, 8, 6, 1), dtype=np.int8)
    for graph in family.graphs:
        ours = run(graph, x)
        theirs = tflm_run(write_tflite(graph), [x])[0]
        assert np.array_equal(ours, theirs.reshape(ours.shape))


def test_one_image_runs_every_width_bit_exact_on_the_host(family_dir, tmp_path):
    family = load_family(family_dir)
    image = generate_family(family, tmp_path / "c", target="host")
    assert image.arena_bytes == max(image.width_arena_bytes)
    # each weight once: beyond the widest member alone, the narrower widths add only their own constants
    alone = [generate(g, tmp_path / f"alone{k}", target="host").constant_bytes for k, g in enumerate(family.graphs)]
    weights = [sum(op.inputs[1].nbytes for op in weight_ops(g)) for g in family.graphs]
    assert image.constant_bytes - alone[-1] == sum(a - w for a, w in zip(alone[:-1], weights[:-1]))
    host = HostModel(family.graphs[-1], image, None, sanitize=False, cflags=["-O2"])
    x = np.random.default_rng(3).integers(-128, 128, (24, 1, 8, 6, 1), dtype=np.int8)
    for k, graph in enumerate(family.graphs):
        assert host._lib.mf_set_operating_point(k) == 0
        assert host._lib.mf_operating_point() == k
        assert np.array_equal(host.run(x), run(graph, x)), f"width {family.widths[k]}"
    assert host._lib.mf_set_operating_point(len(WIDTHS)) == -1
    assert host._lib.mf_set_operating_point(-1) == -1
    assert host._lib.mf_operating_point() == len(WIDTHS) - 1


def test_the_sanitized_image_is_clean(family_dir, tmp_path):
    family = load_family(family_dir)
    image = generate_family(family, tmp_path / "c", target="host")
    x = np.random.default_rng(4).integers(-128, 128, (4, 1, 8, 6, 1), dtype=np.int8)
    for k in (0, 2):
        host = HostModel(family.graphs[-1], image, None, sanitize=True, cflags=["-O1", f"-DMF_DEFAULT_POINT={k}"])
        assert np.array_equal(host.run(x), run(family.graphs[k], x))


def test_widths_that_do_not_share_weights_are_refused(family_dir, tmp_path, calibration):
    p = _shared_parameters()
    floats = [float_member(p, w) for w in WIDTHS]
    floats[1].ops[2].inputs[1].data[0, 0, 0, 1] += 0.5  # one weight of width 0.5's 1x1 conv moved
    with pytest.raises(ModelError, match="do not share weights"):
        quantize_family(floats, WIDTHS, calibration)
    # a saved family whose int8 member was edited afterwards
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(family_dir, broken)
    family = load_family(broken)
    graph = family.graphs[0]
    graph.ops[0].inputs[1].data[1, 1, 1, 0] ^= 1
    (broken / "width_0.25_int8.tflite").write_bytes(write_tflite(graph))
    with pytest.raises(ModelError, match="width 0.25.*not the leading slice"):
        load_family(broken)


def test_bad_family_folders_name_the_defect(family_dir, tmp_path):
    with pytest.raises(ModelError, match="no family.json"):
        load_family(tmp_path)
    (tmp_path / "family.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_family(tmp_path)
    manifest = json.loads((family_dir / "family.json").read_text())
    manifest["members"][0]["model"] = "../elsewhere.tflite"
    (tmp_path / "family.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="must be a file name"):
        load_family(tmp_path)
    manifest["members"][0]["model"] = "missing.tflite"
    (tmp_path / "family.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="missing.tflite not found"):
        load_family(tmp_path)


def test_every_width_is_bit_exact_in_the_image_on_both_cores(family_dir, tmp_path):
    from microforge.bench.dataset import write_dataset

    family = load_family(family_dir)
    x = np.random.default_rng(5).integers(-128, 128, (6, 1, 8, 6, 1), dtype=np.int8)
    write_dataset(tmp_path / "data", [(f"s{i}.bin", x[i]) for i in range(6)], [i % CLASSES for i in range(6)], CLASSES)
    measured = measure_family(family, ["qemu-m4", "qemu-m7"], tmp_path / "data", core_samples=3)
    assert [(m.core, m.width) for m in measured.measurements] == [
        (core, w) for core in ("cortex-m4", "cortex-m7") for w in WIDTHS]
    assert all(m.bit_exact for m in measured.measurements)
    expected_accuracy = [float(np.mean(run(g, x).argmax(axis=1) == np.arange(6) % CLASSES)) for g in family.graphs]
    assert [m.accuracy for m in measured.measurements[:4]] == expected_accuracy
    m4 = [m.instructions for m in measured.measurements[:4]]
    # the narrowest runs fewest; with 3, 6 and 9 channels (not multiples of 4) the depthwise layer takes the
    # general kernel, with 12 the shared Cortex-M kernels: both paths are exercised
    assert m4[0] == min(m4) and m4[0] < m4[-1]
    for cost in measured.costs.values():
        assert 0 < cost.switch_instructions < 40  # a bounds check and a store, called through a pointer
        assert cost.flash_bytes < cost.separate_flash_bytes
        assert cost.arena_bytes <= cost.largest_alone_arena_bytes + 64


@pytest.mark.parametrize("name", ["fsdd_slimmable", "digits_slimmable"])
def test_the_shipped_families_share_and_equal_tflm(name):
    from pathlib import Path

    family = load_family(Path(__file__).resolve().parents[1] / "models" / "dynamic" / name)
    widths, depths = family.manifest["widths"], family.manifest.get("depths", [None])
    assert list(zip(family.widths, family.depths)) == [(w, d) for w in widths for d in depths]  # every pair
    x = np.random.default_rng(6).integers(-128, 128, (6,) + family.graphs[0].inputs[0].shape, dtype=np.int8)
    for graph in family.graphs:
        ours = run(graph, x)
        assert np.array_equal(ours, tflm_run(write_tflite(graph), [x])[0].reshape(ours.shape))


# -- depth options: members that skip blocks ----------------------------------------------------------------

DEEP_MEMBERS = [(0.5, 1), (0.5, 2), (1.0, 1), (1.0, 2)]  # (width, blocks run), smallest first


def _deep_parameters(seed: int = 7) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "conv": rng.normal(0, 0.4, (FULL, 3, 3, 1)),
        "blocks": [(rng.normal(0, 0.4, (1, 3, 3, FULL)), rng.normal(0, 0.3, (FULL, 1, 1, FULL))) for _ in range(2)],
        "fc": rng.normal(0, 0.3, (CLASSES, FULL)), "fc_bias": rng.normal(0, 0.1, CLASSES),
        "gains": {w: rng.uniform(0.5, 1.5, (5, FULL)) for w in (0.5, 1.0)},  # a BN per width and layer
        "shifts": {w: rng.normal(0, 0.1, (5, FULL)) for w in (0.5, 1.0)},
    }


def deep_member(p: dict, width: float, depth: int) -> "Graph":
    """A conv 3x3/2, `depth` of two depthwise-separable blocks, average pool, dense, softmax; BN folded."""
    c = round(width * FULL)
    g, s = p["gains"][width], p["shifts"][width]
    f32 = np.float32
    b = GraphBuilder()
    x = b.input("x", (1, 8, 6, 1), f32)
    h = b.activation("stem", (1, 4, 3, c), f32)
    b.op("CONV_2D", [x, b.constant("conv/w", (p["conv"][:c] * g[0, :c, None, None, None]).astype(f32)),
                     b.constant("conv/b", s[0, :c].astype(f32))], [h], padding="SAME", stride_h=2, stride_w=2,
         fused_activation_function="RELU")
    for i, (dw, pw) in enumerate(p["blocks"][:depth]):
        d = b.activation(f"dw{i}", (1, 4, 3, c), f32)
        b.op("DEPTHWISE_CONV_2D", [h, b.constant(f"dw{i}/w", (dw[..., :c] * g[1 + 2 * i, :c]).astype(f32)),
                                   b.constant(f"dw{i}/b", s[1 + 2 * i, :c].astype(f32))], [d], padding="SAME",
             fused_activation_function="RELU")
        h = b.activation(f"pw{i}", (1, 4, 3, c), f32)
        b.op("CONV_2D", [d, b.constant(f"pw{i}/w", (pw[:c, :, :, :c] * g[2 + 2 * i, :c, None, None, None]).astype(f32)),
                         b.constant(f"pw{i}/b", s[2 + 2 * i, :c].astype(f32))], [h], fused_activation_function="RELU")
    pooled = b.activation("pool", (1, 1, 1, c), f32)
    b.op("AVERAGE_POOL_2D", [h], [pooled], filter_height=4, filter_width=3)
    flat = b.activation("flat", (1, c), f32)
    b.op("RESHAPE", [pooled], [flat], new_shape=[1, c])
    logits = b.activation("logits", (1, CLASSES), f32)
    b.op("FULLY_CONNECTED", [flat, b.constant("fc/w", p["fc"][:, :c].astype(f32)),
                             b.constant("fc/b", p["fc_bias"].astype(f32))], [logits])
    b.op("SOFTMAX", [logits], [b.output(b.activation("probs", (1, CLASSES), f32))])
    return b.build()


@pytest.fixture(scope="module")
def deep_family_dir(tmp_path_factory, calibration):
    p = _deep_parameters()
    out = tmp_path_factory.mktemp("deep_family")
    save_family(out, [w for w, _ in DEEP_MEMBERS], [deep_member(p, w, d) for w, d in DEEP_MEMBERS], calibration,
                name="deep", depths=[d for _, d in DEEP_MEMBERS])
    return out


def test_shallower_members_share_the_first_blocks(deep_family_dir, tmp_path):
    family = load_family(deep_family_dir)
    assert list(zip(family.widths, family.depths)) == DEEP_MEMBERS
    assert json.loads((deep_family_dir / "family.json").read_text())["depths"] == [1, 2]
    assert family.label(0) == "width 0.5 depth 1"
    widest = family.graphs[-1]
    # the shallow member's weight ops pair with the stem, block 0 and the classifier: skipping block 1
    shared = family.shared(0)
    assert [shared[op.inputs[1].index].name for op in weight_ops(family.graphs[0])] == [
        op.inputs[1].name for k, op in enumerate(weight_ops(widest)) if k not in (3, 4)]
    assert len(family.graphs[0].ops) == len(widest.ops) - 2
    image = generate_family(family, tmp_path / "c", target="host")
    host = HostModel(widest, image, None, sanitize=False, cflags=["-O2"])
    x = np.random.default_rng(8).integers(-128, 128, (16, 1, 8, 6, 1), dtype=np.int8)
    for k, graph in enumerate(family.graphs):
        assert host._lib.mf_set_operating_point(k) == 0
        ours = run(graph, x)
        assert np.array_equal(host.run(x), ours), family.label(k)
        assert np.array_equal(ours, tflm_run(write_tflite(graph), [x])[0].reshape(ours.shape)), family.label(k)
    assert host._lib.mf_set_operating_point(len(DEEP_MEMBERS)) == -1
    # the two depths of a width are different networks: their outputs differ
    assert not np.array_equal(run(family.graphs[0], x), run(family.graphs[1], x))


def test_members_out_of_order_or_without_shared_blocks_are_refused(tmp_path, calibration):
    p = _deep_parameters()
    floats = [deep_member(p, w, d) for w, d in DEEP_MEMBERS]
    with pytest.raises(ModelError, match="by increasing width then depth"):
        save_family(tmp_path / "a", [0.5, 0.5, 1.0, 1.0], [floats[1], floats[0], *floats[2:]], calibration,
                    depths=[2, 1, 1, 2])
    with pytest.raises(ModelError, match="given for every member or none"):
        save_family(tmp_path / "b", [0.5, 0.5, 1.0], floats[:3], calibration, depths=[1, 2, None])
    # a shallow member whose block is no slice of any block of the widest member
    other = _deep_parameters(seed=9)
    stranger = deep_member({**p, "blocks": other["blocks"]}, 0.5, 1)
    with pytest.raises(ModelError, match="width 0.5 depth 1.*do not share weights"):
        quantize_family([stranger, *floats[1:]], [w for w, _ in DEEP_MEMBERS], calibration,
                        depths=[d for _, d in DEEP_MEMBERS])
