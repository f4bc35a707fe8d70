"""Output parity of a backend against the original PyTorch model; knows nothing of backends.

Every output element must satisfy ``|out - ref| <= atol + rtol * |ref|`` with the tolerance of the
backend's precision (``TOLERANCES``, overridable), and NaN/Inf must appear exactly where the
reference has them. A backend also passes when its largest error against an fp64 run of the same
PyTorch model is at most ``Tolerance.noise_factor`` (default ``NOISE_FACTOR``; 0 disables this)
times the fp32 reference's own largest error against that run: it is then as exact as the
reference itself (attention with a sharp softmax amplifies rounding; that is the model's
conditioning, not an export fault). ``max_rel`` divides by ``max(|ref|, atol)`` so that
near-zero reference values do not dominate it.

Detection-level parity runs on the real images: NMS on the reference and on the backend output,
boxes matched by class and IoU >= ``Detections.match_iou``; recall and precision of the backend's
boxes against the reference's, and the largest score difference between matched boxes. A box near
the confidence threshold or the ``max_det`` cut on one side is looked for on the other side with the
threshold lowered by the precision's ``atol`` and twice ``max_det``, so that a score moving across
the threshold within tolerance is not counted as a miss.
"""

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from .errors import AttnDeployError


class RunnerLike(Protocol):
    backend: str
    precision: str

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]: ...


NOISE_FACTOR = 2.0
SEED_PREFIX = "seed"  # parity inputs named so are seeded tensors; the others are real images


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float
    noise_factor: float = NOISE_FACTOR  # 0 disables the as-exact-as-the-reference pass
    min_recall: float = 0.99  # detection-level recall and precision against the reference, on the real images


TOLERANCES = {
    "fp32": Tolerance(atol=1e-3, rtol=1e-3),
    "fp16": Tolerance(atol=1e-2, rtol=1e-2),
    "bf16": Tolerance(atol=5e-2, rtol=5e-2),
    "int8": Tolerance(atol=1e-1, rtol=1e-1),
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
    ref_boxes: int
    boxes: int
    recall: float | None  # None: the reference found nothing to recall
    precision: float | None
    max_score_diff: float
    passed: bool


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

    @property
    def passed(self) -> bool:
        accurate = self.accuracy is None or self.accuracy.passed
        if self.precision == "int8":  # quantization moves every output by design: its accuracy is the check
            return accurate
        return accurate and all(r.passed for r in self.results) and all(d.passed for d in self.detections)

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


def compare_output(ref: np.ndarray, out: np.ndarray, tolerance: Tolerance, exact: np.ndarray | None = None) -> dict:
    """Statistics of one output against its reference, and whether it passes."""
    ref64, out64 = ref.astype(np.float64), out.astype(np.float64)
    noise, as_exact = _as_exact_as_reference(ref64, out64, exact, tolerance.noise_factor)
    finite = np.isfinite(ref64) & np.isfinite(out64)
    same_nonfinite = bool(np.array_equal(np.isfinite(ref64), np.isfinite(out64)))
    diff = np.abs(out64 - ref64)[finite]
    bound = (tolerance.atol + tolerance.rtol * np.abs(ref64))[finite]
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


def _nms(output: np.ndarray, conf: float, max_det: int, iou: float):
    import torch
    from ultralytics.utils.nms import non_max_suppression

    # No time limit: a truncated NMS would differ between two runs of the same output.
    return non_max_suppression(torch.from_numpy(output.astype(np.float32)), conf, iou, max_det=max_det,
                               max_time_img=1e9)


def _matched(boxes, others, match_iou: float) -> tuple[int, float]:
    """How many of ``boxes`` (n, 6: xyxy, score, class) have a same-class box in ``others`` at IoU >= match_iou,
    matched greedily one to one in score order; and the largest score difference of a matched pair."""
    from ultralytics.utils.metrics import box_iou

    if not len(boxes) or not len(others):
        return 0, 0.0
    iou = box_iou(boxes[:, :4], others[:, :4]) * (boxes[:, 5:6] == others[:, 5][None])
    taken, found, diff = set(), 0, 0.0
    for i in range(len(boxes)):
        for j in iou[i].argsort(descending=True).tolist():
            if iou[i, j] < match_iou:
                break
            if j not in taken:
                taken.add(j)
                found, diff = found + 1, max(diff, abs(float(boxes[i, 4] - others[j, 4])))
                break
    return found, diff


def compare_detections(name: str, ref: np.ndarray, out: np.ndarray, tolerance: Tolerance,
                       settings: Detections = Detections()) -> list[DetectionParity]:
    """Detection-level parity of one (B, 4 + classes, anchors) output against its reference, per image."""
    loose = (max(settings.conf - tolerance.atol, 0.0), 2 * settings.max_det, settings.iou)
    strict = (settings.conf, settings.max_det, settings.iou)
    results = []
    for b, (r, o, r_loose, o_loose) in enumerate(zip(_nms(ref, *strict), _nms(out, *strict), _nms(ref, *loose),
                                                     _nms(out, *loose))):
        recalled, diff = _matched(r, o_loose, settings.match_iou)
        kept, diff_back = _matched(o, r_loose, settings.match_iou)
        recall = recalled / len(r) if len(r) else None
        precision = kept / len(o) if len(o) else None
        passed = all(v is None or v >= tolerance.min_recall for v in (recall, precision))
        label = name if len(ref) == 1 else f"{name}[{b}]"
        results.append(DetectionParity(label, len(r), len(o), recall, precision, max(diff, diff_back), passed))
    return results


def verify(
    reference: RunnerLike,
    candidate: RunnerLike,
    inputs: dict[str, np.ndarray],
    tolerance: Tolerance | None = None,
    exact: RunnerLike | None = None,
    detections: Detections | None = Detections(),
) -> ParityReport:
    """Compare ``candidate`` with ``reference`` on every input; ``exact`` (fp64) gives the noise floor.

    Detections are compared on the real images (not the seeded tensors); ``detections=None`` skips that.
    """
    tolerance = tolerance or TOLERANCES[candidate.precision]
    report = ParityReport(candidate.backend, candidate.precision, tolerance,
                          reference=getattr(reference, "semantics", "eager"))
    for name, x in inputs.items():
        refs, outs = reference.run([x]), candidate.run([x])
        exacts = exact.run([x]) if exact is not None else [None] * len(refs)
        for i, (ref, out, ex) in enumerate(zip(refs, outs, exacts)):
            report.results.append(OutputParity(input=name, output=i, **compare_output(ref, out, tolerance, ex)))
        if detections is not None and not name.startswith(SEED_PREFIX):
            report.detections += compare_detections(name, refs[0], outs[0], tolerance, detections)
    return report
