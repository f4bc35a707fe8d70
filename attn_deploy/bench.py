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
    x = np.random.default_rng(0).random((batch, 3, *imgsz), dtype=np.float32)
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
