"""RKNN: rknn-toolkit2 2.3.2 in its own environment, behind the worker's process boundary. Refusals (no environment,
a bad one, an unknown or INT8-only platform, a build the toolkit rejects) give one message and write nothing; the
shipped CGA fixture builds for rk3588 and its simulator run matches the original model at fp16's tolerance, with
detection-level matching (its mAP on the shapes data is measured in reports/rknn/, 200 images being too many for
the test budget).

The tests that build need the environment ``attn-deploy setup rknn`` creates (the README's test command runs it
first); without it they are skipped with that reason."""

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import yaml
from torch import nn
from typer.testing import CliRunner

from attn_deploy.cli import app
from attn_deploy.errors import AttnDeployError
from attn_deploy.exporters import backend_of, rknn
from attn_deploy.lint import lint

FIXTURES = Path(__file__).parents[1] / "attn_deploy" / "fixtures"
CGA = FIXTURES / "yolov8n-cga-shapes.pt"
IMGSZ = 160


def environment() -> Path | None:
    try:
        return rknn.find_python()
    except AttnDeployError:
        return None


with_rknn = pytest.mark.skipif(environment() is None, reason="no RKNN environment: run `attn-deploy setup rknn` "
                                                              "(the README's test command does)")
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("python, message", [
    ("{tmp}/nowhere/bin/python", "attn-deploy setup rknn"),
    (sys.executable, "cannot import it"),  # attn-deploy's own interpreter: no rknn-toolkit2 there
])
def test_missing_or_bad_environment_stops_at_once_and_writes_nothing(tmp_path, python, message):
    out = tmp_path / "out" / "cga.onnx"
    result = invoke("export", CGA, "--target", "rknn", "-o", out, "--rknn-python", python.format(tmp=tmp_path))
    assert result.exit_code == 2
    assert message in result.stderr and "Nothing was written" in result.stderr
    assert "Traceback" not in result.output and not out.parent.exists()


@pytest.mark.parametrize("platform, message", [("rk1808", "not one rknn-toolkit2 2.3.2 builds for"),
                                               ("rv1106", "INT8 only")])
def test_unsupported_platform_is_one_message(tmp_path, platform, message):
    result = invoke("export", CGA, "--target", "rknn", "--rknn-platform", platform, "-o", tmp_path / "x.onnx")
    assert result.exit_code == 2 and message in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_setup_keeps_only_a_working_environment(tmp_path):
    (tmp_path / "bin").mkdir()
    with pytest.raises(AttnDeployError, match="not a working RKNN environment; pass --force"):
        rknn.setup(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["bin"]


class NonZeroHead(nn.Module):
    """A convolution whose output is indexed by its nonzero elements: a data-dependent shape."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return torch.nonzero(self.conv(x))


@pytest.fixture(scope="module")
def nonzero_onnx(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("rknn-nonzero") / "nonzero.onnx"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(NonZeroHead().eval(), (torch.zeros(1, 3, 32, 32),), path, dynamo=False, opset_version=17,
                          input_names=["images"], output_names=["output0"])
    return path


def test_lint_for_rknn_fails_what_the_toolkit_refuses(nonzero_onnx):
    found = lint(nonzero_onnx, "rknn")
    assert not found.passed and any("NonZero" in f.check for f in found.findings)


@with_rknn
def test_failed_build_is_one_message_and_writes_nothing(nonzero_onnx):
    output = rknn.model_dir(nonzero_onnx)
    with pytest.raises(AttnDeployError, match="rknn-toolkit2 cannot build nonzero.onnx for rk3588: .*NonZero"):
        rknn.export(nonzero_onnx, output, rknn.RKNNOptions())
    assert sorted(p.name for p in nonzero_onnx.parent.iterdir()) == ["nonzero.onnx"]


@pytest.fixture(scope="module")
def cga_export(tmp_path_factory):
    """The CGA fixture exported for rk3588 at 160 and checked in the simulator."""
    out = tmp_path_factory.mktemp("rknn-cga") / "cga.onnx"
    result = invoke("export", CGA, "--target", "rknn", "-o", out, "--imgsz", IMGSZ, "--json")
    return out, result


@with_rknn
def test_float_export_is_laid_out_as_ultralytics_reads_it(cga_export):
    out, result = cga_export
    assert result.exit_code == 0, result.output
    directory = out.with_name("cga_rknn_model")
    assert sorted(p.name for p in directory.iterdir()) == ["cga-rk3588.rknn", "metadata.yaml"]
    metadata = yaml.safe_load((directory / "metadata.yaml").read_text())
    assert metadata["imgsz"] == [IMGSZ, IMGSZ] and metadata["args"]["name"] == "rk3588"
    assert metadata["names"] and metadata["task"] == "detect" and backend_of(directory) == "rknn"
    assert lint(out, "rknn").passed


@with_rknn
def test_float_export_matches_in_the_simulator_at_fp16(cga_export):
    out, result = cga_export
    data = json.loads(result.stdout)
    (row,) = [p for p in data["parity"] if p["backend"] == "rknn-simulator"]
    assert row["precision"] == "fp16" and row["gating"] and row["passed"]
    assert row["detections"] and all(d["passed"] for d in row["detections"])


@with_rknn
def test_simulator_agrees_with_onnxruntime_on_the_built_graph(cga_export):
    """The runner against onnxruntime on the file the build read: fp16's error on 160-pixel boxes, scores closer."""
    out, _ = cga_export
    x = np.random.default_rng(0).random((1, 3, IMGSZ, IMGSZ), dtype=np.float32)
    expected = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    simulator = rknn.Runner(rknn.model_dir(out))
    try:
        (got,) = simulator.run([x])
    finally:
        simulator.close()
    assert got.shape == expected.shape and simulator.runs == 1
    assert np.abs(got[:, :4] - expected[:, :4]).max() < 4 * 2.0 ** -10 * IMGSZ  # four fp16 spacings at 160 px
    assert np.abs(got[:, 4:] - expected[:, 4:]).max() < 1e-2
