"""Fused attention against the plain graph: the measurement behind the rule file's ``FASTER`` table.

Each subject of ``bench --zoo`` with attention sites (a module alone at P3/P4/P5, a detector) gets each
fused form of ``rewrite/graph/attention.py`` applied to its ONNX export (verified in onnxruntime against
it, as every graph pass is), converted for OpenVINO and checked there against the plain IR. The plain
graph and its fused forms are then timed interleaved, one run of each per round, onnxruntime sessions
with intra-op spinning off, so that a ratio is read per round. A form is kept for a kind of site and
a target where it was faster by at least ``GAIN`` (the 95 % interval of its ratio to the plain graph below
1, the ratio at most 1 - ``GAIN``) at one placement at least and slower at none (inside a detector a
module's gain is often within the detector's noise); where two forms qualify, the one with the smaller
mean log ratio; elsewhere the plain form stays. ``scripts/fused_attention_report.py`` runs this alone and
prints the table to put in the rule file.
"""

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import suite
from .harness import Comparison, compare, seeded_input
from .study import ROUNDS, WARMUP_ROUNDS, Claim, Ratio, _with_ir
from .suite import Plan, Subject, Variant

GAIN = 0.05  # a fused form that saves less than this everywhere is not worth an op fewer runtimes read

TARGET_OF = {"onnxruntime": "ort", "openvino": "openvino"}  # the backends that run a fused form: their pass target


@dataclass
class FusedForm:
    """One fused form of one subject: its artefacts, and its errors against the plain graph."""

    form: str
    kind: str  # of the sites it rewrote: mhsa (several heads) or cga (one)
    sites: int
    artefacts: dict[str, Path]  # by the backend that runs each
    error: float  # onnxruntime, the pass's verification
    openvino_error: float | None = None  # the OpenVINO IR against the plain graph's IR, f32


@dataclass
class FusedRatio:
    """A fused form's latency over the plain graph's at one placement and backend, from interleaved rounds."""

    module: str
    form: str
    kind: str
    ratio: Ratio  # where (n-P5, YOLOv8n), the backend's label, the median per-round ratio and its 95 % interval
    plain_ms: float
    fused_ms: float
    method: str

    @property
    def target(self) -> str:
        return TARGET_OF[self.ratio.variant.split(" ")[0]]


@dataclass
class FusedStudy:
    forms: dict[str, list[FusedForm]] = field(default_factory=dict)  # subject name -> its fused forms
    ratios: list[FusedRatio] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # forms refused by their verification, and why


def placement(subject: Subject) -> tuple[str, str]:
    """(module, where) of a study subject: ``mhsa n-P5`` -> (mhsa, n-P5), ``yolov8n-cga`` -> (cga, YOLOv8n)."""
    module, _, where = subject.name.partition(" ")
    if where:
        return module, where
    model, module = subject.name.split("-", 1)
    return module, f"YOLOv8{model.removeprefix('yolov8')}"


def _openvino_error(plain: Subject, fused: dict[str, Path]) -> float:
    """Largest difference of the fused IR's outputs from the plain IR's on a seeded input (f32 hint)."""
    from ..exporters import openvino

    x = seeded_input(1, plain.imgsz, plain.channels)
    outputs = []
    for ir in (plain.artefacts["openvino"], fused["openvino"]):
        runner = openvino.Runner(ir)
        outputs.append(runner.run([x]))
        runner.close()
    return max(float(np.abs(a - b).max()) for a, b in zip(*outputs))


def fuse(subject: Subject, workdir: Path) -> tuple[list[FusedForm], list[str]]:
    """Each fused form of ``subject``'s ONNX that rewrote a site, verified and converted; notes for those refused."""
    import onnx

    from ..rewrite.graph import PASSES, apply
    from ..rewrite.graph.attention import FORMS, KINDS

    plain = subject.artefacts["onnxruntime"]
    model = onnx.load(plain)
    feeds = [{model.graph.input[0].name: seeded_input(1, subject.imgsz, subject.channels)}]
    found, notes = [], []
    for form in FORMS:
        done = apply(model, [], feeds, passes=[PASSES[f"fused-{form}-{kind}"] for kind in KINDS])
        applied = [row for row in done.layers if row.applied]
        notes += [f"{subject.name}: {row.rule} at {row.path} {row.note}" for row in done.layers if not row.applied]
        if not applied:
            continue
        path = workdir / f"{plain.stem}.{form}.onnx"
        onnx.save(done.model, path)
        fused = _with_ir(path)
        kind = applied[0].rule.rsplit("-", 1)[1]
        sites = sum(sum(n for op, n in (row.ops_after or {}).items() if op in ("MultiHeadAttention", "Attention"))
                    for row in applied)
        found.append(FusedForm(form, kind, sites, fused, max(row.max_abs for row in applied),
                               _openvino_error(subject, fused)))
    return found, notes


def _time(subjects: dict[str, Subject], variant: Variant, plan: Plan) -> Comparison:
    runners = {}
    try:
        for name, subject in subjects.items():
            runners[name] = suite.open_variant(subject, variant, 1, plan, spinning=False)
        first = next(iter(subjects.values()))
        return compare(runners, 1, first.imgsz, WARMUP_ROUNDS, max(ROUNDS, plan.budget.iters), first.channels)
    finally:
        for runner in runners.values():
            runner.close()


def time_forms(plain: Subject, forms: list[FusedForm], plan: Plan) -> list[FusedRatio]:
    """The plain graph and its fused forms, interleaved, on each backend of ``plan`` that runs a fused form."""
    module, where = placement(plain)
    found = []
    for variant in plan.variants:
        if variant.backend not in TARGET_OF:
            continue
        timed = _time({"plain": plain, **{f.form: dataclasses.replace(plain, artefacts=f.artefacts) for f in forms}},
                      variant, plan)
        base = timed.latency_ms["plain"].median
        found += [FusedRatio(module, f.form, f.kind, Ratio(where, variant.label, *timed.ratio(f.form, "plain")), base,
                             timed.latency_ms[f.form].median, timed.method) for f in forms]
    return found


def run(subjects: list[Subject], plan: Plan, workdir: Path,
        progress: Callable[[str, int, int], None] | None = None) -> FusedStudy:
    """Fuse and time every subject that has attention sites."""
    study = FusedStudy()
    for i, subject in enumerate(subjects):
        if progress:
            progress(f"{subject.name}: fused attention against the plain graph", i, len(subjects))
        forms, notes = fuse(subject, workdir)
        study.notes += notes
        if forms:
            study.forms[subject.name] = forms
            study.ratios += time_forms(subject, forms, plan)
    return study


def _won(rows: list[FusedRatio]) -> bool:
    """Faster by at least ``GAIN`` at one placement at least, slower at none."""
    gained = any(r.ratio.sign == "faster" and r.ratio.value <= 1 - GAIN for r in rows)
    return gained and all(r.ratio.sign != "slower" for r in rows)


def choice(ratios: list[FusedRatio]) -> dict[str, dict[str, tuple[str, ...]]]:
    """The ``FASTER`` table these measurements give: per kind and target, the form that won (``_won``) with the
    smallest mean log ratio."""
    from ..rewrite.graph.attention import FORMS, KINDS

    best: dict[tuple[str, str], tuple[float, str]] = {}
    for (form, kind, target), rows in _grouped(ratios).items():
        score = float(np.mean([np.log(r.ratio.value) for r in rows]))
        if _won(rows) and score < best.get((kind, target), (0.0, ""))[0]:
            best[(kind, target)] = (score, form)
    table = {form: {kind: () for kind in KINDS} for form in FORMS}
    for (kind, target), (_, form) in sorted(best.items()):
        table[form][kind] += (target,)
    return table


def _grouped(ratios: list[FusedRatio]) -> dict[tuple[str, str, str], list[FusedRatio]]:
    groups: dict[tuple[str, str, str], list[FusedRatio]] = {}
    for r in ratios:
        groups.setdefault((r.form, r.kind, r.target), []).append(r)
    return groups


def claims(ratios: list[FusedRatio]) -> list[Claim]:
    """Per form, kind and target: is the fused form faster (somewhere, and slower nowhere), and does the rule file
    agree with the choice these figures give."""
    from ..rewrite.graph.attention import FASTER

    found, chosen = [], choice(ratios)
    for (form, kind, target), rows in _grouped(ratios).items():
        signs = [r.ratio.sign for r in rows]
        won = _won(rows)
        verdict = "holds" if won else "not measurable here" if set(signs) == {"within noise"} else "does not hold"
        used = target in FASTER[form][kind]
        agrees = ("agrees" if used == (target in chosen[form][kind])
                  else "DISAGREES: update FASTER in rewrite/graph/attention.py")
        found.append(Claim(
            f"Fused {form} attention is faster than the plain graph for {kind} sites ({rows[0].ratio.variant})",
            "; ".join(f"{r.module} {r.ratio.where}: {r.ratio.value:.2f}x [{r.ratio.low:.2f}, {r.ratio.high:.2f}]"
                      for r in rows),
            verdict, f"faster at {signs.count('faster')}, slower at {signs.count('slower')} of {len(rows)} placements; "
                     "the rule file "
                     f"{'uses' if used else 'does not use'} it for {target} ({agrees})"))
    return found
