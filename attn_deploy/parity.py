"""Output parity of a backend against the original PyTorch model; knows nothing of backends.

Every output element must satisfy ``|out - ref| <= atol + rtol * |ref|`` with the tolerance of the
backend's precision (``TOLERANCES``, overridable), and NaN/Inf must appear exactly where the
reference has them. A backend also passes when its largest error against an fp64 run of the same
PyTorch model is at most ``Tolerance.noise_factor`` (default ``NOISE_FACTOR``; 0 disables this)
times the fp32 reference's own largest error against that run: it is then as exact as the
reference itself (attention with a sharp softmax amplifies rounding; that is the model's
conditioning, not an export fault). ``max_rel`` divides by ``max(|ref|, atol)`` so that
near-zero reference values do not dominate it.
"""

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


class RunnerLike(Protocol):
    backend: str
    precision: str

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]: ...


NOISE_FACTOR = 2.0


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float
    noise_factor: float = NOISE_FACTOR  # 0 disables the as-exact-as-the-reference pass


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


@dataclass
class ParityReport:
    backend: str
    precision: str
    tolerance: Tolerance
    results: list[OutputParity] = field(default_factory=list)
    reference: str = "eager"  # the reference's semantics: eager PyTorch, or true-shift where eager diverges

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def worst(self) -> OutputParity:
        return max(self.results, key=lambda r: r.max_abs)


def letterbox_image(path, imgsz: tuple[int, int]) -> np.ndarray:
    """A (3, H, W) float32 RGB image in [0, 1], letterboxed as ultralytics does for inference."""
    import cv2
    from ultralytics.data.augment import LetterBox

    image = LetterBox(new_shape=imgsz, auto=False)(image=cv2.imread(str(path)))
    return np.ascontiguousarray(image[..., ::-1].transpose(2, 0, 1), dtype=np.float32) / 255.0


def parity_inputs(imgsz: tuple[int, int], batch: int = 1, seeds: tuple[int, ...] = (0, 1)) -> dict[str, np.ndarray]:
    """Seeded uniform tensors and the images that ship with ultralytics, at the export shape."""
    from ultralytics.utils import ASSETS

    rng = {f"seed{s}": np.random.default_rng(s).random((batch, 3, *imgsz), dtype=np.float32) for s in seeds}
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


def verify(
    reference: RunnerLike,
    candidate: RunnerLike,
    inputs: dict[str, np.ndarray],
    tolerance: Tolerance | None = None,
    exact: RunnerLike | None = None,
) -> ParityReport:
    """Compare ``candidate`` with ``reference`` on every input; ``exact`` (fp64) gives the noise floor."""
    tolerance = tolerance or TOLERANCES[candidate.precision]
    report = ParityReport(candidate.backend, candidate.precision, tolerance,
                          reference=getattr(reference, "semantics", "eager"))
    for name, x in inputs.items():
        refs, outs = reference.run([x]), candidate.run([x])
        exacts = exact.run([x]) if exact is not None else [None] * len(refs)
        for i, (ref, out, ex) in enumerate(zip(refs, outs, exacts)):
            report.results.append(OutputParity(input=name, output=i, **compare_output(ref, out, tolerance, ex)))
    return report
