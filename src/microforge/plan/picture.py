"""The picture of a memory plan: one panel per plan, op steps across, arena addresses up.

    draw_plans([("TFLM greedy", theirs, their_offsets), ("microforge auto", ours, our_offsets)],
               "plan.png", title="vww_96_int8.tflite", lower_bound=p.lower_bound_bytes)

Every buffer is a rectangle [first, last+1) x [offset, offset+size), labelled with its (shortened) tensor
name where the label fits. Panels share the address scale, so the taller one is the bigger arena. A
solid line marks each plan's peak, a dashed one the lower bound. A buffer keeps its colour in every panel
(colours follow the tensor name), so the same tensor is easy to follow from one plan to the other.
"""

from __future__ import annotations

import colorsys
import re
from collections.abc import Sequence
from pathlib import Path

from microforge.errors import PlanError
from microforge.plan.lifetimes import Buffer
from microforge.plan.placement import arena_size

KIB = 1024
NICE_STEPS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)  # address tick spacings, in KiB (or bytes below 4 KiB)
GOLDEN = 0.618033988749895


def _format_bytes(n: int) -> str:
    return f"{n / KIB:.1f} KiB" if n >= KIB else f"{n} B"


# the last path components TensorFlow adds after the layer name: they name the op, not the tensor
_OP_NOISE = {"Relu", "Relu6", "BiasAdd", "Conv2D", "FusedBatchNormV3", "add", "Add", "AvgPool", "MaxPool",
             "MatMul", "depthwise", "Reshape", "Softmax", "Mean", "Squeeze", "concat", "Sigmoid", "mul"}
_ABBREVIATIONS = (("depthwise_conv2d", "dwconv"), ("global_average_pooling2d", "gap"),
                  ("average_pooling2d", "avgpool"), ("max_pooling2d", "maxpool"),
                  ("batch_normalization", "bn"), ("activation", "act"), ("conv2d", "conv"), ("dense", "fc"))


def short_name(name: str) -> str:
    """The layer a tensor name points at, which is what an engineer looks for.

    TFLite names fused tensors "model/activation_2/Relu;model/batch_normalization_2/...;..."; the first
    part names the layer. Keep it, without the model prefix ("model/", "functional_1/") and without the
    op TensorFlow appended ("Relu", "BiasAdd", ":0"): "activation_2"."""
    head = re.sub(r":\d+$", "", name.split(";")[0].strip())
    parts = [p for p in head.split("/") if p]
    while len(parts) > 1 and parts[-1] in _OP_NOISE:
        parts.pop()
    return parts[-1] if parts else name


def abbreviated(label: str) -> str:
    """Keras layer names shortened: "depthwise_conv2d_3" -> "dwconv_3", "activation_12" -> "act_12"."""
    for long, short in _ABBREVIATIONS:
        if label.startswith(long):
            return short + label[len(long):]
    return label


def _colours(plans: list[tuple[str, list[Buffer], list[int]]]) -> dict[str, tuple[float, float, float]]:
    """A soft colour per tensor name, the same in every panel. Names are numbered in the order their
    buffers appear (by first step, then address), and hues step by the golden ratio, so buffers that
    follow each other in time get clearly different colours."""
    names: dict[str, int] = {}
    for _, buffers, offsets in plans:
        for b in sorted(buffers, key=lambda b: (b.first, offsets[b.index], b.index)):
            names.setdefault(b.name, len(names))
    colours = {}
    for name, i in names.items():
        hue = (0.08 + i * GOLDEN) % 1.0
        lightness = (0.62, 0.74, 0.68)[i % 3]
        colours[name] = colorsys.hls_to_rgb(hue, lightness, 0.55)
    return colours


def _tick_step(top: int, unit: int) -> int:
    """A tick spacing (bytes) giving about five to ten ticks up to `top`."""
    for step in NICE_STEPS:
        if top / (step * unit) <= 10:
            return step * unit
    return NICE_STEPS[-1] * unit * max(1, round(top / (NICE_STEPS[-1] * unit * 10)))


def _step_count(plans: list[tuple[str, list[Buffer], list[int]]], steps) -> int:
    if steps is None:
        return max((b.last + 1 for _, buffers, _ in plans for b in buffers), default=1)
    return len(steps) if isinstance(steps, Sequence) else int(steps)


def draw_plans(plans: list[tuple[str, list[Buffer], list[int]]], path, title: str = "",
               lower_bound: int | None = None, steps: int | Sequence | None = None) -> Path:
    """Draw each (name, buffers, offsets) plan as a panel, side by side at one scale, into `path`.

    The format follows the suffix: .png (150 dpi) or .svg (text kept as text, so labels are searchable).
    `lower_bound` (bytes) draws a dashed line; `steps` is the number of schedule steps (default: enough
    for every buffer) or a sequence of per-step labels (op types or indices) to show under the x axis.
    Returns the path written.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".png", ".svg"):
        raise PlanError(f"cannot draw a plan as '{path.suffix}': give a .png or .svg path")
    if not plans:
        raise PlanError("draw_plans needs at least one plan")
    for name, buffers, offsets in plans:
        if len(offsets) != len(buffers):
            raise PlanError(f"plan '{name}' has {len(offsets)} offsets for {len(buffers)} buffers")

    # matplotlib lazily (the package must import fast), and an Agg canvas of our own rather than pyplot,
    # so the caller's backend and pyplot's global state are left alone
    from matplotlib import rc_context
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle
    from matplotlib.ticker import FuncFormatter, MaxNLocator, MultipleLocator

    n_steps = _step_count(plans, steps)
    peaks = [arena_size(buffers, offsets) for _, buffers, offsets in plans]
    top = max(peaks + [lower_bound or 0, 1])
    unit = KIB if top >= 4 * KIB else 1
    colours = _colours(plans)
    tick_labels = [str(s) for s in steps] if isinstance(steps, Sequence) and not isinstance(steps, str) \
        and 0 < len(steps) <= 48 else None

    # fixed margins (inches) instead of tight_layout: as tidy here, and much faster
    panel_w = min(max(2.6 + 0.07 * n_steps, 4.2), 7.5)
    panel_h = 4.9
    left, right, gap = 0.85, 0.25, 0.3
    bottom = 0.62 + (0.065 * max(map(len, tick_labels)) if tick_labels else 0.0)
    top_margin = 0.45 + (0.38 if title else 0.0)
    width = left + len(plans) * panel_w + (len(plans) - 1) * gap + right
    height = bottom + panel_h + top_margin
    rc = {"font.size": 10, "axes.titlesize": 12, "axes.labelsize": 10.5, "svg.fonttype": "none",
          "font.family": "DejaVu Sans"}
    with rc_context(rc):
        fig = Figure(figsize=(width, height), dpi=150)
        FigureCanvasAgg(fig)
        fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height,
                            top=1 - top_margin / height, wspace=gap / panel_w)
        axes = fig.subplots(1, len(plans), sharey=True, squeeze=False)[0]
        for ax, (name, buffers, offsets), peak in zip(axes, plans, peaks):
            for b in buffers:
                ax.add_patch(Rectangle((b.first, offsets[b.index]), b.last + 1 - b.first, b.size,
                                       facecolor=colours[b.name], edgecolor="#3a3a3a", linewidth=0.6))
            ax.set_xlim(0, n_steps)
            ax.set_ylim(0, top * 1.08)  # room for the peak's label above the highest line
            ax.set_title(f"{name}: {_format_bytes(peak)}", fontweight="bold", pad=7)
            ax.set_xlabel("op step (position in the schedule)")
            if tick_labels:
                ax.set_xticks([i + 0.5 for i in range(len(tick_labels))], tick_labels, rotation=90, fontsize=7)
            else:
                ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=min(n_steps, 12)))
            ax.grid(axis="y", color="#dddddd", linewidth=0.6)
            ax.set_axisbelow(True)
            for side in ("top", "right"):
                ax.spines[side].set_visible(False)
        axes[0].yaxis.set_major_locator(MultipleLocator(_tick_step(top, unit)))
        axes[0].yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y / unit:g}"))
        axes[0].set_ylabel("arena address (KiB)" if unit == KIB else "arena address (bytes)")
        if title:
            fig.suptitle(title, fontsize=13, y=1 - 0.12 / height, va="top")

        renderer = fig.canvas.get_renderer()
        for ax, (name, buffers, offsets), peak in zip(axes, plans, peaks):
            _lines(ax, peak, lower_bound)
            _labels(ax, buffers, offsets, renderer)
        fig.savefig(path, dpi=150, facecolor="white")
    return path


def _lines(ax, peak: int, lower_bound: int | None) -> None:
    """The peak (solid, labelled just above) and the lower bound (dashed, labelled just below), so the two
    labels never sit on each other or on their lines."""
    box = {"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.8}
    kw = {"xycoords": ax.get_yaxis_transform(), "textcoords": "offset points", "fontsize": 9, "ha": "right",
          "zorder": 6, "bbox": box}
    ax.axhline(peak, color="#c0392b", linewidth=1.6, zorder=5)
    at_bound = lower_bound is not None and lower_bound == peak
    exact = f" ({peak:,} B)" if peak >= KIB else ""
    label = f"peak {_format_bytes(peak)}{exact}" + (" = lower bound" if at_bound else "")
    ax.annotate(label, (1, peak), xytext=(-3, 3), va="bottom", color="#c0392b", **kw)
    if lower_bound:
        ax.axhline(lower_bound, color="#1f3a93", linewidth=1.3, linestyle=(0, (5, 3)), zorder=5)
        if not at_bound:
            ax.annotate(f"lower bound {_format_bytes(lower_bound)}", (1, lower_bound), xytext=(-3, -3),
                        va="top", color="#1f3a93", **kw)


def _labels(ax, buffers: list[Buffer], offsets: list[int], renderer) -> None:
    """Put each buffer's short name inside its rectangle if it fits, across or (tall, narrow boxes) up;
    otherwise shorten it further, or leave the box unlabelled. Boxes never overlap, so neither do labels."""
    from matplotlib.font_manager import FontProperties

    font = FontProperties(size=10)
    widths: dict[str, tuple[float, float]] = {}

    def extent(text: str, points: float) -> tuple[float, float]:
        """Width and height in pixels of `text` at `points` (measured once at 10 pt, then scaled)."""
        if text not in widths:
            w, h, _ = renderer.get_text_width_height_descent(text, font, ismath=False)
            widths[text] = (w, h)
        w, h = widths[text]
        return w * points / 10, h * points / 10

    to_px = ax.transData.transform
    for b in buffers:
        if b.size == 0:
            continue
        (x0, y0), (x1, y1) = to_px((b.first, offsets[b.index])), to_px((b.last + 1, offsets[b.index] + b.size))
        room_w, room_h = abs(x1 - x0) - 6, abs(y1 - y0) - 3
        x, y = b.first + (b.last + 1 - b.first) / 2, offsets[b.index] + b.size / 2
        chosen = None
        for text in _candidates(short_name(b.name)):
            for points in (8.5, 7.0):
                w, h = extent(text, points)
                if w <= room_w and h <= room_h:
                    chosen = (text, points, 0)
                elif room_h > room_w and w <= room_h and h <= room_w:  # tall, narrow box: write upwards
                    chosen = (text, points, 90)
                if chosen:
                    break
            if chosen:
                break
        if chosen:
            text, points, angle = chosen
            ax.text(x, y, text, fontsize=points, rotation=angle, ha="center", va="center", zorder=4,
                    color="#1a1a1a")


def _candidates(label: str) -> list[str]:
    """The forms to try, longest first: the abbreviated layer name (every box in the picture uses the same
    form, so "act_3" sits beside "act_4", not beside "activation_4"), then cut with an ellipsis, then (for
    abbreviated layer names) just the layer's number."""
    short = abbreviated(label)
    out = [short]
    for n in (12, 8, 5):
        if len(short) > n + 1:
            out.append(short[:n] + "…")
    number = re.search(r"_(\d+)$", short)
    if number and short != label:  # "act_12" -> "12" reads well beside "act_11"; "input_1" -> "1" would not
        out.append(number.group(1))
    return out
