"""Dynamic DNNs on the emulated cores: the shipped weight-shared families (models/dynamic/), each in one C
image, measured as operating points (member x core x clock; a member is a width, or a width x depth)
and driven by the runtime manager on a
2,000-request budget trace, in Python and in the firmware.

Measured here, in one run:
- flash of the family image beside the widest member alone and the members as separate models (each
  generated alone with its own fastest kernels), on each core; its one arena beside the widest alone's;
- accuracy per member on the test set (the family's int8 image, bit-exact with the reference) beside the
  same member trained alone (scripts/train_slimmable.py measured those, int8 by our quantizer);
- instructions per member in the family image and alone, the switch (mf_set_operating_point) cost;
- every operating point, the Pareto front, and the energy range;
- the trace (trace.make_trace, seed 0) replayed by the manager in Python against the oracle and every
  static point, and by the manager running in the firmware on qemu (dynamic.onchip).

    .venv/bin/python benchmarks/dynamic.py [--families fsdd_slimmable,fsdd_slimmable_depth,digits_slimmable]
                                           [--requests 2000]

The issue's targets are checked on each FSDD family: fsdd_slimmable (widths) and fsdd_slimmable_depth
(widths x depths).

Writes benchmarks/results/dynamic.{json,md}, plots benchmarks/results/dynamic_<family>_*.png, the traces
benchmarks/results/dynamic_<family>_trace_<core>.csv and each family's measured models/dynamic/<family>/points.json
(what `microforge dynamic simulate` reads).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))
import microforge  # noqa: E402,F401
from microforge.bench.dataset import fsdd_kws_dataset, write_dataset  # noqa: E402
from microforge.dynamic.family import load_family  # noqa: E402
from microforge.dynamic.measure import points_document  # noqa: E402
from microforge.dynamic.onchip import play_trace  # noqa: E402
from microforge.dynamic.points import TARGET_CORES, member_name, plot_points  # noqa: E402
from microforge.dynamic.trace import make_trace, plot_trace, simulate, write_trace  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
FAMILIES = ("fsdd_slimmable", "fsdd_slimmable_depth", "digits_slimmable")
TARGETS = ("qemu-m4", "qemu-m7")
FSDD = ROOT.parent / "shared" / "data" / "fsdd" / "recordings"
TRACE_FAMILIES = ("fsdd_slimmable", "fsdd_slimmable_depth")  # the families the trace and targets are checked on


def test_set(name: str, family, out: Path) -> Path:
    """The family's test split as an int8 runner dataset (the families' inputs share one quantization)."""
    x = family.graphs[-1].inputs[0]
    if name.startswith("fsdd_slimmable"):
        fsdd_kws_dataset(FSDD, out, range(5), scale=x.scale, zero_point=x.zero_point)
        return out
    from train_slimmable import digits_data  # the split the family was trained on

    data = digits_data(seed=1)
    q = np.clip(np.round(data["x_test"] / x.scale) + x.zero_point, -128, 127).astype(np.int8)
    write_dataset(out, [(f"d{i:04d}.bin", q[i].reshape(x.shape)) for i in range(len(q))],
                  data["y_test"].tolist(), 10)
    return out


def family_section(name: str, requests: int, tmp: Path) -> dict:
    family = load_family(ROOT / "models" / "dynamic" / name)
    t0 = time.time()
    dataset = test_set(name, family, tmp / f"{name}_test")
    document, points = points_document(family, list(TARGETS), dataset, progress=lambda m: print(f"  {name}: {m}"))
    (family.directory / "points.json").write_text(json.dumps(document, indent=1) + "\n")
    plot_points(points, RESULTS / f"dynamic_{name}_points.png")
    trained_members = family.manifest.get("info", {}).get("widths", {})  # keyed "0.25", or "0.25/2" with depths
    members = list(zip(family.widths, family.depths))
    accuracy = []
    for w, d in members:
        trained = trained_members.get(member_name(w, d), trained_members.get(str(w), {}))
        shared = next(p.accuracy for p in points if p.member == (w, d))
        accuracy.append({"width": w, "depth": d, "shared_int8": shared,
                         "alone_int8": trained.get("int8_test_accuracy_alone"),
                         "shared_float": trained.get("float_test_accuracy_shared"),
                         "alone_float": trained.get("float_test_accuracy_alone"),
                         "macs": trained.get("macs")})
    cores = {}
    for target in TARGETS:
        core = TARGET_CORES[target]
        cost = document["family"]["per_core"][core]
        mine = [p for p in points if p.core == core]
        family_instructions = [next(p.instructions for p in mine if p.member == m) for m in members]
        most_accurate = max(mine, key=lambda p: (p.accuracy, p.mhz))
        cheapest = min(mine, key=lambda p: p.energy_uj)
        cores[core] = {
            **cost, "points": len(mine), "pareto_points": sum(p.pareto for p in mine),
            "family_instructions": family_instructions,
            "family_over_alone": [f / a for f, a in zip(family_instructions, cost["alone_instructions"])],
            "switch_share_of_smallest_inference": cost["switch_instructions"] / min(family_instructions),
            "energy_range": most_accurate.energy_uj / cheapest.energy_uj,
            "most_accurate_point": most_accurate.to_json(), "cheapest_point": cheapest.to_json(),
            "bit_exact": all(p.bit_exact for p in mine),
        }
    section = {"family": name, "widths": family.widths, "depths": family.depths, "dataset_samples": document["family"]["dataset_samples"],
               "accuracy": accuracy, "cores": cores, "measure_seconds": round(time.time() - t0, 1)}
    if name in TRACE_FAMILIES:
        section["trace"] = trace_section(family, points, dataset, requests, tmp,
                                         {core: c["switch_instructions"] for core, c in cores.items()})
    return section


def trace_section(family, points, dataset: Path, requests: int, tmp: Path, switches: dict[str, int]) -> dict:
    sample = sorted(dataset.glob("*.bin"))[0].read_bytes()
    out = {}
    for target in TARGETS:
        core = TARGET_CORES[target]
        trace = make_trace(requests, seed=0, points=points, core=core)
        write_trace(trace, RESULTS / f"dynamic_{family.name}_trace_{core}.csv")
        result = simulate(points, trace, core, switch_instructions=switches[core], keep_steps=True)
        plot_trace(result, RESULTS / f"dynamic_{family.name}_trace_{core}.png")
        result.pop("steps")
        t0 = time.time()
        print(f"  {family.name}: the trace on {target}'s firmware")
        firmware = play_trace(family, points, trace, target, sample, tmp / f"play_{core}")
        firmware["seconds"] = round(time.time() - t0, 1)
        out[core] = {"simulated": result, "firmware": firmware}
    return out


def targets(fam: dict) -> list[tuple[str, str, bool]]:
    """(target, measured, met) for the issue's targets, on one trace family's section."""
    rows = []
    for core, c in fam["cores"].items():
        rows.append((f"{core}: >= 16 operating points from exact instruction counts", str(c["points"]),
                     c["points"] >= 16 and c["bit_exact"]))
        ratio = c["flash_bytes"] / c["largest_alone_flash_bytes"]
        rows.append((f"{core}: family flash <= 1.05x the largest member alone",
                     f"{ratio:.2f}x ({c['flash_bytes']:,} B vs {c['largest_alone_flash_bytes']:,} B; separate models "
                     f"{c['separate_flash_bytes'] / c['largest_alone_flash_bytes']:.2f}x)", ratio <= 1.05))
        rows.append((f"{core}: switch < 1% of the smallest member's inference, no extra RAM",
                     f"{100 * c['switch_share_of_smallest_inference']:.4f}% ({c['switch_instructions']} instructions); "
                     f"arena {c['arena_bytes']:,} B vs {c['largest_alone_arena_bytes']:,} B alone",
                     c["switch_share_of_smallest_inference"] < 0.01 and c["arena_bytes"] <= c["largest_alone_arena_bytes"]))
        rows.append((f"{core}: >= 10x energy per inference, cheapest to most accurate point",
                     f"{c['energy_range']:.1f}x", c["energy_range"] >= 10))
    gaps = [(member_name(a["width"], a["depth"]), 100 * (a["shared_int8"] - a["alone_int8"])) for a in fam["accuracy"]
            if a["alone_int8"] is not None]
    rows.append(("each member within 1 point of the same member trained alone (int8)",
                 ", ".join(f"{m}: {g:+.2f}" for m, g in gaps), all(g >= -1.0 for _, g in gaps)))
    for core, t in fam.get("trace", {}).items():
        s, f = t["simulated"], t["firmware"]
        best_static = s["static_best"]
        rows.append((f"{core}: >= 99% of feasible deadlines met (Python manager / firmware)",
                     f"{100 * s['deadlines_met']:.2f}% / {100 * f['deadlines_met']:.2f}%",
                     s["deadlines_met"] >= 0.99 and f["deadlines_met"] >= 0.99))
        rows.append((f"{core}: accuracy within 0.5 points of the oracle",
                     f"{100 * s['mean_accuracy']:.2f}% vs {100 * s['oracle']['mean_accuracy']:.2f}%",
                     s["oracle"]["mean_accuracy"] - s["mean_accuracy"] <= 0.005))
        rows.append((f"{core}: >= 5 points above the best static model meeting the deadlines",
                     f"{100 * (s['mean_accuracy'] - best_static['mean_accuracy']):+.2f} points (static "
                     f"{point_name(best_static['point'])} at {best_static['point']['mhz']} MHz, "
                     f"{100 * best_static['mean_accuracy']:.2f}%)",
                     s["mean_accuracy"] - best_static["mean_accuracy"] >= 0.05))
    return rows


def point_name(point: dict) -> str:
    return member_name(point["width"], point.get("depth"))


def markdown(report: dict) -> str:
    lines = ["# Dynamic DNNs: weight-shared families on the emulated cores", "",
             f"`python benchmarks/dynamic.py` ({report['seconds']:.0f} s). Instructions are exact (QEMU plugin); latency, "
             "energy and power come from the board models of `microforge.dynamic.board` at one cycle per "
             "instruction."]
    for name, rows in report["targets"].items():
        lines += ["", f"## Targets on {name}", "", "| target | measured | met |", "|---|---|---|"]
        lines += [f"| {t} | {m} | {'yes' if ok else 'NO'} |" for t, m, ok in rows]
    for fam in report["families"]:
        lines += ["", f"## {fam['family']} ({fam['dataset_samples']} test samples)", "",
                  f"| {'width' if fam['depths'][0] is None else 'width/depth'} | MACs | int8, shared | int8, trained alone | "
                  "float, shared | float, alone |",
                  "|---|---|---|---|---|---|"]
        for a in fam["accuracy"]:
            cell = (lambda v: f"{100 * v:.2f}%" if v is not None else "-")
            lines.append(f"| {member_name(a['width'], a['depth'])} | {a['macs'] or '-':,} | {cell(a['shared_int8'])} | {cell(a['alone_int8'])} | "
                         f"{cell(a['shared_float'])} | {cell(a['alone_float'])} |")
        lines += ["", "| core | family flash | widest alone | separate models | arena (family / alone) | "
                      "instructions per member: family (alone) | switch | energy range |",
                  "|---|---|---|---|---|---|---|---|"]
        for core, c in fam["cores"].items():
            per = ", ".join(f"{f:,} ({a:,})" for f, a in zip(c["family_instructions"], c["alone_instructions"]))
            lines.append(f"| {core} | {c['flash_bytes']:,} B | {c['largest_alone_flash_bytes']:,} B | "
                         f"{c['separate_flash_bytes']:,} B | {c['arena_bytes']:,} / {c['largest_alone_arena_bytes']:,} B | "
                         f"{per} | {c['switch_instructions']} instructions | {c['energy_range']:.1f}x |")
        for core, t in fam.get("trace", {}).items():
            s, f = t["simulated"], t["firmware"]
            lines += ["", f"Trace on {core}: {s['requests']} requests, {s['infeasible']} infeasible.", "",
                      "| policy | deadlines met | energy budget kept | power cap kept | mean accuracy | switches |",
                      "|---|---|---|---|---|---|"]
            rows = [("manager (Python)", s), ("manager (firmware on qemu)", f), ("oracle", s["oracle"]),
                    (f"best static ({point_name(s['static_best']['point'])} @ {s['static_best']['point']['mhz']} MHz)",
                     s["static_best"]), ("static largest", s["static_largest"]), ("static smallest", s["static_smallest"])]
            for label, r in rows:
                pct = (lambda v: f"{100 * v:.2f}%" if v is not None else "-")
                lines.append(f"| {label} | {pct(r['deadlines_met'])} | {pct(r['energy_budget_kept'])} | "
                             f"{pct(r.get('power_cap_kept'))} | {pct(r['mean_accuracy'])} | {r['switches']} |")
            lines.append(f"\nThe firmware chose the Python manager's point on {100 * f['agreement']:.1f}% of the requests "
                         f"(its latencies are its own timer's: at most {f['max_latency_gap_ms']:.3f} ms from the model's).")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args(argv)
    t0 = time.time()
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="microforge-dynamic-") as tmp:
        families = [family_section(name, args.requests, Path(tmp)) for name in args.families.split(",")]
    report = {"families": families, "seconds": round(time.time() - t0, 1)}
    report["targets"] = {f["family"]: targets(f) for f in families if f["family"] in TRACE_FAMILIES}
    (RESULTS / "dynamic.json").write_text(json.dumps(report, indent=1) + "\n")
    (RESULTS / "dynamic.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
