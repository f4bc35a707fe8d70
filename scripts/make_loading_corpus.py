"""Write tests/corpus/: tiny checkpoints saved by ultralytics 8.0, 8.1, 8.2, 8.3 and the installed 8.4, every task.

Each version runs in a process of its own with that version first on ``sys.path`` (installed beforehand with
``pip install --no-deps --target /tmp/ul-8.X "ultralytics==8.X.*"``) against this project's torch. The checkpoint is
written by that version's own code: its ``BaseTrainer.save_model`` called on a stand-in trainer holding a seeded model
built from that version's YAML (scaled down to width 1/32, its head at P5 only, imgsz 64), its ``ModelEMA`` and an SGD optimizer; then its
``strip_optimizer`` turns ``best.pt`` into the released form. A segment ``last.pt`` of 8.0 and 8.3 is kept as saved
mid-training, its model holding the loss (``criterion``); 8.3 and later classify models hold ``transforms`` as that
version's classify trainer sets them. The only patches (numpy 2, stand-ins for ``pandas`` reading results.csv and 8.0's
``hub_sdk``) live in
the generating process and never in the saved data.

    python scripts/make_loading_corpus.py [--out tests/corpus] [--versions 8.0,8.1,8.2,8.3,8.4]
"""

import argparse
import csv
import importlib
import importlib.machinery
import json
import os
import subprocess
import sys
import tempfile
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VERSIONS = ("8.0", "8.1", "8.2", "8.3", "8.4")
TASKS = ("detect", "segment", "pose", "obb", "classify")
SUFFIX = {"detect": "", "segment": "-seg", "pose": "-pose", "obb": "-obb", "classify": "-cls"}
NAMES = {0: "circle", 1: "square", 2: "triangle"}
SCALE = [0.33, 0.03125, 1024]  # depth, width, max channels: YOLOv8n's depth at a 32nd of its width
IMGSZ, SEED = 64, 0
MID_TRAINING = ("8.0", "8.3")  # versions whose segment last.pt is kept too: 8.0 saves the trained model beside the EMA


def families(version: str) -> list[tuple[str, str, tuple[str, ...]]]:
    """The YAML folder, model family and tasks saved: YOLO11 (and YOLO26 detect, end-to-end) for today's release,
    YOLOv8 before (8.3's YOLO11 cannot be this narrow: its C2PSA attention gives a layer under 128 channels no
    heads). OBB arrived in 8.1."""
    if version == "8.4":
        return [("11", "yolo11", TASKS), ("26", "yolo26", ("detect",))]
    return [("v8", "yolov8", tuple(t for t in TASKS if t != "obb" or version != "8.0"))]


def read_results(path: Path) -> dict[str, list]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {k.strip(): [float(r[k]) for r in rows] for k in (rows[0] if rows else {})}


def patch_old_code() -> None:
    """Patches that let old ultralytics import and save under numpy 2 without pandas, in this process only."""
    import numpy as np

    for name, value in {"bool8": np.bool_, "float_": np.float64, "int0": np.intp}.items():
        if not hasattr(np, name):
            setattr(np, name, value)
    import torch._dynamo  # noqa: F401  (looks modules up by spec: imported before the stand-in exists)

    frame = types.SimpleNamespace
    stand_in("pandas", read_csv=lambda path: frame(to_dict=lambda orient="list": read_results(Path(path))),
             DataFrame=dict)
    stand_in("hub_sdk")  # 8.0 imports the HUB client at import time
    stand_in("hub_sdk.config", HUB_WEB_ROOT="https://hub.ultralytics.com")


def stand_in(name: str, **attributes) -> None:
    """A module of ``attributes`` under ``name``, where the package is not installed."""
    try:
        importlib.import_module(name)
    except ImportError:
        module = types.ModuleType(name)
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)
        vars(module).update(attributes)
        sys.modules[name] = module


def build(task: str, folder: str, stem: str):
    """A seeded model of ``task`` from that version's own YAML, norms settled on random images."""
    import torch
    from ultralytics.nn import tasks as ul_tasks
    from ultralytics.nn.tasks import yaml_model_load

    cfg = yaml_model_load(Path(ul_tasks.__file__).parents[1] / "cfg/models" / folder / f"{stem}{SUFFIX[task]}.yaml")
    cfg.update(nc=len(NAMES), scales={"n": SCALE}, scale="n")
    if task != "classify":
        cfg["head"][-1][0] = cfg["head"][-1][0][-1:]  # the head at P5 only: a 64-channel box branch per level
    kind = {"detect": "DetectionModel", "segment": "SegmentationModel", "pose": "PoseModel",
            "obb": "OBBModel", "classify": "ClassificationModel"}[task]
    torch.manual_seed(SEED)
    model = getattr(ul_tasks, kind)(cfg, nc=len(NAMES), verbose=False)
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(torch.rand(4, 3, IMGSZ, IMGSZ))
    return model.eval()


def trainer_for(model, task: str, run: Path, mid_training: bool):
    """A stand-in for the version's trainer: the attributes its ``save_model`` reads, set as its training sets them."""
    import torch
    from ultralytics.cfg import get_cfg
    from ultralytics.utils import DEFAULT_CFG
    from ultralytics.utils.torch_utils import ModelEMA

    args = get_cfg(DEFAULT_CFG, {"task": task, "imgsz": IMGSZ, "model": f"{task}.yaml", "data": "shapes.yaml",
                                 "epochs": 1, "seed": SEED, "project": str(run), "name": "train"})
    model.nc, model.names, model.args = len(NAMES), dict(NAMES), args
    if mid_training:
        model.criterion = model.init_criterion()  # set by the first loss; here before the EMA copies the model
    ema = ModelEMA(model)
    ema.update_attr(model, include=["yaml", "nc", "args", "names", "stride", "class_weights"])
    (run / "weights").mkdir(parents=True, exist_ok=True)
    results = run / "results.csv"
    results.write_text("epoch,metrics/fitness\n0,0.5\n")
    trainer = types.SimpleNamespace(
        epoch=0, best_fitness=0.5, fitness=0.5, model=model, ema=ema, args=args, csv=results, metrics={"fitness": 0.5},
        optimizer=torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.937), save_period=-1, wdir=run / "weights",
        last=run / "weights/last.pt", best=run / "weights/best.pt", scaler=torch.amp.GradScaler("cpu", enabled=False),
        stopper=types.SimpleNamespace(best_fitness=0.5, best_epoch=0))
    trainer.read_results_csv = lambda: read_results(results)
    return trainer


def save(task: str, version: str, family: tuple[str, str], out: Path, run: Path, mid_training: bool) -> list[dict]:
    """Save ``task``'s model through the version's ``save_model``: best.pt stripped, and last.pt where asked."""
    from ultralytics.engine.trainer import BaseTrainer
    from ultralytics.utils.torch_utils import strip_optimizer

    model = build(task, *family)
    if task == "classify" and version >= "8.3":
        from ultralytics.data.augment import classify_transforms

        model.transforms = classify_transforms(IMGSZ)  # as ClassificationTrainer sets it from its data set
    trainer = trainer_for(model, task, run, mid_training)
    BaseTrainer.save_model(trainer)
    stem = f"ul{version}-{task}" if family[1] != "yolo26" else f"ul{version}-yolo26-{task}"
    best = out / f"{stem}.pt"
    strip_optimizer(trainer.best, str(best))
    written = [{"file": best.name, "kind": "best.pt (strip_optimizer)"}]
    if mid_training:
        last = out / f"{stem}-last.pt"
        last.write_bytes(trainer.last.read_bytes())
        written.append({"file": last.name, "kind": "last.pt (mid-training, with criterion)"})
    return written


def worker(version: str, out: Path) -> None:
    """Write ``version``'s files; run with that version first on ``sys.path``."""
    patch_old_code()
    import torch
    import ultralytics

    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for folder, stem, tasks in families(version):
            for task in tasks:
                mid_training = task == "segment" and version in MID_TRAINING
                for row in save(task, version, (folder, stem), out, Path(tmp) / stem / task, mid_training):
                    rows.append({**row, "version": version, "saved_by": ultralytics.__version__, "task": task,
                                 "family": stem})
    print(json.dumps(rows))


def run_version(version: str, out: Path) -> list[dict]:
    env = {**os.environ, "YOLO_CONFIG_DIR": tempfile.mkdtemp(), "YOLO_OFFLINE": "1",
           "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}  # old strip_optimizer reads its own best.pt with torch.load
    if version != "8.4":
        env["PYTHONPATH"] = f"/tmp/ul-{version}"
    done = subprocess.run([sys.executable, __file__, "--worker", version, "--out", str(out)], env=env, cwd="/tmp",
                          capture_output=True, text=True, timeout=900)
    if done.returncode:
        raise SystemExit(f"ultralytics {version} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "tests/corpus")
    parser.add_argument("--versions", default=",".join(VERSIONS))
    parser.add_argument("--worker")
    args = parser.parse_args()
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.worker:
        return worker(args.worker, args.out)
    rows = [row for v in args.versions.split(",") for row in run_version(v, args.out)]
    manifest = args.out / "manifest.json"
    old = json.loads(manifest.read_text()) if manifest.exists() else []
    kept = [r for r in old if r["file"] not in {n["file"] for n in rows}]
    manifest.write_text(json.dumps(sorted(kept + rows, key=lambda r: r["file"]), indent=1) + "\n")
    print(f"{len(rows)} files in {args.out}, {sum(f.stat().st_size for f in args.out.glob('*.pt')) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
