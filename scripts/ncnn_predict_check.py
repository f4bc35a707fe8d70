"""ultralytics' own predict on an ncnn export against the PyTorch checkpoint it came from.

For each ``<stem>_ncnn_model`` directory given, with the checkpoint beside it (``<stem>.pt``): ``YOLO(dir).predict`` and
``YOLO(checkpoint).predict`` on the first --images images of the shapes validation split at the export's size
(ultralytics' defaults: conf 0.25, NMS), and whether they give the same detections (count and classes, boxes matched
in order) with the largest box difference in pixels. Prints one JSON line per model.
Run: python scripts/ncnn_predict_check.py DIR [DIR ...] [--images 10]
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from attn_deploy.data import load_split, shapes_data  # noqa: E402


def compare(directory: Path, images: list[Path]) -> dict:
    from ultralytics import YOLO

    meta = yaml.safe_load((directory / "metadata.yaml").read_text())
    imgsz = int(meta["imgsz"][0])
    checkpoint = directory.with_name(directory.name.removesuffix("_ncnn_model") + ".pt")
    theirs, ours = YOLO(str(directory), task=meta["task"]), YOLO(str(checkpoint))
    same, worst = 0, 0.0
    for image in images:
        a = theirs.predict(str(image), imgsz=imgsz, device="cpu", verbose=False)[0].boxes
        b = ours.predict(str(image), imgsz=imgsz, device="cpu", verbose=False)[0].boxes
        if len(a) == len(b) and a.cls.tolist() == b.cls.tolist():
            same += 1
            worst = max(worst, float(np.abs(a.xyxy.numpy() - b.xyxy.numpy()).max()) if len(a) else 0.0)
    return {"model": directory.name, "imgsz": imgsz, "same": same, "images": len(images), "max_box_px": worst}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dirs", nargs="+", type=Path)
    parser.add_argument("--images", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        images = load_split(shapes_data(Path(tmp))).images[:args.images]
        for directory in args.dirs:
            print(json.dumps(compare(directory, images)), flush=True)


if __name__ == "__main__":
    main()
