"""The `microforge learn --report DIR` report (and benchmarks/learn.py's): learn.json, report.md and a
self-contained report.html with the accuracy matrix as a heat map, the average accuracy after each
experience per strategy, and, given runs at several LR layers, the learner's RAM against its accuracy."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np

from microforge.bench.report import _CSS, _figure_png, _html_table, _markdown_table

COLUMNS = ("strategy", "LR layer", "bits", "final average accuracy %", "forgetting (points)", "buffer B",
           "total RAM B")


def rows(results: list[dict]) -> list[list[str]]:
    return [[r["strategy"], f"op {r['lr_layer']['op']} {'x'.join(map(str, r['lr_layer']['shape']))}", str(r["bits"]),
             f"{100 * r['final_average_accuracy']:.1f}", f"{100 * r['forgetting']:.1f}",
             f"{r['memory']['buffer_bytes']:,}", f"{r['memory']['total_ram_bytes']:,}"] for r in results]


def _plots(results: list[dict]) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    first = results[0]
    matrix = np.asarray(first["accuracy_matrix"]) * 100
    names = [e.rsplit("/", 1)[-1] for e in first["experiences"]]
    fig, ax = plt.subplots(figsize=(5, 4))
    shown = np.where(np.tril(np.ones_like(matrix, bool)), matrix, np.nan)  # only experiences seen so far
    image = ax.imshow(shown, vmin=0, vmax=100, cmap="viridis")
    for i in range(len(matrix)):
        for j in range(i + 1):
            ax.text(j, i, f"{matrix[i, j]:.0f}", ha="center", va="center", fontsize=8,
                    color="k" if matrix[i, j] > 60 else "w")  # readable on the light and the dark end
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("test set of experience")
    ax.set_ylabel("after training on experience")
    ax.set_title(f"{first['strategy']}: accuracy %")
    fig.colorbar(image, ax=ax)
    out["accuracy_matrix"] = _figure_png(fig)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for r in results:
        ax.plot(range(len(r["average_accuracy"])), 100 * np.asarray(r["average_accuracy"]), marker="o",
                label=f"{r['strategy']} (op {r['lr_layer']['op']}, {r['bits']} bits)")
    ax.set_xticks(range(len(names)), names)
    ax.set_xlabel("after experience")
    ax.set_ylabel("average accuracy % (classes seen)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7)
    out["average_accuracy"] = _figure_png(fig)
    plt.close(fig)
    layers = {}  # latent replay per LR layer, at 8 bits where there is a choice
    for r in (r for r in results if r["strategy"] == "latent-replay"):
        if r["lr_layer"]["op"] not in layers or r["bits"] == 8:
            layers[r["lr_layer"]["op"]] = r
    if len(layers) > 1:
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for op, r in sorted(layers.items()):
            ax.scatter(r["memory"]["total_ram_bytes"] / 1024, 100 * r["final_average_accuracy"])
            ax.annotate(f"op {op}", (r["memory"]["total_ram_bytes"] / 1024, 100 * r["final_average_accuracy"]),
                        fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("learner RAM (KiB, log)")
        ax.set_ylabel("final average accuracy %")
        ax.set_title("memory against the LR layer (latent replay, 8 bits)")
        out["memory_vs_lr_layer"] = _figure_png(fig)
        plt.close(fig)
    return out


def write_learn_report(results: list[dict], out_dir, title: str = "Continual learning") -> dict[str, Path]:
    """Write learn.json, report.md and report.html (the plots also as PNG files) for `results`
    (learn.api.learn results; the first one's accuracy matrix is drawn)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "learn.json").write_text(json.dumps(results, indent=1) + "\n")
    plots = _plots(results)
    md = [f"# {title}", "", _markdown_table(COLUMNS, rows(results)), ""]
    page = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>", _html_table(COLUMNS, rows(results))]
    for name, png in plots.items():
        (out / f"{name}.png").write_bytes(png)
        md += [f"![{name}]({name}.png)", ""]
        page.append(f"<p><img alt='{name}' src='data:image/png;base64,{base64.b64encode(png).decode()}'></p>")
    (out / "report.md").write_text("\n".join(md))
    (out / "report.html").write_text("".join(page) + "</body></html>\n")
    return {"json": out / "learn.json", "markdown": out / "report.md", "html": out / "report.html"}
