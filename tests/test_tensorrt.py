"""The TensorRT backend: its engine header against ultralytics' own reader, its refusals without TensorRT, and
(where TensorRT and a GPU exist) engines built from a small ONNX checked against onnxruntime."""

import json
import re
import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn
from ultralytics.nn.backends.base import BaseBackend
from ultralytics.utils import ASSETS

from attn_deploy.errors import AttnDeployError
from attn_deploy.exporters.tensorrt import Runner, TensorRTOptions, export, missing, read_header, write_engine_file

IMGSZ = (32, 32)
METADATA = {"stride": 32, "task": "detect", "batch": 1, "imgsz": list(IMGSZ), "names": {0: "person", 1: "bus"},
            "args": {"batch": 1, "dynamic": False, "half": False, "nms": False}}


def tensorrt_importable() -> bool:
    try:
        import tensorrt  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


without_tensorrt = pytest.mark.skipif(tensorrt_importable(), reason="tensorrt is importable here")
with_tensorrt = pytest.mark.skipif(
    missing() is not None,
    reason="TensorRT cannot be installed here (its PyPI packages download from an unreachable host) or there is "
           f"no CUDA GPU: {missing()}")


class Tiny(nn.Module):
    """A convolution and a sigmoid, flattened to (batch, channels, anchors) like a detector's output."""

    def __init__(self, half: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.half_ = half
        if half:
            self.conv.half()

    def forward(self, x):
        if self.half_:  # a mixed-precision export keeps float32 input and output, as ModelOpt AutoCast does
            return torch.sigmoid(self.conv(x.half())).flatten(2).float()
        return torch.sigmoid(self.conv(x)).flatten(2)


def tiny_onnx(path, dynamic: bool = False, half: bool = False, batch: int = 1):
    axes = {"images": {0: "batch"}, "output0": {0: "batch"}} if dynamic else None
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Tiny(half).eval(), (torch.zeros(batch, 3, *IMGSZ),), path, dynamo=False,
                          input_names=["images"], output_names=["output0"], dynamic_axes=axes)
    return path


def onnxruntime_outputs(path, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": x})


def test_engine_header_is_the_one_ultralytics_reads(tmp_path):
    engine = bytes(range(256)) * 16
    path = write_engine_file(tmp_path / "model.engine", METADATA, engine)
    offset, metadata = BaseBackend.engine_header(path)
    assert read_header(path) == (offset, metadata)
    assert metadata == json.loads(json.dumps(METADATA))  # JSON turns the names' int keys into strings
    assert offset == 4 + len(json.dumps(METADATA).encode())
    assert path.read_bytes()[offset:] == engine
    assert BaseBackend.read_metadata(path) == metadata
    assert list(tmp_path.iterdir()) == [path]  # the temporary file was renamed into place


def test_bare_engine_has_no_header_for_either_reader(tmp_path):
    path = tmp_path / "bare.engine"
    path.write_bytes(bytes(range(256)) * 16)  # its first four bytes make a length far past the end
    assert read_header(path) == BaseBackend.engine_header(path) == (0, {})
    path.write_bytes((12).to_bytes(4, "little") + b"not json at all, but long enough")
    assert read_header(path) == BaseBackend.engine_header(path) == (0, {})


def test_non_ascii_metadata_round_trips(tmp_path):
    metadata = {**METADATA, "description": "détecteur à attention ✓"}
    path = write_engine_file(tmp_path / "model.engine", metadata, b"\x00engine")
    offset, read = BaseBackend.engine_header(path)
    assert read["description"] == metadata["description"] and read_header(path) == (offset, read)
    assert path.read_bytes()[offset:] == b"\x00engine"


def test_bad_options_and_existing_outputs_are_refused_before_tensorrt(tmp_path):
    source = tiny_onnx(tmp_path / "tiny.onnx")
    existing = tmp_path / "model.engine"
    existing.write_bytes(b"keep")
    with pytest.raises(AttnDeployError, match="already exists"):
        export(source, existing, TensorRTOptions(), METADATA)
    assert existing.read_bytes() == b"keep"
    for options in (TensorRTOptions(precision="int4"), TensorRTOptions(dynamic=True, batch=8, max_batch=4),
                    TensorRTOptions(batch=0), TensorRTOptions(workspace_gib=0)):
        with pytest.raises(AttnDeployError):
            export(source, tmp_path / "new.engine", options, METADATA)
    assert not (tmp_path / "new.engine").exists()


@without_tensorrt
def test_missing_names_the_package_and_the_extra():
    reason = missing()
    assert "tensorrt package" in reason and "pip install 'attn-deploy[tensorrt]'" in reason


@without_tensorrt
def test_export_without_tensorrt_says_so_and_writes_nothing(tmp_path):
    source = tiny_onnx(tmp_path / "tiny.onnx")
    out = tmp_path / "out"
    out.mkdir()
    options = TensorRTOptions(precision="fp32", timing_cache=out / "timing.cache")
    with pytest.raises(AttnDeployError, match=re.escape(missing())):
        export(source, out / "tiny.engine", options, METADATA)
    assert list(out.iterdir()) == []


@without_tensorrt
def test_runner_without_tensorrt_says_so(tmp_path):
    path = write_engine_file(tmp_path / "model.engine", METADATA, b"\x00engine")
    with pytest.raises(AttnDeployError, match=re.escape(missing())):
        Runner(path)


@with_tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engine_matches_onnxruntime(tmp_path, precision):
    import tensorrt as trt

    source = tiny_onnx(tmp_path / "tiny.onnx")
    strongly_typed = int(trt.__version__.split(".")[0]) >= 11
    built = tiny_onnx(tmp_path / "tiny-fp16.onnx", half=True) if precision == "fp16" and strongly_typed else source
    timing = tmp_path / "timing.cache"
    result = export(built, tmp_path / "tiny.engine", TensorRTOptions(precision=precision, timing_cache=timing),
                    METADATA)
    assert result.target == "trt" and timing.stat().st_size > 0
    assert BaseBackend.engine_header(result.path)[1]["args"]["precision"] == precision
    runner = Runner(result.path)
    x = np.random.default_rng(0).random((1, 3, *IMGSZ), dtype=np.float32)
    tolerance = 1e-4 if precision == "fp32" else 1e-2
    np.testing.assert_allclose(runner.run([x])[0], onnxruntime_outputs(source, x)[0], atol=tolerance, rtol=tolerance)
    assert runner.precision == precision and runner.input_shape == [1, 3, *IMGSZ]
    assert runner.metadata["batch"] == "1" and runner.metadata["imgsz"] == str(list(IMGSZ))
    with pytest.raises(AttnDeployError):
        runner.run([np.zeros((2, 3, *IMGSZ), np.float32)])
    runner.close()


@with_tensorrt
def test_dynamic_engine_runs_every_batch_in_its_profile_and_refuses_others(tmp_path):
    source = tiny_onnx(tmp_path / "tiny.onnx", dynamic=True)
    options = TensorRTOptions(precision="fp32", dynamic=True, batch=2, max_batch=4)
    runner = Runner(export(source, tmp_path / "tiny.engine", options, METADATA).path)
    assert runner.input_shape == ["batch", 3, *IMGSZ] and runner.metadata["batch"] == "2"
    for batch in (1, 3, 4):
        x = np.random.default_rng(batch).random((batch, 3, *IMGSZ), dtype=np.float32)
        np.testing.assert_allclose(runner.run([x])[0], onnxruntime_outputs(source, x)[0], atol=1e-4, rtol=1e-4)
    with pytest.raises(AttnDeployError, match="profile"):
        runner.run([np.zeros((5, 3, *IMGSZ), np.float32)])
    runner.close()


@with_tensorrt
def test_int8_calibrates_on_tensorrt_10_and_needs_qdq_on_tensorrt_11(tmp_path):
    import tensorrt as trt

    source = tiny_onnx(tmp_path / "tiny.onnx")
    images = sorted(ASSETS.glob("*.jpg"))
    options = TensorRTOptions(precision="int8", calibration=images)
    if int(trt.__version__.split(".")[0]) >= 11:
        with pytest.raises(AttnDeployError, match="QuantizeLinear"):
            export(source, tmp_path / "tiny.engine", options, METADATA)
        assert not (tmp_path / "tiny.engine").exists()
        return
    with pytest.raises(AttnDeployError, match="calibration"):
        export(source, tmp_path / "tiny.engine", TensorRTOptions(precision="int8"), METADATA)
    result = export(source, tmp_path / "tiny.engine", options, METADATA)
    assert list(tmp_path.glob("tiny.int8-*.cache"))
    runner = Runner(result.path)
    x = np.random.default_rng(0).random((1, 3, *IMGSZ), dtype=np.float32)
    np.testing.assert_allclose(runner.run([x])[0], onnxruntime_outputs(source, x)[0], atol=0.1)
    assert runner.precision == "int8"
    runner.close()
