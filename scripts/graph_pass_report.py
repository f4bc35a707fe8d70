"""Graph passes on independently written attention code (tests/variants.py, GRAPH_VARIANTS), each variant alone
at P5 of a seeded YOLOv8n (seed 0), batch 1, opset 19 (DeformConv needs it; the same for every variant).

Per variant: the targets whose lint passes before the graph passes (the module rules' export) and after (the ONNX
with the passes ort, openvino and trt need, linted for each; the npu graph, linted for npu), the passes applied per
module, parity of the ONNX, the npu graph and the OpenVINO IR (f32 hint) against the original model, and the
latency of the npu graph against the plain ONNX in onnxruntime and in OpenVINO (LATENCY hint, f32). One live
session at a time: each model is opened, timed and closed before the next, plain and npu alternating over
ROUNDS rounds; a median is over the rounds' medians, a ratio the median of the per-round ratios.

Writes reports/graph-passes/report.json and report.md.
Run: python scripts/graph_pass_report.py [--imgsz 640] [--threads N] [--no-timing]
"""

import argparse
import dataclasses
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/variants.py holds the variants

from attn_deploy import Budget, OnnxOptions, bench, export_onnx, lint, open_runner, pipeline, rewrite  # noqa: E402
from attn_deploy.exporters import openvino  # noqa: E402
from attn_deploy.lint import TARGETS  # noqa: E402
from attn_deploy.loading import LoadedModel  # noqa: E402
from attn_deploy.machine import machine  # noqa: E402
from attn_deploy.models.detector import build_detector_with  # noqa: E402
from attn_deploy.report import machine_lines, markdown_table, ops_change, write_json, write_markdown  # noqa: E402
from attn_deploy.verify import verify_export  # noqa: E402
from tests.variants import DATA_DEPENDENT, GRAPH_VARIANTS  # noqa: E402

OUT = Path("reports/graph-passes")
OPSET, ROUNDS = 19, 3
BUDGET = Budget(warmup_s=0.5, iters=20, duration_s=2.0)


def _lints(paths: dict[str, Path]) -> dict[str, dict]:
    """Per target: passed, and the checks of its errors."""
    reports = {t: lint(paths[t], t) for t in TARGETS}
    return {t: {"passed": r.passed, "errors": sorted({f.check for f in r.errors})} for t, r in reports.items()}


def _latency(paths: dict[str, Path], threads: int, imgsz: tuple[int, int]) -> dict:
    """Median ms of each model, and the median per-round ratio npu / plain; one session open at a time."""
    rounds: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(ROUNDS):
        for name, path in paths.items():
            runner = open_runner(path, threads)
            rounds[name].append(bench(runner, name, 1, imgsz, BUDGET, threads).latency_ms.median)
            runner.close()
    ratios = np.array(rounds["npu"]) / np.array(rounds["plain"])
    return {"plain_ms": float(np.median(rounds["plain"])), "npu_ms": float(np.median(rounds["npu"])),
            "npu_to_plain": float(np.median(ratios)), "rounds_ms": rounds}


def measure(name: str, root: Path, imgsz: tuple[int, int], threads: int, timing: bool) -> dict:
    model = build_detector_with(GRAPH_VARIANTS[name], imgsz=imgsz[0])
    loaded = LoadedModel(model, root / f"{name}.pt", model.names, 32, "detect", imgsz)
    options = OnnxOptions(imgsz, opset=OPSET)
    before = root / f"{name}.rules-only.onnx"
    export_onnx(dataclasses.replace(loaded, model=rewrite(model, imgsz, opset=OPSET).model), before, options)
    plan = pipeline.Plan(["onnx", "npu"], root / f"{name}.onnx", options)
    run = pipeline.deploy(loaded, plan)
    ir = {"plain": openvino.export(plan.output, openvino.model_dir(plan.output), openvino.OpenVINOOptions()).path,
          "npu": openvino.export(plan.npu_onnx, openvino.model_dir(plan.npu_onnx), openvino.OpenVINOOptions()).path}
    parity = {p.label or p.backend: p for p in [*run.parity, verify_export(ir["plain"], loaded)]}
    row = {
        "variant": name, "data_dependent": name in DATA_DEPENDENT,
        "lint_before": _lints(dict.fromkeys(TARGETS, before)),
        "lint_after": _lints({**dict.fromkeys(TARGETS, plan.output), "npu": plan.npu_onnx}),
        "rules": [r for r in run.rewrite.layers if r.applied], "passes": run.rewrite.graph,
        "parity": {k: {"passed": p.passed, "max_abs": p.worst.max_abs} for k, p in parity.items()},
    }
    if timing:
        row["latency"] = {"onnxruntime": _latency({"plain": plan.output, "npu": plan.npu_onnx}, threads, imgsz),
                          "openvino": _latency(ir, threads, imgsz)}
    print(name, "done", file=sys.stderr, flush=True)
    return row


def _clean(lints: dict) -> str:
    return ", ".join(t for t, r in lints.items() if r["passed"]) or "none"


def _latency_cell(row: dict, backend: str) -> str:
    if "latency" not in row:
        return "not timed"
    t = row["latency"][backend]
    return f"{t['plain_ms']:.2f} → {t['npu_ms']:.2f} ({t['npu_to_plain']:.3f})"


def tables(rows: list[dict]) -> dict[str, str]:
    summary = (["variant", "lint clean before", "lint clean after", "npu errors after", "passes applied",
                "parity onnx / npu / openvino", "onnxruntime ms plain → npu (ratio)", "OpenVINO ms plain → npu (ratio)"],
               [[r["variant"] + (" (data-dependent)" if r["data_dependent"] else ""), _clean(r["lint_before"]),
                 _clean(r["lint_after"]), ", ".join(r["lint_after"]["npu"]["errors"]) or "-",
                 ", ".join(sorted({p.rule for p in r["passes"] if p.applied})) or "-",
                 " / ".join(f"{'pass' if p['passed'] else 'FAIL'} {p['max_abs']:.3g}" for p in r["parity"].values()),
                 _latency_cell(r, "onnxruntime"), _latency_cell(r, "openvino")] for r in rows])
    layers = (["variant", "layer", "module", "rule or pass", "applied", "verified max abs", "ONNX ops", "note"],
              [[r["variant"], x.path, x.module, x.rule, "yes" if x.applied else "NO",
                "-" if x.max_abs is None else f"{x.max_abs:.3g}", ops_change(x.ops_before, x.ops_after), x.note]
               for r in rows for x in r["rules"] + r["passes"]])
    return {"Per variant": markdown_table(summary), "Per layer": markdown_table(layers)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--no-timing", dest="timing", action="store_false", help="skip the latency measurement")
    args = parser.parse_args()
    imgsz = (args.imgsz, args.imgsz)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(name, Path(tmp), imgsz, args.threads, args.timing) for name in GRAPH_VARIANTS]
    facts = {"imgsz": imgsz, "opset": OPSET, "threads": args.threads, "rounds": ROUNDS, "budget": BUDGET,
             "timed": args.timing, "results": rows, "machine": machine()}
    write_json(OUT / "report.json", facts)
    timing = (f"Latency: {ROUNDS} rounds, plain and npu alternating, one live session at a time (each opened, timed "
              f"with {BUDGET.warmup_s:g} s warm-up and at least {BUDGET.iters} runs over {BUDGET.duration_s:g} s, "
              f"closed); {args.threads} threads; OpenVINO CPU, LATENCY hint, f32. The ratio is the median of the "
              "per-round ratios npu / plain." if args.timing else "Latency: not measured (--no-timing).")
    write_markdown(OUT / "report.md", f"Graph passes on independently written attention (YOLOv8n, {args.imgsz}, "
                   f"batch 1, opset {OPSET}, seed 0)", {
                       **tables(rows),
                       "Method": "Lint before: the export with the module rules only. Lint after: the ONNX with the "
                                 "passes ort, openvino and trt need (linted for each), and the npu graph (linted "
                                 "for npu). Parity: max abs over seed0, seed1, bus.jpg and zidane.jpg against eager "
                                 "PyTorch fp32 (OpenVINO at the f32 hint). " + timing,
                       "Machine": machine_lines(machine()),
                   })


if __name__ == "__main__":
    main()
