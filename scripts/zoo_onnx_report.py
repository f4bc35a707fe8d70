"""Export every zoo detector (YOLOv8n, 640, batch 1, seed 0) to ONNX and record parity or the blocking op.

Writes reports/zoo-onnx/report.json and report.md. Run: python scripts/zoo_onnx_report.py
"""

import tempfile
import time
from pathlib import Path

from attn_deploy import AttnDeployError, OnnxOptions, export_onnx, load, save_checkpoint, verify_export
from attn_deploy.models import ZOO
from attn_deploy.models.detector import build_detector
from attn_deploy.machine import machine
from attn_deploy.report import machine_lines, markdown_table, write_json, write_markdown

OUT = Path("reports/zoo-onnx")


def measure(name: str, root: Path) -> dict:
    loaded = load(save_checkpoint(build_detector(name), root / f"{name}.pt"))
    started = time.perf_counter()
    try:
        path = export_onnx(loaded, root / f"{name}.onnx", OnnxOptions()).path
    except AttnDeployError as e:
        return {"module": name, "export": "failed", "error": str(e).splitlines()[-1].strip()}
    parity = verify_export(path, loaded)
    return {
        "module": name, "export": "ok", "export_s": round(time.perf_counter() - started, 2),
        "parity": "pass" if parity.passed else "FAIL", "max_abs": parity.worst.max_abs,
        "worst_input": parity.worst.input, "fp32_noise": max(r.ref_noise for r in parity.results),
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(name, Path(tmp)) for name in ZOO]
    write_json(OUT / "report.json", {"results": rows, "machine": machine()})
    table = (["module", "export", "parity", "max abs", "worst input", "PyTorch fp32 noise", "blocked by"],
             [[r["module"], r["export"], r.get("parity", "-"), f"{r['max_abs']:.3g}" if "max_abs" in r else "-",
               r.get("worst_input", "-"), f"{r['fp32_noise']:.3g}" if "fp32_noise" in r else "-",
               r.get("error", "-")] for r in rows])
    write_markdown(OUT / "report.md", "Zoo ONNX export and parity (YOLOv8n, 640, batch 1, seed 0)", {
        "Results": markdown_table(table),
        "Machine": machine_lines(machine()),
    })


if __name__ == "__main__":
    main()
