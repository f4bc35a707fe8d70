"""ONNX export of every zoo detector, checked in onnxruntime against the original PyTorch model."""

import numpy as np
import onnx
import pytest
from ultralytics import YOLO
from ultralytics.utils import ASSETS

from attn_deploy.loading import load
from attn_deploy.errors import AttnDeployError
from attn_deploy.exporters import open_runner
from attn_deploy.verify import verify_export
from attn_deploy.exporters.onnx import OnnxOptions, export

# What the published forms do before the rewrite engine exists: the op that stops the export, or
# the parity failure of S2Attention's in-place shifts (eager PyTorch and ONNX's ScatterND disagree).
EXPORT_BLOCKED = {
    "ge-theta": ("model.10 (GatherExcite)", "adaptive_avg_pool2d"),
    "cca": ("model.10 (CrissCrossAttention)", "aten::diag"),
    "mhsa": ("model.10 (MHSA)", "aten::_native_multi_head_attention"),
}
PARITY_FAILS = {"s2attention"}


@pytest.fixture(scope="module")
def exported(fork_checkpoints, tmp_path_factory):
    """Each zoo detector exported at 640, or the error that stopped it."""
    root, results = tmp_path_factory.mktemp("onnx"), {}
    for name, checkpoint in fork_checkpoints.items():
        loaded = load(checkpoint)
        try:
            results[name] = (loaded, export(loaded, root / f"{name}.onnx", OnnxOptions()).path)
        except AttnDeployError as e:
            results[name] = (loaded, e)
    return results


@pytest.mark.parametrize("name", sorted(set(EXPORT_BLOCKED)))
def test_blocked_export_names_module_and_op_and_writes_nothing(exported, name):
    _, error = exported[name]
    assert isinstance(error, AttnDeployError)
    module, op = EXPORT_BLOCKED[name]
    assert module in str(error) and op in str(error)


@pytest.mark.parametrize("name", ["simam", "s2attention", "ge", "ge-e2", "ge-theta-e2", "cga", "gam"])
def test_export_passes_parity_except_inplace_shifts(exported, name):
    loaded, path = exported[name]
    report = verify_export(path, loaded)
    assert len(report.results) == 4  # two seeded tensors, bus.jpg, zidane.jpg
    assert report.passed is (name not in PARITY_FAILS)
    if name in PARITY_FAILS:
        assert report.worst.max_abs > 1.0  # not rounding: the shifts compute something else


def test_blocked_exports_leave_no_file(exported, tmp_path):
    loaded, _ = exported["cca"]
    target = tmp_path / "cca.onnx"
    with pytest.raises(AttnDeployError):
        export(loaded, target, OnnxOptions())
    assert list(tmp_path.iterdir()) == []


def test_metadata_lets_ultralytics_predict_with_the_export(exported):
    _, path = exported["cga"]
    props = {p.key: p.value for p in onnx.load(path).metadata_props}
    assert props["stride"] == "32" and props["task"] == "detect" and props["imgsz"] == "[640, 640]"
    results = YOLO(str(path), task="detect").predict(ASSETS / "bus.jpg", imgsz=640, verbose=False)
    assert results[0].orig_shape == (1080, 810)
    assert results[0].boxes is not None


def test_existing_output_needs_force(exported, tmp_path):
    loaded, _ = exported["simam"]
    target = tmp_path / "m.onnx"
    target.write_bytes(b"keep me")
    with pytest.raises(AttnDeployError, match="--force"):
        export(loaded, target, OnnxOptions())
    assert target.read_bytes() == b"keep me"
    export(loaded, target, OnnxOptions(force=True))
    assert onnx.load(target).graph.input[0].name == "images"


def test_dynamic_export_keeps_only_the_batch_symbolic(exported, tmp_path):
    loaded, _ = exported["gam"]
    path = export(loaded, tmp_path / "dyn.onnx", OnnxOptions(imgsz=(320, 256), dynamic=True)).path
    runner = open_runner(path)
    assert runner.input_shape == ["batch", 3, 320, 256]
    out = runner.run([np.zeros((2, 3, 320, 256), dtype=np.float32)])[0]
    assert out.shape == (2, 84, 8 * 10 + 16 * 20 + 32 * 40)
    with pytest.raises(AttnDeployError, match="does not fit"):
        runner.run([np.zeros((2, 3, 256, 320), dtype=np.float32)])


@pytest.mark.parametrize("imgsz", [(641, 640), (0, 640)])
def test_image_size_not_a_stride_multiple_is_refused(exported, tmp_path, imgsz):
    loaded, _ = exported["simam"]
    with pytest.raises(AttnDeployError, match="stride"):
        export(loaded, tmp_path / "x.onnx", OnnxOptions(imgsz=imgsz))
    assert not (tmp_path / "x.onnx").exists()


def test_runner_refuses_wrong_input_shape(exported):
    _, path = exported["simam"]
    with pytest.raises(AttnDeployError, match="does not fit"):
        open_runner(path).run([np.zeros((1, 3, 320, 320), dtype=np.float32)])
