"""INT8 calibration images stream: read one batch at a time, and the Q/DQ calibration's peak memory does not grow
with the number of images."""

import numpy as np
import pytest
from ultralytics.utils import ASSETS

from attn_deploy import fixtures
from attn_deploy.bench.harness import peak_rss_mb, reset_peak_rss
from attn_deploy.data import Batches
from attn_deploy.errors import AttnDeployError
from attn_deploy.exporters import qdq
from attn_deploy.exporters.onnx import OnnxOptions, export
from attn_deploy.loading import load
from attn_deploy.parity import letterbox_image

IMAGES = sorted(ASSETS.glob("*.jpg"))  # bus.jpg, zidane.jpg


def test_batches_are_read_when_asked_and_the_last_is_filled_with_the_first_images(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    batches = Batches((*IMAGES, IMAGES[0], broken), (64, 96), batch=3)  # a bad file fails its own batch only
    assert len(batches) == 2
    first = batches[0]
    assert first.shape == (3, 3, 64, 96) and first.dtype == np.float32
    assert np.array_equal(first[2], letterbox_image(IMAGES[0], (64, 96)))
    with pytest.raises(AttnDeployError, match="cannot be read"):
        batches[1]
    filled = Batches(tuple(IMAGES), (64, 64), batch=3)[0]
    assert np.array_equal(filled[2], filled[0])  # wrapped around to the first image
    with pytest.raises(IndexError):
        batches[2]


def test_qdq_calibration_peak_memory_does_not_grow_with_the_images(tmp_path):
    if not reset_peak_rss():
        pytest.skip("this kernel does not let a process reset its peak resident memory")
    source = export(load(fixtures.checkpoint("simam")), tmp_path / "simam.onnx", OnnxOptions(imgsz=(192, 192))).path
    peaks = {}
    for count in (2, 26):  # each image holds ~16 MB of activations at 192 (YOLOv8n): ~390 MB more if they were kept
        calibration = Batches(tuple(IMAGES * (count // 2)), (192, 192))
        for placement in qdq.PLACEMENTS:  # onnxruntime's min-max and TensorRT's percentile ranges
            reset_peak_rss()
            before = peak_rss_mb()
            result = qdq.export(source, tmp_path / f"simam-{count}.{placement}.onnx", calibration, [],
                                placement=placement)
            peaks[count, placement] = peak_rss_mb() - before
            assert f"{count} of {count} calibration batches" in result.notes[0]
    for placement in qdq.PLACEMENTS:  # the allocator's own noise here: up to ~55 MB either way
        assert peaks[26, placement] - peaks[2, placement] < 120, peaks


def test_onnxruntimes_placement_takes_32_batches_spread_over_the_calibration_set(tmp_path):
    source = export(load(fixtures.checkpoint("simam")), tmp_path / "simam.onnx", OnnxOptions(imgsz=(64, 64))).path
    calibration = Batches(tuple(IMAGES * 20), (64, 64))
    result = qdq.export(source, tmp_path / "simam.int8.onnx", calibration, [])
    assert "32 of 40 calibration batches" in result.notes[0] and "onnxruntime's placement" in result.notes[0]
