"""The on-chip OOD scores: the integer score against the float detector it follows, the generated C against
the reference byte for byte (host for every detector, qemu-m4 through `ood evaluate`), the header, the
CLI contract, and bad input."""

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from microforge import robust
from microforge.bench.dataset import write_dataset
from microforge.cli import app
from microforge.codegen import generate
from microforge.codegen.validate import validate_target
from microforge.errors import InputError, UnsupportedError
from microforge.frontend.writer import write_tflite
from microforge.reference.ood import log2_q16
from microforge.robust import ood
from microforge.robust.ood import onchip
from microforge.robust.ood.evaluate import evaluate
from test_ood_detectors import classifier

ON_CHIP = [("maxlogit", {}), ("msp", {}), ("energy", {"temperature": 2.0}), ("mahalanobis", {"form": "diagonal"}),
           ("mahalanobis", {"form": "full"}), ("mahalanobis", {"form": "low-rank", "rank": 3})]
CONTRACT_FIELDS = {"detector", "auroc", "aupr_in", "aupr_out", "fpr_at_tpr95", "tnr_at_tpr95", "threshold",
                   "bit_exact_on_target", "cost"}


@pytest.fixture(scope="module")
def int8_model():
    """The float classifier of test_ood_detectors quantized to int8 (int8 input and output) by our
    quantizer, with in-distribution inputs (as int8) and far ones."""
    graph, _ = classifier(7)
    rng = np.random.default_rng(7)
    x_float = rng.normal(size=(300, 1, 6)).astype(np.float32)
    model = robust.quantize(graph, x_float[:100], scheme="int8", io="int8").graph
    t = model.inputs[0]
    quantize = lambda x: np.clip(np.round(x / t.scale) + t.zero_point, -128, 127).astype(np.int8)  # noqa: E731
    far = (0.5 * rng.normal(size=(100, 1, 6)) + np.array([2.5, -2.5, 0, 0, 2.0, 0])).astype(np.float32)
    return model, quantize(x_float), quantize(far)


def test_integer_log2_is_the_floor_of_the_real_one():
    rng = np.random.default_rng(0)
    x = np.r_[1, 2, 3, 2**15, 2**15 + 1, 2**16 - 1, 2**31 - 1, 2**31, 2**32 - 1, rng.integers(1, 2**32, 2000)]
    want = [math.floor(65536 * math.log2(int(v))) for v in x]
    got = log2_q16(x)
    # the bit-by-bit square works on a 31-bit mantissa: the real log2 rounds down at most one step more
    assert np.all((got == want) | (got == np.array(want) - 1))
    assert np.mean(got == want) > 0.99


@pytest.mark.parametrize("name,options", ON_CHIP)
def test_the_integer_score_follows_the_float_detector_and_runs_bit_exact_in_c(int8_model, name, options):
    model, x, far = int8_model
    fitted = ood.detector(name, **options).fit(model, x[:150])
    score = onchip.chip_score(fitted)
    ints = onchip.chip_scores(fitted, x[150:])
    real = fitted.score(x[150:])
    spread = real.max() - real.min()
    # the whitened forms go through an int8 FULLY_CONNECTED: a coarser copy of the float distance
    tolerance = 0.03 if options.get("form") in ("full", "low-rank") else 0.01
    assert np.abs(ints * score.unit - real).max() <= tolerance * spread + 1e-9, name
    # the integer threshold keeps 95% of the fitting data, like the float one
    assert np.mean(onchip.chip_scores(fitted, x[:150]) <= fitted.chip_threshold) >= 0.95
    # and it tells far inputs apart as the float detector does
    auroc_float = ood.ood_metrics(real, fitted.score(far)).auroc
    auroc_chip = ood.ood_metrics(ints, onchip.chip_scores(fitted, far)).auroc
    assert abs(auroc_float - auroc_chip) <= 0.01, (name, auroc_float, auroc_chip)
    graph = onchip.chip_graph(fitted)
    assert [t.name for t in graph.outputs[-2:]] == ["ood_score", "ood_flag"]
    report = validate_target(graph, "host", batches=[np.concatenate([x[150:], far])], keep_outputs=True)
    assert report["bit_exact"], report["mismatches"]
    np.testing.assert_array_equal(report["outputs"][-1].reshape(-1),
                                  (report["outputs"][-2].reshape(-1) > fitted.chip_threshold).astype(np.int8))


TRAINED = [("godin", {}), ("explicit", {}), ("ae", {"on": "input"}), ("ae", {"on": "features"})]


def fit_trained(name, options, model, x):
    """A trained detector on `model`: godin on its own predictions as labels, explicit against wide noise."""
    from microforge.robust.ood.detectors import activations, logits_tensor

    if name == "godin":
        return ood.detector(name, **options).fit(model, x, activations(model, x, [logits_tensor(model)])[0].argmax(1))
    if name == "explicit":
        t = model.inputs[0]
        noise = np.random.default_rng(3).normal(scale=2.0 / float(t.scale), size=(150,) + tuple(t.shape))
        outliers = np.clip(np.round(noise) + t.zero_point, -128, 127).astype(np.int8)
        return ood.detector(name, **options).fit(model, x, outliers=outliers)
    return ood.detector(name, **options).fit(model, x)


@pytest.mark.parametrize("name,options", TRAINED)
def test_trained_detectors_run_on_the_chip_bit_exact(int8_model, name, options):
    """godin (int8 unit class weights, an integer square root), explicit (its head as int8 FULLY_CONNECTED
    ops) and ae (the int8 autoencoder spliced in, its error in squared input steps) follow their float
    scores, keep 95% of the fitting data, and run bit-exact in C on host and on random inputs."""
    model, x, far = int8_model
    fitted = fit_trained(name, options, model, x[:150])
    ints, real = onchip.chip_scores(fitted, x[150:]), fitted.score(x[150:])
    # the autoencoder on features requantizes twice (into it and its output back): the coarsest copy
    tolerance = 0.08 if options.get("on") == "features" else 0.03
    assert np.abs(ints * onchip.chip_score(fitted).unit - real).max() <= tolerance * (real.max() - real.min())
    assert np.mean(onchip.chip_scores(fitted, x[:150]) <= fitted.chip_threshold) >= 0.95
    auroc_float = ood.ood_metrics(real, fitted.score(far)).auroc
    auroc_chip = ood.ood_metrics(ints, onchip.chip_scores(fitted, far)).auroc
    assert abs(auroc_float - auroc_chip) <= 0.02, (name, auroc_float, auroc_chip)
    noise = np.random.default_rng(1).integers(-128, 128, size=(64, 1, 6)).astype(np.int8)
    report = validate_target(onchip.chip_graph(fitted), "host", batches=[np.concatenate([x[150:], far, noise])])
    assert report["bit_exact"], report["mismatches"]


def test_the_cosine_score_is_the_float_cosine_to_q15():
    """MF_OOD_COSINE on hand-made features: parallel, opposite, orthogonal, zero."""
    from microforge.graph.ir import Op, Quantization, Tensor
    from microforge.reference.ood import ood_cosine

    src = Tensor("f", (1, 2), np.int8, Quantization([0.1], [3]))
    op = Op("MF_OOD_COSINE", [src], [Tensor("s", (1,), np.int32)],
            {"weights": np.array([[127, 0], [0, -127]], np.int8), "norms": np.array([127 * 256, 127 * 256])})
    q = np.array([[13, 3], [3, -7], [-7, 3], [3, 3], [10, 10]], np.int8).reshape(5, 1, 2)
    got = ood_cosine(op, [q]).reshape(-1)
    np.testing.assert_array_equal(got[:4], [-(1 << 15), -(1 << 15), 0, 0])
    assert abs(got[4] / (1 << 15) + math.cos(math.pi / 4)) < 1e-4


def test_random_int8_logits_reach_the_tables_ends_bit_exact(int8_model):
    """Random int8 inputs drive the logits far apart (differences past the exp table) and together."""
    model, x, _ = int8_model
    rng = np.random.default_rng(1)
    noise = rng.integers(-128, 128, size=(64, 1, 6)).astype(np.int8)
    for name, options in ON_CHIP:
        fitted = ood.detector(name, **options).fit(model, x[:100])
        assert validate_target(onchip.chip_graph(fitted), "host", batches=[noise])["bit_exact"], name


def test_the_header_says_where_the_score_and_flag_are(int8_model, tmp_path):
    model, x, _ = int8_model
    fitted = ood.detector("energy").fit(model, x[:100])
    generated = generate(onchip.chip_graph(fitted), tmp_path / "c", target="cortex-m4")
    header = (generated.directory / "model.h").read_text()
    assert "#define MF_OOD_SCORE_OUTPUT 1" in header and "#define MF_OOD_FLAG_OUTPUT 2" in header
    assert f"#define MF_OOD_THRESHOLD ({fitted.chip_threshold})" in header
    assert "mf_ood.c" in generated.sources


def test_a_float_model_has_no_on_chip_score_and_says_so():
    float_graph, _ = classifier(7)
    floating = ood.detector("msp").fit(float_graph, np.zeros((10, 1, 6), np.float32))
    assert floating.chip_threshold is None
    with pytest.raises(InputError, match="no on-chip threshold"):
        onchip.chip_graph(floating)
    with pytest.raises(UnsupportedError, match="quantize the model to int8"):
        onchip.chip_score(floating)


def _runner(directory, x, label=0):
    write_dataset(directory, [(f"s{i}.bin", np.ascontiguousarray(v).tobytes()) for i, v in enumerate(x)],
                  [label] * len(x), 4)
    return directory


@pytest.fixture(scope="module")
def folders(int8_model, tmp_path_factory):
    model, x, far = int8_model
    root = tmp_path_factory.mktemp("ood")
    (root / "model.tflite").write_bytes(write_tflite(model))
    return root / "model.tflite", _runner(root / "id", x[:200]), _runner(root / "far", far), root


def test_evaluate_on_qemu_m4_runs_the_compiled_score_bit_exact_and_measures_its_cost(int8_model, folders):
    model_path, id_dir, far_dir, _ = folders
    result = evaluate(model_path, id_dir, [far_dir], detector="msp", target="qemu-m4")
    entry = result["detectors"][0]
    assert CONTRACT_FIELDS <= set(entry) and entry["bit_exact_on_target"] is True
    cost = entry["cost"]
    assert 0 < cost["instructions"] < 2000 and 0 < cost["flash_bytes"] <= 2048 and 0 <= cost["ram_bytes"] <= 256
    # the scores measured on the core are the reference's integer scores in real units
    model, x, far = int8_model
    fitted = ood.detector("msp").fit(model, x[:200][0::2])
    unit = onchip.chip_score(fitted).unit
    np.testing.assert_array_equal(np.asarray(entry["scores"]["id"]), onchip.chip_scores(fitted, x[:200][1::2]) * unit)
    assert entry["threshold"] == fitted.chip_threshold * unit


def test_the_cli_contract(folders, tmp_path):
    model_path, id_dir, far_dir, _ = folders
    runner = CliRunner()
    result = runner.invoke(app, ["ood", "evaluate", str(model_path), "--data", str(id_dir), "--ood", str(far_dir),
                                 "--ood", str(id_dir), "--detector", "all", "--json", "--report", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    names = [d["detector"] for d in report["detectors"]]
    assert {"msp", "maxlogit", "energy", "mahalanobis"} <= set(names)
    for entry in report["detectors"]:
        assert CONTRACT_FIELDS <= set(entry) and set(entry["cost"]) >= {"instructions", "flash_bytes", "ram_bytes"}
        assert [s["name"] for s in entry["ood_sets"]] == ["far", "id"]
    html = (tmp_path / "r" / "report.html").read_text()
    assert "data:image/png;base64," in html and "mahalanobis" in html
    # fit, then generate and validate the model with the detector compiled in
    detector_file = tmp_path / "energy.json"
    result = runner.invoke(app, ["ood", "fit", str(model_path), "--data", str(id_dir), "--detector", "energy",
                                 "-o", str(detector_file)])
    assert result.exit_code == 0, result.output
    assert json.loads(detector_file.read_text())["chip_threshold"] is not None
    result = runner.invoke(app, ["validate", str(model_path), "--ood", str(detector_file), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["bit_exact"] is True
    result = runner.invoke(app, ["generate", str(model_path), "--ood", str(detector_file), "-o", str(tmp_path / "c")])
    assert result.exit_code == 0 and "MF_OOD_FLAG_OUTPUT" in (tmp_path / "c" / "model.h").read_text()


def test_bad_input_names_what_and_where(folders, tmp_path, int8_model):
    model_path, id_dir, far_dir, root = folders
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty"):
        evaluate(model_path, id_dir, [tmp_path / "empty"])
    with pytest.raises(InputError, match="at least one OOD folder"):
        evaluate(model_path, id_dir, [])
    # a folder of another model's samples: 7 bytes each, not this model's 6
    _runner(tmp_path / "wide", np.zeros((5, 1, 7), np.int8))
    with pytest.raises(InputError, match="bytes"):
        evaluate(model_path, id_dir, [tmp_path / "wide"])
    other, _ = classifier(8)
    other_path = tmp_path / "other.tflite"
    other_path.write_bytes(write_tflite(robust.quantize(other, np.zeros((8, 1, 6), np.float32) + 0.1 *
                                                        np.arange(8)[:, None, None], io="int8").graph))
    detector_file = tmp_path / "d.json"
    model, x, _ = int8_model
    ood.detector("msp").fit(model, x[:50]).save(detector_file)
    result = CliRunner().invoke(app, ["generate", str(other_path), "--ood", str(detector_file), "-o", str(tmp_path / "c")])
    assert result.exit_code == 2 and "fitted on another model" in result.output


def test_a_benchmark_task_grades_the_model_output_not_the_detectors(int8_model):
    from microforge.bench.tasks import task_outputs

    model, x, _ = int8_model
    graph = onchip.chip_graph(ood.detector("maxlogit").fit(model, x[:50]))
    assert task_outputs(graph) == model.outputs
