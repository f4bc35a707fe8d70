"""Results kept by artefact hash and settings, so that a rerun skips the jobs that already have one.

A job's key hashes the bytes of its artefact and of its reference checkpoint, and every setting of the job except
the paths (artefacts are rebuilt in a fresh directory on each run). Each result is its own JSON file, written
atomically when it comes back: a run stopped halfway keeps what it finished and nothing half-written.
"""

import dataclasses
import hashlib
import json
from pathlib import Path

from ..bench.job import Job, JobResult
from ..files import write_atomic


def content_hash(path: Path) -> str:
    """sha256 of a file, or of a directory's files in name order (their names included)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path)).encode() if path.is_dir() else b"")
        with file.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def key(job: Job, hashes: dict[str, str]) -> str:
    """The job's key: its artefact's and checkpoint's hashes (``hashes`` by path) and its settings."""
    settings = {k: v for k, v in dataclasses.asdict(job).items() if k not in ("artefact", "checkpoint")}
    text = json.dumps([hashes.get(job.artefact, ""), hashes.get(job.checkpoint, ""), settings], sort_keys=True,
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class Store:
    """Results of earlier runs in ``directory``, one JSON file per key; only results without an error are kept."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def get(self, key: str) -> JobResult | None:
        path = self.directory / f"{key}.json"
        return JobResult.from_json(path.read_text()) if path.is_file() else None

    def put(self, key: str, result: JobResult) -> None:
        if result.error is None:
            write_atomic(self.directory / f"{key}.json", lambda tmp: tmp.write_text(result.to_json()))
