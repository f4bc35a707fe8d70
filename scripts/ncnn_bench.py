"""ncnn beside onnxruntime and OpenVINO on the trained fixtures: single-image latency at 1 and 2 threads.

Each fixture is exported once per size with `--target ncnn` (the ONNX onnxruntime runs and OpenVINO converts is the
one pnnx converted, so every runtime runs the same graph), then timed in ROUNDS interleaved rounds: each runtime is
opened, timed by the bench harness and closed before the next (one live runtime at a time: ncnn and onnxruntime
live in one process fight over the cores). A median is the median of the rounds' medians; a ratio is the median of
the per-round ratios to onnxruntime at the same thread count.

Writes reports/ncnn/bench.json and bench.md. Run: python scripts/ncnn_bench.py [--sizes 160,640] [--rounds 3] [--render]
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's attn_deploy, whichever is installed

from attn_deploy import Budget, OnnxOptions, bench, fixtures, load, pipeline  # noqa: E402
from attn_deploy.exporters import ncnn, onnx, openvino  # noqa: E402
from attn_deploy.machine import machine  # noqa: E402
from attn_deploy.report import machine_lines, markdown_table, write_json, write_markdown  # noqa: E402

OUT = ROOT / "reports/ncnn"
BUDGET = Budget(warmup_s=0.5, iters=10, duration_s=1.5)
RUNTIMES = {  # name -> how to open it on (threads, the ONNX file)
    "onnxruntime fp32": lambda t, p: onnx.Runner(p, t, spinning=False),
    "OpenVINO fp32 latency": lambda t, p: openvino.Runner(openvino.model_dir(p), threads=t),
    "ncnn fp32": lambda t, p: ncnn.Runner(ncnn.model_dir(p), t, ncnn.NcnnSettings("fp32")),
    "ncnn fp32 unpacked": lambda t, p: ncnn.Runner(ncnn.model_dir(p), t, ncnn.NcnnSettings("fp32", packing=False)),
    "ncnn fp16": lambda t, p: ncnn.Runner(ncnn.model_dir(p), t, ncnn.NcnnSettings("fp16")),
    "ncnn bf16": lambda t, p: ncnn.Runner(ncnn.model_dir(p), t, ncnn.NcnnSettings("bf16")),
}


def built(name: str, size: int, root: Path) -> Path:
    loaded = load(fixtures.checkpoint(name))
    plan = pipeline.Plan(["ncnn"], root / f"{name}-{size}.onnx", OnnxOptions((size, size), force=True))
    pipeline.build(loaded, plan)
    openvino.export(plan.output, openvino.model_dir(plan.output), openvino.OpenVINOOptions(force=True))
    return plan.output


def timed(path: Path, size: int, threads: int, rounds: int) -> dict[str, dict]:
    medians: dict[str, list[float]] = {name: [] for name in RUNTIMES}
    for _ in range(rounds):
        for name, opened in RUNTIMES.items():
            runner = opened(threads, path)
            try:
                medians[name].append(bench(runner, name, 1, (size, size), BUDGET, threads).latency_ms.median)
            finally:
                runner.close()
    base = np.array(medians["onnxruntime fp32"])
    return {name: {"median_ms": float(np.median(ms)), "to_onnxruntime": float(np.median(np.array(ms) / base)),
                   "rounds_ms": ms} for name, ms in medians.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="160,640")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--render", action="store_true", help="rewrite bench.md from bench.json, timing nothing")
    args = parser.parse_args()
    if args.render:
        found = json.loads((OUT / "bench.json").read_text())
        write(found["rows"], found["rounds"], found["machine"])
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            for name in ("cga", "simam"):
                path = built(name, size, Path(tmp))
                for threads in (1, 2):
                    for runtime, found in timed(path, size, threads, args.rounds).items():
                        rows.append({"fixture": name, "imgsz": size, "threads": threads, "runtime": runtime, **found})
                        print(rows[-1], flush=True)
    write_json(OUT / "bench.json", {"rounds": args.rounds, "budget": BUDGET, "rows": rows, "machine": machine()})
    write(rows, args.rounds, machine())


def write(rows: list[dict], rounds: int, facts: dict) -> None:
    table = markdown_table((["fixture", "imgsz", "threads", "runtime", "median ms", "x onnxruntime (median of rounds)"],
                            [[r["fixture"], str(r["imgsz"]), str(r["threads"]), r["runtime"], f"{r['median_ms']:.1f}",
                              f"{r['to_onnxruntime']:.2f}"] for r in rows]))
    method = (f"Single-image latency of the trained YOLOv8n-CGA and -SimAM fixtures, exported with `--target ncnn` "
              f"(every runtime runs the same rewritten graph; OpenVINO with the f32 hint, its latency mode), "
              f"{rounds} interleaved round(s), one live runtime at a time, each timed by the bench harness "
              f"({BUDGET.warmup_s:g} s warm-up, at least {BUDGET.iters} runs and {BUDGET.duration_s:g} s). "
              "Nothing else ran on the machine meanwhile (load average 0.1 before the run). The ratio column is "
              "runtime / onnxruntime: above 1, slower than onnxruntime at the same thread count. The CPU shows AVX2 "
              "only (no AVX-512, no VNNI, no fp16 arithmetic): ncnn's fp16 and bf16 rows store in those types and "
              "compute in fp32.")
    write_markdown(OUT / "bench.md", "ncnn beside onnxruntime and OpenVINO", {
        "Method": method, "Latency": table, "Machine": machine_lines(facts)})


if __name__ == "__main__":
    main()
