"""Every ultralytics head through attn-deploy: parity per output and per instance, and mAP per task.

1. The trained fixtures (attn_deploy/fixtures: YOLOv8n-CGA detect, and its segment, pose and OBB
   variants where trained): exported to ONNX and OpenVINO at their training size and checked against
   PyTorch, mAP scored on the shapes validation split with the task's labels (box, mask, pose, OBB),
   and ultralytics' own validator on the same checkpoint and split beside it.
2. The families ultralytics ships, as a new user tries them: seeded models from ultralytics' own YAMLs
   (trained-like batch-norm statistics and class biases, tests/task_models.py) saved as best.pt and run
   through `attn-deploy export best.pt --target onnx,openvino --json`: the exit code, the worst element
   error of each output, the detection-level result and how instances were matched. YOLOv10 and YOLO26
   also in their end-to-end form (--end2end); rtdetr-l at 640, where its decoder's border anchors are
   invalid (the ±inf the finite-inf-state rule makes finite), the others at 128.

Writes reports/tasks/report.md and report.json. Usage: python scripts/task_report.py [fixtures] [families
[MODEL...]] (named families are run again, the others kept from report.json).
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests/task_models.py builds the seeded models

from attn_deploy import fixtures, load  # noqa: E402
from attn_deploy.data import SHAPES_TASKS, shapes_data  # noqa: E402
from attn_deploy.exporters import onnx as onnx_backend  # noqa: E402
from attn_deploy.machine import machine  # noqa: E402
from attn_deploy.pipeline import Plan, deploy  # noqa: E402
from attn_deploy.report import (machine_lines, markdown_table, summary_table, write_json,  # noqa: E402
                                write_markdown)

OUT = ROOT / "reports/tasks"
FIXTURES = {"cga": "detect", "cga-seg": "segment", "cga-pose": "pose", "cga-obb": "obb"}
FAMILIES = [  # (name, YAML, task, end-to-end, imgsz)
    *[(name, f"{name}.yaml", "detect", False, 128) for name in ("yolov5nu", "yolov8n", "yolov9t", "yolov10n")],
    ("yolov10n --end2end", "yolov10n.yaml", "detect", True, 128),
    *[(name, f"{name}.yaml", "detect", False, 128) for name in ("yolo11n", "yolo12n", "yolo26n")],
    ("yolo26n --end2end", "yolo26n.yaml", "detect", True, 128),
    ("rtdetr-l", "rtdetr-l.yaml", "rtdetr", False, 640),
    *[(f"{family}-{suffix}", f"{family}-{suffix}.yaml", task, False, 128)
      for suffix, task in (("seg", "segment"), ("pose", "pose"), ("obb", "obb"), ("cls", "classify"))
      for family in ("yolov8n", "yolo11n")],
]


def ultralytics_val(checkpoint: Path, data: Path, imgsz: int, task: str, rect: bool) -> dict:
    """ultralytics' validator on the same checkpoint and split: box mAP, and the task's own. ``rect=False`` feeds it
    the images at the size attn-deploy scores them; its default pads each batch by half a stride (160 to 192)."""
    from ultralytics import YOLO

    metrics = YOLO(str(checkpoint), task=task).val(data=str(data), imgsz=imgsz, batch=16, device="cpu", rect=rect,
                                                   plots=False, verbose=False)
    own = {"segment": "seg", "pose": "pose"}.get(task, "box")
    return {"box": [round(float(metrics.box.map50), 4), round(float(metrics.box.map), 4)],
            "own": [round(float(getattr(metrics, own).map50), 4), round(float(getattr(metrics, own).map), 4)]}


def fixture_row(name: str, task: str, tmp: Path) -> dict:
    checkpoint = fixtures.checkpoint(name)
    loaded = load(checkpoint)
    data = shapes_data(tmp / name, ("train", "val"), task)  # ultralytics' validator wants a train entry
    plan = Plan(["onnx", "openvino"], tmp / f"{name}.onnx", onnx_backend.OnnxOptions(imgsz=loaded.imgsz), data=data)
    started = time.perf_counter()
    run = deploy(loaded, plan)
    reference = next(p.accuracy.reference for p in run.parity if p.accuracy)
    theirs = ultralytics_val(checkpoint, data, loaded.imgsz[0], task, rect=False)
    ours = {"box": list(reference.box or (reference.map50, reference.map)), "own": [reference.map50, reference.map]}
    agreement = max(abs(ours[k][i] - theirs[k][i]) for k in ours for i in (0, 1))
    default = ultralytics_val(checkpoint, data, loaded.imgsz[0], task, rect=True)
    return {"fixture": checkpoint.name, "task": task, "metric": reference.metric, "passed": run.passed,
            "seconds": round(time.perf_counter() - started, 1), "parity": run.parity,
            "parity_table": markdown_table(summary_table(run.parity)), "attn_deploy_map": ours,
            "ultralytics_val": theirs, "largest_difference": round(agreement, 4), "ultralytics_val_rect": default}


def family_row(name: str, yaml: str, task: str, end2end: bool, imgsz: int, tmp: Path) -> dict:
    from attn_deploy import save_checkpoint
    from tests.task_models import build

    checkpoint = save_checkpoint(build(yaml, task), tmp / f"{name.split()[0]}.pt", imgsz=imgsz)
    command = [sys.executable, "-m", "attn_deploy", "export", str(checkpoint), "--target", "onnx,openvino",
               "--json", "--force"] + (["--end2end"] if end2end else [])
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    row = {"model": name, "task": task, "imgsz": imgsz, "exit": done.returncode,
           "seconds": round(time.perf_counter() - started, 1)}
    if done.returncode not in (0, 1):
        return {**row, "error": done.stderr.strip().splitlines()[-1:]}
    result = json.loads(done.stdout)
    onnx_row = result["parity"][0]
    worst = {}
    for r in onnx_row["results"]:
        worst[r["name"]] = max(worst.get(r["name"], (0.0, "")), (r["max_abs"], r["worst_field"]))
    detections = [d for p in result["parity"] if p["gating"] for d in p["detections"]]
    return {**row, "passed": result["passed"], "worst_per_output": worst, "matcher": onnx_row["matcher"],
            "instances": min(d["ref_boxes"] for d in detections),
            "recall": min(d["recall"] for d in detections if d["recall"] is not None),
            "precision": min(d["precision"] for d in detections if d["precision"] is not None),
            "rewrites": sorted({r["rule"] for r in (result["rewrite"] or {}).get("layers", []) if r["applied"]}),
            "lint": {lint["target"]: lint["passed"] for lint in result["lint"]}}


def families_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    headers = ["model", "task", "imgsz", "export exit", "element parity, worst per output (ONNX)",
               "instances (least per image)", "det recall / precision (all gating rows)", "matched by", "rules applied"]
    body = []
    for r in rows:
        if "error" in r:
            body.append([r["model"], r["task"], str(r["imgsz"]), str(r["exit"]), " ".join(r["error"]), "", "", "", ""])
            continue
        worst = "; ".join(f"{name} {value:.3g} ({field})" for name, (value, field) in r["worst_per_output"].items())
        body.append([r["model"], r["task"], str(r["imgsz"]), str(r["exit"]), worst, str(r["instances"]),
                     f"{r['recall']:.3f} / {r['precision']:.3f}", r["matcher"], ", ".join(r["rewrites"]) or "-"])
    return headers, body


def agreement_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    headers = ["fixture", "task", "attn-deploy box mAP50 / 50-95", "ultralytics box", "attn-deploy own metric",
               "ultralytics own metric", "largest difference", "ultralytics default (rect) box; own"]
    pair = "{:.4f} / {:.4f}".format
    body = [[r["fixture"], f"{r['task']} ({r['metric']})", pair(*r["attn_deploy_map"]["box"]),
             pair(*r["ultralytics_val"]["box"]), pair(*r["attn_deploy_map"]["own"]), pair(*r["ultralytics_val"]["own"]),
             f"{r['largest_difference']:.4f}",
             f"{pair(*r['ultralytics_val_rect']['box'])}; {pair(*r['ultralytics_val_rect']['own'])}"] for r in rows]
    return headers, body


def main(parts: list[str]) -> None:
    previous = json.loads((OUT / "report.json").read_text()) if (OUT / "report.json").exists() else {}
    summary = {"machine": machine(), "fixtures": previous.get("fixtures", []), "families": previous.get("families", [])}
    with tempfile.TemporaryDirectory() as tmp:
        if "fixtures" in parts:
            trained = {k: v for k, v in FIXTURES.items() if k in fixtures.record()}
            summary["fixtures"] = [fixture_row(name, task, Path(tmp)) for name, task in trained.items()]
        if "families" in parts:
            named = [p for p in parts if p not in ("fixtures", "families")]  # rerun only these, keep the others
            kept = {r["model"]: r for r in summary["families"]}
            summary["families"] = [family_row(*spec, Path(tmp)) if not named or spec[0] in named else kept[spec[0]]
                                   for spec in FAMILIES]
    write_json(OUT / "report.json", summary)
    sections = {"What was run": __doc__.split("\n\n")[1], "Machine": machine_lines(summary["machine"])}
    if summary["fixtures"]:
        sections["mAP: attn-deploy's scorer against ultralytics' validator (PyTorch, same split)"] = (
            "ultralytics' validator is run with rect=False, so that it sees the images at the size attn-deploy scores "
            "them (an export's fixed input); its default (rect=True) pads each batch by half a stride, 160 to 192 "
            "here, shown in the last column.\n\n" + markdown_table(agreement_table(summary["fixtures"])))
        for r in summary["fixtures"]:
            sections[f"{r['fixture']} ({r['task']}; data --data {_data_name(r['task'])}): "
                     f"{'passed' if r['passed'] else 'FAILED'}"] = r["parity_table"]
    if summary["families"]:
        sections["ultralytics families: export --target onnx,openvino"] = markdown_table(
            families_table(summary["families"]))
    write_markdown(OUT / "report.md", "attn-deploy on every ultralytics head", sections)


def _data_name(task: str) -> str:
    return next(name for name, t in SHAPES_TASKS.items() if t == task)


if __name__ == "__main__":
    main(sys.argv[1:] or ["fixtures", "families"])
