"""`bench --zoo`, narrowed to CGA, MHSA and SimAM at P5 of YOLOv8n, and to SimAM inside YOLO11n with the area
attention claim's detectors (the full study is a benchmark script's job)."""

import dataclasses

import pytest

from attn_deploy import report
from attn_deploy.bench import study, suite

VERDICTS = {"holds", "does not hold", "not measurable here"}
BACKENDS = ("torch eager", "onnxruntime", "openvino latency")


def _narrowed(tmp_path_factory, scope: study.Scope, backends: list[str] | None = None):
    variants, notes = suite.choose_variants("cpu", backends)
    plan = suite.Plan("cpu", variants, [1], 2, dataclasses.replace(study.BUDGET, duration_s=0.1))
    found = study.run(plan, notes, scope=scope)
    directory = tmp_path_factory.mktemp("zoo") / "zoo-cpu"
    report.write_study_report(directory, found, found.bench)
    return found, directory


@pytest.fixture(scope="module")
def narrow(tmp_path_factory):
    return _narrowed(tmp_path_factory, study.Scope(["cga", "mhsa", "simam"], ["n"], ["P5"], families=[],
                                                   contrast=False, fused=False))


@pytest.fixture(scope="module")
def families(tmp_path_factory):
    """SimAM inside YOLO11n only (no module alone, no YOLOv8), and YOLO12n against YOLO11n, at 64x64 on
    onnxruntime."""
    scope = study.Scope(["simam"], [], [], families=["yolo11"], contrast=True, imgsz=64, fused=False)
    return _narrowed(tmp_path_factory, scope, ["ort"])


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
    assert "## Modules alone" in text and "## Inside the detectors at P5" in text and "## Trust checks" in text
    assert "rows timed interleaved" in text and "session.intra_op.allow_spinning=0" in text
    assert {"results.json", "latency.png", "ops.png"} <= {p.name for p in directory.iterdir()}
    assert len(found.bench.trust) == 2


def test_family_rows_are_timed_against_the_familys_own_detector(families):
    found, _ = families
    names = ["yolo11n-none", "yolo11n-simam"]
    contrast = ["yolo11n", "yolo11n-no-c2psa", "yolo12n", "yolo12n-no-area-attention"]
    assert {(r.model, r.variant, r.imgsz) for r in found.bench.results} == {
        (n, "onnxruntime", (64, 64)) for n in names + contrast}
    assert [(o.module, o.family, o.detector, o.backend, o.params) for o in found.overheads] == [
        ("simam", "yolo11", "YOLO11n", "onnxruntime", 0)]
    (profile,) = [p for p in found.bench.profiles if p.model == "yolo11n-simam"]
    assert profile.attention_blocks == ["model.11"]  # the zoo module after C2PSA
    claim = next(c for c in found.claims if c.claim.startswith("simam is lightweight"))
    assert "YOLO11n onnxruntime" in claim.measured and claim.verdict in VERDICTS


def test_area_attention_claim_compares_yolo12n_with_yolo11n_and_each_without_attention(families):
    found, _ = families
    where = {"yolo12n / yolo11n", "yolo11n / yolo11n-no-c2psa", "yolo12n / yolo12n-no-area-attention"}
    assert {(r.where, r.variant) for r in found.contrast} == {(w, "onnxruntime") for w in where}
    assert all(r.low <= r.value <= r.high for r in found.contrast)
    rows = {r.model: r for r in found.bench.results}
    params = {name: row.model_info["params"] for name, row in rows.items()}
    assert params["yolo11n"] == params["yolo11n-none"] > params["yolo11n-no-c2psa"]
    assert params["yolo12n"] > params["yolo12n-no-area-attention"]
    assert rows["yolo11n"].model_info["file_mb"] == rows["yolo11n-none"].model_info["file_mb"]  # exported once
    (claim,) = [c for c in found.claims if c.claim.startswith("Area attention keeps YOLO12n as fast as YOLO11n")]
    assert "(onnxruntime;" in claim.claim and claim.verdict in VERDICTS and "yolo12n / yolo11n: " in claim.measured
    assert "YOLO12n takes" in claim.reason and "area attention" in claim.reason and "C2PSA" in claim.reason


def test_study_report_has_the_family_rows_and_the_area_attention_section(families):
    _, directory = families
    text = (directory / "report.md").read_text()
    inside = text.split("## Inside the detectors at P5")[1].split("## ")[0]
    assert "| yolo11n-simam |" in inside and "| yolo12n |" not in inside
    contrast = text.split("## Area attention (YOLO12n) and C2PSA (YOLO11n)")[1].split("## ")[0]
    assert "| yolo12n-no-area-attention |" in contrast and "| yolo12n / yolo11n |" in contrast
