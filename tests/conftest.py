import sys
from pathlib import Path

import pytest

import microforge  # noqa: F401  (first: it loads OR-Tools before any test loads TensorFlow)

ROOT = Path(__file__).resolve().parents[1]
VENDORED = ROOT / "models" / "mlperf_tiny"
SHARED = ROOT.parent / "shared" / "models" / "mlperf_tiny"
sys.path.insert(0, str(Path(__file__).parent))  # tests/oracle.py, tests/graphs.py

INT8_MODELS = {
    "kws": VENDORED / "kws_ref_model_int8.tflite",
    "vww": VENDORED / "vww_96_int8.tflite",
    "ic": VENDORED / "ic_resnet8_pretrainedResnet_quant_int8.tflite",
    "ad": VENDORED / "ad01_int8.tflite",
}
FLOAT_MODELS = {
    "kws": SHARED / "kws_ref_model_float32.tflite",
    "vww": SHARED / "vww_96_float.tflite",
    "ic": SHARED / "ic_resnet8_pretrainedResnet_float.tflite",
    "ad": SHARED / "ad01_fp32.tflite",
}
KWS_SAMPLE = VENDORED / "kws_sample_input_int8_49x10.bin"
AD_SAMPLE = SHARED / "ad01_sample_normal_id_01_00000000_hist_librosa.bin"
FSDD = ROOT.parent / "shared" / "data" / "fsdd" / "recordings"


def shared_model(path: Path) -> Path:
    """Float models live only in ../shared; fail loudly (not skip) if it is missing."""
    if not path.exists():
        pytest.fail(f"{path} is missing: the tests expect ../shared beside the project")
    return path
