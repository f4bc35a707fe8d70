"""ncnn: export with the real pnnx converter, parity in ncnn's own runtime, ultralytics predicting with the export,
the ncnn lint against the converter, the batch-axis rule and bench's ncnn rows, on the shipped CGA and SimAM
fixtures at 160 (tune's ncnn candidates run in tests/test_tune.py)."""

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

pytest.importorskip("ncnn", reason="the ncnn extra is not installed")
pytest.importorskip("pnnx", reason="the ncnn extra is not installed")

from attn_deploy import load, shapes  # noqa: E402
from attn_deploy.cli import app  # noqa: E402
from attn_deploy.errors import AttnDeployError  # noqa: E402
from attn_deploy.exporters import artefact_metadata, backend_of, ncnn, open_runner  # noqa: E402
from attn_deploy.lint import lint  # noqa: E402
from attn_deploy.lint import opset as lint_opset  # noqa: E402
from attn_deploy.parity import TOLERANCES  # noqa: E402
from attn_deploy.verify import verify_export  # noqa: E402

FIXTURES = Path(__file__).parents[1] / "attn_deploy" / "fixtures"
CGA, SIMAM = FIXTURES / "yolov8n-cga-shapes.pt", FIXTURES / "yolov8n-simam-shapes.pt"
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def export(checkpoint: Path, out: Path, target: str = "ncnn") -> dict:
    result = invoke("export", checkpoint, "-o", out, "--imgsz", "160", "--target", target, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def cga(tmp_path_factory):
    out = tmp_path_factory.mktemp("ncnn") / "cga.onnx"
    return out, export(CGA, out)


def test_export_writes_ultralytics_layout_and_passes_parity_in_ncnn(cga):
    out, data = cga
    directory = ncnn.model_dir(out)
    assert sorted(p.name for p in directory.iterdir()) == ["metadata.yaml", "model.ncnn.bin", "model.ncnn.param"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["cga.onnx", "cga_ncnn_model"]  # nothing else beside
    assert [(p["backend"], p["precision"], p["passed"]) for p in data["parity"]] == [
        ("onnxruntime", "fp32", True), ("ncnn", "fp32", True)]
    assert [lint["target"] for lint in data["lint"]] == ["ncnn"] and data["lint"][0]["passed"]
    assert backend_of(directory) == "ncnn" and artefact_metadata(directory)["task"] == "detect"
    assert lint_opset(onnx.load(out)) == ncnn.OPSET == 17  # reductions with their axes as attributes, read by pnnx


def test_windows_stay_off_the_batch_axis_by_a_verified_rule(cga):
    _, data = cga
    (layer,) = data["rewrite"]["layers"]
    assert (layer["rule"], layer["applied"]) == ("cga-window-unbatched", True)
    assert layer["max_abs"] < 1e-6


def test_ultralytics_predicts_the_same_detections_as_pytorch(cga):
    from ultralytics import YOLO

    out, _ = cga
    for index in range(3):
        image, _ = shapes.draw_image(shapes.ShapesSpec(), "val", index)
        (ref,) = YOLO(str(CGA)).predict(image, imgsz=160, verbose=False)
        (got,) = YOLO(str(ncnn.model_dir(out))).predict(image, imgsz=160, verbose=False)
        assert got.names == ref.names and len(got.boxes) == len(ref.boxes) > 0
        assert np.array_equal(got.boxes.cls.numpy(), ref.boxes.cls.numpy())
        assert np.abs(got.boxes.xyxy.numpy() - ref.boxes.xyxy.numpy()).max() < 0.5
        assert np.abs(got.boxes.conf.numpy() - ref.boxes.conf.numpy()).max() < 0.01


def test_half_stores_fp16_weights_and_is_judged_at_fp16(cga, tmp_path):
    out, _ = cga
    built = ncnn.export(out, tmp_path / "half_ncnn_model", ncnn.NcnnOptions(half=True))
    size = (built.path / ncnn.BIN).stat().st_size
    assert size < 0.6 * (ncnn.model_dir(out) / ncnn.BIN).stat().st_size
    report = verify_export(built.path, load(CGA))
    assert report.precision == "fp16" and report.tolerance == TOLERANCES["fp16"] and report.passed


def test_runner_settings_and_threads(cga):
    out, _ = cga
    x = np.random.default_rng(0).random((2, 3, 160, 160), dtype=np.float32)
    fp32 = open_runner(ncnn.model_dir(out), threads=1)
    unpacked = ncnn.Runner(ncnn.model_dir(out), 2, ncnn.NcnnSettings("fp32", packing=False))
    try:
        (a,), (b,) = fp32.run([x]), unpacked.run([x])
        assert a.shape == (2, 8, 525) and np.abs(a - b).max() < 1e-3
        with pytest.raises(AttnDeployError, match="does not fit"):
            fp32.run([x[:, :, :96]])
    finally:
        fp32.close()
        unpacked.close()


def test_lint_agrees_with_pnnx_and_ncnn_on_windows_stacked_on_the_batch(cga, tmp_path):
    out, _ = cga
    stacked = tmp_path / "stacked.onnx"
    export(CGA, stacked, "onnx")
    found = lint(stacked, "ncnn")
    assert {f.check for f in found.errors} >= {"batch axis Concat"}
    assert lint(out, "ncnn").passed
    with pytest.raises(AttnDeployError, match="ncnn cannot load .*tensor_split.*pnnx warned: cat along batch axis"):
        ncnn.export(stacked, tmp_path / "stacked_ncnn_model", ncnn.NcnnOptions())
    assert not (tmp_path / "stacked_ncnn_model").exists() and not list(tmp_path.glob(".stacked_ncnn_model*"))


def test_simam_fixture_exports_with_parity(tmp_path):
    data = export(SIMAM, tmp_path / "simam.onnx")
    assert all(p["passed"] for p in data["parity"]) and data["parity"][-1]["backend"] == "ncnn"


def test_without_the_extra_ncnn_stops_at_once_naming_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pnnx", None)
    result = invoke("export", CGA, "-o", tmp_path / "m.onnx", "--imgsz", "160", "--target", "onnx,ncnn")
    assert result.exit_code == 2 and 'pip install "attn-deploy[ncnn]"' in result.stderr
    assert "Traceback" not in result.output and not list(tmp_path.iterdir())


def test_a_batch_ncnn_does_not_have_is_refused_writing_nothing(tmp_path):
    result = invoke("export", CGA, "-o", tmp_path / "m.onnx", "--imgsz", "160", "--target", "ncnn", "--batch", "2")
    assert result.exit_code == 2 and "one image at a time" in result.stderr and not list(tmp_path.iterdir())


def test_an_end_to_end_head_is_refused_before_anything_is_written(tmp_path):
    from attn_deploy import save_checkpoint
    from tests.task_models import build

    checkpoint = save_checkpoint(build("yolo26n.yaml", "detect"), tmp_path / "yolo26n.pt", imgsz=64)
    out = tmp_path / "out"
    out.mkdir()
    result = invoke("export", checkpoint, "-o", out / "m.onnx", "--imgsz", "64", "--target", "ncnn", "--end2end")
    assert result.exit_code == 2 and "no top-k layer" in result.stderr and "without --end2end" in result.stderr
    assert "Traceback" not in result.output and not list(out.iterdir())


def test_bench_times_ncnn_settings_one_image_at_a_time(cga, tmp_path):
    out, _ = cga
    quick = ["--warmup-s", "0", "--iters", "3", "--duration-s", "0", "--no-profile"]
    result = invoke("bench", ncnn.model_dir(out), "--backend", "ncnn", "--threads", "1", *quick, "--output-dir",
                    tmp_path, "--json")
    assert result.exit_code == 0, result.output
    rows = {(r["backend"], r["mode"], r["precision"], r["batch"]) for r in json.loads(result.stdout)["results"]}
    assert rows == {("ncnn", "", "fp32", 1), ("ncnn", "unpacked", "fp32", 1), ("ncnn", "", "fp16", 1),
                    ("ncnn", "", "bf16", 1)}
    result = invoke("bench", CGA, "--backend", "ncnn", *quick, "--output-dir", tmp_path / "batches")
    assert result.exit_code == 2 and "--batch 1" in result.stderr and not (tmp_path / "batches").exists()


@pytest.mark.parametrize("head, carries", [("seg", "masks"), ("pose", "keypoints"), ("obb", "obb")])
def test_every_head_passes_through_ncnn_and_ultralytics_predicts_its_task(head, carries, tmp_path):
    from ultralytics import YOLO

    out = tmp_path / f"{head}.onnx"
    data = export(FIXTURES / f"yolov8n-cga-{head}-shapes.pt", out)
    assert [(p["backend"], p["passed"]) for p in data["parity"]] == [("onnxruntime", True), ("ncnn", True)]
    image, _ = shapes.draw_image(shapes.ShapesSpec(), "val", 0)
    (result,) = YOLO(str(ncnn.model_dir(out)))(image, imgsz=160, verbose=False)
    assert getattr(result, carries) is not None and len(getattr(result, carries)) > 0


def test_a_first_layer_working_in_place_runs_on_the_runners_own_copy(tmp_path):
    """ncnn's in-place layers write into their input: on memory numpy owns, a first Erf or LayerNorm crashed."""
    import torch

    class FirstInPlace(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.layer_norm(torch.erf(x), (6,))

    x = torch.randn(2, 8, 6, 6, generator=torch.Generator().manual_seed(0))
    torch.onnx.export(FirstInPlace(), (x[:1],), str(tmp_path / "m.onnx"), opset_version=18, dynamo=False)
    runner = ncnn.Runner(ncnn.export(tmp_path / "m.onnx", tmp_path / "m_ncnn_model", ncnn.NcnnOptions()).path)
    try:
        (got,) = runner.run([x.numpy()])
    finally:
        runner.close()
    assert np.abs(got - FirstInPlace()(x).numpy()).max() < 1e-5


def _reductions(opset: int) -> onnx.ModelProto:
    """A conv, then its channel sum, mean, max and min and its spatial sum and max, concatenated: the reductions
    that user code writes as ``x.sum(1, keepdim=True)``, ``torch.max(x, 1, keepdim=True)[0]``, ``x.amax((2, 3))``."""
    weight = np.random.default_rng(3).standard_normal((6, 3, 3, 3)).astype(np.float32)

    def reduce(op: str, axes: list[int], out: str):
        if op == "ReduceSum" or opset >= 18:
            return [helper.make_node("Constant", [], [f"{out}_axes"], value=numpy_helper.from_array(
                np.array(axes, np.int64))), helper.make_node(op, ["c", f"{out}_axes"], [out], keepdims=1)]
        return [helper.make_node(op, ["c"], [out], axes=axes, keepdims=1)]

    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1])]
    for op, out in (("ReduceSum", "s"), ("ReduceMean", "m"), ("ReduceMax", "h"), ("ReduceMin", "l")):
        nodes += reduce(op, [1], out)
    nodes += reduce("ReduceSum", [2, 3], "area") + reduce("ReduceMax", [2, 3], "peak")
    nodes += [helper.make_node("Add", ["s", "area"], ["sp"]), helper.make_node("Add", ["sp", "peak"], ["sa"]),
              helper.make_node("Concat", ["sa", "m", "h", "l"], ["y"], axis=1)]
    for i, made in enumerate(nodes):
        made.name = f"/model.10/{made.op_type}_{i}"
    graph = helper.make_graph(nodes, "reductions",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


def _in_ncnn(model: onnx.ModelProto, tmp_path: Path, x: np.ndarray) -> np.ndarray:
    tmp_path.mkdir()
    onnx.save(model, tmp_path / "r.onnx")
    ncnn.export(tmp_path / "r.onnx", tmp_path / "r_ncnn_model", ncnn.NcnnOptions())
    found = ncnn.Runner(tmp_path / "r_ncnn_model", settings=ncnn.NcnnSettings(winograd=False))
    try:
        return found.run([x])[0]
    finally:
        found.close()


def test_reductions_keep_their_axes_through_pnnx_by_the_opset_and_a_verified_pass(tmp_path):
    from attn_deploy.rewrite.graph import apply
    from attn_deploy.rewrite.graph.engine import run

    x = np.random.default_rng(4).standard_normal((1, 3, 8, 8)).astype(np.float32)
    as_read, as_written = _reductions(18), _reductions(17)
    reference = run(as_read, [{"x": x}])[0][0]
    assert reference.shape == (1, 9, 8, 8)  # the channel sum plus each channel's spatial sum: 6, then 3 maps
    found = lint_model(as_read, tmp_path / "read.onnx")
    # every ReduceMax and ReduceMin, and the sum and mean over one axis; the sum over (2, 3) is read
    assert [(f.check, f.detail[:60]) for f in found] == [
        ("reduce axes input", "5 reduction(s) (ReduceMax, ReduceMean, ReduceMin, ReduceSum)")]
    with pytest.raises(AttnDeployError, match="ReduceM(ax|in) not exists"):  # pnnx leaves them as unknown layers
        _in_ncnn(as_read, tmp_path / "18", x)
    assert [(f.check, f.detail[:28]) for f in lint_model(as_written, tmp_path / "written.onnx")] == [
        ("reduce axes input", "1 reduction(s) (ReduceSum) w"), ("reduce several axes", "1 reduction(s) (ReduceMax) o")]
    done = apply(as_written, ["ncnn"], [{"x": x}])
    assert {r.rule for r in done.layers if r.applied} == {"reduce-sum-as-mean", "reduce-one-axis"}
    assert not {"ReduceSum"} & {n.op_type for n in done.model.graph.node}
    assert lint_model(done.model, tmp_path / "done.onnx") == []
    np.testing.assert_allclose(_in_ncnn(done.model, tmp_path / "17", x), reference, rtol=1e-4, atol=1e-4)


def lint_model(model: onnx.ModelProto, path: Path):
    onnx.save(model, path)
    return lint(path, "ncnn").errors


def test_a_detector_with_every_spelling_of_a_reduction_passes_parity_in_ncnn(tmp_path):
    from attn_deploy import LoadedModel, OnnxOptions, pipeline
    from attn_deploy.models.detector import build_detector_with

    from .variants import ExtremaGate

    model = build_detector_with(ExtremaGate, imgsz=96)
    loaded = LoadedModel(model, tmp_path / "m.pt", model.names, 32, "detect", (96, 96))
    plan = pipeline.Plan(["ncnn"], tmp_path / "m.onnx", OnnxOptions((96, 96)))
    done = pipeline.deploy(loaded, plan)
    assert done.passed and all(r.passed for r in done.lint), [f.detail for r in done.lint for f in r.findings]
    assert {r.rule for r in done.rewrite.graph if r.applied} >= {"reduce-one-axis"}
    assert [(p.backend, p.passed) for p in done.parity] == [("onnxruntime", True), ("ncnn", True)]


def _stacked_branches() -> onnx.ModelProto:
    """SK-style (written here as a graph): two convolutions stacked on a new axis 1 (rank 5), summed across it,
    pooled, and a softmax across the branches weighting them."""
    from .test_graph_passes import graph, node

    rng = np.random.default_rng(5)
    weights = {f"w{i}": rng.standard_normal((6, 3, 3, 3)).astype(np.float32) * 0.3 for i in range(2)}
    return graph([node("Conv", ["x", "w0"], "a", pads=[1, 1, 1, 1]), node("Conv", ["x", "w1"], "b", pads=[2, 2, 2, 2],
                                                                        dilations=[2, 2]),
                  node("Unsqueeze", ["a", "axis"], "ua"), node("Unsqueeze", ["b", "axis"], "ub"),
                  node("Concat", ["ua", "ub"], "stacked", axis=1),
                  node("ReduceSum", ["stacked", "axis"], "total", keepdims=0),
                  node("ReduceMean", ["total"], "pooled", axes=[2, 3]),
                  node("Concat", ["pooled", "pooled"], "both", axis=1),
                  node("Reshape", ["both", "split"], "logits"), node("Softmax", ["logits"], "weights", axis=1),
                  node("Mul", ["stacked", "weights"], "weighted"),
                  node("ReduceSum", ["weighted", "axis"], "y", keepdims=0)],
                 {"x": [1, 3, 8, 8]}, {**weights, "axis": np.array([1]), "split": np.array([1, 2, 6, 1, 1])}, opset=17)


def test_stacked_branches_keep_the_batch_axis_apart_and_run_in_ncnn(tmp_path):
    from attn_deploy.rewrite.graph import apply
    from attn_deploy.rewrite.graph.engine import run

    x = np.random.default_rng(6).standard_normal((1, 3, 8, 8)).astype(np.float32)
    model = _stacked_branches()
    done = apply(model, ["ncnn"], [{"x": x}])
    assert {r.rule for r in done.layers if r.applied} >= {"rank-merge"}
    assert lint_model(done.model, tmp_path / "merged.onnx") == []
    np.testing.assert_allclose(_in_ncnn(done.model, tmp_path / "ncnn", x), run(model, [{"x": x}])[0][0],
                               rtol=1e-4, atol=1e-4)


def test_a_reduction_over_an_axis_0_of_several_slices_is_named_for_ncnn(tmp_path):
    from .test_graph_passes import graph, node

    model = graph([node("Reshape", ["x", "folded"], "f"), node("ReduceMean", ["f"], "m", axes=[0], keepdims=1),
                   node("Softmax", ["f"], "s", axis=0), node("Mul", ["m", "s"], "y")],
                  {"x": [1, 2, 4, 4]}, {"folded": np.array([2, 16])}, opset=17)
    findings = {f.check for f in lint_model(model, tmp_path / "folded.onnx")}
    assert findings == {"batch axis ReduceMean", "batch axis Softmax"}
    onnx.save(model, tmp_path / "folded.onnx")
    assert lint(tmp_path / "folded.onnx", "onnx").passed  # a target with a batch axis runs it
