"""microforge bench: tasks, accuracy against TFLM on the same files, performance and energy, reports, CLI."""

import json
import re
import shutil

import numpy as np
import pytest
from conftest import AD_SAMPLE, FSDD, INT8_MODELS
from oracle import tflm_run
from typer.testing import CliRunner

import microforge
from microforge.bench import energy, report, runner, sources, tasks
from microforge.bench.dataset import write_dataset
from microforge.bench.features import ad_windows, kws_features_from_wav, quantize_input
from microforge.bench.images import image_to_int8
from microforge.cli import app
from microforge.errors import InputError

cli = CliRunner()


def _random_dataset(path, graph, count, classes, seed=0):
    rng = np.random.default_rng(seed)
    x = graph.inputs[0]
    samples = [(f"s{i}.bin", rng.integers(-128, 128, x.shape, dtype=np.int8)) for i in range(count)]
    labels = [int(v) for v in rng.integers(0, classes, count)]
    write_dataset(path, samples, labels, classes)
    return np.stack([s for _, s in samples]), np.asarray(labels)


def _pairwise_auc(scores, labels):
    """AUC as the share of (anomalous, normal) pairs ranked correctly, ties counting half."""
    pos = [s for s, y in zip(scores, labels) if y == 1]
    neg = [s for s, y in zip(scores, labels) if y == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


# --- tasks --------------------------------------------------------------------------------------------------

def test_check_model_names_the_mismatch():
    kws, vww, ad = (microforge.load(INT8_MODELS[k]) for k in ("kws", "vww", "ad"))
    tasks.check_model(tasks.get_task("kws"), kws)
    tasks.check_model(tasks.get_task("ad"), ad)
    with pytest.raises(InputError, match="RGB image"):
        tasks.check_model(tasks.get_task("vww"), kws)
    with pytest.raises(InputError, match="49 x 10"):
        tasks.check_model(tasks.get_task("kws"), vww)
    with pytest.raises(InputError, match="mel values"):
        tasks.check_model(tasks.get_task("ad"), kws)
    with pytest.raises(InputError, match="unknown task"):
        tasks.get_task("asr")


def test_dataset_must_fit_the_model(tmp_path):
    graph = microforge.load(INT8_MODELS["kws"])
    _random_dataset(tmp_path / "ten", graph, 3, 10)
    with pytest.raises(InputError, match="listed with 10 classes; the model has 12"):
        tasks.load_samples(tasks.get_task("kws"), graph, tmp_path / "ten")
    write_dataset(tmp_path / "short", [("a.bin", b"\x00" * 100)], [0], 12)
    with pytest.raises(InputError, match="a.bin"):
        tasks.load_samples(tasks.get_task("kws"), graph, tmp_path / "short")
    with pytest.raises(InputError, match="needs a dataset"):
        runner.bench("kws", INT8_MODELS["kws"], target="reference", mode="accuracy")
    with pytest.raises(InputError, match="unknown target"):
        runner.bench("kws", INT8_MODELS["kws"], dataset=tmp_path / "ten", target="qemu-m3")
    with pytest.raises(InputError, match="unknown mode"):
        runner.bench("kws", INT8_MODELS["kws"], target="host", mode="fast")


# --- accuracy: exactly what TFLM gives on the same files ----------------------------------------------------

@pytest.mark.parametrize("target", ["reference", "host", "qemu-m4"])
def test_kws_accuracy_equals_tflm_on_the_same_files(tmp_path, target):
    model = INT8_MODELS["kws"]
    graph = microforge.load(model)
    x, labels = _random_dataset(tmp_path, graph, 40 if target != "qemu-m4" else 12, 12, seed=3)
    tflm = tflm_run(model.read_bytes(), [x])[0]
    expected = float(np.mean(np.argmax(tflm.reshape(len(x), -1), axis=1) == labels))
    result = runner.bench("kws", model, dataset=tmp_path, target=target, mode="accuracy")
    assert result["accuracy"] == expected
    assert result["samples"] == len(x)
    if target == "reference":
        assert result["bit_exact"] is None  # the oracle is not compared with itself
    else:
        assert result["bit_exact"] is True and result["mismatches"] == 0
    if target == "qemu-m4":
        assert result["instructions_per_inference"] > 1_000_000
        assert 0 < result["ram_bytes"] < 64 * 1024 and result["flash_bytes"] > 40_000


def test_ad_auc_equals_an_independent_computation_with_tflm(tmp_path):
    """Clips: the shipped normal clip and noisier copies; AUC from TFLM outputs and a pairwise count."""
    model = INT8_MODELS["ad"]
    graph = microforge.load(model)
    clip = np.fromfile(AD_SAMPLE, "<f4").reshape(200, 128)
    rng = np.random.default_rng(7)
    clips = [clip + rng.normal(0, s, clip.shape).astype(np.float32) for s in (0.0, 0.5, 1.0, 3.0, 6.0, 10.0)]
    labels = [0, 0, 1, 0, 1, 1]
    write_dataset(tmp_path, [(f"c{i}_hist_librosa.bin", c.astype("<f4")) for i, c in enumerate(clips)], labels, 2)

    x, y = graph.inputs[0], graph.outputs[0]
    scores = []
    for c in clips:
        windows = ad_windows(c.astype(np.float32))
        q = quantize_input(windows, x.quant.single_scale, x.quant.single_zero_point).reshape((-1, *x.shape))
        out = tflm_run(model.read_bytes(), [q])[0].reshape(len(windows), -1).astype(np.float64)
        recon = y.quant.single_scale * (out - y.quant.single_zero_point)
        scores.append(np.mean((recon - windows) ** 2))
    expected = _pairwise_auc(scores, labels)

    result = runner.bench("ad", model, dataset=tmp_path, target="host", mode="accuracy")
    assert result["auc"] == pytest.approx(expected, abs=1e-12)
    assert result["inferences"] == 6 * 196 and result["bit_exact"] is True


# --- performance and energy ---------------------------------------------------------------------------------

def test_performance_on_host_is_a_median_of_timed_windows(monkeypatch):
    calls = []
    real = runner.HostDevice.throughput

    def spy(self, x, min_window_s):
        value = real(self, x, min_window_s)
        calls.append(value)
        return value

    monkeypatch.setattr(runner.HostDevice, "throughput", spy)
    result = runner.bench("ad", INT8_MODELS["ad"], target="host", mode="performance", min_window_s=0.05)
    assert len(calls) == runner.PERFORMANCE_INPUTS
    assert result["throughput_ips"] == sorted(calls)[2]
    assert result["latency_ms"] == pytest.approx(1000.0 / result["throughput_ips"])
    assert result["ram_bytes"] == result["arena_bytes"] > 0
    assert result["performance_inputs"].startswith("random")


def test_energy_on_qemu_follows_instructions_and_the_model():
    model = energy.EnergyModel("test board", 50e6, 0.01, cycles_per_instruction=2.0)
    result = runner.bench("ad", INT8_MODELS["ad"], target="qemu-m4", mode="energy", energy_model=model)
    n = result["instructions_per_inference"]
    assert 200_000 < n < 2_000_000
    # time from the DUT firmware's timer (virtual time under -icount): the counted instructions plus the
    # copy of the 640 input bytes and the loop around mf_invoke, on the 50 MHz, 2-cycle model board
    per_inference = result["latency_ms"] * 1e-3 * 50e6 / 2.0
    assert n <= per_inference <= n + 640 + 500
    assert result["timing"].startswith("DUT timer")
    assert result["energy_uj"] == pytest.approx(n * 2.0 / 50e6 * 0.01 * 1e6)
    assert result["emulated"] and result["clock_mhz"] == 50.0
    assert "test board" in result["energy_source"]


def test_energy_from_a_power_trace(tmp_path):
    trace = tmp_path / "trace.csv"
    t = np.linspace(0.0, 2.0, 201)
    trace.write_text("time_s,power_w\n" + "".join(f"{a},{0.05}\n" for a in t))
    times, powers = energy.read_power_trace(trace)
    # 50 mW for 2 s = 100 mJ over 100 inferences = 1000 µJ each
    assert energy.energy_from_trace(times, powers, 0.0, 2.0, 100) == pytest.approx(1000.0)
    assert energy.energy_from_trace(times, powers, 0.5, 1.5, 10) == pytest.approx(5000.0)
    result = runner.bench("ad", INT8_MODELS["ad"], target="reference", mode="energy", min_window_s=0.01,
                          power_trace=trace, power_inferences=100)
    assert result["energy_uj"] == pytest.approx(1000.0)
    bad = tmp_path / "bad.csv"
    bad.write_text("0,1\n0,2\n")
    with pytest.raises(InputError, match="strictly increasing"):
        energy.read_power_trace(bad)
    with pytest.raises(InputError, match="not inside"):
        energy.energy_from_trace(times, powers, 1.0, 3.0, 1)
    with pytest.raises(InputError, match="power_inferences"):
        runner.bench("ad", INT8_MODELS["ad"], target="reference", mode="energy", power_trace=trace)


# --- dataset command: source folders through the task's pre-processing --------------------------------------

def test_kws_dataset_from_class_folders_and_fsdd(tmp_path):
    graph = microforge.load(INT8_MODELS["kws"])
    x = graph.inputs[0]
    src = tmp_path / "src"
    wavs = sorted(FSDD.glob("*_jackson_0.wav"))[:3]
    for label, wav in zip(("yes", "no", "up"), wavs):
        (src / label).mkdir(parents=True)
        shutil.copy(wav, src / label / wav.name)
    labels = ["_silence_", "_unknown_", "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
    (src / "_silence_").mkdir()
    (src / "_unknown_").mkdir()
    for name in labels[5:]:
        (src / name).mkdir()
    count = sources.write_task_dataset("kws", src, tmp_path / "out", graph, labels=labels)
    assert count == 3
    rows = (tmp_path / "out" / "y_labels.csv").read_text().split()
    assert rows == [f"yes_{wavs[0].stem}.bin,12,2", f"no_{wavs[1].stem}.bin,12,3", f"up_{wavs[2].stem}.bin,12,4"]
    want = quantize_input(kws_features_from_wav(wavs[0]), x.quant.single_scale, x.quant.single_zero_point)
    assert (tmp_path / "out" / f"yes_{wavs[0].stem}.bin").read_bytes() == want.tobytes()
    with pytest.raises(InputError, match="no sub-folder for the class"):
        sources.write_task_dataset("kws", src, tmp_path / "o2", graph, labels=["yes", "maybe"])
    with pytest.raises(InputError, match="FSDD has 10 classes"):
        sources.write_task_dataset("kws", FSDD, tmp_path / "o3", graph, fsdd=True)


def test_image_dataset_matches_direct_preprocessing(tmp_path):
    import matplotlib.image as mpimg

    graph = microforge.load(INT8_MODELS["ic"])
    x = graph.inputs[0]
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    (tmp_path / "src" / "cat").mkdir(parents=True)
    (tmp_path / "src" / "dog").mkdir()
    mpimg.imsave(tmp_path / "src" / "dog" / "d0.png", img)
    assert sources.write_task_dataset("ic", tmp_path / "src", tmp_path / "out", graph) == 1
    want = image_to_int8(img.astype(np.float32), (32, 32), x.quant.single_scale, x.quant.single_zero_point)
    assert (tmp_path / "out" / "dog_d0.bin").read_bytes() == want.tobytes()
    assert (tmp_path / "out" / "y_labels.csv").read_text() == "dog_d0.bin,10,1\n"
    (tmp_path / "src" / "cat" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="broken.png"):
        sources.write_task_dataset("ic", tmp_path / "src", tmp_path / "out2", graph)


# --- reports and the command line -----------------------------------------------------------------------------

def test_report_is_self_contained_and_marks_provenance(tmp_path):
    results = [
        {"task": "kws", "model": "m.tflite", "target": "qemu-m4", "mode": "suite", "emulated": True, "samples": 10,
         "accuracy": 0.9, "bit_exact": True, "latency_ms": 60.0, "throughput_ips": 16.7,
         "instructions_per_inference": 7_200_000, "energy_uj": 2400.0, "ram_bytes": 10_000, "flash_bytes": 50_000},
        {"task": "kws", "model": "m.tflite", "target": "host", "mode": "suite", "emulated": False, "samples": 10,
         "accuracy": 0.9, "bit_exact": True, "latency_ms": 3.0, "throughput_ips": 333.3, "ram_bytes": 10_000},
    ]
    written = report.write_report(results, tmp_path)
    page = written["html"].read_text()
    assert "src=\"http" not in page and page.count("data:image/png;base64,") >= 3
    md = written["markdown"].read_text()
    assert "| kws | m.tflite | qemu-m4 | emulated |" in md and "| kws | m.tflite | host | measured |" in md
    # the published v0.5 reference KWS figures, and our instructions next to the peer's
    assert "181.9" in md and "7,373.7" in md and "top-1 90.1%" in md
    assert "7,200,000 | 7,697,385 | 0.94x" in md
    assert json.loads(written["json"].read_text())["results"] == results


def test_cli_bench_errors_and_json(tmp_path):
    result = cli.invoke(app, ["bench", "--task", "kws", "--target", "reference"])
    assert result.exit_code == 2 and "needs a dataset" in result.output
    result = cli.invoke(app, ["bench", "--target", "host"])
    assert result.exit_code == 2 and "--task" in result.output
    result = cli.invoke(app, ["bench", "--task", "ad", "--mode", "performance", "--target", "serial:/dev/ttyNONE"])
    assert result.exit_code == 2 and "cannot open serial port '/dev/ttyNONE'" in result.output
    graph = microforge.load(INT8_MODELS["kws"])
    _random_dataset(tmp_path, graph, 8, 12)
    result = cli.invoke(app, ["bench", "--task", "kws", "--dataset", str(tmp_path), "--target", "host", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    for key in ("task", "model", "target", "accuracy", "latency_ms", "throughput_ips", "instructions_per_inference",
                "energy_uj", "ram_bytes", "flash_bytes"):
        assert key in data
    assert data["bit_exact"] is True and data["samples"] == 8


def test_cli_suite_writes_the_report(tmp_path):
    """The suite on host and qemu-m4 with the four reference models (performance + energy), and KWS accuracy
    from a datasets folder."""
    graph = microforge.load(INT8_MODELS["kws"])
    _random_dataset(tmp_path / "data" / "kws", graph, 6, 12)
    result = cli.invoke(app, ["bench", "--suite", "--target", "host", "--target", "qemu-m4", "--datasets", str(tmp_path / "data"),
                              "--min-window", "0.02", "--report", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "rep" / "results.json").read_text())["results"]
    assert [(r["task"], r["target"]) for r in data] == [(t, tg) for t in ("kws", "vww", "ic", "ad")
                                                         for tg in ("host", "qemu-m4")]
    for r in data:
        assert r["latency_ms"] > 0 and r["ram_bytes"] > 0
        if r["target"] == "qemu-m4":
            assert r["instructions_per_inference"] > 0 and r["energy_uj"] > 0 and r["flash_bytes"] > 0
    kws = [r for r in data if r["task"] == "kws"]
    assert all(r["accuracy"] is not None and r["bit_exact"] for r in kws)
    md = (tmp_path / "rep" / "report.md").read_text()
    assert re.search(r"\| vww \| 600\.6 \|", md)


def test_cli_firmware_for_a_real_board(tmp_path):
    result = cli.invoke(app, ["firmware", str(INT8_MODELS["ad"]), "--board", "nucleo-l4r5zi", "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    elf = tmp_path / "build" / "dut.elf"
    assert elf.read_bytes()[:4] == b"\x7fELF"
    result = cli.invoke(app, ["firmware", str(INT8_MODELS["ad"]), "--board", "esp32", "-o", str(tmp_path)])
    assert result.exit_code == 2 and "unknown board" in result.output


def test_serial_target_runs_the_protocol(monkeypatch, tmp_path):
    """The serial:PORT path of bench, with the port replaced by the DUT firmware under QEMU."""
    from microforge.bench import dut
    from microforge.codegen.emit import generate

    model = INT8_MODELS["kws"]
    graph = microforge.load(model)
    folder = generate(graph, tmp_path / "model", target="cortex-m4").directory
    opened = []

    def fake_open(port, baudrate=115200, timeout_s=10.0):
        opened.append(port)
        return dut.qemu_dut(folder, "qemu-m4", timeout_s=60.0)

    monkeypatch.setattr(dut, "open_serial_dut", fake_open)
    x, labels = _random_dataset(tmp_path / "data", graph, 3, 12, seed=5)
    tflm = tflm_run(model.read_bytes(), [x])[0]
    result = runner.bench("kws", model, dataset=tmp_path / "data", target="serial:/dev/ttyACM7", mode="accuracy")
    assert opened == ["/dev/ttyACM7"]
    assert result["bit_exact"] is True
    assert result["accuracy"] == float(np.mean(np.argmax(tflm.reshape(3, -1), axis=1) == labels))
    perf = runner.bench("kws", model, target="serial:/dev/ttyACM7", mode="performance", min_window_s=0.001)
    assert perf["timing"].startswith("board timer") and perf["latency_ms"] > 0


def test_ad_dataset_from_clips_then_bench(tmp_path):
    import wave

    from microforge.bench.features import ad_hist_from_wav

    t = np.arange(9 * 16000) / 16000
    rng = np.random.default_rng(2)
    (tmp_path / "src").mkdir()
    for name, noise in (("normal_id_00_0.wav", 0.01), ("normal_id_00_1.wav", 0.02), ("anomaly_id_00_0.wav", 0.3)):
        pcm = (0.3 * np.sin(2 * np.pi * 500 * t) + noise * rng.standard_normal(t.size)) * 32767 * 0.5
        with wave.open(str(tmp_path / "src" / name), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes(pcm.astype("<i2").tobytes())
    graph = microforge.load(INT8_MODELS["ad"])
    assert sources.write_task_dataset("ad", tmp_path / "src", tmp_path / "out", graph) == 3
    assert (tmp_path / "out" / "y_labels.csv").read_text().split() == [
        "anomaly_id_00_0_hist_librosa.bin,2,1", "normal_id_00_0_hist_librosa.bin,2,0",
        "normal_id_00_1_hist_librosa.bin,2,0"]
    clip = np.fromfile(tmp_path / "out" / "normal_id_00_0_hist_librosa.bin", "<f4").reshape(200, 128)
    np.testing.assert_array_equal(clip, ad_hist_from_wav(tmp_path / "src" / "normal_id_00_0.wav"))
    result = runner.bench("ad", INT8_MODELS["ad"], dataset=tmp_path / "out", target="reference")
    assert result["auc"] in (0.0, 0.5, 1.0) and result["inferences"] == 3 * 196
    (tmp_path / "src" / "machine.wav").write_bytes((tmp_path / "src" / "normal_id_00_0.wav").read_bytes())
    with pytest.raises(InputError, match="machine.wav"):
        sources.write_task_dataset("ad", tmp_path / "src", tmp_path / "out2", graph)
