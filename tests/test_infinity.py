"""The ±inf rules: masks and cached tensors beyond fp16's range become ±30000, verified, on code of our own and
on RT-DETR's decoder, whose invalid anchors failed the lint."""

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from attn_deploy.exporters.onnx import module_to_onnx
from attn_deploy.lint import lint
from attn_deploy.rewrite import TOLERANCE, LayerCall, rewrite
from attn_deploy.rewrite.infinity import FINITE, FP16_MAX

from . import variants as v

CASES = {
    "masked-fill-band": ("finite-inf", lambda: v.BandAttention(16), (1, 16, 6, 6)),
    "where-finfo-min": ("finite-inf", lambda: v.LowestFloatMask(16), (1, 16, 8, 8)),
    "buffer-causal": ("finite-inf-state", lambda: v.CausalBias(16, 8), (1, 16, 8, 8)),
}


def largest_constant(proto) -> float:
    values = [numpy_helper.to_array(t) for t in proto.graph.initializer]
    values += [numpy_helper.to_array(n.attribute[0].t) for n in proto.graph.node
               if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"]
    return max(float(np.abs(a.astype(np.float64)).max()) for a in values if a.dtype.kind == "f" and a.size)


def exported(module: nn.Module, x: torch.Tensor, path):
    proto = module_to_onnx(module, LayerCall((x,), {}, set()))
    onnx.save(proto, path)
    return proto, {f.check for f in lint(path, "trt").findings}


@pytest.mark.parametrize("rule, build, shape", CASES.values(), ids=CASES.keys())
def test_constants_beyond_fp16_become_finite_and_compute_the_same(rule, build, shape, tmp_path):
    torch.manual_seed(0)
    model, x = nn.Sequential(build()).eval(), torch.randn(shape, generator=torch.Generator().manual_seed(1))
    result = rewrite(model, example=x)
    (layer,) = [layer for layer in result.report.layers if layer.path == "0"]
    assert (layer.rule, layer.applied) == (rule, True), layer.note
    assert layer.max_abs <= TOLERANCE
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), model(x), atol=1e-5, rtol=1e-5)
    before, before_findings = exported(model, x, tmp_path / "before.onnx")
    after, after_findings = exported(result.model, x, tmp_path / "after.onnx")
    assert largest_constant(before) > FP16_MAX and largest_constant(after) == FINITE
    assert "infinite constant" not in after_findings


def test_a_use_where_the_finite_value_computes_otherwise_is_refused():
    class Counts(nn.Module):  # counts the masked entries by comparing with -inf: 30000 is no -inf
        def forward(self, x):
            masked = x.masked_fill(x > 0, float("-inf"))
            return x + (masked == float("-inf")).sum(-1, keepdim=True)

    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    (layer,) = rewrite(nn.Sequential(Counts()), example=x).report.layers
    assert (layer.rule, layer.applied) == ("finite-inf", False) and "exceeds" in layer.note


class Decoder(nn.Module):
    """ultralytics' RTDETRDecoder (small) on three maps of a 416 input, where the border anchors are invalid."""

    def __init__(self):
        super().__init__()
        from ultralytics.nn.modules import RTDETRDecoder

        self.decoder = RTDETRDecoder(nc=3, ch=(8, 8, 8), hd=32, nq=20, ndp=2, nh=2, ndl=1, d_ffn=64)
        self.decoder.export = True  # its inference output alone, as exported

    def forward(self, x):
        maps = [x, nn.functional.avg_pool2d(x, 2), nn.functional.avg_pool2d(x, 4)]
        return self.decoder(maps)


def test_rtdetr_decoder_anchors_become_finite_and_the_graph_passes_the_lint(tmp_path):
    torch.manual_seed(0)
    model, x = Decoder().eval(), torch.rand(1, 8, 52, 52, generator=torch.Generator().manual_seed(1))
    result = rewrite(model, example=x)
    (layer,) = [layer for layer in result.report.layers if layer.path == "decoder"]
    assert (layer.rule, layer.applied) == ("finite-inf-state", True), layer.note
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), model(x))
    _, before = exported(model, x, tmp_path / "before.onnx")
    _, after = exported(result.model, x, tmp_path / "after.onnx")
    assert "infinite constant" in before and "infinite constant" not in after
