"""What microforge knows of the TFLite flatbuffer schema: tensor types and the options of each op.

The accessor and builder code is the `tflite` package's (generated from TFLite's schema.fbs); this module
only says which option fields each op has and which of them are enums, vectors or plain scalars, so the
reader and the writer walk the same table.
"""

from __future__ import annotations

import importlib

import numpy as np
import tflite

# TensorType enum value -> numpy dtype, for the types microforge can hold.
TENSOR_TYPES: dict[int, np.dtype] = {
    tflite.TensorType.FLOAT32: np.dtype(np.float32),
    tflite.TensorType.INT32: np.dtype(np.int32),
    tflite.TensorType.UINT8: np.dtype(np.uint8),
    tflite.TensorType.INT64: np.dtype(np.int64),
    tflite.TensorType.BOOL: np.dtype(np.bool_),
    tflite.TensorType.INT16: np.dtype(np.int16),
    tflite.TensorType.INT8: np.dtype(np.int8),
}
DTYPE_TO_TENSOR_TYPE = {dtype: code for code, dtype in TENSOR_TYPES.items()}


def _enum_names(enum_class) -> dict[int, str]:
    return {value: name for name, value in vars(enum_class).items() if not name.startswith("_")}


BUILTIN_OPERATOR_NAMES = _enum_names(tflite.BuiltinOperator)
BUILTIN_OPERATOR_CODES = {name: code for code, name in BUILTIN_OPERATOR_NAMES.items()}
TENSOR_TYPE_NAMES = _enum_names(tflite.TensorType)

# Option fields whose values are enums: field -> (enum value -> name).
ENUM_FIELDS = {
    "padding": _enum_names(tflite.Padding),
    "fused_activation_function": _enum_names(tflite.ActivationFunctionType),
    "weights_format": _enum_names(tflite.FullyConnectedOptionsWeightsFormat),
    "output_type": TENSOR_TYPE_NAMES,  # ARG_MAX, ARG_MIN
    "out_type": TENSOR_TYPE_NAMES,  # SHAPE
}
VECTOR_FIELDS = {"new_shape", "squeeze_dims"}

# microforge's dynamic fixed point (robust.dynamic) is no TFLite semantics: such an op is written as a
# CUSTOM op named this prefix + its builtin type, with the builtin's own options table, so TFLite Micro
# refuses the model by naming the op instead of running it with the wrong arithmetic.
DYNAMIC_CUSTOM_PREFIX = "MICROFORGE_DYNAMIC_FIXED_POINT:"
DYNAMIC_OPTION = "dynamic_fixed_point"
# A dynamic DEPTHWISE_CONV_2D that visits its output segments from the last to the first (the segment rule
# of reference/dynamic.py depends on the order), so that its C can run backward over its input: kept in
# the CUSTOM op's custom_options as the flexbuffer map {"visit": "reverse"}.
REVERSE_OPTION = "dynamic_reverse"
REVERSE_CUSTOM_OPTIONS = {"visit": "reverse"}

_POOL = ("Pool2DOptions", ("padding", "stride_w", "stride_h", "filter_width", "filter_height",
                           "fused_activation_function"))

# op type -> (options table name in the schema, its fields in snake_case)
OPTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "CONV_2D": ("Conv2DOptions", ("padding", "stride_w", "stride_h", "fused_activation_function",
                                  "dilation_w_factor", "dilation_h_factor")),
    "DEPTHWISE_CONV_2D": ("DepthwiseConv2DOptions", ("padding", "stride_w", "stride_h", "depth_multiplier",
                                                     "fused_activation_function", "dilation_w_factor",
                                                     "dilation_h_factor")),
    "FULLY_CONNECTED": ("FullyConnectedOptions", ("fused_activation_function", "weights_format",
                                                  "keep_num_dims", "asymmetric_quantize_inputs")),
    "AVERAGE_POOL_2D": _POOL,
    "MAX_POOL_2D": _POOL,
    "ADD": ("AddOptions", ("fused_activation_function", "pot_scale_int16")),
    "SUB": ("SubOptions", ("fused_activation_function", "pot_scale_int16")),
    "MUL": ("MulOptions", ("fused_activation_function",)),
    "SOFTMAX": ("SoftmaxOptions", ("beta",)),
    "CONCATENATION": ("ConcatenationOptions", ("axis", "fused_activation_function")),
    "MEAN": ("ReducerOptions", ("keep_dims",)),
    "RESHAPE": ("ReshapeOptions", ("new_shape",)),
    "SQUEEZE": ("SqueezeOptions", ("squeeze_dims",)),
    "PAD": ("PadOptions", ()),
    "PADV2": ("PadV2Options", ()),
    "EXPAND_DIMS": ("ExpandDimsOptions", ()),
    "LEAKY_RELU": ("LeakyReluOptions", ("alpha",)),
    "TRANSPOSE": ("TransposeOptions", ()),
    "SLICE": ("SliceOptions", ()),
    "STRIDED_SLICE": ("StridedSliceOptions", ("begin_mask", "end_mask", "ellipsis_mask", "new_axis_mask",
                                              "shrink_axis_mask", "offset")),
    "SPLIT": ("SplitOptions", ("num_splits",)),
    "SPLIT_V": ("SplitVOptions", ("num_splits",)),
    "PACK": ("PackOptions", ("values_count", "axis")),
    "UNPACK": ("UnpackOptions", ("num", "axis")),
    "GATHER": ("GatherOptions", ("axis", "batch_dims")),
    "ARG_MAX": ("ArgMaxOptions", ("output_type",)),
    "ARG_MIN": ("ArgMinOptions", ("output_type",)),
    "ZEROS_LIKE": ("ZerosLikeOptions", ()),
    "SHAPE": ("ShapeOptions", ("out_type",)),
    "FILL": ("FillOptions", ()),
}


def camel(field: str) -> str:
    """schema field name -> the generated accessor's name: 'stride_w' -> 'StrideW'."""
    return "".join(part[:1].upper() + part[1:] for part in field.split("_"))


def options_module(table: str):
    """The generated module of one options table, e.g. tflite.Conv2DOptions."""
    return importlib.import_module(f"tflite.{table}")


def options_union_type(table: str) -> int:
    return getattr(tflite.BuiltinOptions, table)
