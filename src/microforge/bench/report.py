"""Benchmark reports: results.json, report.md and a self-contained report.html (plots inlined as PNG).

Every figure carries its provenance: "measured" (host wall clock, a board's own timer, a power
monitor), "emulated" (instructions counted under QEMU, turned into time and energy with the energy
model named in the report), or "published" (MLPerf Tiny results, with round and source).
"""

from __future__ import annotations

import base64
import html
import io
import json
from datetime import datetime, timezone
from pathlib import Path

from microforge.bench.energy import REFERENCE_BOARD
from microforge.bench.published import REFERENCE_V05, TFLM_CMSIS_NN_M4
from microforge.bench.tasks import TASKS


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _quality(r: dict) -> str:
    if r.get("accuracy") is not None:
        return f"top-1 {100 * r['accuracy']:.2f}%"
    if r.get("auc") is not None:
        return f"AUC {r['auc']:.4f}"
    return "-"


def _kind(r: dict) -> str:
    return "emulated" if r.get("emulated") else "measured"


RESULT_COLUMNS = ("task", "model", "target", "basis", "samples", "quality", "bit-exact", "latency ms",
                  "inferences/s", "instructions", "energy µJ", "RAM B", "flash B")


def _result_rows(results: list[dict]) -> list[list[str]]:
    return [[r["task"], r["model"], r["target"], _kind(r), _fmt(r.get("samples") or None), _quality(r),
             _fmt(r.get("bit_exact")), _fmt(r.get("latency_ms"), 3), _fmt(r.get("throughput_ips"), 1),
             _fmt(r.get("instructions_per_inference")), _fmt(r.get("energy_uj"), 1), _fmt(r.get("ram_bytes")),
             _fmt(r.get("flash_bytes"))] for r in results]


PUBLISHED_COLUMNS = ("task", "MLPerf Tiny v0.5 reference: latency ms", "energy µJ", "quality",
                     "microforge qemu-m4: latency ms (emulated)", "energy µJ (estimate)", "quality",
                     "instructions", "TFLM+CMSIS-NN instructions", "ratio")


def _published_rows(results: list[dict]) -> list[list[str]]:
    rows = []
    for name in TASKS:
        pub, peer = REFERENCE_V05[name], TFLM_CMSIS_NN_M4[name]
        ours = next((r for r in results if r["task"] == name and r["target"] == "qemu-m4"
                     and r.get("latency_ms") is not None), None)
        ours_q = next((r for r in results if r["task"] == name and r["target"] == "qemu-m4"
                       and (r.get("accuracy") is not None or r.get("auc") is not None)), None)
        pub_q = f"AUC {pub.quality:.2f}" if name == "ad" else f"top-1 {100 * pub.quality:.1f}%"
        instr = ours.get("instructions_per_inference") if ours else None
        rows.append([name, _fmt(pub.latency_ms, 1), _fmt(pub.energy_uj, 1), pub_q,
                     _fmt(ours["latency_ms"], 2) if ours else "-", _fmt(ours.get("energy_uj"), 1) if ours else "-",
                     _quality(ours_q) if ours_q else "-", _fmt(instr), _fmt(peer.instructions),
                     f"{instr / peer.instructions:.2f}x" if instr else "-"])
    return rows


def _markdown_table(columns, rows) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _notes() -> list[str]:
    m = REFERENCE_BOARD
    pub = next(iter(REFERENCE_V05.values()))
    peer = next(iter(TFLM_CMSIS_NN_M4.values()))
    return [
        f"Emulated latency = executed instructions x {m.cycles_per_instruction:g} cycle/instruction at "
        f"{m.clock_hz / 1e6:g} MHz ({m.board}); energy estimate = that time x {m.power_w * 1e3:.1f} mW, the "
        "reference board's mean power in its published energy runs. One cycle per instruction ignores "
        "flash wait states and multi-cycle loads, so emulated times are optimistic next to a real board.",
        f"Published: MLPerf Tiny {pub.round} closed division, reference submission, {pub.system}, "
        f"{pub.framework}; source {pub.source.rsplit('/', 1)[0]}.",
        f"Peer instructions: {peer.source}.",
        "Host figures are wall-clock times on the machine that ran the benchmark and say nothing about a "
        "microcontroller.",
    ]


def _figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _plots(results: list[dict]) -> dict[str, bytes]:
    """PNG bytes per plot name; only the plots that have data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = {}
    tasks = [t for t in TASKS if any(r["task"] == t for r in results)]
    targets = sorted({r["target"] for r in results})
    basis = {r["target"]: _kind(r) for r in results}

    def grouped(metric: str, title: str, ylabel: str, log: bool, name: str, published=None):
        series = {f"{tg} ({basis[tg]})": [next((r[metric] for r in results if r["task"] == t and r["target"] == tg
                                                and r.get(metric) is not None), None) for t in tasks]
                  for tg in targets}
        if published:
            series["MLPerf v0.5 reference (published)"] = [published(t) for t in tasks]
        series = {k: v for k, v in series.items() if any(x is not None for x in v)}
        if not series:
            return
        fig, ax = plt.subplots(figsize=(7.5, 3.6))
        width = 0.8 / len(series)
        for i, (label, values) in enumerate(series.items()):
            xs = [j + i * width for j, v in enumerate(values) if v is not None]
            ax.bar(xs, [v for v in values if v is not None], width, label=label)
        ax.set_xticks([j + width * (len(series) - 1) / 2 for j in range(len(tasks))], tasks)
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        if log:
            ax.set_yscale("log")
        ax.legend(fontsize=7)
        plots[name] = _figure_png(fig)
        plt.close(fig)

    grouped("latency_ms", "Latency per inference by target", "ms (log)", True, "latency",
            published=lambda t: REFERENCE_V05[t].latency_ms)
    grouped("ram_bytes", "RAM (arena + static data + stack where measured)", "bytes", False, "ram")
    grouped("flash_bytes", "Flash of the model (code + constants)", "bytes", False, "flash")
    grouped("energy_uj", "Energy per inference", "µJ (log)", True, "energy",
            published=lambda t: REFERENCE_V05[t].energy_uj)

    quality = [(f"{r['task']} @ {r['target']}", r.get("accuracy") if r.get("accuracy") is not None else r.get("auc"))
               for r in results if r.get("accuracy") is not None or r.get("auc") is not None]
    if quality:
        fig, ax = plt.subplots(figsize=(7.5, 0.5 + 0.35 * len(quality)))
        ax.barh([q[0] for q in quality], [q[1] for q in quality])
        ax.set_xlim(0, 1)
        ax.set_title("Accuracy (top-1) / AUC")
        plots["quality"] = _figure_png(fig)
        plt.close(fig)
    return plots


def _html_table(columns, rows) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 7px;"
        "text-align:right}th{background:#f2f2f2}td:first-child{text-align:left}img{max-width:100%}"
        ".note{color:#555;font-size:13px}")


def write_report(results: list[dict], out_dir, title: str = "microforge benchmark report") -> dict[str, Path]:
    """Write results.json, report.md and report.html (plus the plots as PNG files) into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    (out / "results.json").write_text(json.dumps({"generated": stamp, "results": results}, indent=1) + "\n")

    rows = _result_rows(results)
    published = _published_rows(results)
    plots = _plots(results)
    for name, png in plots.items():
        (out / f"{name}.png").write_bytes(png)

    md = [f"# {title}", "", f"Generated {stamp}.", "", "## Results", "", _markdown_table(RESULT_COLUMNS, rows), "",
          "## Beside the published MLPerf Tiny reference", "", _markdown_table(PUBLISHED_COLUMNS, published), "",
          "## Notes", ""] + [f"- {n}" for n in _notes()] + [""]
    md += [f"![{name}]({name}.png)" for name in plots] + [""]
    (out / "report.md").write_text("\n".join(md))

    images = "".join(f'<p><img alt="{name}" src="data:image/png;base64,{base64.b64encode(png).decode()}"></p>'
                     for name, png in plots.items())
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in _notes())
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1><p class='note'>Generated {stamp}.</p>"
            f"<h2>Results</h2>{_html_table(RESULT_COLUMNS, rows)}"
            f"<h2>Beside the published MLPerf Tiny reference</h2>{_html_table(PUBLISHED_COLUMNS, published)}"
            f"<h2>Plots</h2>{images}<h2>Notes</h2><ul class='note'>{notes}</ul></body></html>\n")
    (out / "report.html").write_text(page)
    return {"json": out / "results.json", "markdown": out / "report.md", "html": out / "report.html"}
