"""``bench --zoo``: what each attention module costs on this machine, alone and inside YOLOv8, and whether the
efficiency claims made for them hold here.

Every zoo module runs alone at the YOLOv8 feature shapes of a 640 input (P3 80x80, P4 40x40, P5 20x20, with the
channels of YOLOv8n and YOLOv8s), and inside YOLOv8n and YOLOv8s at P5, against no attention and plain MHSA.
Detectors of one scale are timed interleaved (one run of each per round), so that drift of the machine hits
all alike and the overhead against no attention is read as a per-round ratio. Claims: EfficientViT (Liu et al.,
CVPR 2023) says that MHSA is limited by memory-bound ops and that cascaded group attention is cheaper; SimAM
(Yang et al., ICML 2021) that it adds no parameters. Subjects with attention sites are also timed against their
fused attention forms (``fused``), a claim per form, kind of attention and target.
"""

import dataclasses
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import suite
from .harness import (BenchResult, Budget, Comparison, LatencyStats, compare, ratio_of_medians, seeded_input,
                      time_run)
from ..loading import LoadedModel
from ..models import ZOO
from ..models.detector import NO_ATTENTION, build_detector, build_module
from .suite import BenchReport, Plan, Subject, Variant

IMGSZ = 640
LEVELS = {"P3": 8, "P4": 16, "P5": 32}  # stride of each feature map
WIDTHS = {"n": {"P3": 64, "P4": 128, "P5": 256}, "s": {"P3": 128, "P4": 256, "P5": 512}}
BASELINE, CGA, MHSA, SIMAM = NO_ATTENTION, "cga", "mhsa", "simam"
BUDGET = Budget(warmup_s=0.2, iters=5, duration_s=0.5)  # per module alone; detectors run ROUNDS rounds
ROUNDS = 16
WARMUP_ROUNDS = 3  # untimed: the first rounds after compiling eleven models run slow
PROFILE_RUNS = 3
LIGHT = 0.05  # "lightweight": at most 5 % added latency


def _with_ir(path: Path) -> dict[str, Path]:
    """The ONNX file and the OpenVINO IR converted from it, by the backend that runs each."""
    from ..exporters import openvino

    ir = openvino.export(path, openvino.model_dir(path), openvino.OpenVINOOptions()).path
    return {"onnxruntime": path, "openvino": ir}


def _exportable(model: torch.nn.Module, x: torch.Tensor, workdir: Path, stem: str) -> dict[str, Path]:
    """``model`` alone rewritten for OpenVINO and onnxruntime (checked rule by rule), exported, converted."""
    import onnx

    from ..exporters import onnx as onnx_backend
    from ..rewrite import LayerCall, rewrite

    done = rewrite(model, target="openvino", count_ops=False, example=x).model
    path = workdir / f"{stem}.onnx"
    onnx.save(onnx_backend.module_to_onnx(done, LayerCall((x,), {}, set())), path)
    return _with_ir(path)


def module_subject(name: str, scale: str, level: str, workdir: Path) -> Subject:
    channels, side = WIDTHS[scale][level], IMGSZ // LEVELS[level]
    model = build_module(name, channels)
    subject = Subject(f"{name} {scale}-{level}", (side, side), model, channels=channels)
    x = torch.from_numpy(seeded_input(1, subject.imgsz, channels))
    subject.artefacts = _exportable(model, x, workdir, f"{name}-{scale}-{level}")
    return suite.describe(subject)


def detector_subject(name: str, scale: str, workdir: Path) -> Subject:
    from ..exporters import onnx
    from ..rewrite import rewrite

    model = build_detector(name, scale)
    subject = suite.describe(Subject(f"yolov8{scale}-{name}", (IMGSZ, IMGSZ), model,
                                     blocks=suite.attention_blocks(model)))
    done = rewrite(model, (IMGSZ, IMGSZ), target="openvino", count_ops=False).model
    loaded = LoadedModel(done, Path(f"{subject.name}.pt"), {i: str(i) for i in range(80)}, 32, "detect")
    path = onnx.export(loaded, workdir / f"{subject.name}.onnx", onnx.OnnxOptions((IMGSZ, IMGSZ), force=True)).path
    subject.artefacts = _with_ir(path)
    return subject


@dataclass
class Scope:
    """What the study covers: every zoo module at every level and scale, unless narrowed (tests narrow it)."""

    modules: list[str] = field(default_factory=lambda: list(ZOO))
    scales: list[str] = field(default_factory=lambda: list(WIDTHS))
    levels: list[str] = field(default_factory=lambda: list(LEVELS))
    fused: bool = True  # each fused attention form against the plain graph (bench/fused.py)


@dataclass
class Ratio:
    """One latency over another at one placement, with a 95 % interval."""

    where: str
    variant: str
    value: float
    low: float
    high: float

    @property
    def sign(self) -> str:
        return "faster" if self.high < 1 else "slower" if self.low > 1 else "within noise"

    @classmethod
    def of(cls, where: str, variant: str, a: LatencyStats, b: LatencyStats) -> "Ratio":
        """From two separately timed medians: the interval from their intervals' extremes."""
        return cls(where, variant, *ratio_of_medians(a, b))


@dataclass
class Overhead:
    """A module's cost inside a detector against the detector without attention, from interleaved rounds."""

    module: str
    scale: str
    backend: str
    ms: float  # the median share times the baseline's median latency
    share: float  # median over rounds of (with / without) - 1
    share_ci: tuple[float, float]  # its 95 % interval
    params: int  # parameters added


@dataclass
class Claim:
    claim: str
    measured: str
    verdict: str  # holds / does not hold / not measurable here
    reason: str = ""


@dataclass
class Study:
    bench: BenchReport
    overheads: list[Overhead] = field(default_factory=list)
    cga_to_mhsa: list[Ratio] = field(default_factory=list)  # inside the detectors, from interleaved rounds
    claims: list[Claim] = field(default_factory=list)
    seconds: float = 0.0
    fused: object | None = None  # fused.FusedStudy: fused attention forms against the plain graph


def _study_variants(plan: Plan) -> list[Variant]:
    """Batch-1 latency: OpenVINO's throughput mode answers another question."""
    return [v for v in plan.variants if v.mode != "throughput"]


def _time_detectors(subjects: list[Subject], variant: Variant, plan: Plan) -> tuple[list[BenchResult], Comparison]:
    """Interleaved rounds over ``subjects`` (the baseline first): a row per detector, and the rounds. onnxruntime
    sessions do not spin, so that the idle ones leave the cores to the one running."""
    runners, opened = {}, {}
    for s in subjects:
        start = time.perf_counter()
        runners[s.name] = suite.open_variant(s, variant, 1, plan, spinning=False)
        opened[s.name] = (time.perf_counter() - start) * 1e3
    try:
        first = {s.name: time_run(runners[s.name], seeded_input(1, s.imgsz)) for s in subjects}
        timed = compare(runners, 1, (IMGSZ, IMGSZ), warmup=WARMUP_ROUNDS, iters=max(ROUNDS, plan.budget.iters))
    finally:
        for r in runners.values():
            r.close()
    rows = [BenchResult(model=s.name, backend=variant.backend, device=plan.device, precision=variant.precision,
                        batch=1, imgsz=(IMGSZ, IMGSZ), threads=plan.threads, warmup=WARMUP_ROUNDS,
                        iters=timed.latency_ms[s.name].count, first_ms=first[s.name],
                        latency_ms=timed.latency_ms[s.name], throughput=1e3 / timed.latency_ms[s.name].median,
                        mode=variant.mode, session_ms=opened[s.name],
                        model_info={"file_mb": s.file_mb(variant.backend), "params": s.params, "gflops": s.gflops},
                        interleaved=True, spinning=timed.spinning[s.name])
            for s in subjects]
    return rows, timed


def _overheads(subjects: list[Subject], rows: list[BenchResult], timed: Comparison, scale: str,
               variant: Variant) -> list[Overhead]:
    """Each module's overhead: the median per-round ratio to the baseline, in % and in ms of the baseline's median."""
    base = subjects[0]
    base_ms = next(r.latency_ms.median for r in rows if r.model == base.name)
    found = []
    for s in subjects[1:]:
        ratio, low, high = timed.ratio(s.name, base.name)
        found.append(Overhead(s.name.removeprefix(f"yolov8{scale}-"), scale, variant.label, (ratio - 1) * base_ms,
                              ratio - 1, (low - 1, high - 1), s.params - base.params))
    return found


def _build(named: dict[str, tuple], make, progress) -> list[Subject]:
    """``make(*args)`` for each ``{description: args}``, with progress."""
    built = []
    for i, (what, args) in enumerate(named.items()):
        if progress:
            progress(what, i, len(named))
        built.append(make(*args))
    return built


def _detectors(scale: str, modules: list[str], plan: Plan, study: Study, workdir: Path, progress) -> list[Subject]:
    """Build, time (interleaved, per variant) and profile YOLOv8``scale`` without attention and with each module."""
    subjects = _build({f"exporting YOLOv8{scale} with {n}": (n, scale, workdir) for n in [BASELINE, *modules]},
                      detector_subject, progress)
    for variant in plan.variants:
        if progress:
            progress(f"YOLOv8{scale} · {variant.label}: {ROUNDS} interleaved rounds of {len(subjects)} detectors", 0, 1)
        rows, timed = _time_detectors(subjects, variant, plan)
        study.bench.results += rows
        study.overheads += _overheads(subjects, rows, timed, scale, variant)
        names = {s.name for s in subjects}
        if {f"yolov8{scale}-{CGA}", f"yolov8{scale}-{MHSA}"} <= names:
            ratio = timed.ratio(f"yolov8{scale}-{CGA}", f"yolov8{scale}-{MHSA}")
            study.cga_to_mhsa.append(Ratio(f"YOLOv8{scale}", variant.label, *ratio))
    study.bench.profiles += [suite.profile_subject(s, b, 1, plan, runs=plan.profile_runs)
                             for s, b in suite.to_profile(subjects, plan)]
    return subjects


def run(plan: Plan, notes: list[str], progress: suite.Progress | None = None, scope: Scope | None = None) -> Study:
    """The study of ``scope`` (default: all of it) on ``plan``'s device and backends, at batch 1."""
    from . import fused, trust
    from ..machine import machine

    started = time.perf_counter()
    plan = dataclasses.replace(plan, variants=_study_variants(plan), batches=[1],
                               profile_runs=min(plan.profile_runs, PROFILE_RUNS))
    gpu = ["GPU columns not measured: this run is on CPU (`bench --zoo --device cuda` measures them)"]
    study = Study(BenchReport(plan.device, plan.budget, plan.threads, notes=list(notes) + gpu * (plan.device == "cpu"),
                              machine=machine(plan.threads)))
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        scope = scope or Scope()
        places = {f"exporting {n} {sc}-{lv}": (n, sc, lv, workdir)
                  for n in scope.modules for sc in scope.scales for lv in scope.levels}
        modules = _build(places, module_subject, progress)
        suite.run(modules, plan, study.bench, progress)
        built = list(modules)
        for scale in scope.scales:
            detectors = _detectors(scale, scope.modules, plan, study, workdir, progress)
            built += detectors
            if scale == scope.scales[0] and CGA in scope.modules:
                subject = next(d for d in detectors if d.name.endswith(CGA))
                study.bench.trust = trust.check(subject, plan, suite.median_ms(subject))
        if scope.fused:
            study.fused = fused.run(built, plan, workdir, progress)
    study.claims = claims(study, plan) + (fused.claims(study.fused.ratios) if study.fused else [])
    study.seconds = time.perf_counter() - started
    return study


def _stats(study: Study) -> dict[str, dict[str, LatencyStats]]:
    """Latency statistics per variant label, then per subject name."""
    found: dict[str, dict[str, LatencyStats]] = {}
    for r in study.bench.results:
        found.setdefault(r.variant, {})[r.model] = r.latency_ms
    return found


def _placements() -> list[tuple[str, str, str]]:
    """(where, CGA subject, MHSA subject) at every module-alone shape."""
    return [(f"{sc}-{lv}", f"{CGA} {sc}-{lv}", f"{MHSA} {sc}-{lv}") for sc in WIDTHS for lv in LEVELS]


def _verdict(passed: int, total: int, what: str) -> tuple[str, str]:
    if total == 0:
        return "not measurable here", f"no {what} was measured"
    return ("holds" if passed == total else "does not hold"), f"{passed} of {total} {what}"


def _faster_verdict(ratios: list[Ratio]) -> tuple[str, str]:
    """Holds when CGA is faster wherever the difference is beyond the noise, and somewhere it is."""
    signs = [r.sign for r in ratios]
    reason = (f"faster at {signs.count('faster')}, slower at {signs.count('slower')}, within the noise at "
              f"{signs.count('within noise')} of {len(ratios)} placements (95 % intervals)")
    if not ratios or set(signs) == {"within noise"}:
        return "not measurable here", reason
    return ("does not hold" if "slower" in signs else "holds"), reason


def _cga_faster(study: Study) -> list[Claim]:
    found = []
    for label, stats in _stats(study).items():
        ratios = [Ratio.of(w, label, stats[c], stats[m]) for w, c, m in _placements() if c in stats and m in stats]
        ratios += [r for r in study.cga_to_mhsa if r.variant == label]
        measured = "; ".join(f"{r.where}: {r.value:.2f}x [{r.low:.2f}, {r.high:.2f}]" for r in ratios)
        found.append(Claim(f"CGA is faster than MHSA at equal width ({label}; CGA/MHSA latency)", measured,
                           *_faster_verdict(ratios)))
    return found


def _unsplit(study: Study, backend: str) -> str | None:
    """Why ``backend``'s MHSA profiles cannot say a memory-bound share: most of their time in fused nodes."""
    profiles = [p for p in study.bench.profiles if p.backend == backend and p.model.startswith(f"{MHSA} ")]
    fused = [p for p in profiles if p.profile.by_class["other"] > 0.5 * p.profile.total_ms]
    if not fused:
        return None
    kinds = sorted({k for p in fused for k, ms in p.profile.by_type.items() if ms > 0.25 * p.profile.total_ms})
    return (f"{backend} fuses MHSA's MatMul-Softmax-MatMul into {', '.join(kinds)} nodes (over half its time at "
            f"{len(fused)} of {len(profiles)} shapes), whose counters do not split memory- from compute-bound work")


def _memory_bound(study: Study) -> list[Claim]:
    found = []
    for backend in suite.PROFILED:
        share = {p.model: p.profile.memory_bound_share for p in study.bench.profiles if p.backend == backend}
        pairs = [(w, share[m], share[c]) for w, c, m in _placements() if c in share and m in share]
        verdict, reason = _verdict(sum(m > c for _, m, c in pairs), len(pairs), "shapes with MHSA's share larger")
        fused = _unsplit(study, backend)
        verdict, reason = ("not measurable here", fused) if fused else (verdict, reason)
        measured = "; ".join(f"{w}: MHSA {100 * m:.0f} % vs CGA {100 * c:.0f} %" for w, m, c in pairs)
        found.append(Claim(f"MHSA's memory-bound share is larger than CGA's ({backend} profile)", measured, verdict,
                           reason))
    return found


def _overhead_text(o: Overhead) -> str:
    return (f"YOLOv8{o.scale} {o.backend}: {o.ms:+.2f} ms ({100 * o.share:+.1f} % "
            f"[{100 * o.share_ci[0]:+.1f}, {100 * o.share_ci[1]:+.1f}])")


def _lightweight(study: Study) -> list[Claim]:
    found = []
    for module in dict.fromkeys(o.module for o in study.overheads):
        rows = [o for o in study.overheads if o.module == module]
        above = sum(o.share_ci[0] > LIGHT for o in rows)
        over = sum(o.share > LIGHT for o in rows)
        verdict = "does not hold" if above else "holds" if not over else "not measurable here"
        reason = (f"{above} of {len(rows)} detector/backend pairs clearly above {100 * LIGHT:.0f} %, {over} with the "
                  "median above it")
        found.append(Claim(f"{module} is lightweight: at most {100 * LIGHT:.0f} % added latency in YOLOv8 at P5",
                           "; ".join(map(_overhead_text, rows)), verdict, reason))
    return found


def _simam(study: Study) -> Claim:
    claim = "SimAM adds no parameters but costs time"
    rows = [o for o in study.overheads if o.module == SIMAM]
    alone = [r.latency_ms for r in study.bench.results if r.model.startswith(f"{SIMAM} ")]
    params = sorted({o.params for o in rows} | {r.model_info["params"] for r in study.bench.results
                                                if r.model.startswith(f"{SIMAM} ")})
    measured = (f"parameters added: {', '.join(map(str, params))}; alone: "
                f"{min(s.median for s in alone):.3f}-{max(s.median for s in alone):.3f} ms; inside YOLOv8: "
                + "; ".join(map(_overhead_text, rows)))
    if params != [0]:
        return Claim(claim, measured, "does not hold", "it adds parameters")
    costly = sum(s.median_ci[0] > 0 for s in alone)
    beyond = sum(o.share_ci[0] > 0 for o in rows)
    verdict, reason = _verdict(costly, len(alone), "module-alone timings above zero")
    return Claim(claim, measured, verdict, f"no parameters; {reason}; inside YOLOv8 its overhead is beyond the "
                 f"noise at {beyond} of {len(rows)} detector/backend pairs")


def _not_here(plan: Plan) -> list[Claim]:
    found = [Claim("EfficientViT beats MobileNetV3 and MobileViT in throughput (GPU, CPU, ONNX)", "-",
                   "not measurable here", "the zoo holds attention modules inside YOLOv8, not those backbones")]
    if plan.device == "cpu":
        found.append(Claim("CGA is faster than MHSA on GPU (torch eager, CUDA graphs, fp16; TensorRT)", "-",
                           "not measurable here", "this run is on CPU: the GPU columns were not measured; run "
                           "`attn-deploy bench --zoo --device cuda` on a GPU machine"))
    return found


def claims(study: Study, plan: Plan) -> list[Claim]:
    return [*_cga_faster(study), *_memory_bound(study), *_lightweight(study), _simam(study), *_not_here(plan)]
