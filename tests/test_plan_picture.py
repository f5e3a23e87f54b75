"""The plan picture: PNG and SVG files with one panel per plan, labelled boxes, peak and bound lines."""

import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import INT8_MODELS

from microforge.errors import PlanError
from microforge.frontend.reader import read_tflite
from microforge.graph.random_graph import random_graph
from microforge.plan.exact import place_exact
from microforge.plan.lifetimes import buffers_for, lower_bound
from microforge.plan.picture import abbreviated, draw_plans, short_name
from microforge.plan.placement import arena_size, place_in_order


def first_fit(buffers):
    """The simplest heuristic: buffers in index order, each at the lowest address free during its life."""
    return place_in_order(buffers, list(range(len(buffers))), best_fit=False)


@pytest.fixture(scope="module")
def vww():
    buffers = buffers_for(read_tflite(INT8_MODELS["vww"]))
    naive = [0] * len(buffers)  # everything stacked in index order: a deliberately bad plan
    for b in buffers:
        naive[b.index] = sum(p.size for p in buffers[:b.index])
    best, _ = place_exact(buffers, time_limit_s=10.0, hint=first_fit(buffers), lower_bound=lower_bound(buffers))
    return buffers, naive, best


def svg_texts(path):
    return re.findall(r"<text[^>]*>([^<]*)</text>", path.read_text()) + re.findall(r"<!-- (.*?) -->", path.read_text())


def test_png_of_the_vww_model(tmp_path, vww):
    buffers, naive, best = vww
    path = draw_plans([("stacked", buffers, naive), ("microforge exact", buffers, best)], tmp_path / "vww.png",
                      title="vww_96_int8.tflite", lower_bound=lower_bound(buffers))
    assert path == tmp_path / "vww.png"
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 30_000
    import matplotlib.image

    image = matplotlib.image.imread(path)
    height, width = image.shape[:2]
    assert 1200 < width < 2600 and 600 < height < 1400  # two panels side by side, legible at 150 dpi
    rgba = np.ascontiguousarray((image * 255).astype(np.uint8)).view(np.uint32)
    assert len(np.unique(rgba)) > 50  # boxes in many colours


def test_svg_has_titles_lines_and_tensor_labels(tmp_path, vww):
    buffers, naive, best = vww
    bound = lower_bound(buffers)
    path = draw_plans([("TFLM greedy", buffers, naive), ("microforge auto", buffers, best)], tmp_path / "vww.svg",
                      title="vww", lower_bound=bound)
    text = path.read_text()
    assert text.lstrip().startswith("<?xml") and "</svg>" in text
    assert f"microforge auto: {arena_size(buffers, best) / 1024:.1f} KiB" in text
    assert f"TFLM greedy: {arena_size(buffers, naive) / 1024:.1f} KiB" in text
    assert f"lower bound {bound / 1024:.1f} KiB" in text
    assert "peak 54.0 KiB (55,296 B) = lower bound" in text  # the exact plan reaches the bound
    # the biggest boxes are labelled with their (shortened) tensor names
    for b in sorted(buffers, key=lambda b: -b.size * (b.last + 1 - b.first))[:4]:
        assert abbreviated(short_name(b.name)) in text, b.name


def test_random_graph_three_panels_and_step_labels(tmp_path):
    graph = random_graph(0, blocks=8)
    buffers = buffers_for(graph)
    offsets, _ = place_exact(buffers, time_limit_s=5.0)
    steps = [op.type for op in graph.ops]
    path = draw_plans([("a", buffers, first_fit(buffers)), ("b", buffers, offsets), ("c", buffers, offsets)],
                      tmp_path / "plans.svg", lower_bound=lower_bound(buffers), steps=steps)
    text = path.read_text()
    assert text.count("<svg") == 1 and "CONV_2D" in text
    biggest = max(buffers, key=lambda b: b.size * (b.last + 1 - b.first))
    assert biggest.name in text


def test_small_arenas_are_drawn_in_bytes(tmp_path):
    buffers = buffers_for(read_tflite(INT8_MODELS["ad"]))
    offsets = first_fit(buffers)
    path = draw_plans([("first fit", buffers, offsets)], tmp_path / "ad.svg")
    text = path.read_text()
    assert arena_size(buffers, offsets) < 1024
    assert "arena address (bytes)" in text and f"first fit: {arena_size(buffers, offsets)} B" in text


def test_bad_arguments(tmp_path):
    buffers = buffers_for(random_graph(1))
    with pytest.raises(PlanError, match="png or .svg"):
        draw_plans([("x", buffers, first_fit(buffers))], tmp_path / "x.jpg")
    with pytest.raises(PlanError, match="offsets"):
        draw_plans([("x", buffers, [0])], tmp_path / "x.png")
    with pytest.raises(PlanError):
        draw_plans([], tmp_path / "x.png")


def test_short_names():
    assert short_name("model/activation_2/Relu;model/batch_normalization_2/FusedBatchNormV3;model/x") == \
        "activation_2"
    assert short_name("functional_1/dense/BiasAdd") == "dense"
    assert short_name("input_1_int8") == "input_1_int8"
    assert short_name("x:0") == "x"
    assert abbreviated("depthwise_conv2d_3") == "dwconv_3"


def test_importing_the_module_does_not_import_matplotlib():
    code = "import sys, microforge.plan.picture; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
