"""The rknn lint against rknn-toolkit2 2.3.2 itself: for every zoo module and every variant in tests/variants.py
(GRAPH_VARIANTS, each at P5 of a seeded YOLOv8n), and every family and task head (tests/task_models.py), what the
lint of the graph rknn builds from predicted, whether the toolkit built it for rk3588, and whether the x86
simulator matched the original model at fp16's tolerance (detection-level matching where the head has it).

The lint agrees when it passed and the build and the simulator did, or when it failed and either did not.
Small input (``--imgsz``, default 64), batch 1, opset 19; one case after another in this process, each build and
simulator run in the RKNN environment's worker (``attn-deploy setup rknn`` first).

Writes reports/rknn/report.json and report.md.
Run: python scripts/rknn_report.py [--imgsz 64] [--only NAME ...]
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests/ holds the variants and the task models

from attn_deploy.heads import task_of  # noqa: E402
from attn_deploy.loading import LoadedModel  # noqa: E402
from attn_deploy.errors import AttnDeployError  # noqa: E402
from attn_deploy.exporters.onnx import OnnxOptions  # noqa: E402
from attn_deploy.machine import machine  # noqa: E402
from attn_deploy.models import ZOO  # noqa: E402
from attn_deploy.models.detector import build_detector, build_detector_with  # noqa: E402
from attn_deploy.exporters.rknn import model_dir  # noqa: E402
from attn_deploy.pipeline import Plan, build  # noqa: E402
from attn_deploy.report import machine_lines, markdown_table, write_json, write_markdown  # noqa: E402
from attn_deploy.verify import verify_export  # noqa: E402

OUT = ROOT / "reports/rknn"
OPSET = 19  # rknn-toolkit2 reads opsets up to 19
HEADS = [(f"{family}{suffix}", f"{family}{suffix}.yaml", task) for family in ("yolov8n", "yolo11n")
         for suffix, task in (("", "detect"), ("-seg", "segment"), ("-pose", "pose"), ("-obb", "obb"),
                              ("-cls", "classify"))]
FAMILIES = [(name, f"{name}.yaml", "detect") for name in ("yolov5nu", "yolov9t", "yolov10n", "yolo12n", "yolo26n")]


def cases() -> dict[str, tuple[str, object]]:
    """Name -> (kind, a function building the model), in table order."""
    from tests.task_models import build
    from tests.variants import GRAPH_VARIANTS

    found = {f"zoo {n}": ("zoo module", lambda n=n: build_detector(n)) for n in ZOO}
    found |= {f"variant {n}": ("variant", lambda m=m: build_detector_with(m)) for n, m in GRAPH_VARIANTS.items()}
    found |= {n: ("family", lambda y=y, t=t: build(y, t)) for n, y, t in FAMILIES}
    found |= {n: ("task head", lambda y=y, t=t: build(y, t)) for n, y, t in HEADS}
    return found


def measure(name: str, kind: str, make, imgsz: int, root: Path) -> dict:
    stem = name.replace(" ", "-")
    row = {"case": name, "kind": kind}
    started = time.perf_counter()
    try:
        model = make().float().eval()  # as loaded; no checkpoint: the safe loader refuses tests/ classes
        loaded = LoadedModel(model, root / f"{stem}.pt", model.names, int(model.stride.max()), task_of(model))
        plan = Plan(["rknn"], root / f"{stem}.onnx", OnnxOptions((imgsz, imgsz), opset=OPSET))
        run = build(loaded, plan)
    except AttnDeployError as e:
        linted = _lint_only(root / f"{stem}.onnx")
        return {**row, **linted, "built": False, "simulator": None, "error": str(e)[:300],
                "seconds": round(time.perf_counter() - started, 1)}
    (lint,) = run.lint
    simulator = verify_export(model_dir(plan.output), loaded, semantics=run.rewrite.reference)
    return {**row, "lint": lint.passed, "lint_errors": sorted({f.check for f in lint.errors}), "built": True,
            "simulator": simulator.passed, "max_abs": float(simulator.worst.max_abs),
            "seconds": round(time.perf_counter() - started, 1)}


def _lint_only(path: Path) -> dict:
    """The lint of the ONNX a failed build read (the pipeline wrote and linted it before the build)."""
    from attn_deploy.lint import lint

    if not path.exists():
        return {"lint": None, "lint_errors": []}
    found = lint(path, "rknn")
    return {"lint": found.passed, "lint_errors": sorted({f.check for f in found.errors})}


def agrees(row: dict) -> bool | None:
    if row["lint"] is None:
        return None
    return row["lint"] == bool(row["built"] and row["simulator"])


def table(rows: list[dict]) -> str:
    headers = ["case", "kind", "lint predicted", "built", "simulator", "agrees", "seconds", "why"]
    cells = [[r["case"], r["kind"], {True: "pass", False: "fail", None: "-"}[r["lint"]],
              "yes" if r["built"] else "no", {True: "match", False: "DIFFERS", None: "-"}[r["simulator"]],
              {True: "yes", False: "NO", None: "-"}[agrees(r)], f"{r['seconds']:g}",
              (r.get("error") or ", ".join(r["lint_errors"]))[:160]] for r in rows]
    return markdown_table((headers, cells))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--imgsz", type=int, default=64)
    parser.add_argument("--only", nargs="*", help="case names to run (default: all)")
    args = parser.parse_args()
    chosen = {n: c for n, c in cases().items() if not args.only or n in args.only}
    kept = json.loads((OUT / "report.json").read_text())["rows"] if args.only and (OUT / "report.json").exists() else []
    rows = [r for r in kept if r["case"] not in chosen]  # --only re-runs those cases and keeps the others
    with tempfile.TemporaryDirectory() as tmp:
        for name, (kind, make) in chosen.items():
            rows.append(measure(name, kind, make, args.imgsz, Path(tmp)))
            print(name, rows[-1]["lint"], rows[-1]["built"], rows[-1]["simulator"], file=sys.stderr, flush=True)
            write(rows, args.imgsz, len(cases()))  # after every case: a long run leaves what it measured


def write(rows: list[dict], imgsz: int, planned: int) -> None:
    judged = [r for r in rows if agrees(r) is not None]
    agreed = sum(agrees(r) for r in judged)
    summary = (f"rk3588, {imgsz}x{imgsz}, batch 1, opset {OPSET}, rknn-toolkit2 2.3.2 x86 simulator; {len(rows)} "
               f"of {planned} cases run. The lint agrees with the toolkit on {agreed} of {len(judged)} "
               f"({agreed / max(len(judged), 1):.0%}).")
    write_json(OUT / "report.json", {"imgsz": imgsz, "planned": planned, "agreed": agreed, "judged": len(judged),
                                     "rows": rows, "machine": machine()})
    write_markdown(OUT / "report.md", "RKNN: the lint against rknn-toolkit2", {
        "Summary": summary, "Cases": table(rows), "Machine": machine_lines(machine())})

if __name__ == "__main__":
    main()
