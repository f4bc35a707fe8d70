"""The timing harness shared by every backend: warm-up, timed runs, latency statistics and their confidence."""

import math
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

NOISY = 0.05  # a median whose 95 % interval reaches further than 5 % from it says the machine was busy


@dataclass
class Budget:
    """How long to time: ``warmup_s`` of untimed runs (at least one), then at least ``iters`` timed runs
    and at least ``duration_s`` seconds of them."""

    warmup_s: float = 1.0
    iters: int = 10
    duration_s: float = 3.0

    def __post_init__(self) -> None:
        if self.warmup_s < 0 or self.iters < 1 or self.duration_s < 0:
            raise ValueError(f"need warmup_s >= 0, iters >= 1 and duration_s >= 0, got {self}")


def median_interval(ms: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """A distribution-free interval for the median: order statistics k and n-k+1, with k the largest
    for which a binomial(n, 1/2) falls below k with probability at most (1 - confidence) / 2."""
    n, ordered = len(ms), np.sort(ms)
    below, k = 0.0, 0
    while k < n and below + math.comb(n, k) / 2**n <= (1 - confidence) / 2:
        below += math.comb(n, k) / 2**n
        k += 1
    k = max(k, 1)
    return float(ordered[k - 1]), float(ordered[n - k])


@dataclass
class LatencyStats:
    mean: float
    median: float
    p90: float
    p99: float
    min: float
    max: float
    std: float
    median_ci: tuple[float, float] = (math.nan, math.nan)  # 95 % interval of the median
    count: int = 0

    @classmethod
    def of(cls, ms: np.ndarray) -> "LatencyStats":
        return cls(
            mean=float(ms.mean()), median=float(np.median(ms)), p90=float(np.percentile(ms, 90)),
            p99=float(np.percentile(ms, 99)), min=float(ms.min()), max=float(ms.max()), std=float(ms.std()),
            median_ci=median_interval(ms), count=len(ms),
        )

    @property
    def noisy(self) -> bool:
        low, high = self.median_ci
        return max(self.median - low, high - self.median) > NOISY * self.median


def variant_label(backend: str, mode: str, precision: str) -> str:
    """``openvino latency``, ``torch cuda-graph fp16``: the backend, its mode, a precision other than fp32."""
    return " ".join(p for p in (backend, mode, precision if precision != "fp32" else "") if p)


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
    throughput: float  # images per second
    mode: str = ""  # eager / cuda-graph (torch), latency / throughput (OpenVINO's hints)
    session_ms: float | None = None  # creating the session, or compiling the model
    peak_rss_mb: float | None = None  # of the process, from opening the runner to the last run
    model_info: dict = field(default_factory=dict)  # file_mb, params, gflops
    interleaved: bool = False  # timed in rounds with other live runners, rather than alone
    spinning: bool | None = None  # onnxruntime's intra-op spinning (None: not an onnxruntime session)
    node: str = ""  # the cluster node it was timed on (empty: this machine)

    @property
    def variant(self) -> str:
        return variant_label(self.backend, self.mode, self.precision)


def seeded_input(batch: int, imgsz: tuple[int, int], channels: int = 3) -> np.ndarray:
    return np.random.default_rng(0).random((batch, channels, *imgsz), dtype=np.float32)


def reset_peak_rss() -> bool:
    """Start the process's peak resident memory afresh (Linux); False where it cannot be reset."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """The process's peak resident memory since start, or since the last ``reset_peak_rss``."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def time_run(runner, x: np.ndarray) -> float:
    """Milliseconds of one ``runner.run`` on ``x``."""
    start = time.perf_counter()
    runner.run([x])
    return (time.perf_counter() - start) * 1e3


def _warm(runner, x: np.ndarray, seconds: float) -> int:
    runs, end = 0, time.perf_counter() + seconds
    while runs == 0 or time.perf_counter() < end:
        runner.run([x])
        runs += 1
    return runs


def _timed_runs(runner, x: np.ndarray, budget: Budget, progress: Callable[[int, int], None] | None) -> list[float]:
    times, start = [], time.perf_counter()
    while len(times) < budget.iters or time.perf_counter() - start < budget.duration_s:
        times.append(time_run(runner, x))
        if progress:
            elapsed = time.perf_counter() - start
            expected = max(budget.iters, round(len(times) * budget.duration_s / elapsed) if elapsed else 0)
            progress(len(times), max(expected, len(times)))
    return times


def bench(runner, model: str, batch: int, imgsz: tuple[int, int], budget: Budget = Budget(),
          threads: int | None = None, progress: Callable[[int, int], None] | None = None,
          channels: int = 3) -> BenchResult:
    """Time ``runner`` on a seeded input. A runner in throughput mode (OpenVINO's) keeps several requests
    in flight (``pipelined``): its latency is per request and its throughput is images over wall time."""
    x = seeded_input(batch, imgsz, channels)
    first = time_run(runner, x)
    warmup = _warm(runner, x, budget.warmup_s)
    if getattr(runner, "mode", "") == "throughput":
        times, seconds = runner.pipelined(x, budget.iters, budget.duration_s)
        throughput = batch * len(times) / seconds
    else:
        times = _timed_runs(runner, x, budget, progress)
        throughput = batch * 1e3 / float(np.median(times))
    if progress:
        progress(len(times), len(times))
    return BenchResult(
        model=model, backend=runner.backend, device=runner.device, precision=runner.precision, batch=batch,
        imgsz=tuple(imgsz), threads=threads, warmup=warmup, iters=len(times), first_ms=first,
        latency_ms=LatencyStats.of(np.array(times)), throughput=throughput, mode=getattr(runner, "mode", ""),
        spinning=getattr(runner, "spinning", None),
    )


def ratio_of_medians(a: LatencyStats, b: LatencyStats) -> tuple[float, float, float]:
    """``a``'s median over ``b``'s, timed apart, and an interval from the extremes of their 95 % intervals."""
    (a_low, a_high), (b_low, b_high) = a.median_ci, b.median_ci
    return a.median / b.median, a_low / b_high, a_high / b_low


SPINNING_OFF = ("onnxruntime sessions with intra-op spinning off (session.intra_op.allow_spinning=0), so that "
                "the idle sessions' threads do not take the cores from the one running")


@dataclass
class Comparison:
    """Latency of runners timed in turn, one run each per round, so that load on the machine hits all alike."""

    latency_ms: dict[str, LatencyStats]
    rounds_ms: dict[str, list[float]]
    spinning: dict[str, bool | None] = field(default_factory=dict)  # per runner, as ``BenchResult.spinning``

    @property
    def method(self) -> str:
        """How the rounds were timed, for the reports."""
        sessions = f"; {SPINNING_OFF}" if any(v is False for v in self.spinning.values()) else ""
        return f"{len(self.rounds_ms)} runners in turn, one run of each per round{sessions}"

    @property
    def ratio_to_first(self) -> dict[str, float]:
        """The median over rounds of (runner's time / first runner's time), per runner."""
        first = next(iter(self.rounds_ms))
        return {name: self.ratio(name, first)[0] for name in self.rounds_ms}

    def ratio(self, name: str, to: str) -> tuple[float, float, float]:
        """The median over rounds of (``name``'s time / ``to``'s time), and its 95 % interval."""
        ratios = np.array(self.rounds_ms[name]) / np.array(self.rounds_ms[to])
        return (float(np.median(ratios)), *median_interval(ratios))


def compare(runners: dict, batch: int, imgsz: tuple[int, int], warmup: int = 10, iters: int = 100,
            channels: int = 3) -> Comparison:
    """Time ``runners`` interleaved on the same seeded input: ``warmup`` rounds untimed, then ``iters`` rounds.
    Several onnxruntime sessions must be opened with ``spinning=False``: spinning idle ones distort the others."""
    if warmup < 0 or iters < 1 or not runners:
        raise ValueError(f"need runners, warmup >= 0 and iters >= 1, got {len(runners)}, {warmup} and {iters}")
    spinning = {name: getattr(runner, "spinning", None) for name, runner in runners.items()}
    if len(runners) > 1 and any(spinning.values()):
        raise ValueError(f"{', '.join(k for k, v in spinning.items() if v)}: onnxruntime sessions timed in turn "
                         "must be opened with spinning=False")
    x = seeded_input(batch, imgsz, channels)
    times = {name: [] for name in runners}
    for i in range(warmup + iters):
        for name, runner in runners.items():
            ms = time_run(runner, x)
            if i >= warmup:
                times[name].append(ms)
    return Comparison({k: LatencyStats.of(np.array(v)) for k, v in times.items()}, times, spinning)
