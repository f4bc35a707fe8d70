"""Image data for accuracy checks and INT8 calibration: YOLO-format splits, image folders, and the
fixtures' shapes split regenerated from its seed."""

from dataclasses import dataclass
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
    in pixels)."""

    images: list[Path]
    shapes: list[tuple[int, int]]
    labels: list[np.ndarray]
    names: dict[int, str]
    source: Path


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


def _labels(image: Path, shape: tuple[int, int]) -> np.ndarray:
    """Labels in pixels; a missing label file is an image with no objects, as ultralytics reads it."""
    from ultralytics.data.utils import img2label_paths

    label = Path(img2label_paths([str(image)])[0])
    expected = f"{label}: expected 5 columns (class cx cy w h) per row"
    try:
        rows = np.loadtxt(label, ndmin=2) if label.exists() and label.stat().st_size else np.zeros((0, 5))
    except ValueError as e:  # rows of different lengths: polygons
        raise AttnDeployError(f"{expected}; {e}") from None
    if rows.shape[1] != 5:
        raise AttnDeployError(f"{expected}, found {rows.shape[1]}")
    h, w = shape
    cx, cy, bw, bh = rows[:, 1] * w, rows[:, 2] * h, rows[:, 3] * w, rows[:, 4] * h
    return np.stack([rows[:, 0], cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)


def load_split(data: Path, split: str = "val") -> Split:
    """The ``split`` of an ultralytics data YAML, with its labels read up front."""
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
    return Split(images, shapes, [_labels(image, shape) for image, shape in zip(images, shapes)], names, data)


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
