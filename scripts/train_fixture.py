"""Train the attn-deploy fixtures: YOLOv8n with CGA or SimAM on the procedural shapes data set.

    python scripts/train_fixture.py cga simam --out attn_deploy/fixtures
    python scripts/train_fixture.py cga --task segment --epochs 12

Generates the data set with the task's labels from its seed (attn_deploy.shapes), trains each model
with the ultralytics trainer on CPU from scratch (nothing is downloaded), and writes
``yolov8n-<fixture>-shapes.pt`` (fp16, as ultralytics saves best.pt) and ``fixtures.json``, which
records the seed, the data spec, the training arguments, the training time and the final mAP (box,
and mask or pose mAP; for OBB the box mAP is the rotated boxes'). A detector's fixture is named
after its module (``cga``), another task's after both (``cga-seg``, ``cga-pose``, ``cga-obb``).
"""

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import yaml

from attn_deploy import shapes
from attn_deploy.models import TASK_SUFFIXES, ZOO, registry

TRAIN_ARGS = dict(epochs=15, imgsz=shapes.ShapesSpec.imgsz, batch=16, device="cpu", seed=0, deterministic=True,
                  pretrained=False, amp=False, plots=False, optimizer="AdamW", lr0=0.003, warmup_epochs=1,
                  close_mosaic=3, verbose=False)
# At 160 px, P5 is 5x5: under CGA's default 7x7 window, LocalWindowAttention would skip the padded,
# windowed path that makes it hard to export. A 4x4 window keeps that path in the fixture.
LAYER_ARGS = {"cga": [16, 4, 4, 14, 4]}
# The task's own mAP beside the box mAP, as the validator's metrics name it: (record prefix, attribute)
TASK_MAP = {"segment": ("mask", "seg"), "pose": ("pose", "pose")}


def fixture_name(module: str, task: str) -> str:
    return f"{module}{TASK_SUFFIXES[task]}"


def _model_yaml(name: str, task: str, nc: int, workdir: Path) -> Path:
    cfg = yaml.safe_load(ZOO[name].task_yaml(task).read_text())
    cfg["nc"] = nc
    if name in LAYER_ARGS:
        row = next(row for row in cfg["backbone"] if row[2] == ZOO[name].module.__name__)
        row[3] = LAYER_ARGS[name]
    path = workdir / f"yolov8n-{fixture_name(name, task)}-shapes.yaml"  # the "n" in the name picks the scale
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _scores(metrics, task: str) -> dict:
    scores = {"mAP50": round(float(metrics.box.map50), 4), "mAP50-95": round(float(metrics.box.map), 4)}
    if task in TASK_MAP:
        prefix, attribute = TASK_MAP[task]
        own = getattr(metrics, attribute)
        scores.update({f"{prefix}_mAP50": round(float(own.map50), 4), f"{prefix}_mAP50-95": round(float(own.map), 4)})
    return scores


def train(name: str, task: str, data: Path, workdir: Path, args: dict) -> tuple[Path, dict]:
    from ultralytics import YOLO

    registry.register()
    model = YOLO(str(_model_yaml(name, task, len(shapes.CLASSES), workdir)), task=task)
    run = fixture_name(name, task)
    started, cpu = time.perf_counter(), time.process_time()
    model.train(data=str(data), project=str(workdir), name=run, exist_ok=True, **args)
    # CPU time as well as wall time: on a shared machine the wall time says more about the neighbours
    timing = {"train_seconds": round(time.perf_counter() - started, 1),
              "train_cpu_seconds": round(time.process_time() - cpu, 1)}
    result = {**timing, **_scores(model.trainer.validator.metrics, task)}
    return workdir / run / "weights" / "best.pt", result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="+", choices=sorted(ZOO))
    parser.add_argument("--task", choices=shapes.TASKS, default="detect")
    parser.add_argument("--out", type=Path, default=Path("attn_deploy/fixtures"))
    parser.add_argument("--seed", type=int, default=shapes.ShapesSpec.seed)
    parser.add_argument("--epochs", type=int, default=TRAIN_ARGS["epochs"])
    parser.add_argument("--train-images", type=int, default=shapes.ShapesSpec.train)
    options = parser.parse_args()
    spec = shapes.ShapesSpec(seed=options.seed, train=options.train_images)
    args = {**TRAIN_ARGS, "epochs": options.epochs}
    record_path = options.out / "fixtures.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    with tempfile.TemporaryDirectory(prefix="attn-deploy-train-") as tmp:
        data = shapes.generate(Path(tmp) / "shapes", spec, task=options.task)
        for name in options.modules:
            best, result = train(name, options.task, data, Path(tmp), args)
            fixture = fixture_name(name, options.task)
            options.out.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(best, options.out / f"yolov8n-{fixture}-shapes.pt")
            task = {} if options.task == "detect" else {"task": options.task}
            record[fixture] = {**task, "shapes_spec": spec.__dict__, "train_args": args,
                               "layer_args": LAYER_ARGS.get(name, []), **result}
            record_path.write_text(json.dumps(record, indent=2) + "\n")
            print(f"{fixture}: {result}")


if __name__ == "__main__":
    main()
