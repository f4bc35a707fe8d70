"""The command line end to end: exit codes, JSON output, progress, and clear errors."""

import json
import os
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from attn_deploy.cli import app
from attn_deploy.models import CFG_DIR, ZOO

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def cga_onnx(fork_checkpoints, tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "cga.onnx"
    result = invoke("export", fork_checkpoints["cga"], "--output", path)
    assert result.exit_code == 0, result.output
    return path


def test_export_prints_parity_table_and_resolution(cga_onnx, fork_checkpoints):
    result = invoke("verify", cga_onnx, "--ref", fork_checkpoints["cga"])
    assert result.exit_code == 0
    assert "passed" in result.stdout and "onnxruntime" in result.stdout and "FAIL" not in result.stdout
    assert "resolved ultralytics.nn.extra_modules.attention.LocalWindowAttention" in result.stderr


def test_export_json_is_parseable_on_stdout(fork_checkpoints, tmp_path):
    out = tmp_path / "gam.onnx"
    proc = subprocess.run(
        [sys.executable, "-m", "attn_deploy", "export", str(fork_checkpoints["gam"]), "-o", str(out),
         "--imgsz", "320", "--dynamic", "--json"],
        capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    (parity,) = data["parity"]
    assert parity["passed"] is True and data["exports"][0]["path"] == str(out)
    assert len(parity["results"]) == 4 and len(parity["detections"]) == 2


def test_unrewritten_s2_fails_parity_and_lint_exits_1_and_keeps_the_file(fork_checkpoints, tmp_path):
    out = tmp_path / "s2.onnx"
    result = invoke("export", fork_checkpoints["s2attention"], "-o", out, "--imgsz", "320", "--no-rewrite")
    assert result.exit_code == 1
    assert "parity failed" in result.stderr and str(out) in result.stderr
    assert "ScatterND" in result.stdout and "FAILED" in result.stdout
    assert "first departing module model.10" in result.stdout
    assert out.exists()


def test_rewritten_s2_export_warns_of_eager_divergence_and_passes(fork_checkpoints, tmp_path):
    out = tmp_path / "s2.onnx"
    result = invoke("export", fork_checkpoints["s2attention"], "-o", out, "--imgsz", "320")
    assert result.exit_code == 0, result.output
    assert "model.10 (S2Attention): eager PyTorch's in-place overlapping slice assignments" in result.stderr
    assert "s2-shift" in result.stdout and "-ScatterND 8" in result.stdout
    assert "with true shifts" in result.stderr


def test_rewrite_shows_the_plan_without_writing(fork_checkpoints, tmp_path):
    result = invoke("rewrite", fork_checkpoints["cca"], "--imgsz", "320", "--json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    (layer,) = plan["layers"]
    assert (layer["path"], layer["rule"], layer["applied"]) == ("model.10", "criss-cross", True)
    assert layer["ops_before"] is None and "aten::diag" in layer["note"]
    assert "ScatterND" not in layer["ops_after"] and plan["reference"] == "eager"
    assert not list(fork_checkpoints["cca"].parent.glob("*.onnx"))


def test_lint_command_fails_on_findings_with_json(fork_checkpoints, tmp_path):
    out = tmp_path / "s2.onnx"
    invoke("export", fork_checkpoints["s2attention"], "-o", out, "--imgsz", "320", "--no-rewrite")
    result = invoke("lint", out, "--target", "npu", "--json")
    assert result.exit_code == 1
    checks = {f["check"] for f in json.loads(result.stdout)["findings"]}
    assert {"op ScatterND", "rank > 4"} <= checks


def test_lint_of_a_missing_file_is_one_clear_error(tmp_path):
    result = invoke("lint", tmp_path / "nothing.onnx")
    assert result.exit_code == 2 and "does not exist" in result.stderr


def test_tighter_tolerance_override_fails_parity(cga_onnx, fork_checkpoints):
    args = ["verify", cga_onnx, "--ref", fork_checkpoints["cga"], "--atol", "0", "--rtol", "0", "--json"]
    as_exact = json.loads(invoke(*args).stdout)
    assert as_exact["passed"] is True  # errors are within twice PyTorch's own fp32 error
    result = invoke(*args, "--noise-factor", "0")
    assert result.exit_code == 1
    (parity,) = json.loads(result.stdout)["parity"]
    assert parity["passed"] is False
    assert parity["tolerance"] == {"atol": 0.0, "rtol": 0.0, "noise_factor": 0.0, "min_recall": 0.99, "eps": 2.0**-23}


def test_blocked_export_is_one_clear_error(fork_checkpoints, tmp_path):
    result = invoke("export", fork_checkpoints["cca"], "-o", tmp_path / "cca.onnx", "--no-rewrite")
    assert result.exit_code == 2
    assert "aten::diag" in result.stderr and "Traceback" not in result.output + result.stderr
    assert not (tmp_path / "cca.onnx").exists()


def test_bench_json(cga_onnx, tmp_path):
    result = invoke("bench", cga_onnx, "--device", "cpu", "--backend", "ort", "--batch", "1", "--threads", "2",
                    "--warmup-s", "0", "--iters", "3", "--duration-s", "0", "--no-profile", "--output-dir", tmp_path,
                    "--json")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)["results"]
    assert row["threads"] == 2 and row["iters"] >= 3 and row["latency_ms"]["median"] > 0
    assert (tmp_path / "bench-cpu" / "results.json").exists()


def test_zoo_lists_every_module_and_yaml():
    result = invoke("zoo", "--json")
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert {row["name"] for row in rows} == set(ZOO)
    for row in rows:
        listed = row["yamls"].split(", ")
        assert listed[:3] == [f"{family}-{row['name']}.yaml" for family in ("yolov8", "yolo11", "yolo26")]
        assert all((CFG_DIR / name).is_file() for name in listed)


@pytest.mark.parametrize(
    "args, message",
    [
        (["export", "missing.pt"], "does not exist"),
        (["export", "{ckpt}", "--imgsz", "abc"], "expected one int"),
        (["export", "{ckpt}", "--imgsz", "100", "-o", "{tmp}/x.onnx"], "multiples of the model stride"),
        (["bench", "{tmp}/none.onnx"], "does not exist"),
        (["bench", "{evil}", "--output-dir", "{tmp}"], "was refused: it names"),
        (["export", "{evil}"], "was refused: it names"),
        (["export", "{ckpt}", "--target", "tflite"], "tflite"),
    ],
)
def test_bad_input_exits_2_with_one_message(fork_checkpoints, tmp_path, args, message):
    evil = tmp_path / "evil.pt"
    torch.save({"model": os.system}, evil)
    fields = {"ckpt": fork_checkpoints["simam"], "tmp": tmp_path, "evil": evil}
    result = invoke(*[a.format(**fields) for a in args])
    assert result.exit_code == 2
    assert message in result.stderr
    assert not (tmp_path / "x.onnx").exists()


def test_demo_writes_report(tmp_path):
    result = invoke("demo", "--output-dir", tmp_path / "demo", "--iters", "3", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["passed"] is True and data["latency"]["iters"] == 3
    rows = {(p["backend"], p["precision"], p["gating"]) for p in data["parity"]}
    assert {("onnxruntime", "fp32", True), ("openvino", "fp32", True)} <= rows
    scored = [p["accuracy"] for p in data["parity"]]
    assert all(a["reference"]["map50"] >= 0.8 and a["passed"] for a in scored[:2])
    assert (tmp_path / "demo" / "report.md").read_text().startswith("# attn-deploy demo")
    exported = json.loads((tmp_path / "demo" / "report.json").read_text())["exports"]
    assert [e["target"] for e in exported] == ["onnx", "openvino"]
