"""Read a .tflite flatbuffer into the Graph IR, treating the file as untrusted input.

Every index, offset, length and shape is checked before it is used. Anything malformed raises
`ModelError` naming what is wrong and where; the flatbuffer accessors' own failures (struct errors,
out-of-range slices) are caught at the boundary of each table and reported with that table's position.
"""

from __future__ import annotations

import struct
from pathlib import Path

import flatbuffers
from flatbuffers import flexbuffers
import numpy as np
import tflite

from microforge.errors import ModelError
from microforge.frontend import schema
from microforge.graph.ir import Graph, Op, Quantization, Tensor

MAX_RANK = 8
MAX_TENSOR_BYTES = 1 << 30  # far beyond any microcontroller; larger claims are lies, not models

# What a malformed flatbuffer makes the generated accessors raise.
_ACCESSOR_ERRORS = (struct.error, IndexError, ValueError, TypeError, AttributeError, OverflowError,
                    UnicodeDecodeError, MemoryError, RecursionError)


class _Reader:
    def __init__(self, data: bytes):
        self.data = data

    def where_error(self, where: str, exc: Exception) -> ModelError:
        return ModelError(f"malformed model: cannot read {where}: {type(exc).__name__}: {exc}")

    def vector_length(self, length: int, element_size: int, what: str) -> int:
        """A vector cannot hold more elements than the file has bytes: reject lying length fields early."""
        if length < 0 or length * element_size > len(self.data):
            raise ModelError(f"malformed model: {what} claims {length} elements, more than the file can hold")
        return length


def read_tflite(source: bytes | bytearray | str | Path) -> Graph:
    """Parse TFLite flatbuffer bytes (or a path) into a Graph. Raises ModelError on malformed input."""
    if isinstance(source, (str, Path)):
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise ModelError(f"cannot read model file {source}: {exc.strerror}") from None
    else:
        data = bytes(source)
    if len(data) < 8:
        raise ModelError(f"not a TFLite model: only {len(data)} bytes")
    if data[4:8] != b"TFL3":
        raise ModelError(f"not a TFLite model: file identifier is {data[4:8]!r}, expected b'TFL3'")
    reader = _Reader(data)
    try:
        model = tflite.Model.GetRootAs(data, 0)
        n_subgraphs = reader.vector_length(model.SubgraphsLength(), 4, "the subgraph list")
        n_buffers = reader.vector_length(model.BuffersLength(), 4, "the buffer list")
        n_codes = reader.vector_length(model.OperatorCodesLength(), 4, "the operator code list")
    except _ACCESSOR_ERRORS as exc:
        raise reader.where_error("the model table", exc) from None
    if n_subgraphs < 1:
        raise ModelError("malformed model: it has no subgraph")
    op_types = [_read_operator_code(reader, model, i) for i in range(n_codes)]
    try:
        subgraph = model.Subgraphs(0)
        description = (model.Description() or b"").decode("utf-8", errors="replace")
    except _ACCESSOR_ERRORS as exc:
        raise reader.where_error("subgraph 0", exc) from None
    tensors = _read_tensors(reader, model, subgraph, n_buffers)
    ops = _read_ops(reader, subgraph, tensors, op_types)
    inputs = _read_io(reader, subgraph, tensors, "Inputs")
    outputs = _read_io(reader, subgraph, tensors, "Outputs")
    metadata = _read_metadata(reader, model, n_buffers)
    graph = Graph(tensors, ops, inputs, outputs, description, metadata)
    _check_dataflow(graph)
    return graph


def _read_operator_code(reader: _Reader, model, i: int) -> tuple[str, int, bool]:
    """(op type, version, whether it is one of microforge's dynamic fixed-point ops)."""
    try:
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        version = code.Version()
        custom = code.CustomCode()
    except _ACCESSOR_ERRORS as exc:
        raise reader.where_error(f"operator code {i}", exc) from None
    if builtin == tflite.BuiltinOperator.CUSTOM:
        name = custom.decode("utf-8", errors="replace") if custom else "?"
        base = name[len(schema.DYNAMIC_CUSTOM_PREFIX):]
        if name.startswith(schema.DYNAMIC_CUSTOM_PREFIX) and base in schema.BUILTIN_OPERATOR_CODES:
            return base, version, True
        return f"CUSTOM:{name}", version, False
    if builtin not in schema.BUILTIN_OPERATOR_NAMES:
        raise ModelError(f"malformed model: operator code {i} has unknown builtin op code {builtin}")
    return schema.BUILTIN_OPERATOR_NAMES[builtin], version, False


def _read_tensors(reader: _Reader, model, subgraph, n_buffers: int) -> list[Tensor]:
    try:
        count = reader.vector_length(subgraph.TensorsLength(), 4, "the tensor list")
    except _ACCESSOR_ERRORS as exc:
        raise reader.where_error("the tensor list", exc) from None
    buffer_data: dict[int, np.ndarray | None] = {}
    tensors = []
    for i in range(count):
        try:
            t = subgraph.Tensors(i)
            name = (t.Name() or b"").decode("utf-8", errors="replace") or f"tensor_{i}"
            rank = reader.vector_length(t.ShapeLength(), 4, f"the shape of tensor {i}")
            shape = tuple(int(t.Shape(k)) for k in range(rank)) if rank else ()
            type_code = t.Type()
            buffer_index = t.Buffer()
            quant = t.Quantization()
            sparse = t.Sparsity() is not None
        except _ACCESSOR_ERRORS as exc:
            raise reader.where_error(f"tensor {i}", exc) from None
        where = f"tensor {i} '{name}'"
        if rank > MAX_RANK:
            raise ModelError(f"{where} has rank {rank}; at most {MAX_RANK} is supported")
        if any(d < 1 for d in shape):
            raise ModelError(f"{where} has shape {list(shape)}: every dimension must be positive")
        if type_code not in schema.TENSOR_TYPES:
            type_name = schema.TENSOR_TYPE_NAMES.get(type_code, f"unknown type {type_code}")
            raise ModelError(f"{where} has type {type_name}, which microforge does not support")
        if sparse:
            raise ModelError(f"{where} is sparse, which microforge does not support")
        dtype = schema.TENSOR_TYPES[type_code]
        nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if nbytes > MAX_TENSOR_BYTES:
            raise ModelError(f"{where} has shape {list(shape)}: {nbytes} bytes is beyond any microcontroller")
        if not 0 <= buffer_index < n_buffers:
            raise ModelError(f"{where} refers to buffer {buffer_index}, but the model has {n_buffers} buffers")
        if buffer_index not in buffer_data:
            buffer_data[buffer_index] = _read_buffer(reader, model, buffer_index)
        raw = buffer_data[buffer_index]
        data = None
        if raw is not None and raw.size:
            if raw.size != nbytes:
                raise ModelError(f"{where} ({list(shape)} {dtype}) needs {nbytes} bytes of data, but buffer "
                                 f"{buffer_index} holds {raw.size}")
            data = np.frombuffer(raw.tobytes(), dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)
        tensors.append(Tensor(name, shape, dtype, _read_quantization(reader, quant, shape, where), data, i))
    return tensors


def _read_buffer(reader: _Reader, model, index: int) -> np.ndarray | None:
    try:
        buffer = model.Buffers(index)
        offset, size = buffer.Offset(), buffer.Size()
        if offset > 1:  # data stored after the flatbuffer (models over 2 GB use this)
            if offset + size > len(reader.data):
                raise ModelError(f"malformed model: buffer {index} lies outside the file "
                                 f"(offset {offset}, size {size}, file {len(reader.data)} bytes)")
            return np.frombuffer(reader.data, dtype=np.uint8, count=size, offset=offset)
        length = reader.vector_length(buffer.DataLength(), 1, f"buffer {index}")
        return buffer.DataAsNumpy() if length else None
    except _ACCESSOR_ERRORS as exc:
        raise reader.where_error(f"buffer {index}", exc) from None


def _read_quantization(reader: _Reader, quant, shape: tuple[int, ...], where: str) -> Quantization | None:
    if quant is None:
        return None
    try:
        n_scale = reader.vector_length(quant.ScaleLength(), 4, f"the scales of {where}")
        n_zero = reader.vector_length(quant.ZeroPointLength(), 8, f"the zero points of {where}")
        scale = quant.ScaleAsNumpy() if n_scale else np.zeros(0, np.float32)
        zero_point = quant.ZeroPointAsNumpy() if n_zero else np.zeros(0, np.int64)
        axis = quant.QuantizedDimension()
    except _ACCESSOR_ERRORS as exc:
        raise reader.where_error(f"the quantization of {where}", exc) from None
    if n_scale == 0:
        return None  # quantization table present but empty: a float tensor
    if n_zero not in (1, n_scale):
        raise ModelError(f"{where} has {n_scale} scales but {n_zero} zero points")
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        raise ModelError(f"{where} has a scale that is not a positive finite number: {scale[:8].tolist()}")
    if np.any(np.abs(zero_point) > 2**31):
        raise ModelError(f"{where} has an absurd zero point: {zero_point[:8].tolist()}")
    if n_scale > 1 and len(shape) == 1 and shape[0] == n_scale:
        # one scale per element of a vector: axis 0 is the only reading. Some converters copy the filter's
        # axis onto a bias (TFLM's person-detection model: axis 3 on a rank-1 bias), and TFLM, which
        # takes bias scales from the filter, runs it.
        axis = 0
    if n_scale > 1:
        if not 0 <= axis < len(shape):
            raise ModelError(f"{where} is quantized along axis {axis}, but its rank is {len(shape)}")
        if shape[axis] != n_scale:
            raise ModelError(f"{where} has {n_scale} per-channel scales, but dimension {axis} is {shape[axis]}")
    return Quantization(scale.copy(), zero_point.copy(), int(axis))


def _read_ops(reader: _Reader, subgraph, tensors: list[Tensor], op_types) -> list[Op]:
    try:
        count = reader.vector_length(subgraph.OperatorsLength(), 4, "the operator list")
    except _ACCESSOR_ERRORS as exc:
        raise reader.where_error("the operator list", exc) from None
    ops = []
    for i in range(count):
        try:
            raw = subgraph.Operators(i)
            code_index = raw.OpcodeIndex()
            n_in = reader.vector_length(raw.InputsLength(), 4, f"the inputs of op {i}")
            n_out = reader.vector_length(raw.OutputsLength(), 4, f"the outputs of op {i}")
            input_ids = [int(raw.Inputs(k)) for k in range(n_in)]
            output_ids = [int(raw.Outputs(k)) for k in range(n_out)]
        except _ACCESSOR_ERRORS as exc:
            raise reader.where_error(f"op {i}", exc) from None
        if not 0 <= code_index < len(op_types):
            raise ModelError(f"op {i} uses operator code {code_index}, but the model has {len(op_types)}")
        op_type, version, dynamic = op_types[code_index]
        where = f"op {i} ({op_type})"
        for role, ids, allow_missing in (("input", input_ids, True), ("output", output_ids, False)):
            for k, tid in enumerate(ids):
                if not (0 <= tid < len(tensors) or (allow_missing and tid == -1)):
                    raise ModelError(f"{where}: {role} {k} refers to tensor {tid}, but the model has "
                                     f"{len(tensors)} tensors")
        if not output_ids:
            raise ModelError(f"{where} has no output")
        options = _read_options(reader, raw, op_type, where)
        if dynamic:
            options[schema.DYNAMIC_OPTION] = True
            options.update(_dynamic_custom_options(reader, raw, where))
        ins = [tensors[t] if t >= 0 else None for t in input_ids]
        ops.append(Op(op_type, ins, [tensors[t] for t in output_ids], options, i, version))
    return ops


def _dynamic_custom_options(reader: _Reader, raw, where: str) -> dict:
    """A dynamic op's custom options: none, or schema.REVERSE_CUSTOM_OPTIONS."""
    try:
        length = reader.vector_length(raw.CustomOptionsLength(), 1, f"the custom options of {where}")
        if length == 0:
            return {}
        content = flexbuffers.Loads(bytes(raw.CustomOptionsAsNumpy()))
    except _ACCESSOR_ERRORS as exc:
        raise reader.where_error(f"the custom options of {where}", exc) from None
    except Exception as exc:  # flexbuffers raises what its parser meets
        raise ModelError(f"{where}: its custom options are not a flexbuffer ({type(exc).__name__})") from None
    if content != schema.REVERSE_CUSTOM_OPTIONS:
        raise ModelError(f"{where}: unknown dynamic fixed-point options {content!r}")
    return {schema.REVERSE_OPTION: True}


def _read_options(reader: _Reader, raw, op_type: str, where: str) -> dict:
    if op_type not in schema.OPTIONS:
        return {}
    table, fields = schema.OPTIONS[op_type]
    try:
        cls = getattr(schema.options_module(table), table)
        union = raw.BuiltinOptions()
        if union is not None and raw.BuiltinOptionsType() == schema.options_union_type(table):
            opts = cls()
            opts.Init(union.Bytes, union.Pos)
        else:  # absent options mean the schema defaults, which an empty table reads back
            opts = _empty_table(table, cls)
        values = {}
        for name in fields:
            if name in schema.VECTOR_FIELDS:
                n = reader.vector_length(getattr(opts, schema.camel(name) + "Length")(), 4, f"{where} {name}")
                values[name] = [int(getattr(opts, schema.camel(name))(k)) for k in range(n)] if n else None
            else:
                values[name] = getattr(opts, schema.camel(name))()
    except _ACCESSOR_ERRORS as exc:
        raise reader.where_error(f"the options of {where}", exc) from None
    for name, names in schema.ENUM_FIELDS.items():
        if name in values:
            if values[name] not in names:
                raise ModelError(f"{where}: option {name} has unknown value {values[name]}")
            values[name] = names[values[name]]
    for name in ("keep_num_dims", "asymmetric_quantize_inputs", "keep_dims", "pot_scale_int16", "offset"):
        if name in values:
            values[name] = bool(values[name])
    if "beta" in values:
        values["beta"] = float(values["beta"])
    return values


def _empty_table(table: str, cls):
    module = schema.options_module(table)
    builder = flatbuffers.Builder(16)
    getattr(module, f"{table}Start")(builder)
    builder.Finish(getattr(module, f"{table}End")(builder))
    return cls.GetRootAs(builder.Output(), 0)


def _read_io(reader: _Reader, subgraph, tensors: list[Tensor], which: str) -> list[Tensor]:
    try:
        n = reader.vector_length(getattr(subgraph, which + "Length")(), 4, f"the subgraph {which.lower()}")
        ids = [int(getattr(subgraph, which)(k)) for k in range(n)]
    except _ACCESSOR_ERRORS as exc:
        raise reader.where_error(f"the subgraph {which.lower()}", exc) from None
    for tid in ids:
        if not 0 <= tid < len(tensors):
            raise ModelError(f"subgraph {which.lower()} refer to tensor {tid}, but the model has {len(tensors)}")
    if not ids:
        raise ModelError(f"malformed model: the subgraph has no {which.lower()}")
    return [tensors[t] for t in ids]


def _read_metadata(reader: _Reader, model, n_buffers: int) -> dict[str, bytes]:
    try:
        n = reader.vector_length(model.MetadataLength(), 4, "the metadata list")
        entries = []
        for k in range(n):
            m = model.Metadata(k)
            entries.append(((m.Name() or b"").decode("utf-8", errors="replace"), m.Buffer()))
    except _ACCESSOR_ERRORS as exc:
        raise reader.where_error("the metadata", exc) from None
    metadata = {}
    for name, index in entries:
        if not 0 <= index < n_buffers:
            raise ModelError(f"metadata '{name}' refers to buffer {index}, but the model has {n_buffers}")
        raw = _read_buffer(reader, model, index)
        metadata[name] = raw.tobytes() if raw is not None else b""
    return metadata


def _check_dataflow(graph: Graph) -> None:
    """Every op reads only values that exist by then; every value is written once; outputs exist."""
    available = {t.index for t in graph.tensors if t.is_constant} | {t.index for t in graph.inputs}
    written: set[int] = set()
    for op in graph.ops:
        for t in op.inputs:
            if t is not None and t.index not in available:
                raise ModelError(f"{op.where} reads tensor '{t.name}' before any op writes it")
        for t in op.outputs:
            if t.is_constant or t.index in written or t.index in {x.index for x in graph.inputs}:
                raise ModelError(f"{op.where} writes tensor '{t.name}', which is a constant, a graph input "
                                 f"or written by an earlier op")
            written.add(t.index)
            available.add(t.index)
    for t in graph.outputs:
        if t.index not in available:
            raise ModelError(f"graph output '{t.name}' is never computed")
