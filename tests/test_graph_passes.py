"""Graph passes on small hand-built ONNX graphs, then on YOLOv8n detectors with independently written
attention at P5 (tests/variants.py), exported to ONNX, OpenVINO and the npu graph, linted and checked
against the original model."""

import dataclasses
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from torch import nn
from typer.testing import CliRunner

from attn_deploy import pipeline
from attn_deploy.cli import app
from attn_deploy.exporters import onnx as onnx_backend
from attn_deploy.exporters import openvino
from attn_deploy.lint import lint
from attn_deploy.loading import LoadedModel, save_checkpoint
from attn_deploy.models.detector import build_detector_with
from attn_deploy.rewrite.graph import PASSES, GraphPass, Site, apply, passes_for
from attn_deploy.rewrite.graph.graph import Edit
from attn_deploy.verify import verify_export

from . import variants as v

SEED = np.random.default_rng(0)


def graph(nodes, inputs: dict[str, list], constants: dict[str, np.ndarray] | None = None, opset: int = 18,
          outputs=("y",)) -> onnx.ModelProto:
    """A model from onnx.helper nodes; float inputs of the given shapes; outputs typed by inference."""
    proto = helper.make_graph(
        nodes, "test", [helper.make_tensor_value_info(k, TensorProto.FLOAT, s) for k, s in inputs.items()],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        [numpy_helper.from_array(np.asarray(a), k) for k, a in (constants or {}).items()])
    model = helper.make_model(proto, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    return onnx.shape_inference.infer_shapes(model)


def node(op: str, inputs: list[str], output: str, scope: str = "/block", **attrs):
    return helper.make_node(op, inputs, [output], name=f"{scope}/{op}_{output}", **attrs)


def draws(inputs: dict[str, list], n: int = 2) -> list[dict[str, np.ndarray]]:
    return [{k: SEED.standard_normal(s).astype(np.float32) for k, s in inputs.items()} for _ in range(n)]


def ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def max_rank(model: onnx.ModelProto) -> int:
    inferred = onnx.shape_inference.infer_shapes(model).graph
    return max(len(i.type.tensor_type.shape.dim) for i in [*inferred.value_info, *inferred.output])


def rewritten(model, target: str, inputs: dict[str, list], passes=None):
    """The passes for ``target`` applied; also checks the outputs are unchanged, independently of the engine."""
    from attn_deploy.rewrite.graph.engine import run

    feeds = draws(inputs)
    done = apply(model, [target], feeds, passes=passes)
    for before, after in zip(run(model, feeds), run(done.model, feeds)):
        np.testing.assert_allclose(after[0], before[0], rtol=1e-5, atol=1e-5)
    return done


def test_expand_before_a_broadcasting_mul_is_removed_and_reported_under_its_module():
    model = graph([node("Expand", ["g", "shape"], "e", "/model.10/gate"), node("Mul", ["x", "e"], "y", "/model.10")],
                  {"x": [2, 8, 5, 5], "g": [2, 8, 1, 1]}, {"shape": np.array([2, 8, 5, 5])})
    done = rewritten(model, "ort", {"x": [2, 8, 5, 5], "g": [2, 8, 1, 1]})
    assert ops(done.model) == ["Mul"]
    (row,) = done.layers
    assert (row.path, row.rule, row.applied, row.ops_before, row.ops_after) == (
        "model.10.gate", "expand-broadcast", True, {"Expand": 1}, {})


def test_expand_whose_consumer_does_not_broadcast_stays():
    model = graph([node("Expand", ["g", "shape"], "e"), node("Concat", ["x", "e"], "y", axis=1)],
                  {"x": [1, 8, 5, 5], "g": [1, 8, 1, 1]}, {"shape": np.array([1, 8, 5, 5])})
    done = apply(model, ["npu"], draws({"x": [1, 8, 5, 5], "g": [1, 8, 1, 1]}))
    assert "Expand" in ops(done.model) and not any(r.rule == "expand-broadcast" for r in done.layers)


def _grid_plus(constant: np.ndarray, batch) -> onnx.ModelProto:
    return graph([node("Add", ["x", "grid"], "y")], {"x": [batch, 4, 4, 2]}, {"grid": constant})


def test_constant_repeated_along_the_batch_folds_and_the_lint_warns_before(tmp_path):
    grid = np.repeat(SEED.standard_normal((1, 4, 4, 2)).astype(np.float32), 3, axis=0)
    model = _grid_plus(grid, 3)
    onnx.save(model, tmp_path / "before.onnx")
    (finding,) = lint(tmp_path / "before.onnx", "trt").findings
    assert (finding.check, finding.severity) == ("batch-dependent constant", "warning")
    assert lint(tmp_path / "before.onnx", "trt").passed
    done = rewritten(model, "trt", {"x": [3, 4, 4, 2]})
    assert [r.rule for r in done.layers if r.applied] == ["batch-constant"]
    assert numpy_helper.to_array(done.model.graph.initializer[0]).shape == (1, 4, 4, 2)
    onnx.save(done.model, tmp_path / "after.onnx")
    assert lint(tmp_path / "after.onnx", "trt").findings == []


def test_batch_constant_is_an_error_with_a_dynamic_batch_or_differing_slices(tmp_path):
    repeated = np.repeat(np.arange(32, dtype=np.float32).reshape(1, 4, 4, 2), 3, axis=0)
    onnx.save(_grid_plus(repeated, "batch"), tmp_path / "dynamic.onnx")
    (finding,) = lint(tmp_path / "dynamic.onnx", "ort").findings
    assert finding.severity == "error" and "dynamic" in finding.detail
    differing = SEED.standard_normal((3, 4, 4, 2)).astype(np.float32)
    onnx.save(_grid_plus(differing, 3), tmp_path / "differing.onnx")
    (finding,) = lint(tmp_path / "differing.onnx", "ort").findings
    assert finding.severity == "error" and "differ" in finding.detail
    (row,) = apply(_grid_plus(differing, 3), ["ort"], draws({"x": [3, 4, 4, 2]})).layers
    assert not row.applied and "slices along the batch axis differ" in row.note


NORMS = {
    "instance-norm": ([node("InstanceNormalization", ["x", "s", "b"], "y", epsilon=1e-3)], [1, 6, 5, 5],
                      {"s": SEED.random(6, dtype=np.float32) + 0.5, "b": SEED.random(6, dtype=np.float32)}),
    "layer-norm": ([node("LayerNormalization", ["x", "s", "b"], "y", axis=-1)], [1, 25, 16],
                   {"s": SEED.random(16, dtype=np.float32) + 0.5, "b": SEED.random(16, dtype=np.float32)}),
    "group-norm": ([node("GroupNormalization", ["x", "s", "b"], "y", num_groups=3)], [2, 6, 4, 4],
                   {"s": SEED.random(6, dtype=np.float32) + 0.5, "b": SEED.random(6, dtype=np.float32)}),
}


@pytest.mark.parametrize("name", NORMS)
def test_fused_norm_becomes_primitives_for_npu_only(name, tmp_path):
    nodes, shape, constants = NORMS[name]
    model = graph(nodes, {"x": shape}, constants, opset=21 if name == "group-norm" else 18)
    assert apply(model, ["ort"], draws({"x": shape})).layers == []  # ORT and OpenVINO keep the fused op
    done = rewritten(model, "npu", {"x": shape})
    assert [(r.rule, r.applied) for r in done.layers] == [(name, True)]
    onnx.save(done.model, tmp_path / "npu.onnx")
    assert lint(tmp_path / "npu.onnx", "npu").findings == []


def _rearrange(shape: list[int], split: list[int], perm: list[int], merged: list[int]) -> onnx.ModelProto:
    return graph([node("Reshape", ["x", "a"], "r"), node("Transpose", ["r"], "t", perm=perm),
                  node("Reshape", ["t", "b"], "y")], {"x": shape}, {"a": np.array(split), "b": np.array(merged)})


REARRANGES = {  # input shape, the high-rank view, its permutation, the output shape
    "channel shuffle": ([1, 8, 4, 4], [1, 2, 4, 4, 4], [0, 2, 1, 3, 4], [1, 8, 4, 4]),
    "window partition": ([2, 6, 4, 6], [2, 6, 2, 2, 3, 2], [0, 2, 4, 1, 3, 5], [12, 6, 2, 2]),
    "patch unfold": ([1, 6, 4, 6], [1, 6, 2, 2, 3, 2], [0, 3, 5, 2, 4, 1], [1, 4, 6, 6]),
    "rank 7 heads": ([2, 12, 4, 4], [2, 3, 4, 2, 2, 2, 2], [0, 3, 5, 1, 4, 6, 2], [8, 3, 4, 4]),
}


@pytest.mark.parametrize("case", REARRANGES.values(), ids=REARRANGES.keys())
def test_high_rank_transposes_become_rank_4(case):
    shape = case[0]
    done = rewritten(_rearrange(*case), "npu", {"x": shape})
    assert [(r.rule, r.applied) for r in done.layers] == [("rank-transpose", True)]
    assert max_rank(done.model) <= 4


def test_stacked_branches_and_a_softmax_across_them_become_rank_4(tmp_path):
    shape = [1, 6, 4, 4]
    model = graph([node("Unsqueeze", ["a", "axis"], "ua"), node("Unsqueeze", ["b", "axis"], "ub"),
                   node("Concat", ["ua", "ub"], "stacked", axis=1),
                   node("ReduceSum", ["stacked", "axis"], "total", keepdims=0),
                   node("ReduceMean", ["total", "hw"], "pooled"), node("Reshape", ["w", "split"], "logits"),
                   node("Softmax", ["logits"], "weights", axis=1), node("Mul", ["stacked", "weights"], "weighted"),
                   node("ReduceSum", ["weighted", "axis"], "mixed", keepdims=0), node("Add", ["mixed", "pooled"], "y")],
                  {"a": shape, "b": shape, "w": [1, 12, 1, 1]},
                  {"axis": np.array([1]), "hw": np.array([2, 3]), "split": np.array([1, 2, 6, 1, 1])})
    done = rewritten(model, "npu", {"a": shape, "b": shape, "w": [1, 12, 1, 1]})
    assert [(r.rule, r.applied) for r in done.layers] == [("rank-merge", True)]
    onnx.save(done.model, tmp_path / "npu.onnx")
    assert lint(tmp_path / "npu.onnx", "npu").findings == []


def test_a_matmul_whose_batch_axes_fill_the_rank_merges_the_batch_of_1_with_them():
    """Keeping a batch of 1 apart (for ncnn) must not cost a merge that fits without it: (1, 2) and (3, 4) batch
    groups plus the matrix axes are rank 4; the batch apart would be 5."""
    inputs = {"a": [1, 2, 3, 4, 5, 6], "b": [1, 1, 3, 4, 6, 5]}
    done = rewritten(graph([node("MatMul", ["a", "b"], "y")], inputs), "npu", inputs)
    assert [(r.rule, r.applied) for r in done.layers] == [("rank-merge", True)]
    inferred = onnx.shape_inference.infer_shapes(done.model).graph
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in inferred.value_info}
    (matmul,) = [n for n in inferred.node if n.op_type == "MatMul"]
    assert ranks[matmul.output[0]] == 4  # the graph's own inputs and output stay rank 6, between reshapes


def test_gather_of_constant_indices_becomes_slice():
    model = graph([node("Gather", ["x", "i"], "y", axis=1)], {"x": [2, 3, 4, 5]}, {"i": np.array(1)})
    done = rewritten(model, "npu", {"x": [2, 3, 4, 5]})
    assert "Gather" not in ops(done.model) and [r.rule for r in done.layers] == ["gather-slice"]


def test_site_without_a_merged_form_is_refused_with_the_reason():
    """An elementwise op over rank 6 whose operands broadcast on alternating axes: no rank-4 grouping exists."""
    model = graph([node("Mul", ["x", "w"], "y")], {"x": [2, 3, 2, 3, 2, 3], "w": [2, 1, 2, 1, 2, 1]})
    (row,) = apply(model, ["npu"], draws({"x": [2, 3, 2, 3, 2, 3], "w": [2, 1, 2, 1, 2, 1]})).layers
    assert (row.rule, row.applied) == ("rank-merge", False)
    assert "needs 6 merged axes, more than 4" in row.note


def _sigmoid_to_hard_sigmoid(graph_, site: Site) -> None:
    sigmoid = graph_.node(site.node)
    edit = Edit(graph_, sigmoid)
    edit.finish(edit.op("HardSigmoid", sigmoid.input[0]))


def test_pass_whose_result_differs_is_refused_with_the_reason():
    """A pass written wrongly on purpose (HardSigmoid for Sigmoid) is verified like any other and refused."""
    wrong = GraphPass(name="hard-sigmoid", fixes="Sigmoid → HardSigmoid (wrong)", matches="Sigmoid", targets=("npu",),
                      find=lambda g: [Site(n.name) for n in g.nodes if n.op_type == "Sigmoid"],
                      rewrite=_sigmoid_to_hard_sigmoid)
    model = graph([node("Sigmoid", ["x"], "y", "/model.3")], {"x": [1, 4, 8, 8]})
    done = apply(model, ["npu"], draws({"x": [1, 4, 8, 8]}), passes=[wrong])
    (row,) = done.layers
    assert (row.path, row.applied, row.max_abs) == ("model.3", False, None)
    assert "not applied: ValueError: max abs error" in row.note and "exceeds 1e-06" in row.note
    assert ops(done.model) == ["Sigmoid"]


def test_every_pass_is_registered_with_what_it_matches_and_who_needs_it():
    fused = [f"fused-{form}-{kind}" for form in ("contrib", "onnx") for kind in ("mhsa", "cga")]
    assert list(PASSES) == ["expand-broadcast", "batch-constant", "instance-norm", "layer-norm", "group-norm",
                            "rank-transpose", "rank-merge", "gather-slice", *fused, "softmax-inner-axis",
                            "reduce-sum-as-mean", "reduce-one-axis", "mean-keep-dims"]
    assert all(p.fixes and p.matches and (p.targets or p.every) for p in PASSES.values())
    assert [p.name for p in passes_for(["ort", "openvino", "trt"])] == ["expand-broadcast", "batch-constant"]
    # no NPU list has a fused attention op; pnnx's reading of reductions is ncnn's alone, the kept mean rknn's
    assert {p.name for p in passes_for(["npu"])} == set(PASSES) - set(fused) - {
        "softmax-inner-axis", "reduce-sum-as-mean", "reduce-one-axis", "mean-keep-dims"}


# Softmaxes over an inner axis as fork code writes them: DFL's bins, SK's branches, a channel softmax, a negative axis.
INNER_SOFTMAXES = {"dfl-bins": ([1, 16, 4, 30], 1), "sk-branches": ([2, 2, 8, 1, 1], 1),
                   "channels": ([1, 6, 5, 5], -3), "batch": ([3, 4, 5], 0)}


@pytest.mark.parametrize("shape, axis", INNER_SOFTMAXES.values(), ids=INNER_SOFTMAXES.keys())
def test_a_softmax_over_an_inner_axis_becomes_reductions_where_only_onnxruntime_reads(shape, axis):
    model = graph([node("Mul", ["x", "scale"], "logits"), node("Softmax", ["logits"], "y", axis=axis)], {"x": shape},
                  {"scale": np.float32(30.0)})  # logits up to about +-100: exp overflows without the max taken off
    done = rewritten(model, "onnx", {"x": shape})
    assert [(r.rule, r.applied) for r in done.layers] == [("softmax-inner-axis", True)]
    assert ops(done.model) == ["Mul", "ReduceMax", "Sub", "Exp", "ReduceSum", "Div"]
    assert "softmax-inner-axis" in [p.name for p in passes_for(["onnx", "openvino"])]
    assert "softmax-inner-axis" not in [p.name for p in passes_for(["onnx", "trt"])]


def test_a_softmax_over_the_last_axis_stays_and_before_opset_13_an_inner_one_is_refused():
    last = graph([node("Softmax", ["x"], "y", axis=-1)], {"x": [1, 4, 16]})
    assert apply(last, ["onnx"], draws({"x": [1, 4, 16]})).layers == []
    old = graph([node("Softmax", ["x"], "y", axis=1)], {"x": [1, 4, 16]}, opset=12)
    done = apply(old, ["onnx"], draws({"x": [1, 4, 16]}))
    (row,) = done.layers
    assert not row.applied and "before opset 13" in row.note and ops(done.model) == ["Softmax"]


def test_topk_beyond_tensorrt_k_limit_is_an_error_for_trt_only(tmp_path):
    model = graph([helper.make_node("TopK", ["x", "k"], ["y", "i"], name="/model.10/router/TopK")],
                  {"x": [1, 8, 5000]}, {"k": np.array([4000])})
    onnx.save(model, tmp_path / "topk.onnx")
    verdicts = {t: lint(tmp_path / "topk.onnx", t) for t in ("ort", "openvino", "trt", "npu")}
    assert {t: r.passed for t, r in verdicts.items()} == {"ort": True, "openvino": True, "trt": False, "npu": False}
    (finding,) = verdicts["trt"].findings
    assert "model.10.router (TopK" in finding.detail and "trt (k=4000, at most 3839)" in finding.detail


# --- detectors with independently written attention at P5 -----------------------------------------------------

SIZE = (64, 128)  # P5 is 2x4: windows of 2x2 and regions of 1x2, two along the width; half the cost of 128x128
EXPECTED = {  # the module rules and graph passes applied on each static variant's module (model.10.<index>)
    "se-expand-as": {"expand-broadcast"},
    "ema-folded-groupnorm": {"instance-norm"},
    "shuffle-attention": {"instance-norm", "rank-transpose"},
    "sk-stacked-branches": {"rank-merge"},
    "einops-windows": {"rank-transpose"},
    "mobilevit-patches": {"layer-norm", "rank-transpose", "rank-merge"},
    "mlca-upsampling-pool": {"adaptive-pool"},
    "coordatt-none-1-pool": {"adaptive-pool"},
    "cbam-max-mean": {"adaptive-pool"},
    "lska-separable": set(),
    "layernorm-transformer": {"layer-norm", "rank-transpose", "rank-merge"},
}
NAMED = {  # the data-dependent ops the npu lint must name at each data-dependent variant's module
    "biformer-topk-routing": {"TopK", "GatherElements"},
    "dat-offset-sampling": {"GridSample"},
    "dlka-deformable-conv": {"DeformConv"},
}
STATIC = [name for name in v.GRAPH_VARIANTS if name not in v.DATA_DEPENDENT]


@dataclasses.dataclass
class Exported:
    paths: dict[str, str]  # variant -> its module path
    run: pipeline.Deployment
    trt: object  # the lint of the ONNX for trt
    openvino: object  # the parity of the OpenVINO IR (f32 hint)


def _export(variants: list[str], root, opset: int) -> Exported:
    """All ``variants`` in sequence at P5 of one seeded YOLOv8n (one export serves them all), exported to ONNX
    and the npu graph by the pipeline, converted to OpenVINO, each artefact checked against the original."""
    makes = [v.GRAPH_VARIANTS[name] for name in variants]
    model = build_detector_with(lambda c: nn.Sequential(*(make(c) for make in makes)), imgsz=SIZE[0])
    loaded = LoadedModel(model, root / "x.pt", model.names, 32, "detect", SIZE)
    plan = pipeline.Plan(["onnx", "npu"], root / "x.onnx", onnx_backend.OnnxOptions(SIZE, opset=opset))
    run = pipeline.deploy(loaded, plan)
    ir = openvino.export(plan.output, openvino.model_dir(plan.output), openvino.OpenVINOOptions())
    paths = {name: f"model.10.{i}" for i, name in enumerate(variants)}
    return Exported(paths, run, lint(plan.output, "trt"), verify_export(ir.path, loaded))


@pytest.fixture(scope="module")
def static(tmp_path_factory) -> Exported:
    return _export(STATIC, tmp_path_factory.mktemp("static"), opset=18)


@pytest.fixture(scope="module")
def data_dependent(tmp_path_factory) -> Exported:
    return _export(sorted(v.DATA_DEPENDENT), tmp_path_factory.mktemp("data-dependent"), opset=19)  # DeformConv


def _inside(path: str, module: str) -> bool:
    return path == module or path.startswith(f"{module}.")


def _parity_and_trt(exported: Exported) -> None:
    rows = [(p.backend, p.label, p.passed) for p in exported.run.parity]
    assert rows == [("onnxruntime", "", True), ("onnxruntime", "npu graph", True)]
    assert exported.openvino.passed and exported.openvino.backend == "openvino"
    assert exported.trt.passed, exported.trt.errors


@pytest.mark.parametrize("name", STATIC)
def test_variant_exports_with_parity_and_its_npu_graph_is_lint_clean(static, name):
    _parity_and_trt(static)
    portable, npu = static.run.lint
    assert (portable.target, portable.passed, npu.target, npu.findings) == ("onnx", True, "npu", [])
    module, report = static.paths[name], static.run.rewrite
    applied = {r.rule for r in report.layers + report.graph if r.applied and _inside(r.path, module)}
    assert applied == EXPECTED[name]
    refused = [r for r in report.layers + report.graph if not r.applied and _inside(r.path, module)]
    assert refused == []


def test_npu_graph_rows_are_verified_and_name_their_module_class(static):
    rows = [r for r in static.run.rewrite.graph if r.rule == "layer-norm"]
    modules = [static.paths[name] for name in ("mobilevit-patches", "layernorm-transformer")]
    assert {(r.path, r.module) for r in rows} == {(f"{m}.norm{k}", "LayerNorm") for m in modules for k in (1, 2)}
    assert all(r.note.startswith("in x.npu.onnx") and r.max_abs is not None and r.ops_after.get("ReduceMean") == 2
               and "LayerNormalization" not in r.ops_after for r in rows)


@pytest.mark.parametrize("name", sorted(v.DATA_DEPENDENT))
def test_data_dependent_variant_exports_with_parity_and_the_npu_lint_names_it(data_dependent, name):
    _parity_and_trt(data_dependent)
    module, expected = data_dependent.paths[name], NAMED[name]
    npu = data_dependent.run.lint[1]
    found = [f for f in npu.errors if f.check == "data-dependent" and _inside(f.module, module)]
    assert {n.rsplit("/", 1)[1].split("_")[0] for f in found for n in f.nodes} == expected
    assert all("cannot be static" in f.detail and "cannot run on: npu" in f.detail for f in npu.errors
               if f.check == "data-dependent")
    assert all(f.severity == "warning" for f in data_dependent.trt.findings)


def test_reference_grid_built_at_the_traced_batch_is_folded(data_dependent):
    module = data_dependent.paths["dat-offset-sampling"]
    (row,) = [r for r in data_dependent.run.rewrite.graph if r.rule == "batch-constant"]
    assert (row.path, row.applied, row.note) == (module, True, "in x.onnx")
    assert not any(f.check == "batch-dependent constant" for f in data_dependent.run.lint[0].findings)


def test_cli_export_to_npu_writes_the_npu_graph_linted_and_checked(tmp_path):
    """An ultralytics AIFI (RT-DETR's LayerNorm encoder) at P5: loads without a plugin; its LayerNorms need npu
    passes."""
    from ultralytics.nn.modules import AIFI

    checkpoint = save_checkpoint(build_detector_with(lambda c: AIFI(c, 2 * c, 4), imgsz=64), tmp_path / "aifi.pt")
    result = CliRunner().invoke(app, ["export", str(checkpoint), "--target", "onnx,npu", "--imgsz", "64", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [(p["label"], p["passed"]) for p in data["parity"]] == [("", True), ("npu graph", True)]
    assert [(x["target"], x["passed"]) for x in data["lint"]] == [("onnx", True), ("npu", True)]
    assert [e["path"] for e in data["exports"]] == [str(tmp_path / "aifi.onnx"), str(tmp_path / "aifi.npu.onnx")]
    layer_norms = [r for r in data["rewrite"]["graph"] if r["rule"] == "layer-norm"]
    assert {r["path"] for r in layer_norms} == {"model.10.norm1", "model.10.norm2"}
    assert all(r["applied"] and r["max_abs"] is not None for r in layer_norms)
