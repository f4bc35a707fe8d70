"""One candidate of ``tune`` as a job: JSON in (what to run, how, against which reference), JSON out (its parity
verdict, mAP and timing).

A job opens its runtime, checks it against the original model (parity at its precision's tolerance, and with a data
set its mAP), times it (unless the runtime says it is no timing device, as RKNN's x86 simulator does) and closes
it; jobs run one after another, so no other runtime is live while one is timed.
A job names everything by path, so it can run in another process or on another machine:
``python -m attn_deploy.bench.job < job.json > result.json``.
"""

import dataclasses
import hashlib
import json
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..accuracy import MAP_TOLERANCES
from ..errors import AttnDeployError
from ..parity import TOLERANCES, Tolerance
from .harness import BenchResult, Budget, LatencyStats, bench

BATCH = 1  # tune answers for one image at a time; throughput modes keep several requests in flight


@dataclass
class Settings:
    """How the runtime runs the artefact."""

    threads: int | None = None  # intra-op threads (None: the runtime's default)
    mode: str = ""  # OpenVINO's performance hint (latency, throughput); torch: eager or cuda-graph
    precision: str = "fp32"  # asked of the runtime: OpenVINO "fp32" (the f32 hint) or "default"; torch fp32/fp16
    device: str = "cpu"  # cpu, cuda


@dataclass
class Job:
    """What to run, how, and against which reference. Paths are strings, so the job reads back from JSON whole."""

    name: str
    backend: str  # torch, onnxruntime, openvino, tensorrt
    artefact: str  # the file or directory run (for torch, the checkpoint)
    checkpoint: str  # the original model, the reference of parity and mAP
    imgsz: tuple[int, int]
    settings: Settings = field(default_factory=Settings)
    budget: Budget = field(default_factory=Budget)
    loading: dict = field(default_factory=dict)  # keyword arguments of ``loading.load`` (plugins, trust, yaml, fork)
    semantics: str = "eager"  # the rewrite report's reference: eager, or true-shift where eager diverges
    tolerances: dict[str, Tolerance] = field(default_factory=lambda: dict(TOLERANCES))
    data: str | None = None  # a data YAML: its validation split scores mAP50-95
    map_tolerances: dict[str, float] = field(default_factory=lambda: dict(MAP_TOLERANCES))  # allowed drop per precision
    map_budget: float | None = None  # the largest mAP50-95 drop accepted at any precision
    batch: int = BATCH
    channels: int = 3  # the input's channels (a module timed alone takes its feature map's)
    check: bool = True  # False: timing alone (a bench unit), no parity and no reference loaded unless torch runs it

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "Job":
        data = json.loads(text)
        return cls(**{**data, "imgsz": tuple(data["imgsz"]), "settings": Settings(**data["settings"]),
                      "budget": Budget(**data["budget"]),
                      "tolerances": {k: Tolerance(**v) for k, v in data["tolerances"].items()}})


@dataclass
class JobResult:
    """What a job found. ``passed``: parity at the precision's tolerance, INT8 judged by its mAP (so never without a
    data set), and the mAP drop within the job's budget."""

    name: str
    precision: str | None = None  # the inference precision timed and checked, as the runtime reports it
    parity: str = "not run"  # pass, FAIL, not run
    parity_detail: str = ""
    map50_95: float | None = None
    map50_95_drop: float | None = None  # positive: worse than the original PyTorch model
    latency_ms: LatencyStats | None = None
    throughput: float | None = None  # images per second
    runtime: dict = field(default_factory=dict)  # what the runtime chose: streams, requests in flight, threads
    error: str | None = None  # why the job could not run
    passed: bool = False
    failed: str = ""  # why it did not pass
    node: str = ""  # where it ran: this host's name, or the cluster node's
    device: str = ""  # the device timed: cpu, cuda
    timing: BenchResult | None = None  # the harness's whole row (bench units keep it)
    reused: bool = False  # taken from an earlier run's results (a cluster run's store), not run again
    untimed: str = ""  # why it was checked but not timed (a simulator is not a timing device)
    span: list[float] = field(default_factory=list)  # when it ran on its node: start and end, epoch seconds

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "JobResult":
        data = json.loads(text)
        timing = data.get("timing")
        timing = timing and BenchResult(**{**timing, "imgsz": tuple(timing["imgsz"]),
                                           "latency_ms": _latency(timing["latency_ms"])})
        return cls(**{**data, "latency_ms": _latency(data["latency_ms"]), "timing": timing})


def _latency(stats: dict | None) -> LatencyStats | None:
    return LatencyStats(**{**stats, "median_ci": tuple(stats["median_ci"])}) if stats else None


class Remembered:
    """A runner that runs each input once and then answers from memory: the original model's outputs on the parity
    inputs are the same for every candidate (and its fp64 run costs more than most candidates)."""

    def __init__(self, runner):
        self.runner, self.outputs = runner, {}

    def __getattr__(self, name: str):
        return getattr(self.runner, name)

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        key = (inputs[0].shape, hashlib.sha1(inputs[0].tobytes()).hexdigest())
        if key not in self.outputs:
            self.outputs[key] = self.runner.run(inputs)
        return [o.copy() for o in self.outputs[key]]


@dataclass
class Context:
    """What jobs in one process share: the loaded reference, its outputs on the parity inputs, and the accuracy
    check that scores it once."""

    loaded: dict[str, object] = field(default_factory=dict)  # checkpoint path -> LoadedModel
    accuracy: dict[tuple, object] = field(default_factory=dict)  # (checkpoint, data, semantics) -> AccuracyCheck
    references: dict[tuple, tuple] = field(default_factory=dict)  # (checkpoint, semantics) -> fp32 and fp64 runs

    def load(self, job: Job):
        from ..loading import load

        if job.checkpoint not in self.loaded:
            self.loaded[job.checkpoint] = load(job.checkpoint, **job.loading)
        return self.loaded[job.checkpoint]

    def reference_runners(self, job: Job, loaded) -> tuple:
        from ..verify import reference_runners

        key = (job.checkpoint, job.semantics)
        if key not in self.references:
            self.references[key] = tuple(map(Remembered, reference_runners(loaded, job.semantics)))
        return self.references[key]

    def accuracy_check(self, job: Job, loaded):
        """The job's accuracy check at its tolerances; the reference's scores are shared between jobs."""
        from .. import heads
        from ..accuracy import AccuracyCheck
        from ..data import load_split
        from ..exporters import torch as torch_backend

        if job.data is None:
            return None
        key = (job.checkpoint, job.data, job.semantics)
        if key not in self.accuracy:
            reference, head = torch_backend.Runner(loaded.model, semantics=job.semantics), heads.of_model(loaded.model)
            self.accuracy[key] = AccuracyCheck(load_split(Path(job.data), task=head.task), reference, head)
        return dataclasses.replace(self.accuracy[key], tolerances=job.map_tolerances)


def _open_runner(job: Job, loaded):
    """The runtime of ``job``, opened as the bench suite opens it."""
    from . import suite

    subject = suite.Subject(job.name, job.imgsz, loaded and loaded.model, {job.backend: Path(job.artefact)})
    variant = suite.Variant(job.backend, job.settings.mode, job.settings.precision)
    return suite.open_variant(subject, variant, job.batch, suite.Plan(job.settings.device,
                                                                       threads=job.settings.threads))


def precision_label(runner) -> str:
    """``int8+bf16`` for INT8 with the rest at bf16; else the precision the runtime computes in."""
    rest = getattr(runner, "inference_precision", runner.precision)
    return runner.precision if rest in (runner.precision, "fp32") else f"{runner.precision}+{rest}"


def _parity_detail(report) -> str:
    worst, tolerance = report.worst, report.tolerance
    detail = f"max abs {worst.max_abs:.3g} on {worst.input} (atol {tolerance.atol:g}, rtol {tolerance.rtol:g})"
    recalls = [d.recall for d in report.detections if d.recall is not None]
    return detail + (f"; detection recall {min(recalls):.3f}" if recalls else "")


def _failed(job: Job, report, result: JobResult) -> str:
    """Why the candidate does not pass, or "" when it does."""
    if not report.passed:
        return "parity"
    if report.precision == "int8" and report.accuracy is None:
        return "INT8 without a data set"  # quantization moves every output by design: only its mAP can judge it
    if report.accuracy is not None and job.map_budget is not None and result.map50_95_drop > job.map_budget:
        return f"mAP50-95 drop {result.map50_95_drop:.4f} over the budget {job.map_budget:g}"
    return ""


def _judge(job: Job, runner, loaded, context: Context) -> JobResult:
    from ..verify import verify_runner

    report = verify_runner(runner, loaded, job.imgsz, BATCH, job.tolerances, job.semantics,
                           accuracy=context.accuracy_check(job, loaded),
                           references=context.reference_runners(job, loaded))
    result = JobResult(job.name, precision_label(runner), "pass" if report.passed else "FAIL", _parity_detail(report))
    if report.accuracy is not None:
        result.map50_95 = report.accuracy.accuracy.map
        result.map50_95_drop = -report.accuracy.delta
        result.parity_detail += (f"; mAP50-95 {result.map50_95:.4f} ({report.accuracy.delta:+.4f}, allowed "
                                 f"-{report.accuracy.tolerance:g})")
    result.failed = _failed(job, report, result)
    result.passed = not result.failed
    return result


def run_job(job: Job, context: Context | None = None) -> JobResult:
    """Open, check (unless ``job.check`` is off), time and close ``job``'s runtime. A job that cannot run returns its
    error, not an exception."""
    context, started = context or Context(), time.time()
    try:
        loaded = context.load(job) if job.check or job.backend == "torch" else None
        runner = _open_runner(job, loaded)
        try:
            result = _judge(job, runner, loaded, context) if job.check else JobResult(job.name,
                                                                                         precision_label(runner))
            result.untimed = getattr(runner, "untimed", "")
            timing = None if result.untimed else bench(runner, job.name, job.batch, job.imgsz, job.budget,
                                                       job.settings.threads, channels=job.channels)
            result.runtime = runner.runtime_settings() if hasattr(runner, "runtime_settings") else {}
        finally:
            runner.close()
    except AttnDeployError as e:
        return JobResult(job.name, error=str(e), node=platform.node(), device=job.settings.device,
                         span=[started, time.time()])
    if timing:
        result.latency_ms, result.throughput = timing.latency_ms, timing.throughput
    result.node, result.device, result.timing = platform.node(), job.settings.device, timing
    result.span = [started, time.time()]
    return result


def main() -> None:
    """A job's JSON on stdin, its result's JSON on stdout."""
    print(run_job(Job.from_json(sys.stdin.read())).to_json())


if __name__ == "__main__":
    main()
