"""Parity of every zoo detector on every backend that runs here, and localisation of a broken export.

For each zoo module at P5 of a seeded YOLOv8n at 640: export with the rewrites to ONNX fp32, the
mixed-precision fp16 ONNX and OpenVINO FP32, check each against the original model (OpenVINO also at
the CPU's default precision), then scale the weights of one convolution inside the attention module in
the fp32 ONNX by 1.5 and check that parity fails and localisation names that module.
Random weights score every anchor between about 1e-4 and 0.02, so the detection-level parity uses
conf 0 (the 300 best boxes after NMS) rather than the predict default 0.25, which finds nothing.
Writes reports/backends/report.md and report.json.
"""

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from attn_deploy import load, save_checkpoint
from attn_deploy.exporters import mixed_precision, onnx as onnx_backend
from attn_deploy.verify import localise_export, verify_export
from attn_deploy.models import ZOO
from attn_deploy.models.detector import build_detector
from attn_deploy.parity import Detections, parity_inputs
from attn_deploy.pipeline import Plan, deploy
from attn_deploy.machine import machine
from attn_deploy.report import machine_lines, markdown_table, summary_row, write_json, write_markdown

OUT = Path("reports/backends")
DETECTIONS = Detections(conf=0.0)
ATTENTION_AT = "model.10"


def broken_copy(source: Path, target: Path) -> str:
    """``source`` with the largest float initializer inside the attention module scaled by 1.5; its name.

    Parameter-free modules (SimAM) still have constants there (lambda, 0.5), and scaling one breaks the output.
    """
    model = onnx.load(str(source))
    scope = f"/{ATTENTION_AT}/"  # node names keep module paths: /model.10/attn/qkvs.0/Conv
    used = {i for n in model.graph.node if n.name.startswith(scope) for i in n.input}
    constants = [a.t for n in model.graph.node if n.op_type == "Constant" and n.output[0] in used
                 for a in n.attribute if a.name == "value"]
    floats = [t for t in [*model.graph.initializer, *constants]
              if (t.name in used or t in constants) and t.data_type == onnx.TensorProto.FLOAT]
    init = max(floats, key=lambda t: int(np.prod(t.dims)))
    init.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(init) * np.float32(1.5), init.name))
    onnx.save(model, str(target))
    return init.name


def localised(path: Path, loaded, semantics: str) -> dict:
    parity = verify_export(path, loaded, semantics=semantics, detections=DETECTIONS)
    loc = localise_export(path, loaded, parity.worst.input, parity.tolerance, semantics)
    return {"caught": not parity.passed, "first": loc.first, "right": loc.first == ATTENTION_AT}


def one(name: str, tmp: Path) -> dict:
    ckpt = save_checkpoint(build_detector(name), tmp / f"yolov8n-{name}.pt")
    loaded = load(ckpt)
    plan = Plan(["onnx", "openvino"], tmp / f"yolov8n-{name}.onnx", onnx_backend.OnnxOptions(), detections=DETECTIONS)
    run = deploy(loaded, plan)
    chosen = mixed_precision.measure(plan.output, parity_inputs(plan.onnx.imgsz))
    half = mixed_precision.export(plan.output, plan.fp16_onnx, chosen)
    semantics = run.rewrite.reference
    run.parity.insert(1, verify_export(half.path, loaded, semantics=semantics, detections=DETECTIONS))
    perturbed = broken_copy(plan.output, tmp / f"broken-{name}.onnx")
    return {"module": name, "rows": [summary_row(p) for p in run.parity], "fp32_kept": half.notes,
            "broken": {"perturbed": perturbed, **localised(tmp / f"broken-{name}.onnx", loaded, semantics)}}


def main() -> None:
    results, started = [], time.perf_counter()
    names = sys.argv[1:] or list(ZOO)
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            print(f"{name} ...", file=sys.stderr, flush=True)
            results.append(one(name, Path(tmp)))
    seconds = time.perf_counter() - started
    write_json(OUT / "report.json", {"results": results, "seconds": seconds, "machine": machine()})
    headers = ["module"] + list(results[0]["rows"][0])
    rows = [[r["module"]] + list(row.values()) for r in results for row in r["rows"]]
    broken = [[r["module"], r["broken"]["perturbed"], "yes" if r["broken"]["caught"] else "NO",
               str(r["broken"]["first"]), "yes" if r["broken"]["right"] else "NO"] for r in results]
    kept = [[r["module"], "; ".join(r["fp32_kept"])] for r in results]
    write_markdown(OUT / "report.md", "Parity of every zoo detector on every backend (YOLOv8n, 640, seeded)", {
        "How": __doc__.strip(),
        "Parity": markdown_table((headers, rows)),
        "Mixed-precision fp16: nodes kept in fp32 (by measurement)": markdown_table((["module", "kept"], kept)),
        "Broken export: caught and localised": markdown_table(
            (["module", "perturbed initializer", "parity caught it", "first departing module", "right module"],
             broken)),
        "Machine": machine_lines(machine()) + f"\n- wall time: {seconds:.0f} s",
    })


if __name__ == "__main__":
    main()
