"""OpenCV's DNN module (exporters/opencv.py) as a runtime for the ONNX file `export` writes: the default export of
every zoo detector and of both shipped fixtures holds only standard-domain ops, passes the opencv lint, and loads and
passes parity in OpenCV; what OpenCV cannot run is named by the lint's opencv target; bad input is one message."""

import contextlib
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from attn_deploy import fixtures, pipeline
from attn_deploy.bench import suite
from attn_deploy.bench.harness import Budget
from attn_deploy.errors import AttnDeployError
from attn_deploy.exporters import onnx as onnx_backend
from attn_deploy.exporters import opencv, open_runner
from attn_deploy.lint import lint
from attn_deploy.loading import LoadedModel, load
from attn_deploy.models.detector import build_detector
from attn_deploy.verify import verify_export

pytestmark = pytest.mark.skipif(opencv.missing() is not None, reason=f"{opencv.missing()}")
# The CI subset (scripts/opencv_parity_report.py runs every zoo detector): the MHSA detector, whose attention the
# ort target fuses, and both fixtures; CGA's window attention needs 128.
SOURCES = {"mhsa": 64, "cga-fixture": 128, "simam-fixture": 64}


def _loaded(source: str, tmp_path: Path) -> LoadedModel:
    if source.endswith("-fixture"):
        return load(fixtures.checkpoint(source.removesuffix("-fixture")))
    model = build_detector(source, imgsz=SOURCES[source])
    return LoadedModel(model, tmp_path / f"{source}.pt", model.names, 32, "detect", (SOURCES[source],) * 2)


@pytest.mark.parametrize("source", SOURCES)
def test_default_export_is_standard_onnx_and_passes_parity_in_opencv(source, tmp_path):
    loaded = _loaded(source, tmp_path)
    path = tmp_path / "model.onnx"
    size = (SOURCES[source],) * 2
    built = pipeline.build(loaded, pipeline.Plan(["onnx"], path, onnx_backend.OnnxOptions(size)))
    assert {n.domain for n in onnx.load(path).graph.node} <= {"", "ai.onnx"}
    assert [r.target for r in built.lint] == ["onnx"] and all(r.passed for r in built.lint)
    assert lint(path, "opencv").passed
    report = verify_export(path, loaded, runtime="opencv")
    assert report.backend == "opencv" and report.passed, report.worst


def _one_node(path: Path, op: str, domain: str = "") -> Path:
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 4, 4])
    y = helper.make_tensor_value_info("output0", TensorProto.FLOAT, None)
    node = helper.make_node(op, ["images"], ["output0"], domain=domain)
    imports = [helper.make_opsetid("", 18)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    onnx.save(helper.make_model(helper.make_graph([node], "g", [x], [y]), opset_imports=imports), path)
    return path


def test_opencv_lint_names_what_opencv_cannot_run_and_loading_it_is_one_message(tmp_path):
    """OpenCV's importer has no GlobalLpPool, which onnxruntime runs: the lint's opencv target names it, and
    opening such a file in OpenCV is one error naming the lint to run. The ort target's contrib form it runs."""
    found = lint(_one_node(tmp_path / "lp.onnx", "GlobalLpPool"), "opencv")
    assert not found.passed and any("GlobalLpPool" in f.detail for f in found.errors)
    assert lint(tmp_path / "lp.onnx", "ort").passed
    assert lint(_one_node(tmp_path / "mha.onnx", "MultiHeadAttention", "com.microsoft"), "opencv").passed
    with pytest.raises(AttnDeployError, match="OpenCV .* cannot load .*lint --target opencv"):
        open_runner(tmp_path / "lp.onnx", runtime="opencv")


def test_bench_runs_opencv_only_when_asked_on_the_onnx_file(tmp_path):
    """`bench --backend opencv`: OpenCV times the ONNX file itself (no artefact of its own); a plain bench keeps
    its default backends."""
    assert "opencv" not in {v.backend for v in suite.choose_variants("cpu", None)[0]}
    variants, _ = suite.choose_variants("cpu", ["opencv"])
    plan = suite.Plan("cpu", variants, None, 1, Budget(warmup_s=0, iters=3, duration_s=0), profile=False)
    path = _one_node(tmp_path / "relu.onnx", "Relu")
    subject, _ = suite.from_artefact(path, plan, None, tmp_path, lambda text: contextlib.nullcontext())
    assert [v.backend for v in variants] == ["opencv"] and suite.runnable(subject, variants[0])
    result = suite.time_variant(subject, variants[0], 1, plan)
    assert result.latency_ms.count >= 3
