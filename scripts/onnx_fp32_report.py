"""attn-deploy's default fp32 ONNX export against ultralytics' own (``YOLO(pt).export(format="onnx")``) in onnxruntime.

For yolov8n-cga-shapes and yolov8n-simam-shapes (attn_deploy/fixtures), at 160 and 640, batch 1: attn-deploy's
`export --target onnx` (rewrites, graph passes, standard ONNX ops only) and ultralytics' exporter on the same
safely loaded model. Both are timed in onnxruntime on 2 threads, interleaved (one run of each per round, the
ultralytics file first, both sessions live with spinning off), and compared by the median over rounds of the
per-round ratio ultralytics / attn-deploy (above 1: attn-deploy is faster), with its 95 % interval. The machine
was shared with other jobs while this ran: the interleaving makes load hit both alike, the absolute medians are
not the machine's best. Writes reports/onnx-fp32/report.md and report.json.
"""

import sys
import tempfile
from pathlib import Path

from attn_deploy import fixtures, load, pipeline
from attn_deploy.bench.harness import compare
from attn_deploy.exporters.onnx import OnnxOptions, Runner, export_with_ultralytics
from attn_deploy.machine import machine
from attn_deploy.report import machine_lines, markdown_table, write_json, write_markdown

OUT = Path("reports/onnx-fp32")
THREADS, WARMUP = 2, 5
ROUNDS = {160: 200, 640: 40}


def measure(name: str, size: int, root: Path) -> dict:
    loaded = load(fixtures.checkpoint(name))
    paths = {"ultralytics": root / f"{name}-{size}-ultralytics.onnx", "attn-deploy": root / f"{name}-{size}.onnx"}
    export_with_ultralytics(loaded, paths["ultralytics"], (size, size), force=True)
    pipeline.build(loaded, pipeline.Plan(["onnx"], paths["attn-deploy"], OnnxOptions((size, size), force=True)))
    runners = {k: Runner(p, THREADS, spinning=False) for k, p in paths.items()}
    try:
        timed = compare(runners, 1, (size, size), WARMUP, ROUNDS[size])
    finally:
        for runner in runners.values():
            runner.close()
    speedup, low, high = timed.ratio("ultralytics", "attn-deploy")
    row = {"model": f"yolov8n-{name}-shapes", "imgsz": size, "rounds": ROUNDS[size],
           "ultralytics_ms": timed.latency_ms["ultralytics"].median,
           "attn_deploy_ms": timed.latency_ms["attn-deploy"].median, "speedup": speedup, "interval": [low, high],
           "method": timed.method}
    print(row, file=sys.stderr, flush=True)
    return row


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(name, size, Path(tmp)) for size in (160, 640) for name in ("cga", "simam")]
    write_json(OUT / "report.json", {"machine": machine(), "rows": rows})
    table = (["model", "imgsz", "ultralytics ms", "attn-deploy ms", "speedup (ultralytics / attn-deploy)", "rounds"],
             [[r["model"], str(r["imgsz"]), f"{r['ultralytics_ms']:.2f}", f"{r['attn_deploy_ms']:.2f}",
               f"{r['speedup']:.3f}x [{r['interval'][0]:.3f}, {r['interval'][1]:.3f}]", str(r["rounds"])]
              for r in rows])
    write_markdown(OUT / "report.md", "fp32 ONNX in onnxruntime: attn-deploy's export against ultralytics'", {
        "Method": __doc__.strip().split("\n\n", 1)[1], "Results": markdown_table(table),
        "Machine": machine_lines(machine())})


if __name__ == "__main__":
    main()
