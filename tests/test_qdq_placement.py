"""INT8 Q/DQ placed for the runtime that runs it (exporters/qdq.py): TensorRT's (int8, on Conv/MatMul inputs only)
and onnxruntime's (uint8 activations around every op it has an integer kernel for, int8 per-channel weights),
both with the nodes asked to stay float left alone, both run in onnxruntime (their accuracy is judged by mAP on the
fixtures: scripts/onnx_int8_report.py)."""

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from attn_deploy.exporters import open_runner, qdq


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        y = torch.relu(self.a(x))
        return self.b(y) + y, torch.sigmoid(y.mean((2, 3)))


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("qdq") / "block.onnx"
    torch.onnx.export(_Block().eval(), torch.rand(1, 3, 16, 16), path, input_names=["images"], dynamo=False,
                      output_names=["output0", "output1"], opset_version=18)
    return path


def _quantized(path):
    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    zero_points = {inits[n.input[2]].data_type for n in model.graph.node
                   if n.op_type == "QuantizeLinear" and n.input[0] not in inits and n.input[2] in inits}
    fed = {n.op_type for n in model.graph.node if any(i.endswith("_DequantizeLinear_Output") for i in n.input)}
    return zero_points, fed, model


@pytest.mark.parametrize("placement,activation,ops", [
    ("trt", onnx.TensorProto.INT8, {"Conv"}),
    ("ort", onnx.TensorProto.UINT8, {"Conv", "Add"}),
])
def test_placement_quantizes_what_its_runtime_fuses_and_keeps_float_nodes(source, tmp_path, placement, activation,
                                                                          ops):
    calibration = [np.random.default_rng(i).random((1, 3, 16, 16), dtype=np.float32) for i in range(4)]
    keep = [n.name for n in onnx.load(str(source)).graph.node if n.op_type == "Sigmoid"]
    result = qdq.export(source, tmp_path / "block.int8.onnx", calibration, keep, placement=placement)
    zero_points, fed, model = _quantized(result.path)
    assert zero_points == {activation} and ops <= fed and "Sigmoid" not in fed
    assert f"placed for {placement}" in result.notes[0]
    x = calibration[0]
    expected, got = open_runner(source).run([x]), open_runner(result.path).run([x])
    assert [a.shape for a in expected] == [b.shape for b in got]  # it runs; mAP on the fixtures judges accuracy
