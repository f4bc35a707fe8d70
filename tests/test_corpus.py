"""The loading corpus (tests/corpus/, written by scripts/make_loading_corpus.py): checkpoints saved by ultralytics 8.0
to 8.4 through their own trainers' save code, every task. Each loads without --fork, is made current (compat) and
exports to ONNX at 64x64 with parity against the original, detections compared at every score (conf 0)."""

import json
from pathlib import Path

import pytest

from attn_deploy.heads import task_of
from attn_deploy.loading import compat, load
from attn_deploy.exporters.onnx import OnnxOptions, export
from attn_deploy.parity import Detections
from attn_deploy.verify import verify_export

CORPUS = Path(__file__).parent / "corpus"
ROWS = json.loads((CORPUS / "manifest.json").read_text())
IMGSZ = (64, 64)


def test_the_corpus_covers_every_version_and_task_and_stays_small():
    cells = {(r["version"], r["task"]) for r in ROWS}
    assert cells == {(v, t) for v in ("8.0", "8.1", "8.2", "8.3", "8.4")
                     for t in ("detect", "segment", "pose", "obb", "classify")} - {("8.0", "obb")}
    assert any("criterion" in r["kind"] for r in ROWS) and all((CORPUS / r["file"]).is_file() for r in ROWS)
    assert sum(p.stat().st_size for p in CORPUS.glob("*.pt")) < 11e6


@pytest.mark.parametrize("row", ROWS, ids=[r["file"] for r in ROWS])
def test_corpus_file_loads_and_exports_with_parity(row, tmp_path):
    loaded = load(CORPUS / row["file"])
    fixes = compat.apply(loaded.model)
    assert task_of(loaded.model) == loaded.model.task == row["task"]
    assert any("task set to" in f for f in fixes)  # no version stores the task in the model; ultralytics guesses it
    left_out = " ".join(loaded.notes)
    assert ("model.criterion" in left_out) == ("criterion" in row["kind"] or row["version"] == "8.0" and
                                              row["task"] == "segment")  # 8.0's strip_optimizer keeps it
    assert ("model.transforms" in left_out) == (row["task"] == "classify" and row["version"] >= "8.3")
    built = export(loaded, tmp_path / "model.onnx", OnnxOptions(imgsz=IMGSZ, simplify=False))
    report = verify_export(built.path, loaded, detections=Detections(conf=0.0))
    assert report.passed, report.worst()
    if row["task"] != "classify":
        assert report.detections and all(d.recall is not None and d.recall > 0.9 for d in report.detections)
