"""The rewrite engine on each zoo module and on independently written variants, then on whole detectors."""

import dataclasses

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from attn_deploy import parity
from attn_deploy.loading import load
from attn_deploy.errors import AttnDeployError
from attn_deploy.exporters import open_runner
from attn_deploy.verify import verify_export
from attn_deploy.exporters import torch as torch_backend
from attn_deploy.exporters.onnx import OnnxOptions, export, module_to_onnx
from attn_deploy.lint import lint
from attn_deploy.models import ZOO, CrissCrossAttention, GAMAttention, GatherExcite, MHSA, S2Attention, SimAM
from attn_deploy.models.efficientvit import CascadedGroupAttention, LocalWindowAttention
from attn_deploy.rewrite import RULES, TOLERANCE, LayerCall, TrueShifts, rewrite
from attn_deploy.rewrite.cga import StaticCascadedGroupAttention
from attn_deploy.rewrite.criss_cross import StaticCrissCross

from . import variants as v


@dataclasses.dataclass
class Case:
    rule: str
    build: object
    shape: tuple
    path: str = "0"
    before_fails: bool = True  # the original does not export, or its graph fails the NPU lint
    dynamic: bool = False
    absent_after: str = ""  # an op type the rewritten graph must not hold


CASES = {
    "roll-variant-swin": Case("roll", lambda: v.CyclicShift(32), (1, 32, 20, 20), before_fails=False),
    "s2-zoo": Case("s2-shift", lambda: S2Attention(32), (1, 32, 20, 20)),
    "s2-variant": Case("s2-shift", lambda: v.ShiftMixer(32), (1, 32, 20, 20)),
    "pool-zoo-ge-theta": Case("adaptive-pool", lambda: GatherExcite(64, 7, extra_params=True), (1, 64, 20, 20),
                              path="0.gather.pool"),
    "pool-variant-max-avg": Case("adaptive-pool", v.PyramidGate, (1, 16, 20, 20)),
    "criss-cross-zoo": Case("criss-cross", lambda: CrissCrossAttention(64), (1, 64, 20, 20)),
    "criss-cross-variant-eye-einsum": Case("criss-cross", lambda: v.CrissCrossEye(64), (1, 64, 20, 20)),
    "linear-conv-zoo-gam": Case("linear-conv", lambda: GAMAttention(64), (1, 64, 20, 20), before_fails=False,
                                absent_after="Transpose"),
    "linear-conv-variant": Case("linear-conv", lambda: v.GamLinear(64), (1, 64, 20, 20), before_fails=False,
                                absent_after="Transpose"),
    "resize-zoo-ge-e2": Case("static-resize", lambda: GatherExcite(64, extent=2), (1, 64, 20, 20), dynamic=True),
    "resize-variant-bilinear": Case("static-resize", v.UpsampleGate, (1, 16, 20, 20), dynamic=True),
    "resize-variant-odd-size": Case("static-resize", lambda: v.UpsampleGate("nearest"), (1, 16, 15, 15), dynamic=True),
    # 3 -> 5: 5 / 3 in float32, times 3 in float64, floors to 4 (a file onnxruntime refuses); a size is kept
    "resize-zoo-ge-e2-p5-at-160": Case("static-resize", lambda: GatherExcite(64, extent=2), (1, 64, 5, 5),
                                       before_fails=False),
    "resize-variant-5-from-3": Case("static-resize", lambda: v.UpsampleGate("nearest"), (1, 16, 5, 5),
                                    before_fails=False),
    "cga-zoo-window": Case("cga-window", lambda: LocalWindowAttention(64, 4, 4, resolution=20), (1, 64, 20, 20)),
    "cga-variant-renamed-copy": Case("cga-window", lambda: v.WindowAttentionCopy(64, 4, 4, resolution=20),
                                     (1, 64, 20, 20)),
    "cga-zoo-alone": Case("cga", lambda: CascadedGroupAttention(64, 4, 4, resolution=7), (1, 64, 7, 7),
                          before_fails=False, absent_after="Gather"),
    "mha-zoo": Case("mha", lambda: MHSA(64), (1, 64, 10, 10), path="0.attn"),
    "mha-variant-sequence-first": Case("mha", lambda: v.TokenBlock(64), (1, 64, 10, 10), path="0.attn",
                                       before_fails=False),
    "einsum-variant": Case("einsum", lambda: v.EinsumAttention(32), (1, 32, 10, 10)),
    "sum-as-mean-zoo-simam": Case("sum-as-mean", SimAM, (1, 16, 20, 20), before_fails=False,
                                  absent_after="ReduceSum"),
    "sum-as-mean-variant": Case("sum-as-mean", v.EnergyGate, (1, 16, 20, 20), before_fails=False,
                                absent_after="ReduceSum"),
}


@torch.no_grad()
def live(module: nn.Module) -> nn.Module:
    """Seeded, eval-mode, with the zero-initialised attention paths switched on."""
    torch.manual_seed(0)
    for p in module.parameters():
        if not p.any():
            p.copy_(torch.rand(p.shape) + 0.5)
    return nn.Sequential(module).eval()


def seeded(shape) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(1))


def lints(module: nn.Module, x: torch.Tensor, dynamic: bool, path) -> list[str]:
    proto = module_to_onnx(module, LayerCall((x,), {}, set()), dynamic=dynamic)
    onnx.save(proto, path)
    return [f.check for target in ("trt", "npu") for f in lint(path, target).findings]


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_rule_rewrites_zoo_module_and_variant(case, tmp_path):
    model, x = live(case.build()), seeded(case.shape)
    result = rewrite(model, dynamic=case.dynamic, example=x)
    (layer,) = [layer for layer in result.report.layers if layer.path == case.path]
    assert (layer.rule, layer.applied) == (case.rule, True), layer.note
    assert layer.max_abs <= TOLERANCE * 1e3
    with torch.no_grad(), TrueShifts():
        expected = model(x)
    torch.testing.assert_close(result.model(x), expected, atol=1e-4, rtol=1e-4)
    assert lints(result.model, x, case.dynamic, tmp_path / "after.onnx") == []
    (ran,) = ort.InferenceSession(tmp_path / "after.onnx").run(None, {"input0": x.numpy()})
    np.testing.assert_allclose(ran, expected.numpy(), atol=1e-4, rtol=1e-4)
    assert case.absent_after not in (layer.ops_after or {})
    if case.before_fails:
        try:
            assert lints(model, x, case.dynamic, tmp_path / "before.onnx")
        except AttnDeployError:
            assert layer.ops_before is None


def test_every_rule_family_is_registered_with_what_it_matches():
    assert set(RULES) == {"roll", "s2-shift", "adaptive-pool", "criss-cross", "linear-conv", "static-resize",
                          "cga-window", "cga-window-unbatched", "cga", "mha", "einsum", "sum-as-mean", "batch-reshape", "finite-inf",
                          "finite-inf-state"}
    assert all(rule.fixes and rule.matches and rule.targets for rule in RULES.values())
    assert RULES["batch-reshape"].dynamic_only


def test_rule_failing_verification_is_refused_and_report_says_why():
    model = live(v.ShiftMixer(32, step=2))  # S2 structure, but shifts by two: not what the static S2 computes
    result = rewrite(model, example=seeded((1, 32, 20, 20)))
    (layer,) = [layer for layer in result.report.layers if layer.rule == "s2-shift"]
    assert not layer.applied and "exceeds" in layer.note
    assert result.model[0] is not model[0] and type(result.model[0]) is v.ShiftMixer


def test_eager_in_place_shifts_are_named_as_divergent():
    result = rewrite(live(S2Attention(32)), example=seeded((1, 32, 20, 20)))
    assert result.report.reference == "true-shift"
    assert result.report.divergent["0"].startswith("0 (S2Attention): eager PyTorch's in-place overlapping")


def test_constant_buffers_follow_half_and_hold_no_inf():
    cca = rewrite(live(CrissCrossAttention(64)), example=seeded((1, 64, 12, 12))).model[0]
    cga = rewrite(live(CascadedGroupAttention(64, 4, 4, resolution=7)), example=seeded((1, 64, 7, 7))).model[0]
    assert isinstance(cca, StaticCrissCross) and isinstance(cga, StaticCascadedGroupAttention)
    for module, name in ((cca, "mask"), (cga, "bias")):
        module.half()
        buffer = getattr(module, name)
        assert buffer.dtype == torch.float16 and torch.isfinite(buffer).all() and name in module.state_dict()
    assert cca.mask.shape == (1, 12, 1, 12) and float(cca.mask.min()) < -1e4


def test_unchanged_resize_is_not_planned():
    model = live(nn.Upsample(scale_factor=2))
    assert rewrite(model, example=seeded((1, 4, 8, 8))).report.layers == []


@pytest.fixture(scope="module")
def loaded_zoo(fork_checkpoints):
    return {name: load(path) for name, path in fork_checkpoints.items()}


def export_rewritten(loaded, path, dynamic: bool):
    result = rewrite(loaded.model, dynamic=dynamic, count_ops=False)
    export(dataclasses.replace(loaded, model=result.model), path, OnnxOptions(dynamic=dynamic))
    return result.report


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_detector_exports_static_passes_trt_and_npu_lint_and_parity(loaded_zoo, name, tmp_path):
    path = tmp_path / f"{name}.onnx"
    report = export_rewritten(loaded_zoo[name], path, dynamic=False)
    assert [f.check for t in ("trt", "npu") for f in lint(path, t).findings] == []
    result = verify_export(path, loaded_zoo[name], semantics=report.reference)
    assert result.passed, [(r.input, r.max_abs) for r in result.results]
    assert (report.reference == "true-shift") == (name == "s2attention")


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_detector_dynamic_batch_runs_at_1_and_4(loaded_zoo, name, tmp_path):
    path = tmp_path / f"{name}.onnx"
    report = export_rewritten(loaded_zoo[name], path, dynamic=True)
    assert [f.check for t in ("trt", "npu") for f in lint(path, t).findings] == []
    model = loaded_zoo[name].model
    for batch in (1, 4):
        result = parity.verify(torch_backend.Runner(model, semantics=report.reference), open_runner(path),
                               parity.parity_inputs((640, 640), batch, seeds=(0,)),
                               exact=torch_backend.Runner(model, "fp64", report.reference))
        assert result.passed and np.isfinite(result.worst.max_abs), (batch, result.worst)
