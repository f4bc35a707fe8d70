"""Loading: fork paths resolve to the zoo, hostile pickles are refused, nothing else loads silently, and every
checkpoint ultralytics and the fixtures write loads (hostile files: test_hostile.py; forks: test_fork.py)."""

import argparse
import os
import pathlib
import pickle
import textwrap
import types

import numpy as np
import pytest
import torch
import ultralytics.nn.tasks
from ultralytics.utils import IterableSimpleNamespace

from attn_deploy import fixtures
from attn_deploy.loading import load, names, save_checkpoint, torchzip, unpickler
from attn_deploy.errors import AttnDeployError
from attn_deploy.models import GAMAttention, LocalWindowAttention
from attn_deploy.models.detector import build_detector

from .conftest import FORK_PATH, save_fork_checkpoint, save_fork_model


def test_fork_checkpoint_resolves_to_zoo_and_loads_fp32_eval(fork_checkpoints):
    loaded = load(fork_checkpoints["cga"])
    assert isinstance(loaded.model.model[10], LocalWindowAttention)
    assert f"{FORK_PATH}.LocalWindowAttention" in loaded.resolved
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())
    assert not loaded.model.training
    assert loaded.model.model[10].attn.ab.dtype == torch.float32  # the eval cache is rebuilt in fp32
    assert loaded.stride == 32 and loaded.task == "detect" and len(loaded.names) == 80
    assert loaded.imgsz == (640, 640)  # from train_args, the default export size


def test_published_alias_resolves(tmp_path):
    path = save_fork_checkpoint("gam", tmp_path / "gam.pt", "ultralytics.nn.modules.attention", {"GAMAttention": "GAM"})
    loaded = load(path)
    assert isinstance(loaded.model.model[10], GAMAttention)
    assert "ultralytics.nn.modules.attention.GAM" in loaded.resolved


def test_unknown_fork_classes_are_all_named_with_the_plugin_hint(tmp_path):
    path = save_fork_checkpoint("cga", tmp_path / "x.pt", renames={"LocalWindowAttention": "MyWindowAttn",
                                                                    "CascadedGroupAttention": "MyCGA"})
    with pytest.raises(AttnDeployError) as info:
        load(path)
    message = str(info.value)
    assert f"{FORK_PATH}.MyWindowAttn" in message and f"{FORK_PATH}.MyCGA" in message
    assert "--plugin" in message


def test_plugin_supplies_unknown_classes(tmp_path):
    path = save_fork_checkpoint("simam", tmp_path / "x.pt", renames={"SimAM": "EnergyAttention"})
    plugin = tmp_path / "my_modules.py"
    plugin.write_text("from attn_deploy.models.simam import SimAM\n\nclass EnergyAttention(SimAM):\n    pass\n")
    loaded = load(path, plugins=[plugin])
    assert type(loaded.model.model[10]).__name__ == "EnergyAttention"


def test_resolved_class_whose_parameters_do_not_fit_is_refused(tmp_path):
    model = build_detector("simam")
    model.model[10].extra = torch.nn.Conv2d(256, 256, 1)  # a fork's SimAM with a learnable conv
    path = save_fork_model(model, tmp_path / "x.pt")
    with pytest.raises(AttnDeployError, match="do not fit"):
        load(path)


class _Hostile:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_hostile_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": _Hostile(marker)}, path)
    with pytest.raises(AttnDeployError, match="system") as info:
        load(path)
    assert "--trust-checkpoint" in str(info.value)
    assert not marker.exists()


def test_trusted_checkpoint_may_use_objects_outside_the_allow_list(tmp_path):
    path = tmp_path / "extra.pt"
    torch.save({"model": torch.nn.Sequential(torch.nn.Conv2d(3, 8, 1)), "note": pickle.PickleBuffer}, path)
    with pytest.raises(AttnDeployError, match="pickle.PickleBuffer, which lies outside the packages"):
        load(path)
    assert isinstance(load(path, trust=True).model, torch.nn.Sequential)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", b"PK\x03\x04broken zip"])
def test_corrupt_file_is_a_clear_error(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(AttnDeployError, match="not a readable PyTorch checkpoint"):
        load(path)


def test_state_dict_needs_and_uses_a_yaml(tmp_path, fork_checkpoints):
    from attn_deploy.models import ZOO

    model = load(fork_checkpoints["simam"]).model
    path = tmp_path / "sd.pt"
    torch.save(model.state_dict(), path)
    with pytest.raises(AttnDeployError, match="--yaml"):
        load(path)
    yaml = tmp_path / "yolov8n-simam.yaml"
    yaml.write_text(ZOO["simam"].yaml.read_text())
    loaded = load(path, yaml=yaml)
    for a, b in zip(loaded.model.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)


def test_missing_plugin_file_is_a_clear_error(tmp_path, fork_checkpoints):
    with pytest.raises(AttnDeployError, match="not a Python file"):
        load(fork_checkpoints["simam"], plugins=[tmp_path / "nope.py"])


def test_plugin_that_fails_to_import_is_a_clear_error(tmp_path, fork_checkpoints):
    plugin = tmp_path / "broken.py"
    plugin.write_text(textwrap.dedent("raise RuntimeError('boom')\n"))
    with pytest.raises(AttnDeployError, match="boom"):
        load(fork_checkpoints["simam"], plugins=[plugin])


def test_whole_pickled_model_loads(tmp_path):
    model = build_detector("ge")
    path = tmp_path / "whole.pt"
    torch.save(model, path)
    loaded = load(path)
    assert type(loaded.model).__name__ == "DetectionModel" and loaded.stride == 32
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        assert torch.equal(loaded.model(x)[0], model.eval()(x)[0])


STOCK = {
    "yolov8n.yaml": "DetectionModel", "yolo11n-seg.yaml": "SegmentationModel", "yolo11n-pose.yaml": "PoseModel",
    "yolo11n-obb.yaml": "OBBModel", "yolo11n-cls.yaml": "ClassificationModel", "yolov10n.yaml": "DetectionModel",
    "yolo26n.yaml": "DetectionModel", "yolo12n.yaml": "DetectionModel", "rtdetr-l.yaml": "RTDETRDetectionModel",
}


@pytest.mark.parametrize("yaml_name", list(STOCK))
def test_stock_ultralytics_models_load_as_saved(tmp_path, yaml_name):
    """Every task and head family ultralytics ships: the restricted unpickler admits all their classes."""
    cls = getattr(ultralytics.nn.tasks, STOCK[yaml_name])
    torch.manual_seed(0)
    model = cls(yaml_name, verbose=False)
    loaded = load(save_checkpoint(model, tmp_path / "best.pt"))
    assert type(loaded.model) is cls and loaded.resolved == {} and not loaded.model.training
    saved = model.half().float().state_dict()
    for key, tensor in loaded.model.state_dict().items():
        assert torch.equal(tensor, saved[key]), key


@pytest.mark.parametrize("name", ["cga", "simam"])
def test_trained_fixtures_load(name):
    loaded = load(fixtures.checkpoint(name))
    assert loaded.imgsz and loaded.names and not loaded.model.training


def test_the_data_ultralytics_checkpoints_carry_round_trips(tmp_path):
    """What a trainer's last.pt holds besides the model: numpy scalars and arrays, paths, namespaces, sets, bytes."""
    extra = {
        "best_fitness": np.float64(0.25), "save_dir": pathlib.PurePosixPath("runs/detect/train"),
        "args": IterableSimpleNamespace(imgsz=640, data="coco.yaml"), "ns": argparse.Namespace(epochs=3),
        "plain": types.SimpleNamespace(a=1), "classes": {0, 1}, "frozen": frozenset({"a"}), "blob": b"\x00\xff",
        "device": torch.device("cpu"), "shape": torch.Size([1, 3]), "dtype": torch.float16,
    }
    results, windows = np.arange(6, dtype=np.float32).reshape(2, 3), pathlib.PureWindowsPath("C:/data/x.yaml")
    path = tmp_path / "last.pt"
    torch.save({"model": torch.nn.Sequential(torch.nn.Conv2d(3, 8, 1)), "results": results, "windows": windows,
                **extra}, path)
    assert isinstance(load(path).model, torch.nn.Sequential)
    with torchzip.open_archive(path) as archive:
        back, _ = unpickler.unpickle(archive.data_pkl, names.Names([], lambda name: None), archive.storage)
    assert np.array_equal(back["results"], results) and back["windows"] == windows
    assert {k: back[k] for k in extra} == extra


def test_trusted_load_resolves_fork_paths_and_rebuilds_from_the_zoo(fork_checkpoints):
    loaded = load(fork_checkpoints["simam"], trust=True)
    assert type(loaded.model.model[10]).__module__ == "attn_deploy.models.simam"
    assert f"{FORK_PATH}.SimAM" in loaded.resolved and loaded.notes


# -- idioms of real users' files (issue 26): each loads, and what export does not need is left out and said

def test_a_head_holding_detect_forward_loads_as_that_function(tmp_path):
    """ultralytics 8.0/8.1 segment, pose and OBB heads kept ``self.detect = Detect.forward`` (pickled as getattr)."""
    from ultralytics.nn.modules.head import Detect

    model = build_detector("simam")
    head = model.model[-1]
    head.detect = Detect.forward
    path = tmp_path / "held.pt"
    save_checkpoint(model, path)
    with torchzip.open_archive(path) as archive:
        assert ("builtins", "getattr") in unpickler.globals_in(archive.data_pkl)
    assert load(path).model.model[-1].detect is Detect.forward


@pytest.mark.parametrize("end2end", [False, True])
def test_end2end_kept_as_an_attribute_goes_through_todays_property(tmp_path, end2end):
    """8.2/8.3 kept ``end2end`` in the head's __dict__; today's Detect computes it as a property."""
    model = ultralytics.nn.tasks.DetectionModel("yolov10n.yaml", verbose=False)
    head = model.model[-1]
    vars(head).pop("_end2end", None)
    vars(head)["end2end"] = end2end
    path = tmp_path / "v10.pt"
    save_checkpoint(model, path, imgsz=64)
    loaded = load(path).model.model[-1]
    assert "end2end" not in vars(loaded) and loaded.end2end is end2end


def test_criterion_and_transforms_are_left_out_and_said(tmp_path):
    from ultralytics.data.augment import classify_transforms

    model = build_detector("simam")
    model.args = IterableSimpleNamespace(box=7.5, cls=0.5, dfl=1.5)
    model.criterion = model.init_criterion()
    model.transforms = classify_transforms(64)
    path = tmp_path / "mid-training.pt"
    save_checkpoint(model, path)
    loaded = load(path)
    assert not hasattr(loaded.model, "criterion") and not hasattr(loaded.model, "transforms")
    said = " ".join(loaded.notes)
    assert "model.criterion (ultralytics.utils.loss.v8DetectionLoss) was left out" in said
    assert "model.transforms (torchvision.transforms.transforms.Compose) was left out" in said


def test_tensor_functions_held_as_values_load_and_file_readers_do_not(tmp_path):
    """torch.sigmoid pickles as getattr(torch._C._VariableFunctionsClass, 'sigmoid'), F.gelu under torch._C._nn."""
    import einops
    import torch.nn.functional as F

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1))
    model.gate, model.act, model.join, model.windows = torch.sigmoid, F.gelu, torch.cat, einops.rearrange
    path = tmp_path / "functions.pt"
    torch.save({"model": model}, path)
    loaded = load(path).model
    assert (loaded.gate, loaded.act, loaded.join, loaded.windows) == (torch.sigmoid, F.gelu, torch.cat,
                                                                      einops.rearrange)
    for reader in (torch.from_file, ultralytics.nn.tasks.torch_safe_load, np.load):
        model.gate = reader
        torch.save({"model": model}, path)
        with pytest.raises(AttnDeployError, match="was refused"):
            load(path)
