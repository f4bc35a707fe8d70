"""OpenVINO, mixed-precision fp16, detection-level parity, localisation and the multi-target CLI, on real backends."""

import json
import xml.etree.ElementTree as ET

import numpy as np
import onnx
import openvino as ov
import pytest
from typer.testing import CliRunner

from attn_deploy import heads, load
from attn_deploy.cli import app
from attn_deploy.exporters import mixed_precision, open_runner, openvino
from attn_deploy.verify import localise_export, verify_export
from attn_deploy.exporters.onnx import read_metadata
from attn_deploy.parity import TOLERANCES, Detections, compare_detections, parity_inputs

runner = CliRunner()
SIZE = (320, 320)


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def cga(fork_checkpoints, tmp_path_factory):
    """The CGA detector exported with the rewrites to ONNX and OpenVINO at 320."""
    out = tmp_path_factory.mktemp("backends") / "cga.onnx"
    result = invoke("export", fork_checkpoints["cga"], "-o", out, "--imgsz", "320", "--target", "onnx,openvino",
                    "--junit", out.with_suffix(".xml"), "--json")
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout), load(fork_checkpoints["cga"])


def test_export_to_onnx_and_openvino_checks_every_row(cga):
    _, data, _ = cga
    rows = [(p["backend"], p["precision"], p["gating"], p["passed"]) for p in data["parity"]]
    assert rows[:2] == [("onnxruntime", "fp32", True, True), ("openvino", "fp32", True, True)]
    default = data["parity"][2]
    assert (default["backend"], default["gating"], default["label"]) == ("openvino", False, "device default precision")
    hint = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()
    assert default["precision"] == openvino.PRECISIONS[hint]
    assert [lint["target"] for lint in data["lint"]] == ["onnx", "openvino"]


def test_openvino_export_is_what_ultralytics_predicts_with(cga):
    from ultralytics import YOLO
    from ultralytics.utils import ASSETS

    path, _, _ = cga
    directory = openvino.model_dir(path)
    assert sorted(p.name for p in directory.iterdir()) == ["cga.bin", "cga.xml", "metadata.yaml"]
    results = YOLO(str(directory), task="detect")(ASSETS / "bus.jpg", imgsz=320, conf=0.0, verbose=False)
    assert results[0].boxes.data.shape[1] == 6 and len(results[0].boxes) > 0
    assert results[0].names == read_metadata(path)["names"]


def test_openvino_fp16_weights_are_compressed_and_checked_at_fp16(cga, tmp_path):
    path, _, loaded = cga
    built = openvino.export(path, tmp_path / "half_openvino_model", openvino.OpenVINOOptions(half=True))
    assert (tmp_path / "half_openvino_model" / "half.bin").stat().st_size < 0.6 * (
        openvino.model_dir(path) / "cga.bin").stat().st_size
    report = verify_export(built.path, loaded, detections=Detections(conf=0.0))
    assert report.precision == "fp16" and report.tolerance == TOLERANCES["fp16"]
    assert min(r.cosine for r in report.results) > 0.9999


def test_openvino_refuses_an_unknown_device(cga, fork_checkpoints):
    path, _, _ = cga
    result = invoke("verify", openvino.model_dir(path), "--ref", fork_checkpoints["cga"], "--ov-device", "NPU")
    assert result.exit_code == 2 and "OpenVINO device NPU is not available" in result.stderr


def test_mixed_precision_keeps_measured_nodes_in_fp32(cga, tmp_path):
    path, _, loaded = cga
    chosen = mixed_precision.measure(path, parity_inputs(SIZE))
    built = mixed_precision.export(path, tmp_path / "cga.fp16.onnx", chosen)
    model = onnx.load(str(built.path))
    weights = {t.data_type for t in model.graph.initializer if len(t.dims) == 4}
    assert weights == {onnx.TensorProto.FLOAT16}
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # fp32 in, fp32 out
    kept = {n.name for n in model.graph.node} & set(chosen.kept_fp32)
    assert kept and "Softmax" in mixed_precision.kept_op_types(onnx.load(str(path)), chosen.kept_fp32)
    assert "kept in fp32" in built.notes[0]
    report = verify_export(built.path, loaded, detections=Detections(conf=0.0))
    assert report.precision == "fp16" and report.tolerance == TOLERANCES["fp16"]
    assert all(r.nan == r.inf == 0 for r in report.results)


def test_detection_parity_matches_identical_outputs_and_misses_moved_boxes(cga):
    path, _, loaded = cga
    x = parity_inputs(SIZE)["bus.jpg"]
    out = open_runner(path).run([x])[0]
    head, fp32 = heads.of_model(loaded.model), TOLERANCES["fp32"]
    (same,) = compare_detections("bus.jpg", [out], [out.copy()], head, fp32, Detections(conf=0.0), SIZE)
    assert (same.recall, same.precision, same.passed) == (1.0, 1.0, True) and same.ref_boxes == 300
    moved = out.copy()
    moved[:, 0] += 0.5 * moved[:, 2]  # every box moves by half its width: IoU 1/3 with itself
    (miss,) = compare_detections("bus.jpg", [out], [moved], head, fp32, Detections(conf=0.0), SIZE)
    assert miss.recall < 0.1 and not miss.passed  # a moved box can land on a neighbour of its class


def test_perturbed_attention_weights_are_caught_and_localised(cga, tmp_path):
    path, _, loaded = cga
    model = onnx.load(str(path))
    inside = {n.input[1] for n in model.graph.node if n.name.startswith("/model.10/") and n.op_type == "Conv"}
    weight = next(t for t in model.graph.initializer if t.name in inside)
    weight.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(weight) * np.float32(1.5), weight.name))
    broken = tmp_path / "broken.onnx"
    onnx.save(model, str(broken))
    report = verify_export(broken, loaded)
    assert not report.passed
    found = localise_export(broken, loaded, report.worst.input, report.tolerance)
    assert found.first == "model.10"
    assert [x.departs for x in found.layers if x.path in ("model.9", "model.10")] == [False, True]


def test_verify_writes_junit_with_the_localised_failure(cga, fork_checkpoints, tmp_path):
    path, _, _ = cga
    suite = ET.parse(path.with_suffix(".xml")).getroot()
    assert suite.get("failures") == "0" and int(suite.get("tests")) == 5  # 2 lints, 3 parity rows
    model = onnx.load(str(path))
    for t in model.graph.initializer:
        if t.name.startswith("model.10.") and len(t.dims) == 4:
            t.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(t) * np.float32(2), t.name))
    onnx.save(model, str(tmp_path / "broken.onnx"))
    result = invoke("verify", tmp_path / "broken.onnx", "--ref", fork_checkpoints["cga"], "--junit",
                    tmp_path / "r.xml")
    assert result.exit_code == 1 and "first departing module model.10" in result.stdout
    failure = ET.parse(tmp_path / "r.xml").getroot().find("testcase/failure")
    assert "first departing module: model.10" in failure.text


def test_target_trt_without_tensorrt_fails_at_once_and_writes_nothing(fork_checkpoints, tmp_path):
    from attn_deploy.exporters import tensorrt

    if tensorrt.missing() is None:
        pytest.skip("TensorRT and a GPU are present here")
    out = tmp_path / "cga.onnx"
    result = invoke("export", fork_checkpoints["cga"], "-o", out, "--imgsz", "320", "--target", "onnx,trt")
    assert result.exit_code == 2 and "TensorRT is not installed" in result.stderr
    assert "lint of the graph for trt passes" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, message", [
    (["--target", "onnx,tflite"], "unknown target tflite"),
    (["--tol", "fp16=0.1"], "expected PRECISION=ATOL,RTOL"),
    (["--tol", "fp8=0.1,0.1"], "unknown precision 'fp8'"),
])
def test_bad_target_and_tolerance_options(fork_checkpoints, tmp_path, args, message):
    result = invoke("export", fork_checkpoints["cga"], "-o", tmp_path / "x.onnx", *args)
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "x.onnx").exists()
