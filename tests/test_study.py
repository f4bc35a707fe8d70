"""`bench --zoo`, narrowed to CGA, MHSA and SimAM at P5 of YOLOv8n (the full study is a benchmark script's job)."""

import dataclasses

import pytest

from attn_deploy import report
from attn_deploy.bench import study, suite

VERDICTS = {"holds", "does not hold", "not measurable here"}


@pytest.fixture(scope="module")
def narrow(tmp_path_factory):
    variants, notes = suite.choose_variants("cpu", None)
    plan = suite.Plan("cpu", variants, [1], 2, dataclasses.replace(study.BUDGET, duration_s=0.1))
    found = study.run(plan, notes, scope=study.Scope(["cga", "mhsa", "simam"], ["n"], ["P5"], fused=False))
    directory = tmp_path_factory.mktemp("zoo") / "zoo-cpu"
    report.write_study_report(directory, found, found.bench)
    return found, directory


def test_every_module_alone_and_in_the_detector_on_every_backend(narrow):
    found, _ = narrow
    timed = {(r.model, r.variant) for r in found.bench.results}
    names = ["cga n-P5", "mhsa n-P5", "simam n-P5", "yolov8n-none", "yolov8n-cga", "yolov8n-mhsa", "yolov8n-simam"]
    assert timed == {(n, v) for n in names for v in ("torch eager", "onnxruntime", "openvino latency")}
    assert {(p.model, p.backend) for p in found.bench.profiles} == {
        (n, b) for n in names for b in ("onnxruntime", "openvino")}
    alone = {r.model: r.model_info for r in found.bench.results}
    assert alone["simam n-P5"]["params"] == 0 and alone["mhsa n-P5"]["gflops"] > alone["simam n-P5"]["gflops"]
    interleaved = {(r.model, r.backend): r.spinning for r in found.bench.results if r.interleaved}
    assert {m for m, _ in interleaved} == {n for n in names if n.startswith("yolov8n")}
    assert all(spins is False for (_, backend), spins in interleaved.items() if backend == "onnxruntime")


def test_overheads_are_against_no_attention(narrow):
    found, _ = narrow
    assert {(o.module, o.backend) for o in found.overheads} == {
        (m, v) for m in ("cga", "mhsa", "simam") for v in ("torch eager", "onnxruntime", "openvino latency")}
    assert all(o.params == 0 for o in found.overheads if o.module == "simam")
    assert all(o.params > 0 for o in found.overheads if o.module != "simam")
    detector = [p for p in found.bench.profiles if p.model == "yolov8n-cga"]
    assert all(p.attention_blocks == ["model.10"] and 0 < p.attention_share < 1 for p in detector)


def test_claims_table_covers_each_claim_with_a_verdict(narrow):
    found, _ = narrow
    claims = {c.claim: c for c in found.claims}
    assert all(c.verdict in VERDICTS and c.reason for c in found.claims)
    for backend in ("torch eager", "onnxruntime", "openvino latency"):
        assert "n-P5" in claims[f"CGA is faster than MHSA at equal width ({backend}; CGA/MHSA latency)"].measured
    assert any(c.startswith("MHSA's memory-bound share") for c in claims)
    assert {"cga", "mhsa", "simam"} <= {c.split(" ")[0] for c in claims if "lightweight" in c}
    assert "parameters added: 0" in claims["SimAM adds no parameters but costs time"].measured
    gpu = next(c for c in found.claims if "on GPU" in c.claim)
    assert gpu.verdict == "not measurable here" and "GPU columns were not measured" in gpu.reason


def test_study_report_ends_with_the_claims(narrow):
    found, directory = narrow
    text = (directory / "report.md").read_text()
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings[-2:] == ["## Claims", "## Machine"]
    assert "## Modules alone" in text and "## Inside YOLOv8 at P5" in text and "## Trust checks" in text
    assert "rows timed interleaved" in text and "session.intra_op.allow_spinning=0" in text
    assert {"results.json", "latency.png", "ops.png"} <= {p.name for p in directory.iterdir()}
    assert len(found.bench.trust) == 2
