"""Robust deployment: our post-training quantizer and the assessment of what quantization did.

    from microforge import robust
    model = robust.quantize("float.tflite", calibration, scheme="int8")   # -> QuantizedModel
    model.save("int8.tflite")
    report = robust.assess("float.tflite", "int8.tflite", data)            # -> Assessment
"""

from microforge.robust.api import assess, quantize
from microforge.robust.quantizer import QuantizedModel

__all__ = ["quantize", "assess", "QuantizedModel"]
