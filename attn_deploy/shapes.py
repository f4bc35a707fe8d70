"""A procedural detection data set of coloured shapes, in ultralytics' YOLO format.

Every image is drawn from its own generator, seeded by (seed, split, index), so one split can be
regenerated alone and byte for byte: the repository holds the seed, never the images.
"""

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml

from .errors import AttnDeployError
from .files import write_dir_atomic

CLASSES = ("circle", "square", "triangle", "star")
SPLITS = {"train": 0, "val": 1}


@dataclass(frozen=True)
class ShapesSpec:
    """What the generator draws: the seed and the number and size of images per split."""

    seed: int = 0
    imgsz: int = 160
    train: int = 1200
    val: int = 200
    max_objects: int = 6
    min_size: float = 0.1  # shape diameter as a fraction of the image side
    max_size: float = 0.5


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    # A colour gradient, coarse noise upscaled into blotches and a few random lines: texture the
    # detector has to ignore, with no two images alike.
    corners = rng.uniform(0, 255, (2, 2, 3)).astype(np.float32)
    image = cv2.resize(corners, (size, size), interpolation=cv2.INTER_LINEAR)
    cells = int(rng.integers(4, 17))
    blotches = cv2.resize(rng.normal(0, 30, (cells, cells, 3)).astype(np.float32), (size, size))
    image = np.clip(image + blotches + rng.normal(0, 8, (size, size, 3)), 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(0, 6))):
        p1, p2 = rng.integers(0, size, 2), rng.integers(0, size, 2)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.line(image, tuple(int(v) for v in p1), tuple(int(v) for v in p2), colour, int(rng.integers(1, 4)))
    return image


def _polygon(kind: str, centre: np.ndarray, radius: float, angle: float) -> np.ndarray:
    if kind == "square":
        angles, radii = np.arange(4) * np.pi / 2 + np.pi / 4, np.full(4, radius)
    elif kind == "triangle":
        angles, radii = np.arange(3) * 2 * np.pi / 3, np.full(3, radius)
    else:
        angles, radii = np.arange(10) * np.pi / 5, np.tile([radius, radius * 0.45], 5)
    angles = angles + angle
    return centre + np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _draw(image: np.ndarray, cls: int, centre: np.ndarray, radius: float, angle: float, colour) -> None:
    kind = CLASSES[cls]
    if kind == "circle":
        cv2.circle(image, tuple(round(v) for v in centre), round(radius), colour, -1, cv2.LINE_AA)
    else:
        points = _polygon(kind, centre, radius, angle)
        cv2.fillPoly(image, [np.round(points).astype(np.int32)], colour, cv2.LINE_AA)


def _contrasting(rng: np.random.Generator, image: np.ndarray, centre: np.ndarray):
    # A colour at least 80 levels from the background under the shape, so every label is visible.
    x, y = (int(v) for v in np.clip(centre, 0, image.shape[0] - 1))
    under = image[y, x].astype(int)
    while True:
        colour = rng.integers(0, 256, 3)
        if np.abs(colour - under).sum() >= 80:
            return tuple(int(c) for c in colour)


def _covered(box: np.ndarray, boxes: list[np.ndarray]) -> bool:
    # A new shape may overlap an earlier one, but hide at most 40% of its box.
    for other in boxes:
        w = min(box[2], other[2]) - max(box[0], other[0])
        h = min(box[3], other[3]) - max(box[1], other[1])
        if w > 0 and h > 0 and w * h > 0.4 * (other[2] - other[0]) * (other[3] - other[1]):
            return True
    return False


def draw_image(spec: ShapesSpec, split: str, index: int) -> tuple[np.ndarray, np.ndarray]:
    """One image (BGR, uint8) and its labels (class, x1, y1, x2, y2 in pixels)."""
    rng = np.random.default_rng([spec.seed, SPLITS[split], index])
    size = spec.imgsz
    image, labels = _background(rng, size), []
    for _ in range(int(rng.integers(1, spec.max_objects + 1))):
        radius = rng.uniform(spec.min_size, spec.max_size) * size / 2
        centre = rng.uniform(radius * 0.6, size - radius * 0.6, 2)
        cls, angle = int(rng.integers(len(CLASSES))), rng.uniform(0, 2 * np.pi)
        box = _box_of(cls, centre, radius, angle)
        if _covered(box, [row[1:] for row in labels]):
            continue
        _draw(image, cls, centre, radius, angle, _contrasting(rng, image, centre))
        labels.append(np.concatenate([[cls], np.clip(box, 0, size)]))
    return image, np.array(labels, dtype=np.float64).reshape(-1, 5)


def _box_of(cls: int, centre: np.ndarray, radius: float, angle: float) -> np.ndarray:
    if CLASSES[cls] == "circle":
        return np.concatenate([centre - radius, centre + radius])
    points = _polygon(CLASSES[cls], centre, radius, angle)
    return np.concatenate([points.min(0), points.max(0)])


def _yolo_rows(labels: np.ndarray, size: int) -> str:
    rows = []
    for cls, x1, y1, x2, y2 in labels:
        cx, cy, w, h = (x1 + x2) / 2 / size, (y1 + y2) / 2 / size, (x2 - x1) / size, (y2 - y1) / size
        rows.append(f"{int(cls)} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
    return "\n".join(rows) + "\n"


def _write_split(root: Path, spec: ShapesSpec, split: str, progress=None) -> None:
    (root / "images" / split).mkdir(parents=True)
    (root / "labels" / split).mkdir(parents=True)
    count = getattr(spec, split)
    for index in range(count):
        image, labels = draw_image(spec, split, index)
        cv2.imwrite(str(root / "images" / split / f"{index:05d}.png"), image)
        (root / "labels" / split / f"{index:05d}.txt").write_text(_yolo_rows(labels, spec.imgsz))
        if progress:
            progress(split, index + 1, count)


def generate(root: Path, spec: ShapesSpec = ShapesSpec(), splits=("train", "val"), progress=None) -> Path:
    """Write the data set under ``root`` (atomically) and return its ultralytics data YAML."""
    unknown = set(splits) - set(SPLITS)
    if unknown:
        raise AttnDeployError(f"unknown split(s) {sorted(unknown)}; choose from {sorted(SPLITS)}")

    def fill(tmp: Path) -> None:
        for split in splits:
            _write_split(tmp, spec, split, progress)
        data = {"path": str(root.resolve()), "names": dict(enumerate(CLASSES)),
                "shapes_spec": spec.__dict__, **{split: f"images/{split}" for split in splits}}
        (tmp / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))

    write_dir_atomic(Path(root), fill)
    return Path(root) / "data.yaml"
