"""Accuracy parity on the trained fixtures: mAP per backend against PyTorch, INT8, and the scorer's trust."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from attn_deploy import fixtures, load
from attn_deploy.accuracy import MAP_TOLERANCES, evaluate
from attn_deploy.cli import app
from attn_deploy.data import calibration_paths, load_split, shapes_data
from attn_deploy.errors import AttnDeployError
from attn_deploy.exporters import qdq, tensorrt
from attn_deploy.exporters import torch as torch_backend

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def shapes_yaml(tmp_path_factory):
    return shapes_data(tmp_path_factory.mktemp("data"), ("train", "val"))


@pytest.mark.parametrize("name", ["cga", "simam"])
def test_trained_fixture_reaches_map50_of_0_8_and_matches_ultralytics_validator(name, shapes_yaml):
    from ultralytics import YOLO

    loaded = load(fixtures.checkpoint(name))
    ours = evaluate(torch_backend.Runner(loaded.model), load_split(shapes_yaml), loaded.imgsz, batch=8)
    theirs = YOLO(str(fixtures.checkpoint(name))).val(data=str(shapes_yaml), imgsz=loaded.imgsz[0], batch=8,
                                                      device="cpu", plots=False, verbose=False)
    assert ours.map50 >= 0.8
    assert ours.map50 == pytest.approx(theirs.box.map50, abs=0.01)
    assert ours.map == pytest.approx(theirs.box.map, abs=0.01)


@pytest.fixture(scope="module")
def int8_export(shapes_yaml, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "simam.onnx"
    result = invoke("export", fixtures.checkpoint("simam"), "-o", out, "--target", "onnx,openvino", "--int8",
                    "--data", shapes_yaml, "--json")
    return out, result


def test_export_with_data_scores_every_row_and_fp32_backends_keep_map(int8_export):
    _, result = int8_export
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["parity"]
    by = {(r["backend"], r["precision"], r["label"]): r for r in rows}
    for key in [("onnxruntime", "fp32", ""), ("openvino", "fp32", "")]:
        accuracy = by[key]["accuracy"]
        assert accuracy["reference"]["map50"] >= 0.8
        assert abs(accuracy["accuracy"]["map"] - accuracy["reference"]["map"]) <= MAP_TOLERANCES["fp32"]
    int8 = [r for r in rows if r["precision"] == "int8"]
    assert {r["backend"] for r in int8} == {"onnxruntime", "openvino"}
    gating = [r for r in int8 if r["gating"]]
    assert gating and all(r["accuracy"]["tolerance"] == MAP_TOLERANCES["int8"] for r in gating)


def _zero_point_types(model) -> dict[str, set[int]]:
    """The integer types of the activations (QuantizeLinear's zero points) and of the weights (the quantized
    initializers that DequantizeLinear reads)."""
    types = {i.name: i.data_type for i in model.graph.initializer}
    return {"activations": {types[n.input[2]] for n in model.graph.node
                            if n.op_type == "QuantizeLinear" and len(n.input) > 2},
            "weights": {types[n.input[0]] for n in model.graph.node
                        if n.op_type == "DequantizeLinear" and n.input[0] in types}}


def test_the_int8_onnx_is_in_onnxruntimes_placement_fused_and_within_the_map_budget(int8_export):
    import onnx
    import onnxruntime as ort

    out, result = int8_export
    model = onnx.load(str(out.with_suffix(".int8.onnx")))
    assert qdq.is_quantized(model)
    assert "'int8': True" in {p.key: p.value for p in model.metadata_props}["args"]
    types = _zero_point_types(model)
    assert types["activations"] == {onnx.TensorProto.UINT8}  # uint8 activations, which onnxruntime's kernels take
    assert onnx.TensorProto.INT8 in types["weights"]
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(out.with_name("optimised.onnx"))
    ort.InferenceSession(str(out.with_suffix(".int8.onnx")), options, providers=["CPUExecutionProvider"])
    fused = {n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node}
    assert "QLinearConv" in fused  # onnxruntime runs the convolutions in integer kernels
    row = next(r for r in json.loads(result.stdout)["parity"]
               if (r["backend"], r["precision"]) == ("onnxruntime", "int8"))
    assert row["passed"] and abs(row["accuracy"]["delta"]) <= 0.005  # the issue's budget, tighter than int8's 0.02


def test_tensorrts_placement_quantizes_with_symmetric_int8(tmp_path, shapes_yaml):
    import onnx
    from onnx import numpy_helper

    from attn_deploy.data import Batches

    source = tmp_path / "simam.onnx"
    assert invoke("export", fixtures.checkpoint("simam"), "-o", source, "--imgsz", "96").exit_code == 0
    calibration = Batches(tuple(calibration_paths(shapes_yaml, 4)), (96, 96))
    done = qdq.export(source, qdq.output_path(source, "tensorrt"), calibration, [], placement="tensorrt")
    assert done.path.name == "simam.trt.int8.onnx" and done.target == "trt-qdq"
    model = onnx.load(str(done.path))
    types = _zero_point_types(model)
    assert types["activations"] == {onnx.TensorProto.INT8} and onnx.TensorProto.INT8 in types["weights"]
    zero_points = {i.name: i for i in model.graph.initializer}
    assert all(not numpy_helper.to_array(zero_points[n.input[2]]).any() for n in model.graph.node
               if n.op_type == "QuantizeLinear")  # symmetric: every zero point 0, as TensorRT requires
    tensorrt._check_typed_graph(done.path, "int8")
    with pytest.raises(AttnDeployError, match="Q/DQ"):
        tensorrt._check_typed_graph(source, "int8")


def test_verify_with_data_scores_an_existing_export(int8_export, shapes_yaml):
    out, _ = int8_export
    result = invoke("verify", out.with_name("simam_int8_openvino_model"), "--ref", fixtures.checkpoint("simam"),
                    "--data", shapes_yaml, "--map-tol", "int8=1", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["parity"]
    assert {r["precision"] for r in rows} == {"int8"} and all(r["accuracy"]["tolerance"] == 1 for r in rows)


def test_an_impossible_map_tolerance_fails_the_int8_row(int8_export, shapes_yaml):
    out, _ = int8_export
    result = invoke("verify", out.with_suffix(".int8.onnx"), "--ref", fixtures.checkpoint("simam"),
                    "--data", shapes_yaml, "--map-tol", "int8=-1", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["parity"][0]["accuracy"]["accuracy"]["map"] > 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "{tmp}/none.yaml"], "no such data YAML"),
        (["--int8"], "--calib DIR or --data"),
        (["--data", "shapes", "--map-tol", "fp8=0.1"], "unknown precision"),
        (["--int8", "--calib", "{tmp}/none"], "does not exist"),
    ],
)
def test_bad_accuracy_input_exits_2_with_one_message_and_no_file(tmp_path, args, message):
    out = tmp_path / "x.onnx"
    result = invoke("export", fixtures.checkpoint("simam"), "-o", out, *[a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert not out.exists()


def test_labels_with_the_wrong_columns_are_one_clear_error(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    import cv2

    cv2.imwrite(str(tmp_path / "images" / "a.png"), np.zeros((32, 32, 3), np.uint8))
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.2\n")
    (tmp_path / "data.yaml").write_text("path: .\nval: images\nnames: [a]\n")
    with pytest.raises(AttnDeployError, match="5 columns"):
        load_split(tmp_path / "data.yaml")


def test_an_unreadable_image_in_a_split_is_one_clear_error(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"not a png")
    (tmp_path / "data.yaml").write_text("path: .\nval: images\nnames: [a]\n")
    with pytest.raises(AttnDeployError, match="cannot be read as an image"):
        load_split(tmp_path / "data.yaml")


def test_calibration_images_spread_over_the_train_split(shapes_yaml):
    paths = calibration_paths(shapes_yaml, limit=10)
    assert len(paths) == 10 and paths[0] != paths[1]
    assert len({p.parent for p in paths}) == 1 and paths[-1].stem > "00100"


@pytest.mark.parametrize("name, task", [("cga-seg", "segment"), ("cga-pose", "pose"), ("cga-obb", "obb")])
def test_task_scorer_matches_ultralytics_validator_on_the_same_images(name, task, tmp_path):
    """Masks, keypoints or rotated boxes scored as yolo val scores them, on the first 32 validation images fed at
    the same size (rect=False: yolo val's default pads each batch by half a stride, 160 to 192 here)."""
    from ultralytics import YOLO

    config = yaml.safe_load(shapes_data(tmp_path, ("val",), task).read_text())
    root = Path(config["path"])
    (root / "first.txt").write_text("\n".join(sorted(str(p) for p in (root / config["val"]).iterdir())[:32]))
    data = tmp_path / "first.yaml"
    data.write_text(yaml.safe_dump({**config, "train": "first.txt", "val": "first.txt"}))
    loaded = load(fixtures.checkpoint(name))
    ours = evaluate(torch_backend.Runner(loaded.model), load_split(data, task=task), loaded.imgsz, batch=8)
    theirs = YOLO(str(fixtures.checkpoint(name)), task=task).val(data=str(data), imgsz=loaded.imgsz[0], batch=8,
                                                                 rect=False, device="cpu", plots=False, verbose=False)
    own = getattr(theirs, {"segment": "seg", "pose": "pose", "obb": "box"}[task])
    assert ours.metric == {"segment": "mask", "pose": "pose", "obb": "box"}[task] and ours.map50 > 0.5
    assert (ours.map50, ours.map) == pytest.approx((own.map50, own.map), abs=0.01)
    if ours.box is not None:
        assert ours.box == pytest.approx((theirs.box.map50, theirs.box.map), abs=0.01)
