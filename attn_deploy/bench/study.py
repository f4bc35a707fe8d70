"""``bench --zoo``: what each attention module costs on this machine, alone and inside YOLOv8, YOLO11 and YOLO26,
and whether the efficiency claims made for them hold here.

Every zoo module runs alone at the YOLOv8 feature shapes of a 640 input (P3 80x80, P4 40x40, P5 20x20, with the
channels of YOLOv8n and YOLOv8s), and inside YOLOv8n and YOLOv8s at P5 (after SPPF) and YOLO11n and YOLO26n at P5
(after C2PSA), against no attention and plain MHSA. Detectors of one family and scale are timed interleaved (one
run of each per round), so that drift of the machine hits all alike and the overhead against no attention is read
as a per-round ratio. Claims: EfficientViT (Liu et al., CVPR 2023) says that MHSA is limited by memory-bound ops
and that cascaded group attention is cheaper; SimAM (Yang et al., ICML 2021) that it adds no parameters; YOLOv12
(Tian et al., arXiv 2502.12524) that area attention keeps YOLO12n as fast as YOLO11n, which ultralytics' docs
doubt for CPUs: YOLO12n, YOLO11n and each without its attention are timed interleaved. Subjects with attention sites are also
timed against their fused attention forms (``fused``), a claim per form, kind of attention and target.
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
from ..models import CFG_DIR, ZOO
from ..models.detector import NO_ATTENTION, build_detector, build_from_yaml, build_module
from .suite import BenchReport, Plan, Subject, Variant

IMGSZ = 640
LEVELS = {"P3": 8, "P4": 16, "P5": 32}  # stride of each feature map
WIDTHS = {"n": {"P3": 64, "P4": 128, "P5": 256}, "s": {"P3": 128, "P4": 256, "P5": 512}}
BASELINE, CGA, MHSA, SIMAM = NO_ATTENTION, "cga", "mhsa", "simam"
BUDGET = Budget(warmup_s=0.2, iters=5, duration_s=0.5)  # per module alone; detectors run ROUNDS rounds
ROUNDS = 16
WARMUP_ROUNDS = 3  # untimed: the first rounds after compiling eleven models run slow
PROFILE_RUNS = 3
LIGHT = 0.05  # "lightweight": at most 5 % added latency; "as fast": within 5 %
FAMILIES = {"yolov8": "YOLOv8", "yolo11": "YOLO11", "yolo26": "YOLO26"}  # YOLO11 and YOLO26 at scale n only
# The area attention claim's detectors, timed interleaved: YOLO12n and YOLO11n as ultralytics ships them, and each
# without its attention (YOLO11n's C2PSA an identity; YOLO12n's A2C2f blocks with C3k in place of area attention).
YOLO11N, YOLO12N = "yolo11n", "yolo12n"
CONTRAST = {YOLO11N: "yolo11n.yaml", f"{YOLO11N}-no-c2psa": CFG_DIR / "yolo11-no-c2psa.yaml",
            YOLO12N: "yolo12n.yaml", f"{YOLO12N}-no-area-attention": CFG_DIR / "yolo12-no-area-attention.yaml"}
CONTRASTED = [(YOLO12N, YOLO11N), (YOLO11N, f"{YOLO11N}-no-c2psa"), (YOLO12N, f"{YOLO12N}-no-area-attention")]


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


def module_subject(name: str, scale: str, level: str, workdir: Path, imgsz: int = IMGSZ) -> Subject:
    channels, side = WIDTHS[scale][level], imgsz // LEVELS[level]
    model = build_module(name, channels)
    subject = Subject(f"{name} {scale}-{level}", (side, side), model, channels=channels)
    x = torch.from_numpy(seeded_input(1, subject.imgsz, channels))
    subject.artefacts = _exportable(model, x, workdir, f"{name}-{scale}-{level}")
    return suite.describe(subject)


def detector_subject(name: str, scale: str, workdir: Path, family: str = "yolov8", imgsz: int = IMGSZ) -> Subject:
    model = build_detector(name, scale, family=family, imgsz=imgsz)
    return exported_detector(f"{family}{scale}-{name}", model, workdir, imgsz)


def contrast_subject(name: str, workdir: Path, imgsz: int = IMGSZ) -> Subject:
    return exported_detector(name, build_from_yaml(CONTRAST[name], imgsz=imgsz), workdir, imgsz)


def exported_detector(name: str, model: torch.nn.Module, workdir: Path, imgsz: int = IMGSZ) -> Subject:
    """``model`` described, rewritten for OpenVINO and onnxruntime, exported and converted."""
    from ..exporters import onnx
    from ..rewrite import rewrite

    size = (imgsz, imgsz)
    subject = suite.describe(Subject(name, size, model, blocks=suite.attention_blocks(model)))
    done = rewrite(model, size, target="openvino", count_ops=False).model
    loaded = LoadedModel(done, Path(f"{subject.name}.pt"), {i: str(i) for i in range(80)}, 32, "detect")
    path = onnx.export(loaded, workdir / f"{subject.name}.onnx", onnx.OnnxOptions(size, force=True)).path
    subject.artefacts = _with_ir(path)
    return subject


@dataclass
class Scope:
    """What the study covers: every zoo module at every level and YOLOv8 scale, inside YOLO11n and YOLO26n, and the
    area attention claim's detectors, unless narrowed (tests narrow it)."""

    modules: list[str] = field(default_factory=lambda: list(ZOO))
    scales: list[str] = field(default_factory=lambda: list(WIDTHS))
    levels: list[str] = field(default_factory=lambda: list(LEVELS))
    families: list[str] = field(default_factory=lambda: [f for f in FAMILIES if f != "yolov8"])
    contrast: bool = True
    imgsz: int = IMGSZ  # the detectors' input, and the one whose feature maps the modules alone take
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
    family: str = "yolov8"

    @property
    def detector(self) -> str:
        return f"{FAMILIES[self.family]}{self.scale}"


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
    contrast: list[Ratio] = field(default_factory=list)  # the area attention claim's detectors, interleaved rounds
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
        timed = compare(runners, 1, subjects[0].imgsz, warmup=WARMUP_ROUNDS, iters=max(ROUNDS, plan.budget.iters))
    finally:
        for r in runners.values():
            r.close()
    rows = [BenchResult(model=s.name, backend=variant.backend, device=plan.device, precision=variant.precision,
                        batch=1, imgsz=s.imgsz, threads=plan.threads, warmup=WARMUP_ROUNDS,
                        iters=timed.latency_ms[s.name].count, first_ms=first[s.name],
                        latency_ms=timed.latency_ms[s.name], throughput=1e3 / timed.latency_ms[s.name].median,
                        mode=variant.mode, session_ms=opened[s.name],
                        model_info={"file_mb": s.file_mb(variant.backend), "params": s.params, "gflops": s.gflops},
                        interleaved=True, spinning=timed.spinning[s.name])
            for s in subjects]
    return rows, timed


def _overheads(subjects: list[Subject], rows: list[BenchResult], timed: Comparison, family: str, scale: str,
               variant: Variant) -> list[Overhead]:
    """Each module's overhead: the median per-round ratio to the baseline, in % and in ms of the baseline's median."""
    base = subjects[0]
    base_ms = next(r.latency_ms.median for r in rows if r.model == base.name)
    found = []
    for s in subjects[1:]:
        ratio, low, high = timed.ratio(s.name, base.name)
        found.append(Overhead(s.name.removeprefix(f"{family}{scale}-"), scale, variant.label, (ratio - 1) * base_ms,
                              ratio - 1, (low - 1, high - 1), s.params - base.params, family))
    return found


def _build(named: dict[str, tuple], make, progress) -> list[Subject]:
    """``make(*args)`` for each ``{description: args}``, with progress."""
    built = []
    for i, (what, args) in enumerate(named.items()):
        if progress:
            progress(what, i, len(named))
        built.append(make(*args))
    return built


def _interleaved(subjects: list[Subject], what: str, plan: Plan, study: Study,
                 progress) -> list[tuple[Variant, list[BenchResult], Comparison]]:
    """Time ``subjects`` in interleaved rounds on each variant (their rows go to the report): per variant, the rows
    and the rounds."""
    found = []
    for variant in plan.variants:
        if progress:
            progress(f"{what} · {variant.label}: {ROUNDS} interleaved rounds of {len(subjects)} detectors", 0, 1)
        rows, timed = _time_detectors(subjects, variant, plan)
        study.bench.results += rows
        found.append((variant, rows, timed))
    return found


def _detectors(family: str, scale: str, scope: Scope, plan: Plan, study: Study, workdir: Path,
               progress) -> list[Subject]:
    """Build, time (interleaved, per variant) and profile ``family`` ``scale`` without attention and with each
    module of ``scope``."""
    label = f"{FAMILIES[family]}{scale}"
    subjects = _build({f"exporting {label} with {n}": (n, scale, workdir, family, scope.imgsz)
                       for n in [BASELINE, *scope.modules]}, detector_subject, progress)
    cga, mhsa = f"{family}{scale}-{CGA}", f"{family}{scale}-{MHSA}"
    for variant, rows, timed in _interleaved(subjects, label, plan, study, progress):
        study.overheads += _overheads(subjects, rows, timed, family, scale, variant)
        if {cga, mhsa} <= {s.name for s in subjects}:
            study.cga_to_mhsa.append(Ratio(label, variant.label, *timed.ratio(cga, mhsa)))
    study.bench.profiles += [suite.profile_subject(s, b, 1, plan, runs=plan.profile_runs)
                             for s, b in suite.to_profile(subjects, plan)]
    return subjects


def _contrast(scope: Scope, plan: Plan, study: Study, workdir: Path, progress, exported: dict[str, Subject]) -> None:
    """YOLO12n, YOLO11n and each without its attention, timed interleaved: the ratios the area attention claim reads.
    A detector in ``exported`` (YOLO11n, from its family's rows: the same seeded model) is not exported again."""
    todo = {f"exporting {name}": (name, workdir, scope.imgsz) for name in CONTRAST if name not in exported}
    built = {s.name: s for s in _build(todo, contrast_subject, progress)}
    subjects = [built.get(name) or dataclasses.replace(exported[name], name=name) for name in CONTRAST]
    for variant, _, timed in _interleaved(subjects, "YOLO12n and YOLO11n", plan, study, progress):
        study.contrast += [Ratio(f"{a} / {b}", variant.label, *timed.ratio(a, b)) for a, b in CONTRASTED]


def run(plan: Plan, notes: list[str], progress: suite.Progress | None = None, scope: Scope | None = None,
        cluster=None) -> Study:
    """The study of ``scope`` (default: all of it) on ``plan``'s device and backends, at batch 1. With a ``cluster``,
    the modules alone are timed there; the detectors stay here, timed in interleaved rounds on one device."""
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
        places = {f"exporting {n} {sc}-{lv}": (n, sc, lv, workdir, scope.imgsz)
                  for n in scope.modules for sc in scope.scales for lv in scope.levels}
        modules = _build(places, module_subject, progress)
        suite.run(modules, plan, study.bench, progress, cluster)
        built = list(modules)
        for scale in scope.scales:
            detectors = _detectors("yolov8", scale, scope, plan, study, workdir, progress)
            built += detectors
            if scale == scope.scales[0] and CGA in scope.modules:
                subject = next(d for d in detectors if d.name.endswith(CGA))
                study.bench.trust = trust.check(subject, plan, suite.median_ms(subject))
        plain = {}  # each family's own detector, exported once
        for family in scope.families:
            plain[f"{family}n"] = _detectors(family, "n", scope, plan, study, workdir, progress)[0]
        if scope.contrast:
            _contrast(scope, plan, study, workdir, progress, plain)
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
    return (f"{o.detector} {o.backend}: {o.ms:+.2f} ms ({100 * o.share:+.1f} % "
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
        found.append(Claim(f"{module} is lightweight: at most {100 * LIGHT:.0f} % added latency in the detectors at P5",
                           "; ".join(map(_overhead_text, rows)), verdict, reason))
    return found


def _simam(study: Study) -> Claim:
    claim = "SimAM adds no parameters but costs time"
    rows = [o for o in study.overheads if o.module == SIMAM]
    alone = [r.latency_ms for r in study.bench.results if r.model.startswith(f"{SIMAM} ")]
    params = sorted({o.params for o in rows} | {r.model_info["params"] for r in study.bench.results
                                                if r.model.startswith(f"{SIMAM} ")})
    if not params:
        return Claim(claim, "-", "not measurable here", "SimAM is not in this run's scope")
    spread = f"{min(s.median for s in alone):.3f}-{max(s.median for s in alone):.3f} ms" if alone else "not run"
    measured = (f"parameters added: {', '.join(map(str, params))}; alone: {spread}; inside the detectors: "
                + "; ".join(map(_overhead_text, rows)))
    if params != [0]:
        return Claim(claim, measured, "does not hold", "it adds parameters")
    costly = sum(s.median_ci[0] > 0 for s in alone)
    beyond = sum(o.share_ci[0] > 0 for o in rows)
    verdict, reason = _verdict(costly, len(alone), "module-alone timings above zero")
    return Claim(claim, measured, verdict, f"no parameters; {reason}; inside the detectors its overhead is beyond "
                 f"the noise at {beyond} of {len(rows)} detector/backend pairs")


def _not_here(plan: Plan) -> list[Claim]:
    found = [Claim("EfficientViT beats MobileNetV3 and MobileViT in throughput (GPU, CPU, ONNX)", "-",
                   "not measurable here", "the zoo holds attention modules inside YOLOv8, not those backbones")]
    if plan.device == "cpu":
        found.append(Claim("CGA is faster than MHSA on GPU (torch eager, CUDA graphs, fp16; TensorRT)", "-",
                           "not measurable here", "this run is on CPU: the GPU columns were not measured; run "
                           "`attn-deploy bench --zoo --device cuda` on a GPU machine"))
    return found


def _ratio_text(r: Ratio) -> str:
    return f"{r.where}: {r.value:.2f}x [{r.low:.2f}, {r.high:.2f}]"


def _as_fast(ratio: Ratio) -> tuple[str, str]:
    """Holds when YOLO12n is within LIGHT of YOLO11n's latency beyond the noise; does not hold when it is clearly
    slower than that."""
    slower = f"YOLO12n takes {ratio.value:.2f}x YOLO11n's time (95 % interval {ratio.low:.2f}-{ratio.high:.2f})"
    if ratio.low > 1 + LIGHT:
        return "does not hold", f"{slower}: more than {100 * LIGHT:.0f} % slower beyond the noise"
    if ratio.high <= 1 + LIGHT:
        return "holds", f"{slower}: at most {100 * LIGHT:.0f} % slower"
    return "not measurable here", f"{slower}: the interval straddles {100 * LIGHT:.0f} % slower"


def _area_attention(study: Study) -> list[Claim]:
    """Per variant: YOLO12n against YOLO11n, with what each one's attention costs against the same detector without
    it, from the same interleaved rounds."""
    found = []
    for label in dict.fromkeys(r.variant for r in study.contrast):
        ratios = {r.where: r for r in study.contrast if r.variant == label}
        whole, psa, area = (ratios[f"{a} / {b}"] for a, b in CONTRASTED)
        verdict, reason = _as_fast(whole)
        found.append(Claim(f"Area attention keeps YOLO12n as fast as YOLO11n with C2PSA ({label}; within "
                           f"{100 * LIGHT:.0f} %, Tian et al. 2025)", "; ".join(map(_ratio_text, ratios.values())),
                           verdict, f"{reason}; each against its own detector without attention: "
                           f"{_share_text(area, 'area attention')}, {_share_text(psa, 'C2PSA')}"))
    return found


def _share_text(r: Ratio, what: str) -> str:
    return f"{what} {100 * (r.value - 1):+.1f} % [{100 * (r.low - 1):+.1f}, {100 * (r.high - 1):+.1f}]"


def claims(study: Study, plan: Plan) -> list[Claim]:
    return [*_cga_faster(study), *_memory_bound(study), *_lightweight(study), _simam(study),
            *_area_attention(study), *_not_here(plan)]
