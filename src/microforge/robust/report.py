"""`assess --report DIR`: assessment.json, report.md and a self-contained report.html with a per-layer plot."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from microforge.bench.report import _CSS, _figure_png, _html_table, _markdown_table
from microforge.robust.assess import Assessment

LAYER_COLUMNS = ("#", "layer", "op", "MAE", "RMSE", "RMSE/scale", "SQNR dB", "cosine", "max abs", "saturation",
                 "instructions", "flag")


def _num(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}g}"


def layer_rows(layers: list[dict], name_width: int = 48) -> list[list[str]]:
    rows = []
    for layer in layers:
        name = layer["name"] if len(layer["name"]) <= name_width else "…" + layer["name"][-name_width + 1:]
        rows.append(["-" if layer["index"] is None else str(layer["index"]), name, layer["op"], _num(layer["mae"]), _num(layer["rmse"]),
                     _num(layer["rmse_over_scale"], 3), _num(layer["sqnr_db"], 3), _num(layer["cosine"], 5),
                     _num(layer["max_abs_error"]), f"{100 * layer['saturation']:.2f}%", _num(layer["instructions"]),
                     layer["flag"] or ""])
    return rows


def model_lines(model: dict) -> list[str]:
    lines = []
    if model["top1_agreement"] is not None:
        lines.append(f"top-1 agreement with float {100 * model['top1_agreement']:.2f}%")
    if model["relative_accuracy"] is not None:
        lines.append(f"accuracy {100 * model['quantized_accuracy']:.2f}% vs float {100 * model['float_accuracy']:.2f}% "
                     f"(relative {100 * model['relative_accuracy']:.2f}%)")
    lines.append(f"output MAE {model['output_mae']:.4g}")
    return lines


def _plot(assessment: Assessment) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    series = [("clean", assessment.layers)] + [(s["shift"], s["layers"]) for s in assessment.shifted]
    for label, layers in series:
        x = range(len(layers))
        axes[0].plot(x, [layer["sqnr_db"] for layer in layers],
                     marker="o", label=label)
        axes[1].plot(x, [layer["rmse_over_scale"] for layer in layers], marker="o", label=label)
    axes[0].set_ylabel("SQNR (dB)")
    axes[1].set_ylabel("RMSE / scale")
    axes[1].axhline(0.7, color="red", linestyle="--", linewidth=1, label="flag above 0.7")
    axes[1].set_xticks(range(len(assessment.layers)))
    axes[1].set_xticklabels([f"{layer['index'] if layer['index'] is not None else ''} {layer['op']}"
                             for layer in assessment.layers], rotation=70,
                            fontsize=7)
    axes[0].legend(fontsize=8)
    axes[0].set_title(f"per-layer error on {assessment.target}, {assessment.samples} samples")
    fig.tight_layout()
    png = _figure_png(fig)
    plt.close(fig)
    return png


def write_assessment_report(assessment: Assessment, out_dir, title: str) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "assessment.json").write_text(json.dumps(assessment.to_json(), indent=1) + "\n")
    png = _plot(assessment)
    (out / "layers.png").write_bytes(png)
    sections = [("clean inputs", assessment.model, assessment.layers)]
    sections += [(f"shifted: {s['shift']}", s["model"], s["layers"]) for s in assessment.shifted]
    md = [f"# {title}", "", f"Target {assessment.target}, {assessment.samples} samples.", "", "![per-layer error](layers.png)", ""]
    page = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p class='note'>Target {html.escape(assessment.target)}, {assessment.samples} samples.</p>"
            f"<p><img alt='per-layer error' src='data:image/png;base64,{base64.b64encode(png).decode()}'></p>"]
    for heading, model, layers in sections:
        lines = model_lines(model)
        md += [f"## {heading}", ""] + [f"- {line}" for line in lines] + ["", _markdown_table(LAYER_COLUMNS, layer_rows(layers)), ""]
        page.append(f"<h2>{html.escape(heading)}</h2><ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in lines)
                    + "</ul>" + _html_table(LAYER_COLUMNS, layer_rows(layers)))
    (out / "report.md").write_text("\n".join(md))
    (out / "report.html").write_text("".join(page) + "</body></html>\n")
    return {"json": out / "assessment.json", "markdown": out / "report.md", "html": out / "report.html"}
