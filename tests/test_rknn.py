"""RKNN: rknn-toolkit2 2.3.2 in its own environment, behind the worker's process boundary. Refusals (no environment,
a bad one, an unknown or INT8-only platform, a build the toolkit rejects) give one message and write nothing; the
shipped CGA fixture builds for rk3588 and its simulator run matches the original model at fp16's tolerance, with
detection-level matching (its mAP on the shapes data is measured in reports/rknn/, 200 images being too many for
the test budget). A departing build is localised by module and by the toolkit's own accuracy analysis. INT8 builds
read the graph with input-relative coordinates (divided before the head's Concats, for every head that joins pixels
and scores) and run in the simulator in pixels again.

The tests that build need the environment ``attn-deploy setup rknn`` creates (the README's test command runs it
first); without it they are skipped with that reason."""

import contextlib
import json
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
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
                                               ("rv1106", "runs INT8 only; add --int8")])
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


class SpatialMeanGate(nn.Module):
    """A squeeze-and-excite gate written four ways: ``how`` names how the spatial mean is taken."""

    def __init__(self, how: str):
        super().__init__()
        self.how, self.conv, self.fc = how, nn.Conv2d(3, 8, 1), nn.Linear(8, 8)

    def forward(self, x):
        x = self.conv(x)
        squeezed = {"mean((2, 3))": lambda: x.mean((2, 3)), "mean(dim=[-1, -2])": lambda: torch.mean(x, dim=[-1, -2]),
                    "mean(-1).mean(-1)": lambda: x.mean(-1).mean(-1),
                    "adaptive_avg_pool2d(1).flatten(1)": lambda: nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)}
        return x * self.fc(squeezed[self.how]()).sigmoid()[..., None, None]


def spatial_mean_onnx(how: str, root: Path) -> Path:
    path = root / f"{how}.onnx"
    with torch.no_grad():
        torch.onnx.export(SpatialMeanGate(how).eval(), (torch.zeros(1, 3, 8, 8),), path, dynamo=False,
                          opset_version=19, input_names=["images"], output_names=["output0"])
    return path


@pytest.mark.parametrize("how, named", [("mean((2, 3))", True), ("mean(dim=[-1, -2])", True),
                                        ("mean(-1).mean(-1)", False), ("adaptive_avg_pool2d(1).flatten(1)", False)])
def test_a_spatial_mean_that_drops_its_axes_is_named_by_the_lint_and_kept_by_the_pass(tmp_path, how, named):
    from attn_deploy.rewrite.graph import apply

    path = spatial_mean_onnx(how, tmp_path)
    assert ("spatial mean without keepdims" in {f.check for f in lint(path, "rknn").findings}) is named
    feeds = [{"images": np.random.default_rng(i).standard_normal((1, 3, 8, 8)).astype(np.float32)} for i in (0, 1)]
    done = apply(onnx.load(path), ["rknn"], feeds)
    assert [(row.applied, row.max_abs) for row in done.layers] == ([(True, 0.0)] if named else [])
    onnx.save(done.model, tmp_path / "after.onnx")
    assert lint(tmp_path / "after.onnx", "rknn").passed
    before, after = (ort.InferenceSession(p).run(None, feeds[0])[0] for p in (path, tmp_path / "after.onnx"))
    np.testing.assert_array_equal(after, before)


@with_rknn
def test_the_toolkit_refuses_a_spatial_mean_without_keepdims_and_builds_it_kept(tmp_path):
    from attn_deploy.rewrite.graph import apply

    path = spatial_mean_onnx("mean((2, 3))", tmp_path)
    with pytest.raises(AttnDeployError, match="Invalid rank for input"):
        rknn.export(path, tmp_path / "before_rknn_model", rknn.RKNNOptions())
    feeds = [{"images": np.zeros((1, 3, 8, 8), np.float32)}]
    onnx.save(apply(onnx.load(path), ["rknn"], feeds).model, tmp_path / "kept.onnx")
    assert rknn.export(tmp_path / "kept.onnx", tmp_path / "kept_rknn_model", rknn.RKNNOptions()).path.is_dir()


@with_rknn
def test_tune_lists_an_rknn_build_verified_in_the_simulator_and_never_times_it(tmp_path):
    from attn_deploy.bench import tune
    from attn_deploy.loading import load

    checkpoint = shutil.copy(CGA, tmp_path / "cga.pt")
    request, paths = tune.Request((IMGSZ, IMGSZ), rknn=rknn.RKNNOptions()), {}
    quiet = lambda _: contextlib.nullcontext()  # noqa: E731  (a step that shows nothing)
    assert tune.build_rknn(load(checkpoint), request, tmp_path / "work", quiet, paths) == []
    jobs, skipped = tune.plan_jobs(checkpoint, paths, "eager", request, cuda=False, bf16=False)
    (found,) = tune.search([j for j in jobs if j.backend == "rknn"], None)
    assert (found.name, found.precision, found.parity, found.passed) == ("rknn fp16", "fp16", "pass", True)
    assert found.latency_ms is None and "not a timing device" in found.untimed
    assert tune.recommend([found]) is None
    assert "pass --data" in next(c.skipped for c in skipped if c.name == "rknn int8")


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


class SquaredLogits(nn.Module):
    """Attention-like logits squared at a scale beyond fp16's range (65504): exact in fp32, inf on the NPU."""

    def __init__(self, channels: int):
        super().__init__()
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        y = self.proj(x) * 256.0
        return x + torch.sigmoid((y * y) / 65536.0 - self.proj(x) ** 2 - 1.0)


@with_rknn
def test_a_departure_is_localised_by_module_and_by_the_toolkits_own_analysis(tmp_path):
    from attn_deploy.exporters.onnx import OnnxOptions
    from attn_deploy.heads import task_of
    from attn_deploy.loading import LoadedModel
    from attn_deploy.models.detector import build_detector_with
    from attn_deploy.pipeline import Plan, build, check

    model = build_detector_with(SquaredLogits, imgsz=64).float().eval()
    loaded = LoadedModel(model, tmp_path / "overflow.pt", model.names, 32, task_of(model))
    plan = Plan(["rknn"], tmp_path / "overflow.onnx", OnnxOptions((64, 64), opset=19))
    (row,) = [p for p in check(loaded, build(loaded, plan), plan).parity if p.backend == "rknn-simulator"]
    assert row.gating and not row.passed and row.localisation.first == "model.10"
    said = row.localisation.converter
    assert "first departing on its own: Mul /model.10/" in said and "in model.10 (overflows" in said


@pytest.fixture(scope="module")
def int8_export(tmp_path_factory):
    """The SimAM fixture exported for rk3588 at 160 with INT8 beside the float build, calibrated on 16 shapes
    images (the fixture's own domain)."""
    import cv2

    from attn_deploy.shapes import ShapesSpec, draw_image

    root = tmp_path_factory.mktemp("rknn-int8")
    (root / "calib").mkdir()
    for i in range(16):
        cv2.imwrite(str(root / "calib" / f"{i}.jpg"), draw_image(ShapesSpec(), "train", i)[0])
    out = root / "simam.onnx"
    result = invoke("export", FIXTURES / "yolov8n-simam-shapes.pt", "--target", "rknn", "-o", out, "--imgsz", IMGSZ,
                    "--int8", "--calib", root / "calib", "--json")
    return out, result


@with_rknn
def test_int8_build_divides_coordinates_by_the_input_size_and_the_runner_multiplies_them_back(int8_export):
    out, result = int8_export
    assert result.exit_code == 0, result.output
    directory, source = rknn.int8_dir(out), rknn.int8_source(out)
    assert sorted(p.name for p in directory.iterdir()) == ["dataset.txt", "metadata.yaml", "simam_int8-rk3588.rknn"]
    assert len((directory / "dataset.txt").read_text().splitlines()) == 16
    args = yaml.safe_load((directory / "metadata.yaml").read_text())["args"]
    assert args["quantize"] == 8 and args[rknn.FLOAT][0] == "output0"  # the head's last tensors stay in float16
    (note,) = next(e["notes"] for e in json.loads(result.stdout)["exports"] if e["path"] == str(directory))
    assert "tensors kept in float16 (" in note and "output0" in note
    x = np.random.default_rng(0).random((1, 3, IMGSZ, IMGSZ), dtype=np.float32)
    pixels, relative = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
                        for p in (out, source))
    scale = np.array([IMGSZ] * 4 + [1] * (pixels.shape[1] - 4), np.float32).reshape(1, -1, 1)
    np.testing.assert_allclose(relative * scale, pixels, rtol=1e-5, atol=1e-4)  # boxes divided, scores kept


@with_rknn
def test_int8_build_runs_in_the_simulator_in_pixels_close_to_the_original(int8_export):
    _, result = int8_export
    (row,) = [p for p in json.loads(result.stdout)["parity"] if p["backend"] == "rknn-simulator"
              and p["precision"] == "int8"]
    worst = min(row["results"], key=lambda r: r["cosine"])
    assert not row["gating"] and worst["cosine"] > 0.999  # reported without --data; judged by mAP with it
    assert max(r["max_abs"] for r in row["results"]) < IMGSZ / 4  # pixels, within a quarter of the image


@with_rknn
def test_an_int8_only_platform_gets_the_int8_build_alone(int8_export, tmp_path):
    out, _ = int8_export
    calibration = sorted((out.parent / "calib").iterdir())
    minmax = rknn.RKNNOptions("rv1106", algorithm="normal")  # min-max ranges: mmse's search takes minutes here
    rknn.export(rknn.int8_source(out), tmp_path / "simam_int8_rknn_model", minmax, calibration)
    assert (tmp_path / "simam_int8_rknn_model" / "simam_int8-rv1106.rknn").is_file()
    with pytest.raises(AttnDeployError, match="runs INT8 only"):
        rknn.export(out, tmp_path / "simam_rknn_model", rknn.RKNNOptions("rv1106"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["simam_int8_rknn_model"]


@pytest.mark.parametrize("yaml_file, task", [("yolov8n-pose.yaml", "pose"), ("yolo11n-obb.yaml", "obb"),
                                             ("yolov8n-seg.yaml", "segment")])
def test_coordinates_are_divided_on_the_branches_before_the_heads_concat(tmp_path, yaml_file, task):
    """Boxes and keypoints in input-relative units, everything else as it was, the division before the Concats that
    join the branches (one int8 scale per tensor there); for every head that joins pixels and scores."""
    import onnx

    from attn_deploy import OnnxOptions, load, pipeline, save_checkpoint
    from attn_deploy.exporters.onnx import read_metadata
    from tests.task_models import build

    loaded = load(save_checkpoint(build(yaml_file, task), tmp_path / f"{task}.pt", imgsz=64))
    out = tmp_path / f"{task}.onnx"
    pipeline.build(loaded, pipeline.Plan(["onnx"], out, OnnxOptions((64, 64))))
    assert rknn.normalise_coordinates(out, tmp_path / "relative.onnx")
    x = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)
    pixels, relative = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"images": x})
                        for p in (out, tmp_path / "relative.onnx"))
    scale = rknn.coordinate_scale(pixels[0].shape[1], read_metadata(out))
    expected = np.ones(pixels[0].shape[1])
    expected[:4] = 64
    if task == "pose":
        expected[4 + len(loaded.names):] = [64, 64, 1] * 17  # x and y of each keypoint, not its visibility
    np.testing.assert_array_equal(scale, expected)
    np.testing.assert_allclose(relative[0] * scale.reshape(1, -1, 1), pixels[0], rtol=1e-5, atol=1e-4)
    for got, want in zip(relative[1:], pixels[1:]):  # the prototypes are not coordinates
        np.testing.assert_array_equal(got, want)
    graph = onnx.load(str(tmp_path / "relative.onnx")).graph
    (final,) = [n for n in graph.node if "output0" in n.output]
    assert final.op_type == "Concat"
