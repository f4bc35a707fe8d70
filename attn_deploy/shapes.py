"""A procedural data set of coloured shapes, in ultralytics' YOLO format for the detect, segment, pose
and OBB tasks.

Every image is drawn from its own generator, seeded by (seed, split, index), so one split can be
regenerated alone and byte for byte: the repository holds the seed, never the images. The images are
the same for every task; only the label rows differ, and all of them derive from the drawn shapes:
- detect: the axis-aligned box, clipped to the image.
- segment: the outline clipped to the image (amodal: a shape drawn over another does not cut it).
- pose: the box, then four landmarks where rays from the shape's centre to the right, down, left and up
  (image axes, so they are visible whatever the shape's rotation) cross its outline; visibility 2, 1
  where a later shape covers the point, 0 (and coordinates 0) outside the image.
- obb: the four corners of the rectangle around the visible outline, aligned with the shape's own axes;
  of the orientations the shape's symmetry makes equivalent, the one nearest the image axes, so the
  label is what the image shows (a circle's box is axis-aligned).
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
TASKS = ("detect", "segment", "pose", "obb")
KEYPOINTS = ("right", "bottom", "left", "top")  # at 0, 90, 180, 270 degrees in image axes (y down)
FLIP_IDX = [2, 1, 0, 3]  # a horizontal flip swaps right and left
_SYMMETRY = {"square": 4, "triangle": 3, "star": 5}  # rotations that map the shape onto itself
_CIRCLE_POINTS = 48  # the circle's outline as a polygon: within 0.2% of the radius


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


@dataclass(frozen=True, eq=False)
class Shape:
    """One drawn shape: its class, centre and radius in pixels, and rotation in radians."""

    cls: int
    centre: np.ndarray
    radius: float
    angle: float

    def outline(self) -> np.ndarray:
        """The outline as a polygon (N, 2) in pixels; a circle's as a regular polygon from angle 0."""
        if CLASSES[self.cls] != "circle":
            return _polygon(CLASSES[self.cls], self.centre, self.radius, self.angle)
        angles = np.arange(_CIRCLE_POINTS) * 2 * np.pi / _CIRCLE_POINTS
        return self.centre + self.radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)

    def box(self) -> np.ndarray:
        """The axis-aligned box (x1, y1, x2, y2) in pixels, not clipped to the image."""
        return _box_of(self.cls, self.centre, self.radius, self.angle)


def _draw(image: np.ndarray, shape: Shape, colour) -> None:
    if CLASSES[shape.cls] == "circle":
        cv2.circle(image, tuple(round(v) for v in shape.centre), round(shape.radius), colour, -1, cv2.LINE_AA)
    else:
        cv2.fillPoly(image, [np.round(shape.outline()).astype(np.int32)], colour, cv2.LINE_AA)


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


def draw_shapes(spec: ShapesSpec, split: str, index: int) -> tuple[np.ndarray, list[Shape]]:
    """One image (BGR, uint8) and the shapes drawn on it, in drawing order (later ones on top)."""
    rng = np.random.default_rng([spec.seed, SPLITS[split], index])
    size = spec.imgsz
    image, drawn, boxes = _background(rng, size), [], []
    for _ in range(int(rng.integers(1, spec.max_objects + 1))):
        radius = rng.uniform(spec.min_size, spec.max_size) * size / 2
        centre = rng.uniform(radius * 0.6, size - radius * 0.6, 2)
        shape = Shape(int(rng.integers(len(CLASSES))), centre, radius, rng.uniform(0, 2 * np.pi))
        box = shape.box()
        if _covered(box, boxes):
            continue
        _draw(image, shape, _contrasting(rng, image, centre))
        drawn.append(shape)
        boxes.append(np.clip(box, 0, size))
    return image, drawn


def draw_image(spec: ShapesSpec, split: str, index: int) -> tuple[np.ndarray, np.ndarray]:
    """One image (BGR, uint8) and its detection labels (class, x1, y1, x2, y2 in pixels)."""
    image, drawn = draw_shapes(spec, split, index)
    labels = [np.concatenate([[shape.cls], np.clip(shape.box(), 0, spec.imgsz)]) for shape in drawn]
    return image, np.array(labels, dtype=np.float64).reshape(-1, 5)


def _box_of(cls: int, centre: np.ndarray, radius: float, angle: float) -> np.ndarray:
    if CLASSES[cls] == "circle":
        return np.concatenate([centre - radius, centre + radius])
    points = _polygon(CLASSES[cls], centre, radius, angle)
    return np.concatenate([points.min(0), points.max(0)])


def _clip_to_image(points: np.ndarray, size: int) -> np.ndarray:
    """The part of polygon ``points`` inside the image: Sutherland-Hodgman against its four sides, which
    is exact for any polygon against a convex window (a star's notches stay notches)."""
    for axis, limit, inward in ((0, 0, 1), (0, size, -1), (1, 0, 1), (1, size, -1)):
        inside = inward * (points[:, axis] - limit) >= 0
        clipped = []
        for i in range(len(points)):
            a, b = points[i - 1], points[i]
            if inside[i - 1] != inside[i]:
                clipped.append(a + (limit - a[axis]) / (b[axis] - a[axis]) * (b - a))
            if inside[i]:
                clipped.append(b)
        points = np.array(clipped).reshape(-1, 2)
    return np.clip(points, 0, size)  # the crossings land on the sides up to rounding


def landmarks(shape: Shape) -> np.ndarray:
    """The pose keypoints (len(KEYPOINTS), 2) in pixels: where rays from the centre along the image axes
    cross the outline. Every shape is star-shaped around its centre, so each ray crosses it once."""
    start = shape.outline()
    edge, offset = np.roll(start, -1, axis=0) - start, start - shape.centre
    points = []
    for angle in np.arange(len(KEYPOINTS)) * np.pi / 2:
        d = np.array([np.cos(angle), np.sin(angle)])
        # centre + t * d = start + s * edge, solved per edge by Cramer's rule
        det = edge[:, 0] * d[1] - edge[:, 1] * d[0]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (edge[:, 0] * offset[:, 1] - edge[:, 1] * offset[:, 0]) / det
            s = (d[0] * offset[:, 1] - d[1] * offset[:, 0]) / det
        hits = (np.abs(det) > 1e-12) & (s >= -1e-9) & (s <= 1 + 1e-9) & (t > 0)
        points.append(shape.centre + t[hits].min() * d)
    return np.array(points)


def _visibility(point: np.ndarray, later: list[Shape], size: int) -> int:
    if not (0 <= point[0] <= size and 0 <= point[1] <= size):
        return 0
    covered = any(cv2.pointPolygonTest(s.outline().astype(np.float32), tuple(map(float, point)), False) > 0
                  for s in later)
    return 1 if covered else 2


def _orientation(shape: Shape) -> float:
    # The shape's symmetry makes k rectangles equally tight; the one nearest the image axes is the one
    # the image shows (a rectangle is the same turned by 90 degrees, hence the modulus).
    k = _SYMMETRY.get(CLASSES[shape.cls])
    if k is None:
        return 0.0
    candidates = shape.angle + np.arange(k) * 2 * np.pi / k
    off_axes = np.abs((candidates + np.pi / 4) % (np.pi / 2) - np.pi / 4)
    return float(candidates[np.argmin(off_axes)])


def rotated_box(shape: Shape, size: int) -> np.ndarray:
    """The OBB's 4 corners (4, 2) in pixels: the rectangle around the visible outline, along the shape's axes."""
    theta = _orientation(shape)
    axes = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])  # columns
    local = _clip_to_image(shape.outline(), size) @ axes
    (u1, v1), (u2, v2) = local.min(0), local.max(0)
    return np.array([[u1, v1], [u2, v1], [u2, v2], [u1, v2]]) @ axes.T


def _xywh(box: np.ndarray, size: int) -> list[float]:
    x1, y1, x2, y2 = np.clip(box, 0, size)
    return [(x1 + x2) / 2 / size, (y1 + y2) / 2 / size, (x2 - x1) / size, (y2 - y1) / size]


def _keypoint_values(shape: Shape, later: list[Shape], size: int) -> list[float]:
    values = []
    for point in landmarks(shape):
        visible = _visibility(point, later, size)
        values += [point[0] / size, point[1] / size, visible] if visible else [0, 0, 0]
    return values


def _label_values(drawn: list[Shape], i: int, size: int, task: str) -> list[float]:
    shape = drawn[i]
    if task == "segment":
        return list((_clip_to_image(shape.outline(), size) / size).ravel())
    if task == "pose":
        return _xywh(shape.box(), size) + _keypoint_values(shape, drawn[i + 1:], size)
    if task == "obb":
        return list((rotated_box(shape, size) / size).ravel())
    return _xywh(shape.box(), size)


def label_text(drawn: list[Shape], size: int, task: str = "detect") -> str:
    """The YOLO label file of one image for ``task``: one row per shape, coordinates normalised."""
    rows = [" ".join([str(shape.cls), *(f"{v:.6f}" for v in _label_values(drawn, i, size, task))])
            for i, shape in enumerate(drawn)]
    return "\n".join(rows) + "\n"


def _write_split(root: Path, spec: ShapesSpec, split: str, task: str, progress=None) -> None:
    (root / "images" / split).mkdir(parents=True)
    (root / "labels" / split).mkdir(parents=True)
    count = getattr(spec, split)
    for index in range(count):
        image, drawn = draw_shapes(spec, split, index)
        cv2.imwrite(str(root / "images" / split / f"{index:05d}.png"), image)
        (root / "labels" / split / f"{index:05d}.txt").write_text(label_text(drawn, spec.imgsz, task))
        if progress:
            progress(split, index + 1, count)


def _data_config(root: Path, spec: ShapesSpec, splits, task: str) -> dict:
    """The ultralytics data YAML's content for ``task``; pose adds the keypoint layout its trainer needs."""
    data = {"path": str(root.resolve()), "names": dict(enumerate(CLASSES)), "task": task,
            "shapes_spec": spec.__dict__, **{split: f"images/{split}" for split in splits}}
    if task == "pose":
        data.update(kpt_shape=[len(KEYPOINTS), 3], flip_idx=FLIP_IDX,
                    kpt_names={i: list(KEYPOINTS) for i in range(len(CLASSES))})
    return data


def generate(root: Path, spec: ShapesSpec = ShapesSpec(), splits=("train", "val"), progress=None,
             task: str = "detect") -> Path:
    """Write the data set with ``task``'s labels under ``root`` (atomically) and return its data YAML."""
    unknown = set(splits) - set(SPLITS)
    if unknown:
        raise AttnDeployError(f"unknown split(s) {sorted(unknown)}; choose from {sorted(SPLITS)}")
    if task not in TASKS:
        raise AttnDeployError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")

    def fill(tmp: Path) -> None:
        for split in splits:
            _write_split(tmp, spec, split, task, progress)
        config = _data_config(Path(root), spec, splits, task)
        (tmp / "data.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    write_dir_atomic(Path(root), fill)
    return Path(root) / "data.yaml"
