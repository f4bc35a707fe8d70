"""`attn-deploy tune` on the trained YOLOv8n-CGA fixture at its training size (160), scored on the shapes data with
a short timing budget: every candidate judged, the fastest passing one recommended and written beside the
checkpoint, failing and unreached candidates never recommended, bad input refused before anything is written."""

import dataclasses
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from attn_deploy import fixtures, load, shapes
from attn_deploy.bench import tune
from attn_deploy.bench.job import Context, Job, JobResult, run_job
from attn_deploy.cli import app
from attn_deploy.exporters import ncnn, open_runner, tensorrt
from attn_deploy.exporters import torch as torch_backend
from attn_deploy.parity import Tolerance

runner = CliRunner()
QUICK = ["--warmup-s", "0", "--iters", "3", "--duration-s", "0"]
VAL_IMAGES, CALIB_IMAGES = 24, 8  # enough to score and calibrate; the timing is not what these tests check


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def shapes_data(tmp_path_factory):
    """The fixture's shapes data, drawn from its seed: part of the validation split, and the first train images."""
    root = tmp_path_factory.mktemp("shapes")
    spec = dataclasses.replace(fixtures.shapes_spec(), val=VAL_IMAGES, train=CALIB_IMAGES)
    val = shapes.generate(root / "val", spec, ("val",))
    shapes.generate(root / "calib", spec, ("train",))
    return val, root / "calib" / "images" / "train"


@pytest.fixture(scope="module")
def tuned(shapes_data, tmp_path_factory):
    """One whole tune, as a user runs it, with the artefacts kept for the tests that rerun some of its jobs."""
    root = tmp_path_factory.mktemp("tune")
    checkpoint = shutil.copy(fixtures.checkpoint("cga"), root / "cga.pt")
    data, calib = shapes_data
    result = invoke("tune", checkpoint, "--data", data, "--calib", calib, *QUICK, "--workdir", root / "work",
                    "--output-dir", root / "reports", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), root


def test_every_candidate_ran_with_a_parity_verdict_and_a_score(tuned):
    report, _ = tuned
    assert report["imgsz"] == [160, 160]
    ran = [c for c in report["candidates"] if not c["skipped"]]
    trt = {"tensorrt"} if tensorrt.missing() is None else set()
    trt |= {"ncnn"} if ncnn.missing() is None else set()
    assert {c["backend"] for c in ran} == {"onnxruntime", "openvino", "torch"} | trt
    assert {c["precision"] for c in ran} >= {"fp32", "fp16", "int8"}
    for c in ran:
        assert c["error"] is None and c["parity"] in ("pass", "FAIL"), c
        assert c["passed"] == (c["failed"] == "") and (c["parity"] == "pass" or c["failed"] == "parity")
        assert c["latency_ms"] > 0 and c["throughput"] > 0 and c["map50_95"] > 0.5
    assert len({round(c["map50_95"] + c["map50_95_drop"], 9) for c in ran}) == 1  # one reference for every drop
    eager = next(c for c in ran if c["backend"] == "torch")
    assert eager["map50_95_drop"] == 0 and eager["passed"]  # PyTorch eager is the reference, scored by the same code
    assert [c["name"] for c in ran if c["baseline"]] == ["ultralytics onnx (baseline)"]
    assert all("not reached" not in (c["skipped"] or "") for c in report["candidates"])


def test_the_recommended_candidate_passed_and_is_the_fastest_that_did(tuned):
    report, root = tuned
    best = report["recommended"]
    chosen = next(c for c in report["candidates"] if c["name"] == best["name"])
    assert chosen["passed"] and chosen["parity"] == "pass" and not chosen["baseline"]
    assert chosen["map50_95_drop"] <= report["request"]["map_budget"]
    passing = [c for c in report["candidates"] if c["passed"] and not c["baseline"]]
    assert best["latency_ms"] == chosen["latency_ms"] == min(c["latency_ms"] for c in passing)
    for key in ("backend", "precision", "map50_95", "map50_95_drop", "throughput"):
        assert best[key] == chosen[key]
    dominating = [c for c in report["candidates"] if c["passed"] and c["latency_ms"] < chosen["latency_ms"]
                  and c["map50_95"] >= chosen["map50_95"]]
    assert ("latency" in chosen["pareto"]) == (not dominating)
    assert all(c["baseline"] for c in dominating)  # only ultralytics' export, never recommended, can be faster
    assert best["reason"].startswith(chosen["backend"].replace("openvino", "OpenVINO"))
    assert "x the onnxruntime fp32 export" in best["reason"] and "ultralytics' own ONNX export" in best["reason"]
    ratio, low, high = best["speedup"]
    assert low <= ratio <= high


def test_the_written_artefact_loads_and_runs_with_its_record(tuned):
    report, root = tuned
    best = report["recommended"]
    assert best["path"] == str(tune.stable_paths(root / "cga.pt")[best["backend"]])
    if best["backend"] == "torch":
        out = torch_backend.Runner(load(best["path"]).model).run([np.zeros((1, 3, 160, 160), np.float32)])[0]
    else:
        opened = open_runner(best["path"], threads=1)
        out = opened.run([np.zeros((1, 3, 160, 160), np.float32)])[0]
        opened.close()
    assert out.shape == (1, 8, 525)  # 4 box coordinates and 4 class scores at the 525 anchors of a 160 input
    record = json.loads((root / "cga.tuned.json").read_text())
    assert record["path"] == best["path"] and record["latency_ms"] == best["latency_ms"]
    assert record["reason"] == best["reason"] and record["machine"]["cpu"]
    assert sorted(p.name for p in root.glob("cga.tuned*")) == sorted([best["path"].rsplit("/", 1)[1],
                                                                        "cga.tuned.json"])


def test_report_table_and_pareto_plot(tuned):
    _, root = tuned
    directory = root / "reports" / "tune-cga"
    assert {p.name for p in directory.iterdir()} == {"results.json", "report.md", "pareto.png"}
    assert (directory / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    text = (directory / "report.md").read_text()
    for heading in ("Recommendation", "Candidates", "Latency and throughput against mAP50-95", "Method", "Machine"):
        assert f"## {heading}" in text
    assert "RECOMMENDED" in text and "one live runtime at a time" in text


@pytest.fixture(scope="module")
def context() -> Context:
    """Shared by the tests that rerun jobs: the reference's outputs and mAP are computed once."""
    return Context()


def _jobs(report: dict, names: list[str]) -> list[Job]:
    """Jobs of the tune above, read back from its JSON (their artefacts are kept in its work directory)."""
    by_name = {c["name"]: c["job"] for c in report["candidates"]}
    return [Job.from_json(json.dumps(by_name[n])) for n in names]


def test_a_candidate_failing_parity_is_never_recommended(tuned, context):
    report, _ = tuned
    baseline, reference, best = _jobs(report, ["ultralytics onnx (baseline)", "onnxruntime fp32",
                                              report["recommended"]["name"]])
    impossible = Tolerance(atol=0.0, rtol=0.0, noise_factor=0.0, min_recall=1.01)
    failing = dataclasses.replace(best, tolerances={p: impossible for p in best.tolerances},
                                  map_tolerances={p: -1.0 for p in best.map_tolerances})
    found = tune.search([baseline, reference, failing], None, context)
    assert found[2].parity == "FAIL" and not found[2].passed
    assert tune.recommend(found) is found[1]


def test_a_budget_too_small_lists_the_candidates_not_reached(tuned, context):
    report, _ = tuned
    names = [c["name"] for c in report["candidates"] if not c["skipped"]][:4]
    found = tune.search(_jobs(report, names), 0, context)
    assert [c.skipped is None for c in found] == [True, True, False, False]  # the two references always run
    assert all("not reached: --budget-s 0" in c.skipped for c in found[2:])
    assert tune.recommend(found) is found[1]


def test_a_job_is_json_in_json_out_and_runs_in_another_process(tuned):
    report, _ = tuned
    job = dataclasses.replace(_jobs(report, ["onnxruntime fp32"])[0], data=None)
    assert Job.from_json(job.to_json()) == job
    done = subprocess.run([sys.executable, "-m", "attn_deploy.bench.job"], input=job.to_json(), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    result = JobResult.from_json(done.stdout)
    assert result.passed and result.precision == "fp32" and result.latency_ms.median > 0
    assert result.map50_95 is None and JobResult.from_json(result.to_json()) == result
    assert run_job(dataclasses.replace(job, artefact=job.artefact + ".missing")).error  # an error, not a raise


def test_the_plan_follows_the_device_cuda_first_and_nothing_unjudgeable(tmp_path):
    """Planning alone, for machines this one is not: a CUDA device, a CPU without bf16, no data set."""
    kinds = {"onnx": tmp_path / "a.onnx", "onnx-fp16": tmp_path / "a.fp16.onnx", "openvino": tmp_path / "a_ov",
             "ultralytics": tmp_path / "u.onnx", "trt-fp32": tmp_path / "a.fp32.engine",
             "trt-fp16": tmp_path / "a.fp16.engine"}
    jobs, skipped = tune.plan_jobs(tmp_path / "a.pt", kinds, "eager", tune.Request((160, 160), threads=2), cuda=True,
                                   bf16=False)
    assert [j.name for j in jobs[:4]] == ["ultralytics onnx (baseline)", "onnxruntime fp32", "tensorrt fp16",
                                          "tensorrt fp32"]
    assert {j.settings.device for j in jobs if j.backend == "tensorrt" or "cuda" in j.name} == {"cuda"}
    reasons = {c.name: c.skipped for c in skipped}
    assert all("pass --data" in reasons[n] for n in reasons if "int8" in n)
    assert all("f32 here" in reasons[n] for n in reasons if "default" in n and "int8" not in n)
    assert all(j.settings.precision != "default" and "int8" not in j.artefact for j in jobs)


@pytest.mark.parametrize("args, message", [
    (["{missing}"], "does not exist"),
    (["{ckpt}", "--imgsz", "100"], "multiples of the model stride"),
    (["{ckpt}", "--data", "{missing}"], "no such data YAML"),
    (["{ckpt}", "--calib", "{tmp}"], "pass --data too"),
    (["{ckpt}", "--budget-s", "-1"], "greater than or equal to 0"),
    (["{taken}"], "--force"),
])
def test_bad_tune_input_exits_2_and_writes_nothing(tmp_path, args, message):
    checkpoint = shutil.copy(fixtures.checkpoint("cga"), tmp_path / "cga.pt")
    taken = shutil.copy(checkpoint, tmp_path / "taken.pt")
    (tmp_path / "taken.tuned.onnx").write_bytes(b"an earlier recommendation")
    before = sorted(tmp_path.iterdir())
    args = [a.format(ckpt=checkpoint, missing=tmp_path / "missing.pt", tmp=tmp_path, taken=taken) for a in args]
    result = invoke("tune", *args, *QUICK, "--output-dir", tmp_path / "reports")
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output + result.stderr
    assert sorted(tmp_path.iterdir()) == before
