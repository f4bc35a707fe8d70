"""The last fork-tree cases: adaptive pooling of unbatched 3-D tensors, down and up (a MLCA variant), and a module
that needs a higher opset than the default (torchvision's DeformConv2d in a D-LKA block), both written
independently in tests/variants.py."""

from pathlib import Path

import onnx
import pytest
import torch
import torch.nn.functional as F

from attn_deploy.errors import AttnDeployError
from attn_deploy.exporters.onnx import OnnxOptions, export
from attn_deploy.loading import LoadedModel
from attn_deploy.models.detector import build_detector_with
from attn_deploy.rewrite import rewrite
from attn_deploy.rewrite.pooling import static_adaptive_pool

from . import variants as v


@pytest.mark.parametrize("func", [F.adaptive_avg_pool2d, F.adaptive_max_pool2d])
@pytest.mark.parametrize("shape,size", [((8, 6, 6), (2, 3)), ((8, 6, 6), (4, 5)), ((8, 1, 1), (3, 3)),
                                        ((8, 2, 3), (4, 6)), ((8, 3, 1), [5, 5])])
def test_static_adaptive_pool_of_an_unbatched_tensor_is_exact(func, shape, size):
    """Down (dividing and not), up from 1x1 and by multiples (nearest), and neither: each as torch pools it."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    y, changed = static_adaptive_pool(func, (x, size), {}, {})
    assert changed and torch.allclose(y, func(x, size), atol=1e-6)


def test_mlca_variant_pooling_3d_tensors_is_rewritten_and_its_ops_counted():
    """Pooling (C, B, 1) up to (C, 2, 2), (C, 4, 4) down to (C, 2, 2) and up again: the rule applies, verified,
    and the rewritten module exports alone (its op counts), upsampling as Resize."""
    model = build_detector_with(v.UnbatchedLocalPooling, imgsz=128)
    report = rewrite(model, (128, 128)).report
    rows = [(r.path, r.rule, r.applied) for r in report.layers]
    assert rows == [("model.10", "adaptive-pool", True)]
    assert "adaptive_avg_pool2d" in report.layers[0].note  # the original does not export alone
    assert report.layers[0].ops_after["Resize"] == 2 and "AveragePool" in report.layers[0].ops_after


@pytest.fixture(scope="module")
def dlka(tmp_path_factory) -> tuple[LoadedModel, Path]:
    model = build_detector_with(v.DeformableLargeKernel, imgsz=64)
    return LoadedModel(model, Path("dlka.pt"), model.names, 32, "detect", (64, 64)), tmp_path_factory.mktemp("dlka")


def test_module_needing_a_higher_opset_gets_it_and_the_report_says_so(dlka):
    loaded, root = dlka
    result = export(loaded, root / "x.onnx", OnnxOptions((64, 64)))
    assert result.notes[:1] == ["opset 19, not the default 18: torchvision::deform_conv2d exists from opset 19 "
                                "(--opset pins one)"]
    written = onnx.load(result.path)
    assert {o.version for o in written.opset_import if o.domain in ("", "ai.onnx")} == {19}
    assert any(n.op_type == "DeformConv" for n in written.graph.node)


def test_pinned_opset_is_kept_and_the_error_names_the_module(dlka):
    loaded, root = dlka
    with pytest.raises(AttnDeployError, match=r"model\.10\.deform \(DeformConv2d\).*needs --opset 19"):
        export(loaded, root / "pinned.onnx", OnnxOptions((64, 64), pinned=True))
    assert not (root / "pinned.onnx").exists()
