"""Image data for accuracy checks and INT8 calibration: YOLO-format splits, image folders, and the
fixtures' shapes split regenerated from its seed."""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from .errors import AttnDeployError
from .parity import letterbox_image

SHAPES = "shapes"  # --data shapes: the fixtures' own validation split, regenerated from its seed
# --data names of the shapes split with each task's labels; plain 'shapes' keeps meaning detect
SHAPES_TASKS = {SHAPES: "detect", "shapes-seg": "segment", "shapes-pose": "pose", "shapes-obb": "obb"}


@dataclass(frozen=True)
class Split:
    """A YOLO-format image split: image paths and, per image, its (H, W) and labels (class, x1, y1, x2, y2
    in pixels); with a task's labels also each object's polygon (segment; OBB's four corners) or keypoints
    (pose), in pixels."""

    images: list[Path]
    shapes: list[tuple[int, int]]
    labels: list[np.ndarray]
    names: dict[int, str]
    source: Path
    task: str = "detect"
    segments: list[list[np.ndarray]] = field(default_factory=list)  # per image, per object: (k, 2)
    keypoints: list[np.ndarray] = field(default_factory=list)  # per image: (n, *kpt_shape), visibility kept
    kpt_shape: tuple[int, int] | None = None
    kpt_sigmas: tuple[float, ...] | None = None  # the data set's OKS sigmas, when it gives them


@dataclass(frozen=True)
class _Rows:
    """One label file read for a task: classes, xyxy boxes, polygons and keypoints, all in pixels."""

    boxes: np.ndarray
    segments: list[np.ndarray]
    keypoints: np.ndarray | None


def _image_paths(root: Path, entry: str) -> list[Path]:
    from ultralytics.data.utils import IMG_FORMATS

    path = Path(entry) if Path(entry).is_absolute() else root / entry
    if not path.exists():
        raise AttnDeployError(f"{path} does not exist")
    if path.is_file() and path.suffix == ".txt":
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        return [Path(line) if Path(line).is_absolute() else root / line for line in lines]
    if not path.is_dir():
        raise AttnDeployError(f"{path} is neither an image directory nor a .txt list of images")
    return sorted(p for p in path.rglob("*") if p.suffix.lower().lstrip(".") in IMG_FORMATS)


def _shape(image: Path) -> tuple[int, int]:
    """(H, W) from the image header, without decoding the pixels."""
    from PIL import Image

    try:
        with Image.open(image) as opened:
            w, h = opened.size
    except Exception as e:
        raise AttnDeployError(f"{image} cannot be read as an image ({type(e).__name__})") from e
    return h, w


def _read_rows(label: Path) -> list[np.ndarray]:
    """The rows of a label file (a missing or empty file is an image with no objects, as ultralytics reads it)."""
    if not label.exists():
        return []
    try:
        return [np.array(line.split(), dtype=np.float64) for line in label.read_text().splitlines() if line.strip()]
    except ValueError as e:
        raise AttnDeployError(f"{label}: a label row is not numbers ({e})") from None


def _columns(task: str, kpt_shape: tuple[int, int] | None) -> str:
    return {"detect": "5 columns (class cx cy w h), or a polygon (class x1 y1 x2 y2 ...)",
            "segment": "a polygon per row (class x1 y1 x2 y2 x3 y3 ...)",
            "obb": "9 columns (class and the 4 corners x1 y1 ... x4 y4)",
            "pose": f"{5 + (kpt_shape[0] * kpt_shape[1] if kpt_shape else 0)} columns (class cx cy w h and the "
                    f"keypoints of kpt_shape {list(kpt_shape) if kpt_shape else '(missing from the YAML)'})",
            }[task]


def _fits(row: np.ndarray, task: str, kpt_shape: tuple[int, int] | None) -> bool:
    polygon = len(row) >= 7 and len(row) % 2 == 1
    return {"detect": len(row) == 5 or polygon, "segment": polygon, "obb": len(row) == 9,
            "pose": kpt_shape is not None and len(row) == 5 + kpt_shape[0] * kpt_shape[1]}[task]


def _labels(image: Path, shape: tuple[int, int], task: str, kpt_shape: tuple[int, int] | None) -> _Rows:
    """The labels of ``image`` for ``task``, in pixels: polygons give their boxes, as ultralytics reads them."""
    from ultralytics.data.utils import img2label_paths

    label = Path(img2label_paths([str(image)])[0])
    rows = _read_rows(label)
    bad = next((len(r) for r in rows if not _fits(r, task, kpt_shape)), None)
    if bad is not None:
        raise AttnDeployError(f"{label}: {task} labels need {_columns(task, kpt_shape)} per row, found {bad} columns")
    h, w = shape
    polygons = task in ("segment", "obb") or (task == "detect" and any(len(r) > 5 for r in rows))
    if polygons:
        polygons = [r[1:].reshape(-1, 2) * (w, h) for r in rows]
        boxes = [np.concatenate([[r[0]], p.min(0), p.max(0)]) for r, p in zip(rows, polygons)]
        return _Rows(np.array(boxes).reshape(-1, 5), polygons, None)
    table = np.array(rows).reshape(-1, len(rows[0]) if rows else 5)
    cx, cy, bw, bh = table[:, 1] * w, table[:, 2] * h, table[:, 3] * w, table[:, 4] * h
    boxes = np.stack([table[:, 0], cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
    if task != "pose":
        return _Rows(boxes, [], None)
    keypoints = table[:, 5:].reshape(-1, *kpt_shape).copy()
    keypoints[..., :2] *= (w, h)
    return _Rows(boxes, [], keypoints)


def load_split(data: Path, split: str = "val", task: str = "detect") -> Split:
    """The ``split`` of an ultralytics data YAML, with its labels read up front as ``task`` reads them."""
    data = Path(data)
    if not data.is_file():
        raise AttnDeployError(f"--data {data}: no such data YAML")
    config = yaml.safe_load(data.read_text()) or {}
    if split not in config or "names" not in config:
        raise AttnDeployError(f"--data {data}: the YAML needs '{split}' and 'names' entries")
    root = Path(config.get("path") or data.parent)
    root = root if root.is_absolute() else data.parent / root
    entries = config[split] if isinstance(config[split], list) else [config[split]]
    images = [image for entry in entries for image in _image_paths(root, entry)]
    if not images:
        raise AttnDeployError(f"--data {data}: the {split} split has no images")
    names = config["names"]
    names = dict(enumerate(names)) if isinstance(names, list) else {int(k): v for k, v in names.items()}
    shapes = [_shape(image) for image in images]
    kpt_shape = tuple(config["kpt_shape"]) if config.get("kpt_shape") else None
    rows = [_labels(image, shape, task, kpt_shape) for image, shape in zip(images, shapes)]
    sigmas = tuple(config["kpt_oks_sigmas"]) if config.get("kpt_oks_sigmas") else None
    return Split(images, shapes, [r.boxes for r in rows], names, data, task, [r.segments for r in rows],
                 [r.keypoints for r in rows if r.keypoints is not None], kpt_shape, sigmas)


def shapes_data(workdir: Path, splits: tuple[str, ...] = ("val",), task: str = "detect") -> Path:
    """The fixtures' data set with ``task``'s labels, regenerated under ``workdir`` from the seed they were
    trained with."""
    from . import fixtures, shapes

    return shapes.generate(Path(workdir) / "shapes", fixtures.shapes_spec(), splits=splits, task=task)


def calibration_paths(source: Path, limit: int = 300) -> list[Path]:
    """Up to ``limit`` images, spread over an image directory or a data YAML's train split; each image's header is
    read, so that an unreadable file stops the export before anything is written."""
    source = Path(source)
    if not source.exists():
        raise AttnDeployError(f"--calib {source} does not exist")
    paths = load_split(source, "train").images if source.is_file() else _image_paths(source, ".")
    if not paths:
        raise AttnDeployError(f"--calib {source}: no images found")
    chosen = paths[::max(len(paths) // limit, 1)][:limit]
    for path in chosen:
        _shape(path)
    return chosen


@dataclass(frozen=True)
class Batches:
    """Letterboxed images in batches of ``batch``, read from disk one batch at a time as they are indexed or
    iterated, so that memory holds one batch however many images there are. Runtimes and calibrators take whole
    batches: the last one is filled up with the first images."""

    paths: tuple[Path, ...]
    imgsz: tuple[int, int]
    batch: int = 1

    def __len__(self) -> int:
        return -(-len(self.paths) // self.batch)

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} of {len(self)}")
        start = index * self.batch
        chosen = [self.paths[i % len(self.paths)] for i in range(start, start + self.batch)]
        return np.stack([letterbox_image(p, self.imgsz) for p in chosen])

    def __iter__(self):
        return (self[i] for i in range(len(self)))
