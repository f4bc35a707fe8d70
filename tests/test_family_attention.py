"""The attention that ships inside ultralytics, exported for every target: YOLO11's C2PSA (PSA), YOLO12's area
attention (A2C2f / AAttn) and RT-DETR's AIFI (an nn.MultiheadAttention) export static and lint-clean for TensorRT
and NPUs; RT-DETR's deformable decoder (GridSample at learned offsets) is named by the lint with its module path
and the targets that run it, and still exports to ONNX and OpenVINO with parity.

YOLO11n and YOLO12n: seeded models from ultralytics' own YAMLs exported to ONNX at 64x64 without any rewrite; their
graph passes every lint as exported, so no rule and no graph pass is needed (their parity is test_heads'). RT-DETR:
a small one of the same modules (rtdetr-l takes minutes per export here), trained-like, saved as best.pt and
exported as `export --target openvino,npu` does, with parity.
"""

import re
from pathlib import Path

import onnx
import pytest
import torch
from ultralytics.nn.tasks import DetectionModel

from attn_deploy import load, pipeline, save_checkpoint
from attn_deploy.exporters import onnx as onnx_backend
from attn_deploy.loading import LoadedModel
from attn_deploy.exporters.onnx import node_scopes
from attn_deploy.lint import lint
from attn_deploy.lint.support import NPU

from .task_models import TINY_RTDETR, build

SIZE = 64
ATTENTION = {"yolo11n": "model.10", "yolo12n": "model.6"}  # C2PSA; A2C2f at P4 (area attention over 4 areas)
AIFI, DECODER = "model.9", "model.10"  # in the small RT-DETR


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Each YOLO exported as ultralytics' code is, once: the ONNX file."""
    done, root = {}, tmp_path_factory.mktemp("families")

    def get(name: str) -> Path:
        if name not in done:
            torch.manual_seed(0)
            model = DetectionModel(f"{name}.yaml", verbose=False).eval()
            loaded = LoadedModel(model, root / f"{name}.pt", model.names, 32, "detect")
            done[name] = onnx_backend.export(loaded, root / f"{name}.onnx", onnx_backend.OnnxOptions((SIZE, SIZE))).path
        return done[name]

    return get


@pytest.fixture(scope="module")
def rtdetr(tmp_path_factory):
    """The small RT-DETR exported to OpenVINO and the npu graph (parity checked), and its ONNX linted for trt."""
    root = tmp_path_factory.mktemp("rtdetr")
    loaded = load(save_checkpoint(build(TINY_RTDETR, "rtdetr"), root / "rtdetr.pt", imgsz=SIZE))
    plan = pipeline.Plan(["openvino", "npu"], root / "rtdetr.onnx", onnx_backend.OnnxOptions((SIZE, SIZE)))
    run = pipeline.deploy(loaded, plan)
    return run, plan, lint(plan.output, "trt")


def _inside(scope: str, path: str) -> bool:
    return scope == path or scope.startswith(f"{path}.")


def _ops(path: Path, module: str) -> set[str]:
    graph = onnx.load(str(path)).graph
    scopes = node_scopes(graph)
    return {n.op_type for n in graph.node if _inside(scopes[n.name], module)}


@pytest.mark.parametrize("name", ["yolo11n", "yolo12n"])
def test_psa_and_area_attention_export_static_and_lint_clean_for_trt_and_npu_without_rules(name, exported):
    path = exported(name)
    for target in ("trt", "npu", "openvino", "ort"):  # static: a Shape op would be an error in each
        found = lint(path, target)
        assert (found.passed, found.findings) == (True, []), target
    assert {"MatMul", "Softmax"} <= _ops(path, ATTENTION[name]) <= NPU  # the attention itself is in the graph


def test_aifi_is_clean_for_trt_and_npu_and_only_the_decoder_is_named(rtdetr):
    run, plan, trt = rtdetr
    assert [(r.path, r.rule) for r in run.rewrite.applied if _inside(r.path, AIFI)] == [(f"{AIFI}.ma", "mha")]
    norms = [r for r in run.rewrite.graph if r.rule == "layer-norm" and _inside(r.path, AIFI)]
    assert {r.path for r in norms} == {f"{AIFI}.norm1", f"{AIFI}.norm2"} and all(r.applied for r in norms)
    assert {"MatMul", "Softmax"} <= _ops(plan.npu_onnx, AIFI) <= NPU
    assert trt.passed and {f.severity for f in trt.findings} == {"warning"}
    npu = next(r for r in run.lint if r.target == "npu")
    named = [f for f in [*trt.findings, *npu.findings] if f.check == "data-dependent"]
    assert named and all(_inside(f.module, DECODER) for f in named)
    # the support-list finding lists the decoder's query selection and sampling ops, none of AIFI's
    assert not _ops(plan.npu_onnx, AIFI) & {op for f in npu.errors if f.check == "support list"
                                            for op in f.detail.split(": ", 1)[1].split(", ")}


def test_deformable_decoder_sampling_is_named_with_module_and_targets_and_exports_with_parity(rtdetr):
    run, plan, trt = rtdetr
    sampling = [f for f in trt.findings if f.check == "data-dependent" and "GridSample" in f.detail]
    assert [f.module for f in sampling] == [f"{DECODER}.decoder.layers.{i}.cross_attn" for i in range(2)]
    for f in sampling:
        assert f.severity == "warning" and "sampling at computed positions (learned offsets) cannot be static" in f.detail
        assert re.search(r"cannot run on: [^;]*\bnpu\b", f.detail) and "trt (opset 16+, 4-D input)" in f.detail
        assert "openvino (opset 16+)" in f.detail and "ort (opset 16+)" in f.detail
    npu = next(r for r in run.lint if r.target == "npu")
    assert {f.module for f in npu.errors if "GridSample" in f.detail} == {f.module for f in sampling}
    assert [(p.backend, p.label, p.passed) for p in run.parity if p.gating] == [
        ("onnxruntime", "", True), ("onnxruntime", "npu graph", True), ("openvino", "", True)]
    assert all(d.ref_boxes > 0 and d.recall == 1.0 for p in run.parity if p.gating for d in p.detections)
