"""microforge.bench dataset format, metrics, and FSDD -> KWS MFCC -> MLPerf KWS int8 model end to end."""

import itertools

import numpy as np
import pytest
from conftest import FSDD, INT8_MODELS
from hypothesis import given, settings
from hypothesis import strategies as st

import microforge
from microforge.bench import dataset, metrics
from microforge.errors import InputError

KWS_MODEL = INT8_MODELS["kws"]


# --- runner dataset format --------------------------------------------------------------------------------

def test_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    samples = [(f"s{i}.bin", rng.integers(-128, 128, (49, 10)).astype(np.int8)) for i in range(4)]
    samples.append(("raw.bin", (bytes(range(256)) * 2)[:490]))
    labels = [3, 0, 11, 5, 7]
    dataset.write_dataset(tmp_path, samples, labels, 12)
    text = (tmp_path / "y_labels.csv").read_text()
    assert text.splitlines()[0] == "s0.bin,12,3" and len(text.splitlines()) == 5
    got, got_labels = dataset.read_dataset(tmp_path, 490)
    assert got_labels == labels
    assert [n for n, _ in got] == [n for n, _ in samples]
    for (_, data), (_, orig) in zip(got, samples):
        assert data == (orig.tobytes() if isinstance(orig, np.ndarray) else orig)


def test_read_accepts_spaces_and_blank_lines(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"\x01\x02")
    (tmp_path / "y_labels.csv").write_text("a.bin, 2, 1\n\n")
    assert dataset.read_dataset(tmp_path, 2) == ([("a.bin", b"\x01\x02")], [1])


@pytest.mark.parametrize("csv_text,size,match", [
    ("a.bin,2,1\nb.bin,2,0\n", 2, "b.bin: sample file listed in y_labels.csv is missing"),
    ("a.bin,2,1\n", 3, "a.bin: 2 bytes, the model input needs 3"),
    ("a.bin,2\n", 2, "line 1: expected 3 fields"),
    ("a.bin,2,x\n", 2, "line 1: num_classes and label must be integers"),
    ("a.bin,2,2\n", 2, "line 1: label 2 is outside 0..1"),
    ("a.bin,0,0\n", 2, "num_classes must be at least 1"),
    ("a.bin,2,1\na.bin,2,1\n", 2, "line 2: sample 'a.bin' is listed twice"),
    ("../a.bin,2,1\n", 2, "not a plain sample file name"),
    ("\n", 2, "no samples listed"),
])
def test_read_errors(tmp_path, csv_text, size, match):
    (tmp_path / "a.bin").write_bytes(b"\x01\x02")
    (tmp_path / "y_labels.csv").write_text(csv_text)
    with pytest.raises(InputError, match=match):
        dataset.read_dataset(tmp_path, size)


def test_read_missing_csv_and_folder(tmp_path):
    with pytest.raises(InputError, match="y_labels.csv: labels file not found"):
        dataset.read_dataset(tmp_path, 1)
    with pytest.raises(InputError, match="dataset folder not found"):
        dataset.read_dataset(tmp_path / "nope", 1)
    (tmp_path / "y_labels.csv").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(InputError, match="cannot be read as text"):
        dataset.read_dataset(tmp_path, 1)


def test_write_errors(tmp_path):
    with pytest.raises(InputError, match="2 samples but 1 labels"):
        dataset.write_dataset(tmp_path, [("a.bin", b"1"), ("b.bin", b"2")], [0], 2)
    with pytest.raises(InputError, match="label 2"):
        dataset.write_dataset(tmp_path, [("a.bin", b"1")], [2], 2)
    with pytest.raises(InputError, match="used twice"):
        dataset.write_dataset(tmp_path, [("a.bin", b"1"), ("a.bin", b"2")], [0, 1], 2)
    with pytest.raises(InputError, match="plain sample file name"):
        dataset.write_dataset(tmp_path, [("x/a.bin", b"1")], [0], 2)
    with pytest.raises(InputError, match="no samples"):
        dataset.write_dataset(tmp_path, [], [], 2)
    with pytest.raises(InputError, match="no data"):
        dataset.write_dataset(tmp_path, [("a.bin", b"")], [0], 2)
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_fsdd_file_selection_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        dataset.fsdd_test_files(tmp_path / "nope")
    with pytest.raises(InputError, match="no '"):
        dataset.fsdd_test_files(tmp_path)


# --- end to end: FSDD -> MFCC -> int8 -> runner format -> MLPerf KWS int8 model ---------------------------

def test_fsdd_through_kws_model(tmp_path):
    graph = microforge.load(KWS_MODEL)
    (inp,) = graph.inputs
    scale, zp = inp.quant.single_scale, inp.quant.single_zero_point
    assert abs(scale - 0.5847) < 1e-3 and zp == 83
    written = dataset.fsdd_kws_dataset(FSDD, tmp_path, indices=[0], scale=scale, zero_point=zp)
    assert len(written) == 60  # 10 digits x 6 speakers, index 0
    assert all(name.endswith(".bin") for name, _ in written)
    samples, labels = dataset.read_dataset(tmp_path, 490)
    assert labels == [label for _, label in written] and sorted(set(labels)) == list(range(10))
    x = np.stack([np.frombuffer(data, np.int8).reshape(49, 10, 1) for _, data in samples])
    assert x.min() >= -128 and x.max() <= 127 and x.std() > 1  # not saturated to a constant
    out = microforge.run(graph, x)
    assert out.shape == (60, 12) and out.dtype == np.int8
    probs = (out.astype(np.int32) + 128) / 256.0  # output scale 1/256, zero point -128
    assert np.all(np.abs(probs.sum(axis=1) - 1.0) < 0.1)  # softmax rows


def test_fsdd_default_indices_are_the_test_split():
    files = dataset.fsdd_test_files(FSDD)
    assert len(files) == 300
    assert all(int(p.stem.split("_")[2]) < 5 and int(p.stem[0]) == d for p, d in files)


# --- metrics ----------------------------------------------------------------------------------------------

def brute_auc(scores, labels):
    pos = [s for s, y in zip(scores, labels) if y == 1]
    neg = [s for s, y in zip(scores, labels) if y == 0]
    total = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return total / (len(pos) * len(neg))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5).map(float), st.integers(0, 1)), min_size=2, max_size=40)
       .filter(lambda r: 0 < sum(y for _, y in r) < len(r)))
def test_auc_matches_pairwise_with_ties(rows):
    scores, labels = zip(*rows)
    assert metrics.roc_auc(scores, labels) == pytest.approx(brute_auc(scores, labels), abs=1e-12)


def test_auc_cases_and_errors():
    assert metrics.roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75  # sklearn's documented example
    assert metrics.roc_auc([1, 1, 1], [0, 1, 0]) == 0.5
    np.testing.assert_array_equal(metrics.average_ranks([3, 1, 3, 2]), [3.5, 1, 3.5, 2])
    with pytest.raises(InputError, match="both classes"):
        metrics.roc_auc([1, 2], [1, 1])
    with pytest.raises(InputError):
        metrics.roc_auc([1, 2], [0, 2])
    with pytest.raises(InputError):
        metrics.roc_auc([1, np.nan], [0, 1])
    with pytest.raises(InputError):
        metrics.roc_auc([1, 2, 3], [0, 1])


def test_top1_accuracy():
    out = np.array([[0.1, 0.9], [0.8, 0.2], [0.5, 0.5]])
    assert metrics.top1_accuracy(out, [1, 1, 0]) == pytest.approx(2 / 3)
    with pytest.raises(InputError):
        metrics.top1_accuracy(out, [1, 1])
    with pytest.raises(InputError):
        metrics.top1_accuracy(out, [1, 1, 2])


def test_ad_score():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 196, 640))
    r = x + rng.normal(scale=[[[1.0]], [[2.0]], [[0.5]]], size=x.shape)
    s = metrics.ad_score(r, x)
    loop = [np.mean([np.mean((r[c, w] - x[c, w]) ** 2) for w in range(196)]) for c in range(3)]
    np.testing.assert_allclose(s, loop)
    assert np.argmax(s) == 1 and np.argmin(s) == 2
    ragged = metrics.ad_score([r[0, :10], r[1]], [x[0, :10], x[1]])
    np.testing.assert_allclose(ragged, [np.mean((r[0, :10] - x[0, :10]) ** 2), loop[1]])
    with pytest.raises(InputError):
        metrics.ad_score(r[:, :5], x)
    with pytest.raises(InputError):
        metrics.ad_score([r[0]], [x[0], x[1]])
