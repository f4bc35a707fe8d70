"""Fused attention (rewrite/graph/attention.py): each fused form of MHSA- and CGA-style attention, verified against
the original PyTorch module and against the plain export in onnxruntime and in OpenVINO, for the zoo's MHSA and CGA,
ultralytics' AIFI and attention written independently (tests/variants.py); forms that do not match are refused with
the reason; a form goes only to targets that run it and where it measured faster; the study's fused-vs-plain
comparison (bench/fused.py)."""

import collections
import dataclasses

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from attn_deploy import pipeline
from attn_deploy.bench import fused, study, suite
from attn_deploy.bench.harness import Budget
from attn_deploy.exporters import onnx as onnx_backend
from attn_deploy.exporters import openvino
from attn_deploy.lint import lint
from attn_deploy.loading import LoadedModel
from attn_deploy.models.detector import build_detector_with, build_module
from attn_deploy.rewrite import LayerCall, rewrite
from attn_deploy.rewrite.graph import PASSES, apply, passes_for
from attn_deploy.rewrite.graph.attention import FASTER, FORMS, KINDS, RUNS
from attn_deploy.rewrite.graph.engine import run
from attn_deploy.verify import verify_export

from . import variants as v

C = 64
SUBJECTS = {  # name: (module, map size, kind of its attention sites, sites)
    "zoo-mhsa": (lambda: build_module("mhsa", C), (4, 4), "mhsa", 1),
    "aifi": (lambda: _aifi(), (4, 4), "mhsa", 1),
    "zoo-cga": (lambda: build_module("cga", C), (8, 8), "cga", 4),  # window 7: padded to 14x14, 4 windows
    "conv-heads": (lambda: v.ConvHeadsAttention(C), (4, 4), "mhsa", 1),
    "token-group-cascade": (lambda: v.TokenGroupCascade(C, side=4), (4, 4), "cga", 4),
}
FUSED_OP = {"contrib": "MultiHeadAttention", "onnx": "Attention"}


def _aifi():
    from ultralytics.nn.modules.transformer import AIFI

    return AIFI(C, 2 * C, 4)


@dataclasses.dataclass
class Plain:
    module: torch.nn.Module
    inputs: list[np.ndarray]
    model: onnx.ModelProto  # the module rules' export, no graph pass

    def feeds(self) -> list[dict[str, np.ndarray]]:
        return [{"input0": x} for x in self.inputs]


def _plain(make, size: tuple[int, int], dynamic: bool = False) -> Plain:
    torch.manual_seed(0)
    module = make().eval()
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((1, C, *size)).astype(np.float32) for _ in range(2)]
    example = torch.from_numpy(inputs[0])
    done = rewrite(module, count_ops=False, example=example, dynamic=dynamic).model
    return Plain(module, inputs, onnx_backend.module_to_onnx(done, LayerCall((example,), {}, set()), dynamic=dynamic))


@pytest.fixture(scope="module")
def plain() -> dict[str, Plain]:
    return {name: _plain(make, size) for name, (make, size, _, _) in SUBJECTS.items()}


def _torch(module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def _close(out: np.ndarray, ref: np.ndarray, tol: float) -> None:
    np.testing.assert_allclose(out, ref, rtol=0, atol=tol * max(1.0, float(np.abs(ref).max())))


def _openvino(model: onnx.ModelProto, path, feeds) -> list[np.ndarray]:
    onnx.save(model, path)
    runner = openvino.Runner(path)  # the f32 inference-precision hint
    outputs = [runner.run([feed["input0"]])[0] for feed in feeds]
    runner.close()
    return outputs


def _ops(model: onnx.ModelProto) -> collections.Counter:
    return collections.Counter(n.op_type for n in model.graph.node)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", SUBJECTS)
def test_fused_form_computes_what_the_module_and_the_plain_export_compute(plain, name, form, tmp_path):
    subject, (_, _, kind, sites) = plain[name], SUBJECTS[name]
    done = apply(subject.model, [], subject.feeds(), passes=[PASSES[f"fused-{form}-{kind}"]])
    (row,) = done.layers
    assert row.applied and row.rule == f"fused-{form}-{kind}" and row.max_abs < 1e-5, row.note
    ops = _ops(done.model)
    assert ops[FUSED_OP[form]] == sites and "Softmax" not in ops
    before, after = run(subject.model, subject.feeds()), run(done.model, subject.feeds())
    in_openvino = _openvino(done.model, tmp_path / "fused.onnx", subject.feeds())
    for x, plain_out, fused_out, ov_out in zip(subject.inputs, before, after, in_openvino):
        reference = _torch(subject.module, x)
        _close(fused_out[0], plain_out[0], 1e-5)  # against the plain export, both in onnxruntime
        _close(fused_out[0], reference, 1e-4)  # against the original module in PyTorch
        _close(ov_out, reference, 1e-4)  # OpenVINO compiles and runs it, f32
    if name in ("zoo-mhsa", "aifi") and form == "contrib":  # Q, K, V straight from their projections: layouts cancel
        assert ops["Transpose"] < _ops(subject.model)["Transpose"]
    if form == "onnx":
        assert next(o.version for o in done.model.opset_import if o.domain == "") == 23


def test_fused_form_keeps_a_dynamic_batch():
    subject = _plain(lambda: v.ConvHeadsAttention(C), (4, 4), dynamic=True)
    done = apply(subject.model, [], subject.feeds(), passes=[PASSES["fused-contrib-mhsa"]])
    assert done.layers[0].applied
    x = np.random.default_rng(1).standard_normal((3, C, 4, 4)).astype(np.float32)
    (out,), = run(done.model, [{"input0": x}])
    _close(out, _torch(subject.module, x), 1e-4)


def test_fused_form_that_departs_is_not_applied_and_the_row_says_why(plain):
    """The contrib form written wrongly on purpose (twice the scale) is verified like any form and refused."""
    rewrite_contrib = FORMS["contrib"][0]

    def doubled_scale(graph, site):
        sdpa = dataclasses.replace(site.detail["sdpa"], scale=2 * site.detail["sdpa"].scale)
        rewrite_contrib(graph, dataclasses.replace(site, detail={"sdpa": sdpa}))

    wrong = dataclasses.replace(PASSES["fused-contrib-mhsa"], rewrite=doubled_scale)
    subject = plain["conv-heads"]
    done = apply(subject.model, [], subject.feeds(), passes=[wrong])
    (row,) = done.layers
    assert not row.applied and row.max_abs is None
    assert "not applied: ValueError: max abs error" in row.note and "exceeds 1e-06" in row.note
    assert "MultiHeadAttention" not in _ops(done.model) and _ops(done.model)["Softmax"] == 1


def test_attention_whose_bias_varies_along_the_batch_is_refused_with_the_reason():
    """A logit bias that differs per batch element has no attention_bias layout (1, H, S, L)."""
    q, kt, v_ = [2, 4, 8, 16], [2, 4, 16, 8], [2, 4, 8, 16]
    bias = np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["q", "kt"], ["a"], name="/model.10/MatMul"),
             helper.make_node("Add", ["a", "bias"], ["b"], name="/model.10/Add"),
             helper.make_node("Softmax", ["b"], ["p"], axis=-1, name="/model.10/Softmax"),
             helper.make_node("MatMul", ["p", "v"], ["y"], name="/model.10/MatMul_1")]
    inputs = {"q": q, "kt": kt, "v": v_}
    graph = helper.make_graph(nodes, "attention", [helper.make_tensor_value_info(k, TensorProto.FLOAT, s)
                                                   for k, s in inputs.items()],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(bias, "bias")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    feeds = [{k: np.random.default_rng(1).standard_normal(s).astype(np.float32) for k, s in inputs.items()}]
    (row,) = apply(model, [], feeds, passes=[PASSES["fused-contrib-mhsa"]]).layers
    assert (row.path, row.applied) == ("model.10", False)
    assert "not applied: bias of shape (2, 1, 8, 8) does not broadcast to (1, 4, 8, 8)" in row.note


def test_each_form_goes_only_to_targets_that_run_it_and_where_it_measured_faster(monkeypatch):
    assert set(RUNS["contrib"]) == {"ort", "openvino", "opencv"} and {"ort", "openvino", "trt"} <= set(RUNS["onnx"])
    for form in FORMS:
        for kind in KINDS:
            rule = PASSES[f"fused-{form}-{kind}"]
            assert rule.every and rule.targets == tuple(t for t in FASTER[form][kind] if t in RUNS[form])
    monkeypatch.setitem(PASSES, "fused-contrib-mhsa",
                        dataclasses.replace(PASSES["fused-contrib-mhsa"], targets=("ort", "openvino")))

    def chosen(targets, readers=None) -> bool:
        return "fused-contrib-mhsa" in {p.name for p in passes_for(targets, readers)}

    assert chosen(["ort"]) and chosen(["openvino"]) and chosen(["ort", "openvino"])
    assert not chosen(["ort", "trt"]) and not chosen(["npu"])
    assert not chosen(["ort"], readers=["ort", "npu"])  # the npu graph is built from the shared file


def test_lint_names_the_contrib_op_for_targets_that_cannot_run_it(plain, tmp_path):
    subject = plain["zoo-mhsa"]
    path = tmp_path / "fused.onnx"
    onnx.save(apply(subject.model, [], subject.feeds(), passes=[PASSES["fused-contrib-mhsa"]]).model, path)
    verdicts = {t: lint(path, t) for t in ("ort", "openvino", "trt", "npu")}
    assert verdicts["ort"].passed and verdicts["openvino"].passed
    for target in ("trt", "npu"):
        assert any("com.microsoft.MultiHeadAttention" in f.detail for f in verdicts[target].errors)


def test_default_export_is_portable_and_the_ort_target_gets_the_form_chosen_for_it(tmp_path):
    """`export --target onnx,ort`: the ONNX file holds only standard-domain ops (it runs in OpenCV's DNN with
    parity); <stem>.ort.onnx gets onnxruntime's MultiHeadAttention, verified and parity-checked, named as such."""
    model = build_detector_with(v.ConvHeadsAttention, imgsz=64)
    loaded = LoadedModel(model, tmp_path / "x.pt", model.names, 32, "detect", (64, 64))
    plan = pipeline.Plan(["onnx", "ort"], tmp_path / "x.onnx", onnx_backend.OnnxOptions((64, 64)))
    done = pipeline.deploy(loaded, plan)
    rows = [r for r in done.rewrite.graph if r.rule == "fused-contrib-mhsa"]
    assert [(r.path, r.module, r.applied) for r in rows] == [("model.10", "ConvHeadsAttention", True)]
    assert rows[0].note.startswith("in x.ort.onnx")
    assert {n.domain for n in onnx.load(plan.output).graph.node} <= {"", "ai.onnx"}
    assert _ops(onnx.load(tmp_path / "x.ort.onnx"))["MultiHeadAttention"] == 1
    assert [(e.path.name, e.target) for e in done.exports] == [("x.onnx", "onnx"), ("x.ort.onnx", "ort")]
    assert [(r.target, r.passed) for r in done.lint] == [("onnx", True), ("ort", True)]
    assert done.passed and [(p.backend, p.label) for p in done.parity] == [
        ("onnxruntime", ""), ("onnxruntime", "onnxruntime-only graph")]
    assert not lint(tmp_path / "x.ort.onnx", "onnx").passed
    opencv = verify_export(plan.output, loaded, runtime="opencv")
    assert opencv.backend == "opencv" and opencv.passed


def test_study_times_each_form_against_the_plain_graph(tmp_path):
    torch.manual_seed(0)
    module = v.TokenGroupCascade(C, side=4).eval()
    subject = suite.describe(suite.Subject("cascade n-P5", (4, 4), module, channels=C))
    x = torch.from_numpy(np.random.default_rng(0).random((1, C, 4, 4), dtype=np.float32))
    subject.artefacts = study._exportable(module, x, tmp_path, "cascade")
    plan = suite.Plan("cpu", [suite.Variant("onnxruntime"), suite.Variant("torch")], [1], 1, Budget(iters=1))
    found = fused.run([subject], plan, tmp_path)  # torch runs no fused form: no rows

    assert [(f.form, f.kind, f.sites) for f in found.forms["cascade n-P5"]] == [(f, "cga", 4) for f in FORMS]
    assert all(f.error < 1e-5 and f.openvino_error < 1e-4 for f in found.forms["cascade n-P5"])
    assert [(r.form, r.ratio.variant, r.ratio.where, r.module) for r in found.ratios] == [
        (f, "onnxruntime", "n-P5", "cascade") for f in FORMS]
    assert all(r.ratio.low <= r.ratio.value <= r.ratio.high and "spinning off" in r.method for r in found.ratios)
    table = fused.choice(found.ratios)
    for r in found.ratios:
        assert (r.target in table[r.form]["cga"]) == (r.ratio.sign == "faster")
    claims = fused.claims(found.ratios)
    assert len(claims) == 2 and all(c.verdict in {"holds", "does not hold", "not measurable here"} for c in claims)
    for claim, r in zip(claims, found.ratios):
        agrees = (r.target in FASTER[r.form]["cga"]) == (r.target in table[r.form]["cga"])
        assert ("(agrees)" in claim.reason) == agrees
