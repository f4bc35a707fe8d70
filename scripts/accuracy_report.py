"""mAP parity of the trained fixtures on every backend that runs here, and what INT8 costs and gains.

For yolov8n-cga-shapes and yolov8n-simam-shapes (attn_deploy/fixtures): export with the rewrites to
ONNX fp32, the mixed-precision fp16 ONNX, the Q/DQ INT8 ONNX, OpenVINO FP32 and OpenVINO INT8 (NNCF),
each OpenVINO IR also at the CPU's default precision; score mAP50 and mAP50-95 on the validation split
regenerated from the seed, next to PyTorch's; time fp32 against INT8 with the bench harness (batch 1,
2 threads). ultralytics' own validator on the same checkpoint and split cross-checks the scorer.
Writes reports/accuracy/report.md and report.json.
"""

import sys
import tempfile
import time
from pathlib import Path

from attn_deploy import fixtures, load
from attn_deploy.bench.harness import Budget, bench
from attn_deploy.data import shapes_data
from attn_deploy.exporters import mixed_precision, open_runner
from attn_deploy.exporters import onnx as onnx_backend
from attn_deploy.parity import parity_inputs
from attn_deploy.pipeline import Deployment, Plan, check, deploy
from attn_deploy.machine import machine
from attn_deploy.report import machine_lines, markdown_table, summary_table, write_json, write_markdown

OUT = Path("reports/accuracy")
NAMES = ("cga", "simam")
TIMED = [  # (label, artefact suffix, OpenVINO precision)
    ("onnxruntime fp32", ".onnx", "fp32"), ("onnxruntime int8 (Q/DQ)", ".int8.onnx", "fp32"),
    ("openvino fp32 (f32 hint)", "_openvino_model", "fp32"),
    ("openvino int8 (f32 hint)", "_int8_openvino_model", "fp32"),
    ("openvino default (bf16)", "_openvino_model", None), ("openvino int8 (default)", "_int8_openvino_model", None),
]


def ultralytics_val(checkpoint: Path, data: Path, imgsz: int) -> dict:
    from ultralytics import YOLO

    metrics = YOLO(str(checkpoint)).val(data=str(data), imgsz=imgsz, batch=16, device="cpu", plots=False,
                                        verbose=False)
    return {"mAP50": round(float(metrics.box.map50), 4), "mAP50-95": round(float(metrics.box.map), 4)}


def latency(stem: Path) -> list[dict]:
    rows = []
    for label, suffix, precision in TIMED:
        runner = open_runner(stem.with_name(stem.name + suffix), threads=2, ov_precision=precision)
        result = bench(runner, stem.name, 1, runner_imgsz(runner), Budget(warmup_s=1.0, iters=200, duration_s=0.0),
                       threads=2)
        runner.close()
        rows.append({"backend": label, "median ms": round(result.latency_ms.median, 3),
                     "p90 ms": round(result.latency_ms.p90, 3), "images/s": round(result.throughput, 1)})
    return rows


def runner_imgsz(runner) -> tuple[int, int]:
    from attn_deploy.exporters import input_geometry

    return input_geometry(runner)[1]


def one(name: str, data: Path, tmp: Path) -> dict:
    checkpoint = fixtures.checkpoint(name)
    loaded = load(checkpoint)
    stem = tmp / f"yolov8n-{name}-shapes"
    plan = Plan(["onnx", "openvino"], stem.with_suffix(".onnx"), onnx_backend.OnnxOptions(imgsz=loaded.imgsz),
                data=data, int8=True, calib=data)
    started = time.perf_counter()
    run = deploy(loaded, plan)
    # The mixed fp16 ONNX beside FP32 OpenVINO weights (export --half would make the IR FP16 as well).
    chosen = mixed_precision.measure(plan.output, parity_inputs(loaded.imgsz))
    fp16 = mixed_precision.export(plan.output, plan.fp16_onnx, chosen, force=True)
    extra = check(loaded, Deployment(None, [fp16]), plan, run.rewrite.reference if run.rewrite else "eager")
    run.exports.insert(1, fp16)
    run.parity.insert(1, extra.parity[0])
    seconds = time.perf_counter() - started
    speed = latency(stem)
    return {"checkpoint": checkpoint.name, "passed": run.passed, "seconds": round(seconds, 1), "parity": run.parity,
            "exports": run.exports, "latency": speed, "ultralytics_val": ultralytics_val(checkpoint, data,
                                                                                          loaded.imgsz[0])}


def latency_table(speed: list[dict]):
    return ["backend", "median ms", "p90 ms", "images/s"], [[str(v) for v in row.values()] for row in speed]


def speedups(speed: list[dict]) -> list[list[str]]:
    by = {row["backend"]: row["median ms"] for row in speed}
    pairs = [("onnxruntime", "onnxruntime fp32", "onnxruntime int8 (Q/DQ)"),
             ("openvino, f32 hint", "openvino fp32 (f32 hint)", "openvino int8 (f32 hint)"),
             ("openvino, CPU default", "openvino default (bf16)", "openvino int8 (default)")]
    return [[label, f"{by[a]:.2f}", f"{by[b]:.2f}", f"{by[a] / by[b]:.2f}x"] for label, a, b in pairs]


def main() -> int:
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = shapes_data(Path(tmp), ("train", "val"))
        for name in NAMES:
            results[name] = one(name, data, Path(tmp))
            print(name, "passed" if results[name]["passed"] else "FAILED", flush=True)
    record = fixtures.record()
    write_json(OUT / "report.json", {"fixtures": record, "results": results, "machine": machine()})
    sections = {}
    for name, result in results.items():
        train = record[name]
        sections[f"yolov8n-{name}-shapes ({'passed' if result['passed'] else 'FAILED'})"] = "\n\n".join([
            f"Trained {train['train_args']['epochs']} epochs at {train['train_args']['imgsz']} px in "
            f"{train['train_seconds'] / 60:.1f} min; the trainer's final validation: mAP50 {train['mAP50']}, "
            f"mAP50-95 {train['mAP50-95']}. ultralytics' validator on the committed checkpoint: "
            f"{result['ultralytics_val']}.",
            markdown_table(summary_table(result["parity"])),
            markdown_table(latency_table(result["latency"])),
            markdown_table((["INT8 speed-up", "fp32 median ms", "int8 median ms", "speed-up"],
                            speedups(result["latency"]))),
        ])
    sections["Machine"] = machine_lines(machine())
    write_markdown(OUT / "report.md", "Accuracy parity (mAP) of the trained fixtures, and INT8", sections)
    return 0 if all(r["passed"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
