"""Build graphs in code: how tests and generators make single-op and small multi-op models in milliseconds.

    b = GraphBuilder()
    x = b.input("x", (1, 8, 8, 3), np.int8, scale=0.05, zero_point=-3)
    w = b.constant("w", weights, scale=channel_scales, zero_point=0, axis=0)
    y = b.activation("y", (1, 8, 8, 4), np.int8, scale=0.1, zero_point=5)
    b.op("CONV_2D", [x, w, bias], [y], padding="SAME", stride_w=1, stride_h=1)
    b.output(y)
    graph = b.build()
"""

from __future__ import annotations

import numpy as np

from microforge.graph.ir import Graph, Op, Quantization, Tensor

# Defaults a TFLite converter writes for each op's options; `op()` fills what the caller leaves out.
DEFAULT_OPTIONS: dict[str, dict] = {
    "CONV_2D": dict(padding="VALID", stride_w=1, stride_h=1, fused_activation_function="NONE",
                    dilation_w_factor=1, dilation_h_factor=1),
    "DEPTHWISE_CONV_2D": dict(padding="VALID", stride_w=1, stride_h=1, depth_multiplier=1,
                              fused_activation_function="NONE", dilation_w_factor=1, dilation_h_factor=1),
    "FULLY_CONNECTED": dict(fused_activation_function="NONE", weights_format="DEFAULT", keep_num_dims=False,
                            asymmetric_quantize_inputs=False),
    "AVERAGE_POOL_2D": dict(padding="VALID", stride_w=1, stride_h=1, filter_width=1, filter_height=1,
                            fused_activation_function="NONE"),
    "MAX_POOL_2D": dict(padding="VALID", stride_w=1, stride_h=1, filter_width=1, filter_height=1,
                        fused_activation_function="NONE"),
    "ADD": dict(fused_activation_function="NONE", pot_scale_int16=True),
    "SUB": dict(fused_activation_function="NONE", pot_scale_int16=True),
    "MUL": dict(fused_activation_function="NONE"),
    "SOFTMAX": dict(beta=1.0),
    "CONCATENATION": dict(axis=0, fused_activation_function="NONE"),
    "MEAN": dict(keep_dims=False),
    "RESHAPE": dict(new_shape=None),
    "LEAKY_RELU": dict(alpha=0.2),
    "STRIDED_SLICE": dict(begin_mask=0, end_mask=0, ellipsis_mask=0, new_axis_mask=0, shrink_axis_mask=0,
                          offset=False),
    "GATHER": dict(axis=0, batch_dims=0),
    "ARG_MAX": dict(output_type="INT32"),
    "ARG_MIN": dict(output_type="INT32"),
    "SHAPE": dict(out_type="INT32"),
}


class GraphBuilder:
    def __init__(self) -> None:
        self.tensors: list[Tensor] = []
        self.ops: list[Op] = []
        self.inputs: list[Tensor] = []
        self.outputs: list[Tensor] = []

    def _add(self, tensor: Tensor) -> Tensor:
        self.tensors.append(tensor)
        return tensor

    @staticmethod
    def _quant(scale, zero_point, axis) -> Quantization | None:
        if scale is None:
            return None
        return Quantization(np.atleast_1d(scale), np.atleast_1d(zero_point if zero_point is not None else 0), axis)

    def activation(self, name, shape, dtype, scale=None, zero_point=None, axis=0) -> Tensor:
        """A tensor computed at run time (an op's output)."""
        return self._add(Tensor(name, tuple(shape), np.dtype(dtype), self._quant(scale, zero_point, axis)))

    def input(self, name, shape, dtype, scale=None, zero_point=None) -> Tensor:
        tensor = self.activation(name, shape, dtype, scale, zero_point)
        self.inputs.append(tensor)
        return tensor

    def constant(self, name, data, scale=None, zero_point=None, axis=0, dtype=None) -> Tensor:
        data = np.asarray(data, dtype=dtype)
        return self._add(Tensor(name, data.shape, data.dtype, self._quant(scale, zero_point, axis), data))

    def op(self, op_type: str, inputs, outputs, **options) -> Op:
        merged = dict(DEFAULT_OPTIONS.get(op_type, {}))
        merged.update(options)
        op = Op(op_type, list(inputs), list(outputs), merged)
        self.ops.append(op)
        return op

    def output(self, tensor: Tensor) -> Tensor:
        self.outputs.append(tensor)
        return tensor

    def build(self) -> Graph:
        return Graph(self.tensors, self.ops, self.inputs, self.outputs)
