"""`attn-deploy bench` end to end: checkpoints exported on the fly, every CPU backend, reports, trust checks."""

import json

import pytest
import torch
from typer.testing import CliRunner

from attn_deploy.cli import app
from attn_deploy.exporters import tensorrt

runner = CliRunner()
QUICK = ["--warmup-s", "0", "--iters", "3", "--duration-s", "0"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def bare(tmp_path_factory):
    """The bare command on the embedded default, two batches, with the trust checks."""
    root = tmp_path_factory.mktemp("bench")
    result = invoke("bench", "--device", "cpu", "--batch", "1,2", *QUICK, "--trust", "--output-dir", root, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), root / "bench-cpu"


def test_bare_bench_runs_the_demo_checkpoint_on_every_cpu_backend(bare):
    data, _ = bare
    rows = {(r["backend"], r["mode"], r["batch"]) for r in data["results"]}
    assert rows == {(b, m, n) for b, m in [("torch", "eager"), ("onnxruntime", ""), ("openvino", "latency"),
                                           ("openvino", "throughput")] for n in (1, 2)}
    for r in data["results"]:
        s = r["latency_ms"]
        assert s["median_ci"][0] <= s["median"] <= s["median_ci"][1] and r["throughput"] > 0
        assert r["first_ms"] > 0 and r["session_ms"] > 0 and r["peak_rss_mb"] > 100
        assert r["model_info"]["params"] > 1e6 and r["model_info"]["gflops"] > 0 and r["model_info"]["file_mb"] > 1
    assert data["machine"]["threads"] and data["machine"]["cpu"] and data["machine"]["openvino"]
    assert any("passed parity" in n for n in data["notes"])


def test_bare_bench_profiles_and_attention_time(bare):
    data, _ = bare
    assert {p["backend"] for p in data["profiles"]} == {"onnxruntime", "openvino"}
    for p in data["profiles"]:
        assert p["attention_blocks"] == ["model.10"] and 0 < p["attention_share"] < 1
        assert 0 < p["profile"]["memory_bound_share"] < 1 and p["profile"]["by_type"]


def test_trust_checks_ran_both_tools(bare):
    data, _ = bare
    assert {c["tool"] for c in data["trust"]} == {"benchmark_app", "plain onnxruntime loop"}
    assert all(c["tool_median_ms"] > 0 and c["harness_median_ms"] > 0 for c in data["trust"])


def test_report_files_and_plots(bare):
    _, directory = bare
    assert {p.name for p in directory.iterdir()} == {"results.json", "report.md", "latency.png", "throughput.png",
                                                     "ops.png"}
    assert all((directory / f).read_bytes()[:4] == b"\x89PNG" for f in ("latency.png", "throughput.png", "ops.png"))
    text = (directory / "report.md").read_text()
    for heading in ("Latency and throughput", "Per-op profiles", "Trust checks", "Machine"):
        assert f"## {heading}" in text


def test_exported_file_runs_on_its_backend_and_says_what_was_skipped(fork_checkpoints, tmp_path):
    onnx_path = tmp_path / "simam.onnx"
    assert invoke("export", fork_checkpoints["simam"], "-o", onnx_path, "--imgsz", "320").exit_code == 0
    result = invoke("bench", onnx_path, "--batch", "1", *QUICK, "--no-profile", "--output-dir", tmp_path, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {r["backend"] for r in data["results"]} == {"onnxruntime", "openvino"}
    assert any("torch needs the checkpoint" in n for n in data["notes"])


@pytest.mark.parametrize("args, message", [
    (["--device", "cuda"], "no CUDA device"),
    (["--backend", "trt"], "tensorrt does not run on --device cpu"),
    (["--batch", "0"], "positive batches"),
    (["--imgsz", "100"], "multiples of the model stride"),
    (["--zoo", "{ckpt}"], "takes no MODEL"),
])
def test_bad_bench_input_exits_2_and_writes_nothing(fork_checkpoints, tmp_path, args, message):
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    args = [a.format(ckpt=fork_checkpoints["simam"]) for a in args]
    result = invoke("bench", *args, *QUICK, "--output-dir", tmp_path)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output + result.stderr
    assert not any(tmp_path.iterdir())


def test_static_export_refuses_other_batches_and_an_existing_report_is_kept(fork_checkpoints, tmp_path):
    onnx_path = tmp_path / "simam.onnx"
    assert invoke("export", fork_checkpoints["simam"], "-o", onnx_path, "--imgsz", "320").exit_code == 0
    result = invoke("bench", onnx_path, "--batch", "1,8", *QUICK, "--output-dir", tmp_path / "r")
    assert result.exit_code == 2 and "static batch of 1" in result.stderr
    (tmp_path / "r" / "bench-cpu").mkdir(parents=True)
    result = invoke("bench", onnx_path, "--batch", "1", *QUICK, "--output-dir", tmp_path / "r")
    assert result.exit_code == 2 and "--force" in result.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here: torch eager, CUDA graphs and fp16 "
                    "are GPU rows")
def test_cuda_rows_eager_graphs_and_fp16(tmp_path):
    result = invoke("bench", "--device", "cuda", "--backend", "torch", "--batch", "1", *QUICK, "--output-dir",
                    tmp_path, "--json")
    assert result.exit_code == 0, result.output
    modes = {(r["mode"], r["precision"]) for r in json.loads(result.stdout)["results"]}
    assert modes == {("eager", "fp32"), ("cuda-graph", "fp32"), ("eager", "fp16"), ("cuda-graph", "fp16")}


@pytest.mark.skipif(tensorrt.missing() is not None, reason=f"{tensorrt.missing()}")
def test_tensorrt_rows(tmp_path):
    result = invoke("bench", "--device", "cuda", "--backend", "trt", "--batch", "1", *QUICK, "--output-dir", tmp_path,
                    "--json")
    assert result.exit_code == 0, result.output
    assert {r["backend"] for r in json.loads(result.stdout)["results"]} == {"tensorrt"}


@pytest.mark.parametrize("export_args, batches", [(["--batch", "2"], {2}), (["--dynamic"], {1, 8, 32})])
def test_without_batch_an_export_runs_at_the_batches_it_takes(fork_checkpoints, tmp_path, export_args, batches):
    onnx_path = tmp_path / "simam.onnx"
    assert invoke("export", fork_checkpoints["simam"], "-o", onnx_path, "--imgsz", "64", *export_args).exit_code == 0
    result = invoke("bench", onnx_path, "--backend", "ort", *QUICK, "--no-profile", "--output-dir", tmp_path, "--json")
    assert result.exit_code == 0, result.output
    assert {r["batch"] for r in json.loads(result.stdout)["results"]} == batches
