"""INT8 for onnxruntime: `export --int8 --target onnx` (Q/DQ placed for onnxruntime: every op type, uint8 activations
with min-max ranges, int8 per-channel weights, the head's decode and the measured sensitive nodes in float) against
the fp32 ONNX it was built from.

For yolov8n-cga-shapes and yolov8n-simam-shapes (attn_deploy/fixtures) at the sizes given (default 160 and 640),
batch 1: mAP50-95 of each on the validation split of the procedural shapes data regenerated from its seed, against
PyTorch's (the pipeline's accuracy check; budget 0.005), calibrated on its train split; then both timed in
onnxruntime on 2 threads, interleaved (one run of each per round, fp32 first, both sessions live with spinning
off), compared by the median over rounds of the per-round ratio fp32 / int8, with its 95 % interval. The machine
was shared with other jobs while this ran: the interleaving makes load hit both alike, the absolute medians are
not the machine's best. Writes reports/onnx-int8/report.md and report.json. Run: python scripts/onnx_int8_report.py
[SIZE ...]
"""

import sys
import tempfile
from pathlib import Path

from attn_deploy import fixtures, load, pipeline
from attn_deploy.bench.harness import compare
from attn_deploy.data import shapes_data
from attn_deploy.exporters.onnx import OnnxOptions, Runner
from attn_deploy.machine import machine
from attn_deploy.report import machine_lines, markdown_table, write_json, write_markdown

OUT = Path("reports/onnx-int8")
THREADS, WARMUP = 2, 5
ROUNDS = {160: 200, 640: 40}


def measure(name: str, size: int, data: Path, root: Path) -> dict:
    loaded = load(fixtures.checkpoint(name))
    plan = pipeline.Plan(["onnx"], root / f"{name}-{size}.onnx", OnnxOptions((size, size), force=True), data=data,
                         int8=True, calib=data)
    run = pipeline.deploy(loaded, plan)
    fp32, int8 = (next(p for p in run.parity if p.precision == precision) for precision in ("fp32", "int8"))
    runners = {"fp32": Runner(plan.output, THREADS, spinning=False), "int8": Runner(plan.int8_onnx, THREADS,
                                                                                    spinning=False)}
    try:
        timed = compare(runners, 1, (size, size), WARMUP, ROUNDS.get(size, 40))
    finally:
        for runner in runners.values():
            runner.close()
    speedup, low, high = timed.ratio("fp32", "int8")
    row = {"model": f"yolov8n-{name}-shapes", "imgsz": size, "map_fp32": fp32.accuracy.accuracy.map,
           "map_int8": int8.accuracy.accuracy.map, "map_drop_int8": -int8.accuracy.delta,
           "int8_passed": int8.passed, "fp32_ms": timed.latency_ms["fp32"].median,
           "int8_ms": timed.latency_ms["int8"].median, "speedup": speedup, "interval": [low, high],
           "notes": run.exports[-1].notes, "method": timed.method}
    print(row, file=sys.stderr, flush=True)
    return row


def main() -> None:
    sizes = [int(s) for s in sys.argv[1:]] or [160, 640]
    with tempfile.TemporaryDirectory() as tmp:
        data = shapes_data(Path(tmp), ("train", "val"))
        rows = [measure(name, size, data, Path(tmp)) for size in sizes for name in ("cga", "simam")]
    write_json(OUT / "report.json", {"machine": machine(), "rows": rows})
    table = (["model", "imgsz", "mAP50-95 fp32", "mAP50-95 int8 (drop)", "fp32 ms", "int8 ms", "speedup fp32 / int8"],
             [[r["model"], str(r["imgsz"]), f"{r['map_fp32']:.4f}", f"{r['map_int8']:.4f} ({r['map_drop_int8']:+.4f})",
               f"{r['fp32_ms']:.2f}", f"{r['int8_ms']:.2f}",
               f"{r['speedup']:.2f}x [{r['interval'][0]:.2f}, {r['interval'][1]:.2f}]"] for r in rows])
    write_markdown(OUT / "report.md", "INT8 for onnxruntime against fp32", {
        "Method": __doc__.strip().split("\n\n", 1)[1], "Results": markdown_table(table),
        "Machine": machine_lines(machine())})


if __name__ == "__main__":
    main()
