"""The default ONNX export of every zoo detector and both shipped fixtures, run in OpenCV's DNN module.

For each: `export --target onnx` (the rewrites, the graph passes, the lint for the portable onnx target), then the
domains of its ops, the lint for opencv, and parity against the original PyTorch model in OpenCV (the same check
as `verify --runtime opencv`). Zoo detectors are YOLOv8n with the module at P5, seeded, at 64x64 (256x256 for CGA,
whose window attention needs it); the fixtures at 128x128. Writes reports/opencv-parity/report.md and report.json.
"""

import tempfile
from pathlib import Path

import cv2
import onnx

from attn_deploy import fixtures, load, pipeline
from attn_deploy.exporters import onnx as onnx_backend
from attn_deploy.lint import lint
from attn_deploy.loading import LoadedModel
from attn_deploy.models import ZOO
from attn_deploy.models.detector import build_detector
from attn_deploy.report import markdown_table, write_json, write_markdown
from attn_deploy.verify import verify_export

OUT = Path("reports/opencv-parity")
SIZE = {"cga": 256, "fixture": 128}


def _subjects():
    for name in ZOO:
        size = SIZE.get(name, 64)
        model = build_detector(name, imgsz=size)
        yield name, LoadedModel(model, Path(f"{name}.pt"), model.names, 32, "detect", (size, size))
    for name in ("cga", "simam"):
        yield f"fixture {name}", load(fixtures.checkpoint(name))


def _row(name: str, loaded: LoadedModel, tmp: Path) -> dict:
    size = loaded.imgsz if name in ZOO else (SIZE["fixture"],) * 2
    path = tmp / f"{name.replace(' ', '-')}.onnx"
    built = pipeline.build(loaded, pipeline.Plan(["onnx"], path, onnx_backend.OnnxOptions(size, force=True)))
    domains = sorted({n.domain or "ai.onnx" for n in onnx.load(path).graph.node})
    report = verify_export(path, loaded, runtime="opencv")
    return {"model": name, "imgsz": size[0], "domains": domains, "lint onnx": built.lint[0].passed,
            "lint opencv": lint(path, "opencv").passed, "parity": report.passed,
            "max abs": f"{report.worst.max_abs:.3g} ({report.worst.name})"}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rows = [_row(name, loaded, Path(tmp)) for name, loaded in _subjects()]
    write_json(OUT / "report.json", {"opencv": cv2.__version__, "rows": rows})
    table = (list(rows[0]), [[", ".join(v) if isinstance(v, list) else str(v) for v in r.values()] for r in rows])
    write_markdown(OUT / "report.md", f"The default ONNX export in OpenCV {cv2.__version__}'s DNN module", {
        "Method": __doc__.strip().split("\n\n", 1)[1],
        "Results": markdown_table(table),
    })


if __name__ == "__main__":
    main()
