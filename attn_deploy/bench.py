"""The timing harness shared by every backend: warm-up, timed iterations, latency statistics."""

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass
class LatencyStats:
    mean: float
    median: float
    p90: float
    p99: float
    min: float
    max: float
    std: float

    @classmethod
    def of(cls, ms: np.ndarray) -> "LatencyStats":
        return cls(
            mean=float(ms.mean()), median=float(np.median(ms)), p90=float(np.percentile(ms, 90)),
            p99=float(np.percentile(ms, 99)), min=float(ms.min()), max=float(ms.max()), std=float(ms.std()),
        )


@dataclass
class BenchResult:
    model: str
    backend: str
    device: str
    precision: str
    batch: int
    imgsz: tuple[int, int]
    threads: int | None
    warmup: int
    iters: int
    first_ms: float
    latency_ms: LatencyStats
    throughput: float  # images per second, from the median latency


def _seeded_input(batch: int, imgsz: tuple[int, int]) -> np.ndarray:
    return np.random.default_rng(0).random((batch, 3, *imgsz), dtype=np.float32)


def _timed(runner, x: np.ndarray) -> float:
    start = time.perf_counter()
    runner.run([x])
    return (time.perf_counter() - start) * 1e3


def bench(
    runner,
    model: str,
    batch: int,
    imgsz: tuple[int, int],
    warmup: int = 10,
    iters: int = 50,
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> BenchResult:
    """Time ``runner`` on a seeded input: ``warmup`` untimed runs, then ``iters`` timed ones."""
    if warmup < 0 or iters < 1:
        raise ValueError(f"need warmup >= 0 and iters >= 1, got {warmup} and {iters}")
    x = _seeded_input(batch, imgsz)
    first = _timed(runner, x)
    total = warmup + iters
    times = []
    for i in range(total):
        ms = _timed(runner, x)
        if i >= warmup:
            times.append(ms)
        if progress:
            progress(i + 1, total)
    stats = LatencyStats.of(np.array(times))
    return BenchResult(
        model=model, backend=runner.backend, device=runner.device, precision=runner.precision, batch=batch,
        imgsz=tuple(imgsz), threads=threads, warmup=warmup, iters=iters, first_ms=first, latency_ms=stats,
        throughput=batch * 1e3 / stats.median,
    )


@dataclass
class Comparison:
    """Latency of runners timed in turn, one run each per round, so that load on the machine hits all alike."""

    latency_ms: dict[str, LatencyStats]
    ratio_to_first: dict[str, float]  # median over rounds of (runner's time / first runner's time)


def compare(runners: dict, batch: int, imgsz: tuple[int, int], warmup: int = 10, iters: int = 100) -> Comparison:
    """Time ``runners`` interleaved on the same seeded input: ``warmup`` rounds untimed, then ``iters`` rounds."""
    if warmup < 0 or iters < 1 or not runners:
        raise ValueError(f"need runners, warmup >= 0 and iters >= 1, got {len(runners)}, {warmup} and {iters}")
    x = _seeded_input(batch, imgsz)
    times = {name: [] for name in runners}
    for i in range(warmup + iters):
        for name, runner in runners.items():
            ms = _timed(runner, x)
            if i >= warmup:
                times[name].append(ms)
    first = np.array(next(iter(times.values())))
    return Comparison({k: LatencyStats.of(np.array(v)) for k, v in times.items()},
                      {k: float(np.median(np.array(v) / first)) for k, v in times.items()})
