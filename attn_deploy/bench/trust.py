"""Checks of the timing harness against tools users already trust, on the same model and machine:
OpenVINO's ``benchmark_app`` and a plain onnxruntime loop. Their medians must agree with ours within 10 %."""

import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import AttnDeployError
from .harness import seeded_input

AGREEMENT = 0.10


@dataclass
class TrustCheck:
    tool: str
    model: str
    batch: int
    tool_median_ms: float  # the mean of the tool's two medians
    harness_median_ms: float  # the mean of attn-deploy's two medians
    command: str
    runs: list[float]  # the four medians (ms), in the order ours, theirs, theirs, ours

    @property
    def difference(self) -> float:
        """(ours - theirs) / theirs."""
        return (self.harness_median_ms - self.tool_median_ms) / self.tool_median_ms

    @property
    def agrees(self) -> bool:
        return abs(self.difference) <= AGREEMENT

    @property
    def summary(self) -> str:
        return (f"{self.tool} on {self.model}: median {self.tool_median_ms:.3f} ms, attn-deploy "
                f"{self.harness_median_ms:.3f} ms ({100 * self.difference:+.1f} %, "
                f"{'agrees' if self.agrees else 'DISAGREES'} within {100 * AGREEMENT:.0f} %)")


def benchmark_app_path() -> Path:
    found = shutil.which("benchmark_app") or Path(sys.executable).with_name("benchmark_app")
    if not Path(found).exists():
        raise AttnDeployError("benchmark_app is not on PATH nor beside this Python; it ships with the openvino package")
    return Path(found)


def benchmark_app_command(xml: Path, threads: int | None, seconds: float) -> list[str]:
    """One synchronous request at the f32 hint: what attn-deploy's OpenVINO latency mode times."""
    tuning = ["-hint", "none", "-nstreams", "1", "-nthreads", str(threads)] if threads else ["-hint", "latency"]
    return [str(benchmark_app_path()), "-m", str(xml), "-d", "CPU", *tuning, "-nireq", "1", "-api", "sync",
            "-infer_precision", "f32", "-t", str(max(1, round(seconds)))]


def run_benchmark_app(command: list[str]) -> float:
    """benchmark_app's median latency (ms)."""
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    found = re.search(r"Median:\s+([\d.]+)\s*ms", done.stdout)
    if done.returncode or not found:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise AttnDeployError(f"benchmark_app failed (exit {done.returncode}): {tail[0]}")
    return float(found.group(1))


def plain_onnxruntime_loop(path: Path, batch: int, imgsz: tuple[int, int], threads: int | None,
                           seconds: float, channels: int = 3) -> float:
    """The loop a user writes: one session, ten warm-up runs, then ``session.run`` for ``seconds``; median ms."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: seeded_input(batch, imgsz, channels)}
    for _ in range(10):
        session.run(None, feed)
    times, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 10:
        start = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def _xml(path: Path) -> Path:
    return next(path.glob("*.xml")) if path.is_dir() else path


def _abba(ours, theirs) -> tuple[float, float, list[float]]:
    """Ours, theirs, theirs, ours: drift of a busy machine over the four runs cancels in the means."""
    runs = [ours(), theirs(), theirs(), ours()]
    return (runs[0] + runs[3]) / 2, (runs[1] + runs[2]) / 2, runs


def check(subject, plan, time_ours: Callable[[str, object], float]) -> list[TrustCheck]:
    """Time ``subject`` (a ``suite.Subject``) with the harness (``time_ours(backend, plan)``: the median ms of
    ``backend`` under ``plan``) and with each trusted tool in the order ours, theirs, theirs, ours, at the subject's
    first batch and ``plan``'s threads, each for at least 3 s after at least 2 s of warm-up (a runtime's first model
    in a process runs slower for a while: its memory pools and thread pool are cold)."""
    import dataclasses

    from .harness import Budget

    batch, seconds = subject.batches[0], max(plan.budget.duration_s, 3.0)
    timing = dataclasses.replace(plan, budget=Budget(max(plan.budget.warmup_s, 2.0), plan.budget.iters, seconds))
    shape = f"[{batch},{subject.channels},{subject.imgsz[0]},{subject.imgsz[1]}]"

    def ours(backend: str):
        return lambda: time_ours(backend, timing)

    checks = []
    if "openvino" in subject.artefacts:
        command = benchmark_app_command(_xml(subject.artefacts["openvino"]), plan.threads, seconds) + ["-shape", shape]
        mine, theirs, runs = _abba(ours("openvino"), lambda: run_benchmark_app(command))
        checks.append(TrustCheck("benchmark_app", subject.name, batch, theirs, mine, " ".join(command), runs))
    if "onnxruntime" in subject.artefacts:
        def loop() -> float:
            return plain_onnxruntime_loop(subject.artefacts["onnxruntime"], batch, subject.imgsz, plan.threads,
                                          seconds, subject.channels)

        mine, theirs, runs = _abba(ours("onnxruntime"), loop)
        checks.append(TrustCheck("plain onnxruntime loop", subject.name, batch, theirs, mine,
                                 f"InferenceSession.run in a loop for {seconds:.0f} s after 10 warm-up runs", runs))
    return checks
