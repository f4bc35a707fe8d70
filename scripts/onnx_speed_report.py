"""attn-deploy's ONNX exports against ultralytics' own in onnxruntime: fp32, and INT8 in onnxruntime's placement.

For yolov8n-cga-shapes and yolov8n-simam-shapes (attn_deploy/fixtures), at 160 and 640, batch 1, three files:
ultralytics' exporter (``YOLO(pt).export(format="onnx")``) on the same safely loaded model; attn-deploy's
`export --target onnx` (rewrites, graph passes, standard ONNX ops only); and its `--int8` file (Q/DQ in
onnxruntime's placement, calibrated on the shapes train split, the 300 images the CLI takes), each from
`attn-deploy export FIXTURE --imgsz SIZE --int8 --data shapes --json` run beforehand into ARTEFACTS/<fixture>-<size>/
(its JSON beside it gives the INT8 file's mAP50-95 against PyTorch on the 200 validation images). The three are
timed in onnxruntime on --threads threads, interleaved (one run of each per round, the sessions live with spinning
off), and compared by the median over rounds of the per-round ratio, with its 95 % interval: ultralytics /
attn-deploy fp32 (above 1: attn-deploy's fp32 is faster) and attn-deploy fp32 / INT8 (the INT8 speed-up).
Writes reports/onnx-speed/report.md and report.json.
Run: python scripts/onnx_speed_report.py ARTEFACTS [--threads 2]
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

from attn_deploy import fixtures, load
from attn_deploy.bench.harness import compare
from attn_deploy.exporters.onnx import Runner, export_with_ultralytics
from attn_deploy.machine import machine
from attn_deploy.report import machine_lines, markdown_table, write_json, write_markdown

OUT = Path("reports/onnx-speed")
WARMUP = 5
ROUNDS = {160: 150, 640: 30}


def int8_accuracy(exported: dict) -> dict:
    row = next(p for p in exported["parity"] if (p["backend"], p["precision"]) == ("onnxruntime", "int8"))
    accuracy = row["accuracy"]
    return {"map50_95": accuracy["accuracy"]["map"], "reference_map50_95": accuracy["reference"]["map"],
            "drop": -accuracy["delta"]}


def measure(name: str, size: int, artefacts: Path, threads: int, root: Path) -> dict:
    directory = artefacts / f"{name}-{size}"
    stem = directory / f"yolov8n-{name}-shapes"
    paths = {"ultralytics": root / f"{name}-{size}-ultralytics.onnx", "fp32": stem.with_suffix(".onnx"),
             "int8": stem.with_suffix(".int8.onnx")}
    export_with_ultralytics(load(fixtures.checkpoint(name)), paths["ultralytics"], (size, size), force=True)
    runners = {k: Runner(p, threads, spinning=False) for k, p in paths.items()}
    try:
        timed = compare(runners, 1, (size, size), WARMUP, ROUNDS[size])
    finally:
        for runner in runners.values():
            runner.close()
    row = {"model": f"yolov8n-{name}-shapes", "imgsz": size, "threads": threads, "rounds": ROUNDS[size],
           **{f"{k}_ms": timed.latency_ms[k].median for k in paths},
           "fp32_vs_ultralytics": timed.ratio("ultralytics", "fp32"), "int8_vs_fp32": timed.ratio("fp32", "int8"),
           "int8": int8_accuracy(json.loads((artefacts / f"{name}-{size}.json").read_text())),
           "method": timed.method}
    print(row, file=sys.stderr, flush=True)
    return row


def _ratio(value: list[float]) -> str:
    return f"{value[0]:.2f}x [{value[1]:.2f}, {value[2]:.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("artefacts", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(name, size, args.artefacts, args.threads, Path(tmp)) for size in (160, 640)
                for name in ("cga", "simam")]
    write_json(OUT / "report.json", {"machine": machine(), "rows": rows})
    table = (["model", "imgsz", "ultralytics fp32 ms", "attn-deploy fp32 ms", "attn-deploy INT8 ms",
              "fp32: ultralytics / attn-deploy", "INT8: fp32 / INT8", "INT8 mAP50-95 (PyTorch)", "INT8 drop"],
             [[r["model"], str(r["imgsz"]), f"{r['ultralytics_ms']:.2f}", f"{r['fp32_ms']:.2f}", f"{r['int8_ms']:.2f}",
               _ratio(r["fp32_vs_ultralytics"]), _ratio(r["int8_vs_fp32"]),
               f"{r['int8']['map50_95']:.4f} ({r['int8']['reference_map50_95']:.4f})", f"{r['int8']['drop']:+.4f}"]
              for r in rows])
    write_markdown(OUT / "report.md", "ONNX in onnxruntime: attn-deploy's fp32 and INT8 against ultralytics' fp32", {
        "Method": __doc__.strip().split("\n\n", 1)[1], "Results": markdown_table(table),
        "Machine": machine_lines(machine())})


if __name__ == "__main__":
    main()
