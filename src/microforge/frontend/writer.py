"""Write the Graph IR as a .tflite flatbuffer that TFLite Micro and LiteRT load.

Tests use it to make models in milliseconds without TensorFlow; the planner uses it to store offline
memory plans in a model's metadata.
"""

from __future__ import annotations

import importlib

import flatbuffers
from flatbuffers import flexbuffers
import numpy as np
import tflite

from microforge.errors import ModelError
from microforge.frontend import schema
from microforge.graph.ir import Graph, Op, Tensor

SCHEMA_VERSION = 3
DATA_ALIGNMENT = 16  # constant data aligned so kernels may read it as int32/float words


def _module(name: str):
    return importlib.import_module(f"tflite.{name}")


def _vector(builder: flatbuffers.Builder, table: str, field: str, values, kind: str) -> int:
    """Build a vector of scalars for `table.field` using the generated Start...Vector function."""
    prepend = getattr(builder, f"Prepend{kind}")
    getattr(_module(table), f"{table}Start{schema.camel(field)}Vector")(builder, len(values))
    for v in reversed(list(values)):
        prepend(v)
    return builder.EndVector()


def _offsets(builder: flatbuffers.Builder, table: str, field: str, offsets: list[int]) -> int:
    getattr(_module(table), f"{table}Start{schema.camel(field)}Vector")(builder, len(offsets))
    for off in reversed(offsets):
        builder.PrependUOffsetTRelative(off)
    return builder.EndVector()


def write_tflite(graph: Graph) -> bytes:
    """Serialise `graph` (its tensors, ops in order, inputs, outputs and metadata) to .tflite bytes."""
    graph.renumber()
    builder = flatbuffers.Builder(1024)

    # Buffers: 0 is the conventional empty buffer; then one per constant, then one per metadata entry.
    buffer_payloads: list[bytes | None] = [None]
    tensor_buffer: dict[int, int] = {}
    for t in graph.tensors:
        if t.is_constant:
            tensor_buffer[t.index] = len(buffer_payloads)
            buffer_payloads.append(np.ascontiguousarray(t.data, dtype=t.dtype.newbyteorder("<")).tobytes())
    metadata_buffer: dict[str, int] = {}
    for name, payload in graph.metadata.items():
        metadata_buffer[name] = len(buffer_payloads)
        buffer_payloads.append(payload)
    buffers = [_buffer(builder, payload) for payload in buffer_payloads]

    tensors = [_tensor(builder, t, tensor_buffer.get(t.index, 0)) for t in graph.tensors]

    op_codes: list[tuple[str, int, bool]] = []
    for op in graph.ops:
        if _code_key(op) not in op_codes:
            op_codes.append(_code_key(op))
    operators = [_operator(builder, op, op_codes.index(_code_key(op))) for op in graph.ops]
    codes = [_operator_code(builder, *key) for key in op_codes]

    name = builder.CreateString("main")
    tensors_vec = _offsets(builder, "SubGraph", "tensors", tensors)
    inputs_vec = _vector(builder, "SubGraph", "inputs", [t.index for t in graph.inputs], "Int32")
    outputs_vec = _vector(builder, "SubGraph", "outputs", [t.index for t in graph.outputs], "Int32")
    operators_vec = _offsets(builder, "SubGraph", "operators", operators)
    sg = _module("SubGraph")
    sg.SubGraphStart(builder)
    sg.SubGraphAddTensors(builder, tensors_vec)
    sg.SubGraphAddInputs(builder, inputs_vec)
    sg.SubGraphAddOutputs(builder, outputs_vec)
    sg.SubGraphAddOperators(builder, operators_vec)
    sg.SubGraphAddName(builder, name)
    subgraph = sg.SubGraphEnd(builder)

    metadata = []
    for meta_name, index in metadata_buffer.items():
        meta_name_off = builder.CreateString(meta_name)
        md = _module("Metadata")
        md.MetadataStart(builder)
        md.MetadataAddName(builder, meta_name_off)
        md.MetadataAddBuffer(builder, index)
        metadata.append(md.MetadataEnd(builder))

    description = builder.CreateString(graph.description or "microforge")
    codes_vec = _offsets(builder, "Model", "operator_codes", codes)
    subgraphs_vec = _offsets(builder, "Model", "subgraphs", [subgraph])
    buffers_vec = _offsets(builder, "Model", "buffers", buffers)
    metadata_vec = _offsets(builder, "Model", "metadata", metadata) if metadata else None
    m = _module("Model")
    m.ModelStart(builder)
    m.ModelAddVersion(builder, SCHEMA_VERSION)
    m.ModelAddOperatorCodes(builder, codes_vec)
    m.ModelAddSubgraphs(builder, subgraphs_vec)
    m.ModelAddDescription(builder, description)
    m.ModelAddBuffers(builder, buffers_vec)
    if metadata_vec is not None:
        m.ModelAddMetadata(builder, metadata_vec)
    builder.Finish(m.ModelEnd(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _buffer(builder: flatbuffers.Builder, payload: bytes | None) -> int:
    data = None
    if payload:
        # A byte vector copied in place (as flatbuffers' CreateByteVector does) but with our alignment.
        builder.StartVector(1, len(payload), DATA_ALIGNMENT)
        builder.head = builder.head - len(payload)
        builder.Bytes[builder.head: builder.head + len(payload)] = payload
        data = builder.EndVector()
    b = _module("Buffer")
    b.BufferStart(builder)
    if data is not None:
        b.BufferAddData(builder, data)
    return b.BufferEnd(builder)


def _tensor(builder: flatbuffers.Builder, t: Tensor, buffer_index: int) -> int:
    if t.dtype not in schema.DTYPE_TO_TENSOR_TYPE:
        raise ModelError(f"tensor '{t.name}' has dtype {t.dtype}, which a TFLite model cannot hold")
    quant = None
    if t.quant is not None:
        scale = _vector(builder, "QuantizationParameters", "scale", t.quant.scale.tolist(), "Float32")
        zero_point = _vector(builder, "QuantizationParameters", "zero_point", t.quant.zero_point.tolist(), "Int64")
        q = _module("QuantizationParameters")
        q.QuantizationParametersStart(builder)
        q.QuantizationParametersAddScale(builder, scale)
        q.QuantizationParametersAddZeroPoint(builder, zero_point)
        q.QuantizationParametersAddQuantizedDimension(builder, t.quant.axis)
        quant = q.QuantizationParametersEnd(builder)
    name = builder.CreateString(t.name)
    shape = _vector(builder, "Tensor", "shape", t.shape, "Int32")
    tm = _module("Tensor")
    tm.TensorStart(builder)
    tm.TensorAddShape(builder, shape)
    tm.TensorAddType(builder, schema.DTYPE_TO_TENSOR_TYPE[t.dtype])
    tm.TensorAddBuffer(builder, buffer_index)
    tm.TensorAddName(builder, name)
    if quant is not None:
        tm.TensorAddQuantization(builder, quant)
    return tm.TensorEnd(builder)


def _options(builder: flatbuffers.Builder, op: Op) -> tuple[int, int] | None:
    """Build the op's options table; returns (union type, offset) or None for ops without options."""
    if op.type not in schema.OPTIONS:
        return None
    table, fields = schema.OPTIONS[op.type]
    module = schema.options_module(table)
    vectors = {}
    for field in fields:
        value = op.options.get(field)
        if field in schema.VECTOR_FIELDS and value is not None:
            vectors[field] = _vector(builder, table, field, [int(v) for v in value], "Int32")
    getattr(module, f"{table}Start")(builder)
    for field in fields:
        value = op.options.get(field)
        if value is None:
            continue
        if field in schema.VECTOR_FIELDS:
            value = vectors[field]
        elif field in schema.ENUM_FIELDS:
            codes = {name: code for code, name in schema.ENUM_FIELDS[field].items()}
            if value not in codes:
                raise ModelError(f"{op.where}: option {field} = {value!r} is not one of {sorted(codes)}")
            value = codes[value]
        getattr(module, f"{table}Add{schema.camel(field)}")(builder, value)
    return schema.options_union_type(table), getattr(module, f"{table}End")(builder)


def _operator(builder: flatbuffers.Builder, op: Op, code_index: int) -> int:
    options = _options(builder, op)
    inputs = _vector(builder, "Operator", "inputs", [t.index if t is not None else -1 for t in op.inputs], "Int32")
    outputs = _vector(builder, "Operator", "outputs", [t.index for t in op.outputs], "Int32")
    custom = None
    if op.options.get(schema.REVERSE_OPTION):
        custom = builder.CreateByteVector(bytes(flexbuffers.Dumps(schema.REVERSE_CUSTOM_OPTIONS)))
    om = _module("Operator")
    om.OperatorStart(builder)
    if custom is not None:
        om.OperatorAddCustomOptions(builder, custom)
    om.OperatorAddOpcodeIndex(builder, code_index)
    om.OperatorAddInputs(builder, inputs)
    om.OperatorAddOutputs(builder, outputs)
    if options is not None:
        om.OperatorAddBuiltinOptionsType(builder, options[0])
        om.OperatorAddBuiltinOptions(builder, options[1])
    return om.OperatorEnd(builder)


def _code_key(op: Op) -> tuple[str, int, bool]:
    return op.type, op.version, bool(op.options.get(schema.DYNAMIC_OPTION))


def _operator_code(builder: flatbuffers.Builder, op_type: str, version: int, dynamic: bool) -> int:
    if op_type not in schema.BUILTIN_OPERATOR_CODES:
        raise ModelError(f"op type {op_type} is not a TFLite builtin op")
    code = schema.BUILTIN_OPERATOR_CODES[op_type]
    oc = _module("OperatorCode")
    if dynamic:  # see schema.DYNAMIC_CUSTOM_PREFIX
        name = builder.CreateString(schema.DYNAMIC_CUSTOM_PREFIX + op_type)
        oc.OperatorCodeStart(builder)
        oc.OperatorCodeAddDeprecatedBuiltinCode(builder, tflite.BuiltinOperator.CUSTOM)
        oc.OperatorCodeAddBuiltinCode(builder, tflite.BuiltinOperator.CUSTOM)
        oc.OperatorCodeAddCustomCode(builder, name)
        oc.OperatorCodeAddVersion(builder, version)
        return oc.OperatorCodeEnd(builder)
    oc.OperatorCodeStart(builder)
    oc.OperatorCodeAddDeprecatedBuiltinCode(builder, min(code, tflite.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES))
    oc.OperatorCodeAddBuiltinCode(builder, code)
    oc.OperatorCodeAddVersion(builder, version)
    return oc.OperatorCodeEnd(builder)
