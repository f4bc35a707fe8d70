"""Output files: whole or nothing, and readable as files that ``open`` creates."""

import os

import pytest

from attn_deploy.errors import AttnDeployError
from attn_deploy.files import check_writable, write_atomic, write_dir_atomic


def test_outputs_get_the_permissions_open_would_give(tmp_path):
    mask = os.umask(0o022)
    try:
        file = write_atomic(tmp_path / "model.onnx", lambda tmp: tmp.write_bytes(b"onnx"))
        directory = write_dir_atomic(tmp_path / "report", lambda tmp: (tmp / "report.md").write_text("# r"))
    finally:
        os.umask(mask)
    assert file.stat().st_mode & 0o777 == 0o644 and directory.stat().st_mode & 0o777 == 0o755
    assert file.read_bytes() == b"onnx" and (directory / "report.md").read_text() == "# r"


def _half_then_fail(tmp):
    (tmp / "half.md" if tmp.is_dir() else tmp).write_text("half")
    raise RuntimeError("disk full")


def test_a_failed_write_leaves_nothing_and_keeps_what_was_there(tmp_path):
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "old.md").write_text("kept")
    with pytest.raises(RuntimeError):
        write_dir_atomic(tmp_path / "report", _half_then_fail)
    with pytest.raises(RuntimeError):
        write_atomic(tmp_path / "x.onnx", _half_then_fail)
    assert [p.name for p in tmp_path.iterdir()] == ["report"]
    assert [p.name for p in (tmp_path / "report").iterdir()] == ["old.md"]
    with pytest.raises(AttnDeployError, match="--force"):
        check_writable(tmp_path / "report", force=False)
