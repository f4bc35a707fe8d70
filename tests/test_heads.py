"""Every ultralytics head, end to end: seeded models from ultralytics' own YAMLs saved as best.pt, exported,
checked per output and per instance, a broken export caught and localised; the specs' own rules on arrays."""

import json

import numpy as np
import onnx
import pytest
import torch
from attn_deploy import heads, load, save_checkpoint
from attn_deploy.errors import AttnDeployError
from attn_deploy.exporters import onnx as onnx_backend
from attn_deploy.exporters import open_runner, openvino
from attn_deploy.exporters import torch as torch_backend
from attn_deploy.parity import TOLERANCES, Detections, compare_detections, compare_output, parity_inputs, verify
from attn_deploy.verify import localise_export, verify_export

from .task_models import TINY_RTDETR, build

SIZE = (64, 64)
# One model per head form; the families' own attention: C2PSA (YOLO11), area attention (YOLO12), AIFI (RT-DETR).
# The classifier gets 10 classes, as a fine-tuned one has: over ImageFolder's 1000, every probability of an
# untrained model is about 1e-3, below any absolute tolerance.
FORMS = {
    "detect-yolo12n": dict(yaml="yolo12n.yaml", task="detect"),
    "end2end-yolo26n": dict(yaml="yolo26n.yaml", task="detect", end2end=True),
    "segment-yolo11n": dict(yaml="yolo11n-seg.yaml", task="segment"),
    "pose-yolov8n": dict(yaml="yolov8n-pose.yaml", task="pose"),
    "obb-yolo11n": dict(yaml="yolo11n-obb.yaml", task="obb"),
    "classify-yolov8n": dict(yaml="yolov8n-cls.yaml", task="classify", nc=10),
    "rtdetr-tiny": dict(yaml=TINY_RTDETR, task="rtdetr"),
}
BROKEN_AT = "model.5"  # a backbone convolution every form has
TASKS = ["detect-yolo12n", "segment-yolo11n", "pose-yolov8n", "obb-yolo11n", "classify-yolov8n"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Each form saved as best.pt, loaded back and exported to ONNX once, on first use."""
    done, root = {}, tmp_path_factory.mktemp("heads")

    def get(form: str):
        if form not in done:
            checkpoint = save_checkpoint(build(**FORMS[form]), root / f"{form}.pt", imgsz=SIZE[0])
            loaded = load(checkpoint)
            result = onnx_backend.export(loaded, root / f"{form}.onnx", onnx_backend.OnnxOptions(imgsz=SIZE))
            done[form] = loaded, result.path
        return done[form]

    return get


@pytest.mark.parametrize("form", FORMS)
def test_each_head_exports_its_named_outputs_and_passes_per_output_and_per_instance(form, exported):
    loaded, path = exported(form)
    head = heads.of_model(loaded.model)
    model = onnx.load(str(path))
    assert [o.name for o in model.graph.output] == head.output_names
    meta = onnx_backend.read_metadata(path)
    task = FORMS[form]["task"].replace("rtdetr", "detect")
    assert (meta["task"], meta["end2end"]) == (task, head.end2end)
    assert torch.load(loaded.source, weights_only=False)["train_args"]["task"] == task  # saved as ultralytics saves
    report = verify_export(path, loaded)  # the default threshold, 0.25, finds instances on trained-like weights
    assert report.passed, [(r.input, r.name, r.worst_field, r.max_abs) for r in report.results if not r.passed]
    assert {(r.name, r.holds) for r in report.results} == {(o.name, o.holds) for o in head.outputs}
    assert len(report.detections) == 2 and all(d.ref_boxes > 0 and d.recall == d.precision == 1.0
                                               and d.min_similarity > 0.99 for d in report.detections)
    assert report.matcher == head.matcher and report.task == head.task


@pytest.mark.parametrize("form", TASKS)
def test_a_scaled_weight_is_caught_and_localised(form, exported, tmp_path):
    loaded, path = exported(form)
    model = onnx.load(str(path))
    inside = {n.input[1] for n in model.graph.node if n.name.startswith(f"/{BROKEN_AT}/") and n.op_type == "Conv"}
    weight = next(t for t in model.graph.initializer if t.name in inside)
    weight.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(weight) * np.float32(1.5), weight.name))
    broken = tmp_path / "broken.onnx"
    onnx.save(model, str(broken))
    x = {"bus.jpg": parity_inputs(SIZE)["bus.jpg"]}
    report = verify(torch_backend.Runner(loaded.model), open_runner(broken), x, head=heads.of_model(loaded.model))
    assert not report.passed and not any(r.passed for r in report.results)
    # the instances move too; a classifier's top 5 of 10 may stay as they were while its probabilities move
    assert form.startswith("classify") or not all(d.passed for d in report.detections)
    found = localise_export(broken, loaded, "bus.jpg", report.tolerance)
    assert found.first == BROKEN_AT
    assert not any(x.departs for x in found.layers if x.path in ("model.3", "model.4"))


def test_both_segment_outputs_pass_through_openvino(exported):
    loaded, path = exported("segment-yolo11n")
    built = openvino.export(path, openvino.model_dir(path), openvino.OpenVINOOptions())
    report = verify_export(built.path, loaded)
    assert report.passed and report.backend == "openvino"
    assert {r.name for r in report.results} == {"output0", "output1"}
    assert all(d.ref_boxes > 0 and "mask IoU" in d.matcher for d in report.detections)


def test_ultralytics_predicts_with_the_exports_in_their_task_and_form(exported):
    from ultralytics import YOLO
    from ultralytics.utils import ASSETS

    for form, carries in [("segment-yolo11n", "masks"), ("pose-yolov8n", "keypoints"), ("end2end-yolo26n", "boxes")]:
        _, path = exported(form)
        (result,) = YOLO(str(path))(ASSETS / "bus.jpg", imgsz=SIZE[0], verbose=False)
        assert getattr(result, carries) is not None and len(result.boxes) > 0, form


def test_an_output_layout_no_head_produces_is_one_clear_error(exported):
    loaded, _ = exported("detect-yolo12n")
    head = heads.of_model(loaded.model)
    with pytest.raises(AttnDeployError, match="output layout is unknown"):
        head.check([np.zeros((1, 4 + head.nc + 3, 84), np.float32)], "the export")
    with pytest.raises(AttnDeployError, match="none of the heads"):
        heads.of_model(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3)))


def test_end2end_rows_are_compared_instance_by_instance_and_held_instances_judged_by_recall(exported):
    loaded, path = exported("end2end-yolo26n")
    x = parity_inputs(SIZE)["bus.jpg"]
    ref = torch_backend.Runner(loaded.model).run([x])
    head, fp32, settings = heads.of_model(loaded.model), TOLERANCES["fp32"], Detections()
    swapped = ref[0].copy()
    swapped[0, [0, 1]] = swapped[0, [1, 0]]  # two rows in the other order: the same detections
    (aligned,) = head.align(ref, [swapped], SIZE, settings.match_iou)
    assert np.array_equal(aligned, ref[0])
    nudged = swapped.copy()
    nudged[0, 0, :4] += 0.5  # the same instance, half a pixel off: compared, and it differs
    assert not compare_output(ref[0], head.align(ref, [nudged], SIZE, settings.match_iou)[0], fp32)["passed"]
    moved = ref[0].copy()
    moved[0, :3, :4] += 30  # three other instances in their place: not compared row by row, but recall misses them
    assert np.array_equal(head.align(ref, [moved], SIZE, settings.match_iou)[0], ref[0])
    (found,) = compare_detections("bus.jpg", ref, [moved], head, fp32, settings, SIZE)
    assert found.recall < 0.99 and not found.passed
    cut = ref[0].copy()
    cut[0, -1, :4] += 30  # another instance at the head's top-k cut: the cut fell otherwise, no miss
    (at_cut,) = compare_detections("bus.jpg", ref, [cut], head, fp32, settings, SIZE)
    assert at_cut.passed


def test_cli_exports_the_end_to_end_form_and_verify_compares_the_reference_in_it(exported, tmp_path):
    from typer.testing import CliRunner

    from attn_deploy.cli import app

    checkpoint = save_checkpoint(build("yolo26n.yaml", "detect"), tmp_path / "yolo26n.pt", imgsz=SIZE[0])
    out = tmp_path / "yolo26n.onnx"
    args = ["export", str(checkpoint), "--end2end", "--no-rewrite", "-o", str(out), "--json"]  # no rule applies
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert onnx_backend.read_metadata(out)["end2end"] is True
    verified = CliRunner().invoke(app, ["verify", str(out), "--ref", str(checkpoint), "--json"])
    assert verified.exit_code == 0, verified.output
    (row,) = json.loads(verified.stdout)["parity"]
    assert "no NMS" in row["matcher"] and all(d["ref_boxes"] > 0 for d in row["detections"])
    loaded, _ = exported("detect-yolo12n")
    refused = CliRunner().invoke(app, ["export", str(loaded.source), "--end2end", "-o", str(tmp_path / "x.onnx")])
    assert refused.exit_code == 2 and "no one-to-one branch" in refused.stderr and "Traceback" not in refused.output
    assert not (tmp_path / "x.onnx").exists()
