"""A weight-shared family of sub-networks: its quantization, its files, and the check that it shares.

A family is one network at several widths w (fractions of its channels), and optionally several depths d
(how many of its blocks run). Member (w, d)'s sub-network keeps the first round(w * C) channels of every
hidden layer and skips the layers of the blocks past d, so each of its weight tensors is the leading slice
of the widest, deepest member's (train.py trains them together), and its weight ops are a subsequence of
that member's: its i-th weight op shares with the first op of the widest member, after the one its
(i-1)-th shares with, whose weights it is a slice of. After batch norm is folded, width w's float weights
are that slice times a positive factor per output channel (its own batch norm's gain over the widest's).

Quantization keeps the sharing exact in int8. The widest member is quantized as usual by our quantizer
(robust.quantizer; per-channel symmetric weights). Every narrower member then takes, for each layer, the
leading slice of the widest member's int8 weights and the widest member's per-channel scales times its own
factors, so its int8 weights are the same bytes; only its biases, requantization constants and activation
ranges (calibrated on its own activations) differ. The input's parameters come from the same calibration
data, so one int8 dataset feeds every width.

On disk (models/dynamic/<name>/):
    family.json           {"format": 1, "name", "widths": [...], "members": [{"width", "model", "sha256"}
                           and "depth" in a family with depth options], "info": {...training facts...}}
    width_<w>_int8.tflite one ordinary int8 model per member (TFLM runs each alone), or
    width_<w>_depth_<d>_int8.tflite
Members are listed smallest first: by width, then depth; the last is the widest and deepest.
`load_family` reads them back and refuses a family whose members do not share their weights.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from microforge.errors import ModelError
from microforge.frontend.reader import read_tflite
from microforge.frontend.writer import write_tflite
from microforge.graph.ir import Graph, Op, Tensor
from microforge.robust.quantizer import WEIGHT_OPS, float_values, quantize_graph

FAMILY_FILE = "family.json"
FORMAT = 1
# Width w's float weights must equal factor * (the widest member's slice) to this share of each channel's
# largest weight: float32 batch-norm folding rounds each weight once (about 1e-7).
SHARING_TOLERANCE = 1e-5


def member_label(width: float, depth: int | None = None) -> str:
    """How messages and reports name a member: "width 0.25", or "width 0.25 depth 2"."""
    return f"width {width:g}" + ("" if depth is None else f" depth {depth}")


@dataclass
class Family:
    """The members of a family, smallest first; `graphs[-1]` is the widest (and deepest). `depths[k]` is
    member k's number of blocks, or None in a family without depth options."""

    name: str
    widths: list[float]
    graphs: list[Graph]
    manifest: dict = field(default_factory=dict)
    directory: Path | None = None
    depths: list[int | None] | None = None

    def __post_init__(self):
        if self.depths is None:
            self.depths = [None] * len(self.widths)

    def shared(self, member: int) -> dict[int, Tensor]:
        """Tensor index in member `member` -> the widest member's weights whose leading slice it is (the
        widest member's own weights map to themselves)."""
        if member % len(self.graphs) == len(self.graphs) - 1:
            return {op.inputs[1].index: op.inputs[1] for op in weight_ops(self.graphs[-1])}
        return shared_weights(self.graphs[member], self.graphs[-1], self.where(member))

    def label(self, member: int) -> str:
        return member_label(self.widths[member], self.depths[member])

    def where(self, member: int) -> str:
        return f"{self.name} {self.label(member)}"


def weight_ops(graph: Graph) -> list[Op]:
    return [op for op in graph.ops if op.type in WEIGHT_OPS]


def leading_slice(array: np.ndarray, shape) -> np.ndarray:
    return array[tuple(slice(0, int(d)) for d in shape)]


def is_subsequence(short: list, long: list) -> bool:
    rest = iter(long)
    return all(any(x == y for y in rest) for x in short)


def match_weight_ops(member: list[Op], widest: list[Op], share) -> list[tuple[Op, Op, object]]:
    """Pair each of a member's weight ops with the widest member's op it shares with (module doc): the first
    op of the same type, after the previous pair's, for which `share(op, wide)` returns a value instead of
    raising ModelError. Returns (op, wide op, that value) per member op; when no op fits, raises the error
    of the first candidate (the one a member without skipped blocks pairs with)."""
    pairs, start = [], 0
    for op in member:
        first_error = None
        for j in range(start, len(widest)):
            if widest[j].type != op.type:
                continue
            try:
                pairs.append((op, widest[j], share(op, widest[j])))
            except ModelError as exc:
                first_error = first_error or exc
                continue
            start = j + 1
            break
        else:
            raise first_error or ModelError(f"{op.where} has no {op.type} of the widest member left to share with")
    return pairs


def shared_weights(member: Graph, widest: Graph, where: str) -> dict[int, Tensor]:
    """Check that `member` is `widest` cut down: its ops a subsequence of the widest one's, and each weight
    tensor the leading slice of the one it pairs with (match_weight_ops), byte for byte. Returns member
    tensor index -> widest tensor; raises ModelError naming the first op that shares with nothing."""
    if not is_subsequence([op.type for op in member.ops], [op.type for op in widest.ops]):
        raise ModelError(f"{where}: its ops ({len(member.ops)}) are not a subsequence of the widest member's "
                         f"({len(widest.ops)}), so it cannot share its weights")

    def share(op: Op, wide: Op) -> Tensor:
        w, full = op.inputs[1], wide.inputs[1]
        if not (w.is_constant and full.is_constant) or w.dtype != np.int8 or full.dtype != np.int8:
            raise ModelError(f"{where}: {op.where} has no int8 constant weights to share")
        if len(w.shape) != len(full.shape) or any(a > b for a, b in zip(w.shape, full.shape)):
            raise ModelError(f"{where}: {op.where} weights '{w.name}' {list(w.shape)} do not fit inside the widest "
                             f"member's {list(full.shape)}")
        if not np.array_equal(w.data, leading_slice(full.data, w.shape)):
            raise ModelError(f"{where}: {op.where} weights '{w.name}' are not the leading slice of the widest "
                             f"member's '{full.name}': the members do not share weights")
        return full

    return {op.inputs[1].index: full for op, _, full in match_weight_ops(weight_ops(member), weight_ops(widest), share)}


def channel_factors(op: Op, narrow_t: Tensor, wide_t: Tensor, where: str) -> np.ndarray:
    """The positive factor per output channel with narrow = factor * (the leading slice of wide), checked
    to SHARING_TOLERANCE of each channel's largest weight; ModelError naming `where`, the op and the channel
    otherwise (or when the narrow weights are no slice of the wide ones)."""
    narrow, wide = float_values(narrow_t), float_values(wide_t)
    kernel_dims = (1, 2) if op.type in ("CONV_2D", "DEPTHWISE_CONV_2D") else ()
    if narrow.ndim != wide.ndim or any(a > b for a, b in zip(narrow.shape, wide.shape)) or any(
            narrow.shape[i] != wide.shape[i] for i in kernel_dims):
        raise ModelError(f"{where}, {op.where}: weights '{narrow_t.name}' {list(narrow.shape)} are not a channel "
                         f"slice of the widest member's {list(wide.shape)}: the widths do not share weights")
    axis = WEIGHT_OPS[op.type]
    a = np.moveaxis(narrow, axis, 0).reshape(narrow.shape[axis], -1)
    b = np.moveaxis(leading_slice(wide, narrow.shape), axis, 0).reshape(narrow.shape[axis], -1)
    energy = (b * b).sum(axis=1)
    factors = np.where(energy > 0, (a * b).sum(axis=1) / np.where(energy > 0, energy, 1), 1.0)
    error = np.abs(a - factors[:, None] * b).max(axis=1, initial=0.0)
    largest = np.abs(a).max(axis=1, initial=0.0)
    dead = (energy == 0) & (largest == 0)  # zero at both widths: any factor fits
    bad = np.flatnonzero(~dead & ((error > SHARING_TOLERANCE * largest) | (factors <= 0)))
    if bad.size:
        c = int(bad[0])
        raise ModelError(f"{where}, {op.where}: output channel {c} of weights '{narrow_t.name}' is not a positive "
                         f"multiple of the widest member's (best factor {factors[c]:.6g}, largest deviation "
                         f"{error[c]:.3g} of weights up to {largest[c]:.3g}): the widths do not share weights")
    return factors


def check_float_shared(float_graphs: list[Graph], labels: list[str]) -> list[list[tuple[Op, Op, np.ndarray]]]:
    """Check that float members (smallest first) share the widest one's weights up to a positive factor per
    output channel (their batch norms folded); returns, per smaller member, (its weight op, the widest
    member's op it shares with, the factors) for each of its weight ops (match_weight_ops)."""
    wide_ops = weight_ops(float_graphs[-1])
    return [match_weight_ops(weight_ops(graph), wide_ops,
                             lambda op, wide, label=label: channel_factors(op, op.inputs[1], wide.inputs[1], label))
            for graph, label in zip(float_graphs[:-1], labels)]


def quantize_family(float_graphs: list[Graph], widths: list[float], calibration: np.ndarray,
                    where: str = "family", depths: list[int | None] | None = None) -> list[Graph]:
    """Quantize the float members of `widths` (and `depths`, per member; smallest first, the widest last)
    to int8 sharing the widest one's weight bytes (module doc). `calibration`: float32 inputs
    (N, *input shape), the same for every member."""
    depths = list(depths) if depths is not None else [None] * len(widths)
    if not float_graphs or len(float_graphs) != len(widths) or len(depths) != len(widths):
        raise ModelError(f"{where}: {len(float_graphs)} members for the widths {list(widths)} and depths {depths}")
    pairs = check_float_shared(float_graphs, [member_label(w, d) for w, d in zip(widths, depths)])
    widest = quantize_graph(float_graphs[-1], calibration, "int8").graph
    # the widest member's quantized weights, by the index of its float op (quantize_graph keeps the ops)
    wide_weights = {op.index: q.inputs[1] for op, q in zip(weight_ops(float_graphs[-1]), weight_ops(widest))}
    members = []
    for graph, member_pairs in zip(float_graphs[:-1], pairs):
        fixed = {}
        for op, wide_op, factors in member_pairs:
            narrow, wide = op.inputs[1], wide_weights[wide_op.index]
            channels = narrow.shape[WEIGHT_OPS[op.type]]
            scale = (wide.quant.scale[:channels].astype(np.float64) * factors).astype(np.float32)
            fixed[op.index] = (leading_slice(wide.data, narrow.shape), scale)
        members.append(quantize_graph(graph, calibration, "int8", fixed_weights=fixed).graph)
    members.append(widest)
    inputs = {(m.inputs[0].scale, m.inputs[0].zero_point) for m in members}
    if len(inputs) != 1:
        raise ModelError(f"{where}: the members' inputs were quantized differently ({sorted(inputs)}); "
                         "they must see the same calibration data")
    return members


def save_family(out_dir, widths, float_models, calibration: np.ndarray, info: dict | None = None,
                name: str | None = None, depths=None) -> Path:
    """Quantize float members (paths or bytes of float .tflite files, or Graphs) of `widths` and, in a
    family with depth options, `depths` (one per member; smallest member first, module doc) and write the
    family to `out_dir`. Returns the manifest's path."""
    widths = [float(w) for w in widths]
    depths = [None if d is None else int(d) for d in depths] if depths is not None else [None] * len(widths)
    _check_members(widths, depths, "save_family")
    if len(float_models) != len(widths):
        raise ModelError(f"save_family: {len(widths)} members but {len(float_models)} models")
    out = Path(out_dir)
    name = name or out.name
    graphs = [m if isinstance(m, Graph) else read_tflite(m) for m in float_models]
    members = quantize_family(graphs, widths, np.asarray(calibration, np.float32), name, depths)
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for width, depth, graph in zip(widths, depths, members):
        data = write_tflite(graph)
        file = f"width_{width:g}" + ("" if depth is None else f"_depth_{depth}") + "_int8.tflite"
        (out / file).write_bytes(data)
        entry = {"width": width} | ({} if depth is None else {"depth": depth})
        entries.append(entry | {"model": file, "sha256": hashlib.sha256(data).hexdigest()})
    manifest = {"format": FORMAT, "name": name, "widths": sorted(set(widths))}
    if depths[0] is not None:
        manifest["depths"] = sorted(set(depths))
    manifest |= {"members": entries, "info": info or {}}
    path = out / FAMILY_FILE
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def _check_members(widths: list[float], depths: list[int | None], where: str) -> None:
    """Members in order (module doc): widths in (0, 1]; depths all given (whole numbers >= 1) or all None;
    (width, depth) increasing, so each member is listed once; the last the widest and deepest."""
    if not widths or len(depths) != len(widths) or any(not 0 < w <= 1 for w in widths):
        raise ModelError(f"{where}: widths {widths} must be fractions in (0, 1], one per member")
    if len({d is None for d in depths}) != 1 or any(d is not None and d < 1 for d in depths):
        raise ModelError(f"{where}: depths {depths} must be given for every member or none, each at least 1")
    keys = [(w, d or 0) for w, d in zip(widths, depths)]
    if any(b <= a for a, b in zip(keys, keys[1:])) or max(d or 0 for d in depths) != keys[-1][1]:
        raise ModelError(f"{where}: members {[member_label(w, d) for w, d in zip(widths, depths)]} must be listed "
                         "once each, by increasing width then depth, the widest and deepest last")


def load_family(directory) -> Family:
    """Read a family folder (module doc) and check that its members share the widest member's weights."""
    directory = Path(directory)
    path = directory / FAMILY_FILE
    if not path.is_file():
        raise ModelError(f"{directory}: no {FAMILY_FILE} (a family folder holds one, see microforge.dynamic.family)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(
            manifest.get("members"), list):
        raise ModelError(f"{path}: expected {{\"format\": {FORMAT}, \"members\": [...]}}")
    widths, depths, graphs = [], [], []
    for i, entry in enumerate(manifest["members"]):
        where = f"{path} members[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("model"), str) or not isinstance(
                entry.get("width"), (int, float)):
            raise ModelError(f"{where}: expected {{\"width\": number, \"model\": file name}}")
        depth = entry.get("depth")
        if depth is not None and (not isinstance(depth, int) or isinstance(depth, bool)):
            raise ModelError(f"{where}: depth {depth!r} must be a whole number of blocks")
        file = entry["model"]
        if Path(file).name != file or file in ("", ".", ".."):
            raise ModelError(f"{where}: model {file!r} must be a file name inside the family folder")
        if not (directory / file).is_file():
            raise ModelError(f"{where}: {file} not found in {directory}")
        widths.append(float(entry["width"]))
        depths.append(depth)
        try:
            graphs.append(read_tflite(directory / file))
        except ModelError as exc:
            raise ModelError(f"{where}: {exc}") from None
    _check_members(widths, depths, str(path))
    family = Family(str(manifest.get("name", directory.name)), widths, graphs, manifest, directory, depths)
    for k in range(len(graphs) - 1):
        family.shared(k)
    return family
