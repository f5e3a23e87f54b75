"""The `microforge ood evaluate --report DIR` report: evaluation.json, report.md and a self-contained
report.html with, per detector, the score histograms of ID against each OOD set and the ROC curves."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np

from microforge.bench.report import _CSS, _figure_png, _html_table, _markdown_table

COLUMNS = ("detector", "AUROC", "AUPR-In", "AUPR-Out", "FPR@TPR95", "TNR@TPR95", "bit-exact", "+instructions",
           "+flash B", "+RAM B")


def _num(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else f"{value:,}"


def rows(result: dict) -> list[list[str]]:
    """One row per detector: the pooled metrics and the cost on the target."""
    out = []
    for d in result["detectors"]:
        exact = {True: "yes", False: "NO", None: "-"}[d["bit_exact_on_target"]]
        cost = d["cost"]
        out.append([d["detector"], _num(d["auroc"]), _num(d["aupr_in"]), _num(d["aupr_out"]), _num(d["fpr_at_tpr95"]),
                    _num(d["tnr_at_tpr95"]), exact, _num(cost["instructions"]), _num(cost["flash_bytes"]),
                    _num(cost["ram_bytes"])])
    return out


def set_rows(result: dict) -> list[list[str]]:
    """One row per detector and OOD set (near and far OOD apart)."""
    return [[d["detector"], s["name"], str(s["samples"]), _num(s["auroc"]), _num(s["fpr_at_tpr95"]),
             _num(s["tnr_at_tpr95"]), _num(s["flagged"])] for d in result["detectors"] for s in d["ood_sets"]]


SET_COLUMNS = ("detector", "OOD set", "samples", "AUROC", "FPR@TPR95", "TNR@TPR95", "flagged at threshold")


def _roc(id_scores: np.ndarray, ood_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    thresholds = np.unique(np.concatenate([id_scores, ood_scores]))[::-1]
    fpr = np.r_[0.0, [(id_scores >= t).mean() for t in thresholds]]
    tpr = np.r_[0.0, [(ood_scores >= t).mean() for t in thresholds]]
    return fpr, tpr


def _plot(entry: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    id_scores = np.asarray(entry["scores"]["id"])
    sets = [(s["name"], np.asarray(v)) for s, v in zip(entry["ood_sets"], entry["scores"]["ood"])]
    fig, (hist, roc) = plt.subplots(1, 2, figsize=(10, 3.6))
    bins = np.histogram_bin_edges(np.concatenate([id_scores] + [v for _, v in sets]), bins=40)
    hist.hist(id_scores, bins=bins, alpha=0.6, label="in-distribution", density=True)
    for name, v in sets:
        hist.hist(v, bins=bins, alpha=0.5, label=name, density=True, histtype="stepfilled")
    hist.axvline(entry["threshold"], color="k", linestyle="--", linewidth=1, label="threshold (TPR 95%)")
    hist.set_xlabel("score (higher = more likely OOD)")
    hist.set_title(f"{entry['detector']}: scores")
    hist.legend(fontsize=7)
    for name, v in sets:
        fpr, tpr = _roc(id_scores, v)
        roc.plot(fpr, tpr, label=f"{name} (AUROC {next(s['auroc'] for s in entry['ood_sets'] if s['name'] == name):.3f})")
    roc.plot([0, 1], [0, 1], color="#aaa", linewidth=0.8)
    roc.set_xlabel("ID flagged (FPR)")
    roc.set_ylabel("OOD flagged (TPR)")
    roc.set_title("ROC")
    roc.legend(fontsize=7)
    fig.tight_layout()
    png = _figure_png(fig)
    plt.close(fig)
    return png


def write_ood_report(result: dict, out_dir) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "evaluation.json").write_text(json.dumps(result, indent=1) + "\n")
    title = f"OOD detection: {result['model']} on {result['target']}"
    note = (f"Fitted on {result['fit_samples']} in-distribution samples, measured on {result['id_samples']} others "
            f"and on {', '.join(f'{k} ({v})' for k, v in result['ood_samples'].items())}.")
    md = [f"# {title}", "", note, "", _markdown_table(COLUMNS, rows(result)), "", "## Per OOD set", "",
          _markdown_table(SET_COLUMNS, set_rows(result)), ""]
    page = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1><p class='note'>{html.escape(note)}</p>",
            _html_table(COLUMNS, rows(result)), "<h2>Per OOD set</h2>", _html_table(SET_COLUMNS, set_rows(result))]
    for entry in result["detectors"]:
        png = _plot(entry)
        (out / f"{entry['detector']}.png").write_bytes(png)
        md += [f"![{entry['detector']}]({entry['detector']}.png)", ""]
        page.append(f"<h2>{html.escape(entry['detector'])}</h2>"
                    + (f"<p class='note'>{html.escape(entry['note'])}</p>" if entry.get("note") else "")
                    + f"<p><img alt='{html.escape(entry['detector'])}' "
                      f"src='data:image/png;base64,{base64.b64encode(png).decode()}'></p>")
    (out / "report.md").write_text("\n".join(md))
    (out / "report.html").write_text("".join(page) + "</body></html>\n")
    return {"json": out / "evaluation.json", "markdown": out / "report.md", "html": out / "report.html"}
