"""One ONNX op at a time through pnnx and ncnn: the evidence behind the ncnn lint's op list (lint/support.py NCNN).

Each case is a one-op (or few-op) torch function on a (1, 8, 6, 6) input, exported to ONNX (opset 18), converted
by attn-deploy's ncnn export (pnnx) and run in ncnn at fp32, its output compared with onnxruntime's. Each case runs
in a process of its own, so a converter or runtime crash is a row, not the end of the probe.

Writes reports/ncnn/ops.md. Run: python scripts/ncnn_op_probe.py
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OUT = ROOT / "reports/ncnn"
CASES = {  # name -> the torch expression of x
    "Erf": "torch.erf(x)",
    "Gelu (Erf, Div, Mul, Add)": "F.gelu(x)",
    "Expand": "x[:, :1].expand(1, 8, 6, 6) + x",
    "Tile": "x.repeat(1, 1, 2, 1)",
    "Where, Greater": "torch.where(x > 0, x, x * 0.1)",
    "Equal, Cast": "(x == 0).float() + x",
    "GridSample": "F.grid_sample(x, torch.linspace(-1, 1, 72).reshape(1, 6, 6, 2), align_corners=False)",
    "Gather (constant index, axis 1)": "x[:, 3]",
    "CumSum": "x.cumsum(2)",
    "Einsum": "torch.einsum('bchw,bcHw->bhH', x, x)",
    "TopK": "x.flatten(1).topk(5)[0]",
    "LayerNormalization": "F.layer_norm(x, (6,))",
    "GroupNorm (InstanceNormalization, Reshape)": "F.group_norm(x, 2)",
    "Mod": "torch.fmod(x, 0.3)",
    "ReduceL2 (axis 1)": "x.norm(dim=1, keepdim=True)",
    "ReduceMean (axis 1)": "x.mean(1, keepdim=True)",
    "DepthToSpace": "F.pixel_shuffle(x, 2)",
    "Softmax (axis 1)": "x.softmax(1)",
    "LogSoftmax (axis 1)": "x.log_softmax(1)",
    "Softplus": "F.softplus(x)",
    "HardSwish": "F.hardswish(x)",
    "Mish (Softplus, Tanh, Mul)": "F.mish(x)",
    "Reciprocal": "1 / (x.abs() + 1)",
    "Round": "torch.round(x * 4)",
    "Pow": "x.abs() ** 1.5",
    "Max, Slice with a negative step (flip)": "torch.maximum(x, x.flip(1))",
    "MatMul": "x @ x.transpose(-1, -2)",
    "Transpose of rank 5": "x.reshape(1, 2, 4, 6, 6).permute(0, 2, 1, 4, 3).reshape(1, 8, 6, 6)",
    "Concat along the batch axis": "torch.cat([x, x * 2], 0).sum(0, keepdim=True)",
}

ONE = '''
import sys, tempfile, numpy as np, onnx, onnxruntime, torch
import torch.nn.functional as F
from pathlib import Path
sys.path.insert(0, {root!r})
from attn_deploy.errors import AttnDeployError
from attn_deploy.exporters import ncnn

class Case(torch.nn.Module):
    def forward(self, x):
        return {expr}

x, root = torch.randn(1, 8, 6, 6, generator=torch.Generator().manual_seed(0)), Path(tempfile.mkdtemp())
torch.onnx.export(Case(), (x,), str(root / "m.onnx"), opset_version=18, input_names=["images"],
                  output_names=["output0"], dynamo=False)
ops = sorted({{n.op_type for n in onnx.load(str(root / "m.onnx")).graph.node}} - {{"Constant"}})
ref = onnxruntime.InferenceSession(str(root / "m.onnx")).run(None, {{"images": x.numpy()}})[0]
try:
    runner = ncnn.Runner(ncnn.export(root / "m.onnx", root / "m_ncnn_model", ncnn.NcnnOptions()).path)
    got = runner.run([x.numpy()])[0]
    verdict = (f"runs, max abs {{np.abs(got - ref).max():.2g}}" if got.shape == ref.shape else
               f"runs, WRONG shape {{got.shape}} (onnxruntime {{ref.shape}})")
except AttnDeployError as e:
    verdict = "refused: " + str(e).replace(str(root), "").split("(exit")[0][:200]
print(", ".join(ops) + "|" + verdict)
'''


def probe(expr: str) -> tuple[str, str]:
    done = subprocess.run([sys.executable, "-c", ONE.format(root=str(ROOT), expr=expr)], capture_output=True,
                          text=True, timeout=300)
    line = next((line for line in done.stdout.splitlines() if "|" in line), None)
    if line is None:
        return "-", f"the process died (exit {done.returncode})"
    ops, verdict = line.split("|", 1)
    return ops, verdict


def main() -> None:
    from attn_deploy.exporters import ncnn
    from attn_deploy.report import markdown_table, write_markdown

    rows = []
    for name, expr in CASES.items():
        ops, verdict = probe(expr)
        rows.append([name, f"`{expr}`", ops, verdict])
        print(rows[-1], flush=True)
    ncnn_version, pnnx_version = ncnn.version()
    method = (f"Each case exported to ONNX (opset 18) from a (1, 8, 6, 6) input, converted by pnnx {pnnx_version} "
              f"(attn-deploy's ncnn export) and run in ncnn {ncnn_version} at fp32, against onnxruntime. A WRONG "
              "shape or a large max abs is a silent mis-conversion: pnnx and ncnn both accepted the model.")
    write_markdown(OUT / "ops.md", "ONNX ops through pnnx and ncnn, one at a time",
                   {"Method": method, "Ops": markdown_table((["case", "torch", "ONNX ops", "pnnx and ncnn"], rows))})


if __name__ == "__main__":
    main()
