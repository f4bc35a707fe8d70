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

With --zoo (no ARTEFACTS): every zoo detector (YOLOv8n with the module at P5, seeded, norms calibrated at the
size), fp32 only, at --sizes (default 160 and 640; CGA at 224 at least, the smallest it runs at): ultralytics'
exporter against attn-deploy's `export --target onnx`, timed and compared as above. Writes reports/onnx-speed/zoo.md
and zoo.json.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

from attn_deploy import AttnDeployError, OnnxOptions, fixtures, load, pipeline, save_checkpoint
from attn_deploy.bench.harness import compare
from attn_deploy.exporters.onnx import Runner, export_with_ultralytics
from attn_deploy.machine import machine
from attn_deploy.models import ZOO
from attn_deploy.models.detector import build_detector
from attn_deploy.report import machine_lines, markdown_table, write_json, write_markdown

OUT = Path("reports/onnx-speed")
WARMUP = 5
ROUNDS = {160: 150, 224: 100, 640: 30}
SMALLEST = {"cga": 224}  # CGA's attention biases are built for 7x7 windows: its P5 map must be 7x7 at least


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
    timed = _timed(paths, size, threads)
    row = {"model": f"yolov8n-{name}-shapes", "imgsz": size, "threads": threads, "rounds": ROUNDS[size],
           **{f"{k}_ms": timed.latency_ms[k].median for k in paths},
           "fp32_vs_ultralytics": timed.ratio("ultralytics", "fp32"), "int8_vs_fp32": timed.ratio("fp32", "int8"),
           "int8": int8_accuracy(json.loads((artefacts / f"{name}-{size}.json").read_text())),
           "method": timed.method}
    print(row, file=sys.stderr, flush=True)
    return row


def _timed(paths: dict[str, Path], size: int, threads: int):
    runners = {k: Runner(p, threads, spinning=False) for k, p in paths.items()}
    try:
        return compare(runners, 1, (size, size), WARMUP, ROUNDS[size])
    finally:
        for runner in runners.values():
            runner.close()


def measure_zoo(name: str, size: int, threads: int, root: Path) -> dict:
    """A zoo detector's fp32 exports, ultralytics' and attn-deploy's, timed against each other."""
    size = max(size, SMALLEST.get(name, size))
    loaded = load(save_checkpoint(build_detector(name, imgsz=size), root / f"{name}-{size}.pt", imgsz=size))
    paths = {"ultralytics": root / f"{name}-{size}-ultralytics.onnx", "fp32": root / f"{name}-{size}.onnx"}
    row = {"model": f"yolov8n-{name}", "imgsz": size, "threads": threads, "rounds": ROUNDS[size]}
    pipeline.build(loaded, pipeline.Plan(["onnx"], paths["fp32"], OnnxOptions((size, size), force=True)))
    try:
        export_with_ultralytics(loaded, paths["ultralytics"], (size, size), force=True)
    except AttnDeployError as e:
        row |= {"ultralytics_error": str(e).split(": ", 1)[-1][:200]}
        paths.pop("ultralytics")
    try:
        timed = _timed(paths, size, threads)
    except AttnDeployError as e:  # an export onnxruntime cannot load is a row that says so
        return row | {"error": str(e)[:300]}
    row |= {f"{k}_ms": timed.latency_ms[k].median for k in paths}
    if "ultralytics" in paths:
        row |= {"fp32_vs_ultralytics": timed.ratio("ultralytics", "fp32"), "method": timed.method}
    print(row, file=sys.stderr, flush=True)
    return row


def write_zoo(rows: list[dict]) -> None:
    write_json(OUT / "zoo.json", {"machine": machine(), "rows": rows})
    table = (["model", "imgsz", "ultralytics fp32 ms", "attn-deploy fp32 ms", "fp32: ultralytics / attn-deploy"],
             [[r["model"], str(r["imgsz"]), f"{r['ultralytics_ms']:.2f}" if "ultralytics_ms" in r else
               f"cannot export: {r.get('ultralytics_error', '-')}", f"{r['fp32_ms']:.2f}" if "fp32_ms" in r else
               f"FAILS: {r['error']}",
               _ratio(r["fp32_vs_ultralytics"]) if "fp32_vs_ultralytics" in r else "-"] for r in rows])
    method = __doc__.strip().split("\n\n", 1)[1]
    write_markdown(OUT / "zoo.md", "Zoo detectors in onnxruntime: attn-deploy's fp32 ONNX against ultralytics'", {
        "Method": method, "Results": markdown_table(table), "Machine": machine_lines(machine())})


def _ratio(value: list[float]) -> str:
    return f"{value[0]:.2f}x [{value[1]:.2f}, {value[2]:.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("artefacts", type=Path, nargs="?")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--zoo", action="store_true", help="the zoo detectors, fp32 only")
    parser.add_argument("--sizes", type=int, nargs="+", default=[160, 640], help="with --zoo: the sizes to time at")
    args = parser.parse_args()
    if args.zoo:
        rows = []
        with tempfile.TemporaryDirectory() as tmp:
            for size in args.sizes:
                for name in ZOO:
                    rows.append(measure_zoo(name, size, args.threads, Path(tmp)))
                    write_zoo(rows)  # after every row: a long run leaves what it measured
        return
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
