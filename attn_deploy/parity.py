"""Output parity of a backend against the original PyTorch model; knows nothing of backends or tasks.

Every output element must satisfy ``|out - ref| <= atol + rtol * |ref| + SPACINGS * eps * S`` with the
tolerance of the backend's precision (``TOLERANCES``, overridable), and NaN/Inf must appear exactly where
the reference has them. ``S`` follows what the element holds, as the head spec (``heads``) names it: box and
keypoint coordinates in pixels are computed through values as large as the input size, so ``S`` is the
input's longer side; scores, probabilities and normalised boxes lie in [0, 1], ``S = 1``; mask coefficients,
prototypes, angles and class indices are bounded by their own largest magnitude. ``eps`` is the precision's
spacing at 1 (2^-23 for fp32, 2^-10 for fp16, 2^-7 for bf16): no export at that precision is closer than a
few spacings at ``S``. fp16's spacing near 640 is 0.5, so at a 640 input box pixels get 4 x 2^-10 x 640 = 2.5 px
beyond atol and rtol, while fp32's term stays below 1e-3 px.

A backend also passes when its largest error against an fp64 run of the same PyTorch model is at most
``Tolerance.noise_factor`` (default ``NOISE_FACTOR``; 0 disables this) times the fp32 reference's own
largest error against that run: it is then as exact as the reference itself (attention with a sharp
softmax amplifies rounding; that is the model's conditioning, not an export fault). ``max_rel`` divides by
``max(|ref|, atol)`` so that near-zero reference values do not dominate it.

Detection-level parity runs on the real images and asks the head spec how a user gets instances from the outputs
(NMS; the end-to-end head's top-k rows, no NMS; a classifier's top 5) and when two are the same (box IoU,
rotated-box IoU, mask IoU, keypoint OKS, the same class) at ``Detections.match_iou``: recall and precision of the
backend's instances against the reference's, the largest score difference and the lowest similarity of matched
pairs. An instance near the confidence threshold or the ``max_det`` cut on one side is looked for on the other side
with the threshold lowered by the precision's ``atol``, twice ``max_det``, and NMS keeping every box that a
near-tie (scores or overlaps within ``atol``) may have let through, and the boxes whose suppressor such a tie
decided (mask pixels within ``atol`` of 0 are not counted), so that a value moving across a threshold within
tolerance, or two near-equal boxes trading places in NMS, is not counted as a miss. A head that cuts its own top-k
(end-to-end, RT-DETR) shows nothing below its cut, so an instance within ``atol`` above the cut is not required of
the other side; its rows are a set, compared element by element instance by instance (``Head.align``), which
instances are held being the detection-level check's to judge.

Reduced precisions (fp16, bf16, int8) move elements that no user sees (the boxes of background anchors,
whose scores are far below any threshold) by more than any fixed bound: for them the detection-level and
mAP checks decide, and element parity gates only where those have nothing to decide on (no reference
instance on the real images and no validation split). INT8 is judged by mAP alone.
"""

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from .errors import AttnDeployError
from .heads import Head, Output, pairs


class RunnerLike(Protocol):
    backend: str
    precision: str

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]: ...


NOISE_FACTOR = 2.0
SPACINGS = 4  # spacings of the precision at an element's scale that its bound allows
SEED_PREFIX = "seed"  # parity inputs named so are seeded tensors; the others are real images
REDUCED = ("fp16", "bf16", "int8")  # precisions judged by the detection-level and mAP checks


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float
    noise_factor: float = NOISE_FACTOR  # 0 disables the as-exact-as-the-reference pass
    min_recall: float = 0.99  # detection-level recall and precision against the reference, on the real images
    eps: float = 2.0 ** -23  # the precision's spacing at 1


TOLERANCES = {
    "fp32": Tolerance(atol=1e-3, rtol=1e-3),
    "fp16": Tolerance(atol=1e-2, rtol=1e-2, eps=2.0 ** -10),
    "bf16": Tolerance(atol=5e-2, rtol=5e-2, eps=2.0 ** -7),
    "int8": Tolerance(atol=1e-1, rtol=1e-1, eps=2.0 ** -7),
}


@dataclass
class OutputParity:
    input: str
    output: int
    max_abs: float
    max_rel: float
    mean_abs: float
    cosine: float
    nan: int
    inf: int
    ref_noise: float | None
    passed: bool
    name: str = ""  # the output's name in the export (output0, output1)
    holds: str = ""  # what it holds (boxes, class scores, mask coefficients; prototypes)
    worst_field: str = ""  # what the element with the largest error holds


@dataclass(frozen=True)
class Detections:
    """How detections are compared: ultralytics' predict defaults, and the IoU that counts as the same box."""

    conf: float = 0.25
    iou: float = 0.7
    max_det: int = 300
    match_iou: float = 0.9


@dataclass
class DetectionParity:
    input: str
    ref_boxes: int  # the reference's instances (boxes, or a classifier's top classes)
    boxes: int
    recall: float | None  # None: the reference found nothing to recall
    precision: float | None
    max_score_diff: float
    passed: bool
    matcher: str = ""  # how instances were matched, from the head spec
    min_similarity: float | None = None  # the least alike matched pair (IoU, OKS; 1 for the same class)


@dataclass
class ParityReport:
    backend: str
    precision: str
    tolerance: Tolerance
    results: list[OutputParity] = field(default_factory=list)
    reference: str = "eager"  # the reference's semantics: eager PyTorch, or true-shift where eager diverges
    detections: list[DetectionParity] = field(default_factory=list)
    gating: bool = True  # False for a row reported for information (a device's default precision)
    label: str = ""  # what distinguishes this row from others of the same backend and precision
    localisation: "Localisation | None" = None  # where a failing export departs, when it was looked for
    accuracy: object | None = None  # accuracy.AccuracyParity, when a validation split was given
    task: str = "detect"  # the head's task, and how its instances were matched
    matcher: str = ""

    @property
    def elements_gate(self) -> bool:
        """Whether element parity decides: always at fp32; at reduced precisions only where neither the
        detection-level check (no reference instance on the real images) nor mAP has anything to decide on."""
        evidence = self.accuracy is not None or any(d.ref_boxes for d in self.detections)
        return self.precision not in REDUCED or not evidence

    @property
    def passed(self) -> bool:
        accurate = self.accuracy is None or self.accuracy.passed
        if self.precision == "int8":  # quantization moves every output by design: its accuracy is the check
            return accurate
        elements = not self.elements_gate or all(r.passed for r in self.results)
        return accurate and elements and all(d.passed for d in self.detections)

    @property
    def worst(self) -> OutputParity:
        return max(self.results, key=lambda r: r.max_abs)


@dataclass
class LayerParity:
    path: str
    max_abs: float
    bound: float  # the tolerance's atol + rtol * max|ref| for this output
    departs: bool


@dataclass
class Localisation:
    """Where an export starts to compute something else: the first module, in execution order, that departs."""

    input: str
    first: str | None
    layers: list[LayerParity] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)  # modules whose output the exported graph does not show
    converter: str = ""  # the converter's own per-layer analysis, where it has one (rknn-toolkit2)


def localise(input_name: str, reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray],
             tolerance: Tolerance) -> Localisation:
    """Compare module outputs in ``reference`` order; name the first beyond ``atol + rtol * max|ref|``."""
    result = Localisation(input_name, None, unmatched=[p for p in reference if p not in candidate])
    for path, ref in reference.items():
        if path not in candidate:
            continue
        out = candidate[path].astype(np.float64).reshape(ref.shape)
        bound = tolerance.atol + tolerance.rtol * float(np.abs(ref).max())
        max_abs = float(np.nanmax(np.abs(out - ref))) if np.isfinite(out).all() else float("inf")
        result.layers.append(LayerParity(path, max_abs, bound, max_abs > bound))
        if max_abs > bound and result.first is None:
            result.first = path
    return result


def letterbox_image(path, imgsz: tuple[int, int]) -> np.ndarray:
    """A (3, H, W) float32 RGB image in [0, 1], letterboxed as ultralytics does for inference."""
    import cv2
    from ultralytics.data.augment import LetterBox

    image = cv2.imread(str(path))
    if image is None:
        raise AttnDeployError(f"{path} cannot be read as an image")
    image = LetterBox(new_shape=imgsz, auto=False)(image=image)
    return np.ascontiguousarray(image[..., ::-1].transpose(2, 0, 1), dtype=np.float32) / 255.0


def parity_inputs(imgsz: tuple[int, int], batch: int = 1, seeds: tuple[int, ...] = (0, 1)) -> dict[str, np.ndarray]:
    """Seeded uniform tensors and the images that ship with ultralytics, at the export shape."""
    from ultralytics.utils import ASSETS

    rng = {f"{SEED_PREFIX}{s}": np.random.default_rng(s).random((batch, 3, *imgsz), dtype=np.float32) for s in seeds}
    images = {p.name: np.stack([letterbox_image(p, imgsz)] * batch) for p in sorted(ASSETS.glob("*.jpg"))}
    return {**rng, **images}


def _as_exact_as_reference(ref64: np.ndarray, out64: np.ndarray, exact: np.ndarray | None,
                           factor: float) -> tuple[float | None, bool]:
    if exact is None:
        return None, False
    noise = float(np.nanmax(np.abs(ref64 - exact)))
    return noise, factor > 0 and float(np.nanmax(np.abs(out64 - exact))) <= factor * noise


def compare_output(ref: np.ndarray, out: np.ndarray, tolerance: Tolerance, exact: np.ndarray | None = None,
                   scale: np.ndarray | float = 0.0) -> dict:
    """Statistics of one output against its reference, and whether it passes; ``scale`` (broadcasting against
    the output) is the magnitude each element's arithmetic reaches, which widens its bound by ``SPACINGS``
    spacings of the precision there."""
    if ref.shape != out.shape:
        raise AttnDeployError(f"an output of shape {tuple(out.shape)} cannot be compared with the reference's "
                              f"{tuple(ref.shape)}")
    ref64, out64 = ref.astype(np.float64), out.astype(np.float64)
    noise, as_exact = _as_exact_as_reference(ref64, out64, exact, tolerance.noise_factor)
    finite = np.isfinite(ref64) & np.isfinite(out64)
    same_nonfinite = bool(np.array_equal(np.isfinite(ref64), np.isfinite(out64)))
    diff = np.abs(out64 - ref64)[finite]
    spacing = SPACINGS * tolerance.eps * np.broadcast_to(scale, ref.shape)
    bound = (tolerance.atol + tolerance.rtol * np.abs(ref64) + spacing)[finite]
    max_abs = float(diff.max()) if diff.size else 0.0
    within = bool(np.all(diff <= bound)) or as_exact
    a, b = ref64[finite].ravel(), out64[finite].ravel()
    norm = np.linalg.norm(a) * np.linalg.norm(b)
    return {
        "max_abs": max_abs,
        "max_rel": float((diff / np.maximum(np.abs(ref64[finite]), tolerance.atol)).max()) if diff.size else 0.0,
        "mean_abs": float(diff.mean()) if diff.size else 0.0,
        "cosine": float(a @ b / norm) if norm else 1.0,
        "ref_noise": noise,
        "nan": int(np.isnan(out64).sum()),
        "inf": int(np.isinf(out64).sum()),
        "passed": within and same_nonfinite,
    }


def _worst_field(output: Output, ref: np.ndarray, out: np.ndarray) -> str:
    error = np.nan_to_num(np.abs(out.astype(np.float64) - ref), nan=np.inf)
    channel = np.unravel_index(int(error.argmax()), error.shape)[output.axis]
    return next((f.name for f in output.fields if channel in range(ref.shape[output.axis])[f.channels]), "")


def compare_outputs(name: str, refs: list[np.ndarray], outs: list[np.ndarray], exacts: list, head: Head,
                    tolerance: Tolerance, imgsz: tuple[int, int], match_iou: float) -> list[OutputParity]:
    """Element parity of every output the head names, each with the scale of what its fields hold; the rows of a
    head's set of instances (end-to-end, RT-DETR) are compared instance by instance (``Head.align``)."""
    outs = head.align(refs, outs, imgsz, match_iou)
    if exacts[0] is not None:
        exacts = head.align(refs, exacts, imgsz, match_iou)
    results = []
    for i, (spec, ref, out, ex) in enumerate(zip(head.outputs, refs, outs, exacts)):
        stats = compare_output(ref, out, tolerance, ex, spec.scale(ref, imgsz))
        results.append(OutputParity(input=name, output=i, **stats, name=spec.name, holds=spec.holds,
                                    worst_field=_worst_field(spec, ref, out)))
    return results


def _matched(similar: np.ndarray, scores: tuple, match_iou: float) -> tuple[int, float, float | None]:
    """How many rows of ``similar`` (instances in score order) have a column at >= match_iou, matched greedily one
    to one; the largest score difference and the lowest similarity of a matched pair."""
    found = pairs(similar, match_iou)
    diff = max((abs(float(scores[0][i] - scores[1][j])) for i, j in found), default=0.0)
    return len(found), diff, min((float(similar[i, j]) for i, j in found), default=None)


def compare_detections(name: str, refs: list[np.ndarray], outs: list[np.ndarray], head: Head, tolerance: Tolerance,
                       settings: Detections, imgsz: tuple[int, int]) -> list[DetectionParity]:
    """Detection-level parity of one input's outputs (at input size ``imgsz``) against the reference's, per image,
    as the head selects and matches instances."""
    strict = {"conf": settings.conf, "iou": settings.iou, "max_det": settings.max_det}
    found = [head.select(x, imgsz, **strict, slack=tolerance.atol, loose=loose) for x in (refs, outs)
             for loose in (False, True)]
    results = []
    for b, (r, r_loose, o, o_loose) in enumerate(zip(*found)):
        recalled, diff, low = _matched(head.similarity(r, o_loose, tolerance.atol), (r.scores, o_loose.scores),
                                       settings.match_iou)
        kept, diff_back, low_back = _matched(head.similarity(o, r_loose, tolerance.atol), (o.scores, r_loose.scores),
                                             settings.match_iou)
        recall = recalled / len(r) if len(r) else None
        precision = kept / len(o) if len(o) else None
        passed = all(v is None or v >= tolerance.min_recall for v in (recall, precision))
        label = name if len(refs[0]) == 1 else f"{name}[{b}]"
        lows = [v for v in (low, low_back) if v is not None]
        results.append(DetectionParity(label, len(r), len(o), recall, precision, max(diff, diff_back), passed,
                                       head.matcher, min(lows) if lows else None))
    return results


def verify(
    reference: RunnerLike,
    candidate: RunnerLike,
    inputs: dict[str, np.ndarray],
    tolerance: Tolerance | None = None,
    exact: RunnerLike | None = None,
    detections: Detections | None = Detections(),
    head: Head | None = None,
) -> ParityReport:
    """Compare ``candidate`` with ``reference`` on every input; ``exact`` (fp64) gives the noise floor.

    ``head`` is the spec of the model's head (default: read from the reference's model). Detections are
    compared on the real images (not the seeded tensors); ``detections=None`` skips that.
    """
    from . import heads

    head = head or heads.of_model(reference.model)
    tolerance = tolerance or TOLERANCES[candidate.precision]
    report = ParityReport(candidate.backend, candidate.precision, tolerance,
                          reference=getattr(reference, "semantics", "eager"), task=head.task, matcher=head.matcher)
    for name, x in inputs.items():
        refs, outs = reference.run([x]), candidate.run([x])
        head.check(refs, "the original model")
        head.check(outs, f"the {candidate.backend} export")
        exacts = exact.run([x]) if exact is not None else [None] * len(refs)
        report.results += compare_outputs(name, refs, outs, exacts, head, tolerance, tuple(x.shape[2:]),
                                          (detections or Detections()).match_iou)
        if detections is not None and not name.startswith(SEED_PREFIX):
            report.detections += compare_detections(name, refs, outs, head, tolerance, detections,
                                                     tuple(x.shape[2:]))
    return report
