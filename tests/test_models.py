"""The zoo: every shipped YAML builds a working YOLOv8 through ultralytics' own parser."""

import pytest
import torch
import yaml
from ultralytics.nn.tasks import DetectionModel

from attn_deploy.models import ZOO, register
from attn_deploy.models.detector import build_detector


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_yaml_builds_yolov8n_with_module_at_p5(name):
    model = build_detector(name)
    layer = model.model[10]
    assert type(layer) is ZOO[name].module
    with torch.no_grad():
        out = model(torch.rand(1, 3, 320, 320))[0]
    assert out.shape == (1, 84, 2100)
    assert torch.isfinite(out).all()


def test_channels_come_from_the_input_at_every_scale():
    widths = {"n": 256, "s": 512}
    for scale, channels in widths.items():
        model = build_detector("gam", scale=scale)
        assert model.model[10].channel_attention[0].in_features == channels


def test_seeded_build_is_reproducible():
    a, b = build_detector("cga", seed=3), build_detector("cga", seed=3)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_register_is_idempotent_and_plain_yolov8_still_parses():
    register()
    register()
    model = DetectionModel("yolov8n.yaml", verbose=False)
    assert len(model.model) == 23


def test_zoo_layer_not_fed_by_previous_layer_is_refused():
    cfg = yaml.safe_load(ZOO["simam"].yaml.read_text())
    cfg["backbone"][10][0] = 8
    register()
    with pytest.raises(ValueError, match="from: -1"):
        DetectionModel(cfg, verbose=False)


@pytest.mark.parametrize("task, head", [("segment", "Segment"), ("pose", "Pose"), ("obb", "OBB")])
def test_task_yamls_parse_with_the_module_at_p5_and_the_tasks_head(task, head):
    from ultralytics.nn import tasks

    from attn_deploy.models import LocalWindowAttention

    register()
    cfg = yaml.safe_load(ZOO["cga"].task_yaml(task).read_text())
    assert task in ZOO["cga"].tasks and tasks.guess_model_task(cfg) == task
    layers, _ = tasks.parse_model({**cfg, "scale": "n", "nc": 4}, ch=3, verbose=False)
    assert type(layers[10]) is LocalWindowAttention and type(layers[-1]).__name__ == head
    assert layers[-1].nc == 4 and layers[-1].f == [16, 19, 22]
    assert ZOO["simam"].tasks == ["detect"]


@pytest.fixture(scope="module")
def stock():
    """ultralytics' own YOLO11n and YOLO26n, as the family YAMLs copy them."""
    return {family: DetectionModel(f"{family}n.yaml", verbose=False).eval() for family in ("yolo11", "yolo26")}


def _params(module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("family", ["yolo11", "yolo26"])
@pytest.mark.parametrize("name", list(ZOO))
def test_family_yaml_is_ultralytics_own_with_the_module_after_c2psa(stock, name, family):
    """Every yolo11-/yolo26-<module>.yaml is the family's model with only the module added (same layers, channels
    and parameters around it, the head routed through it), and runs a forward at a small size (224: P5 is 7x7, CGA's
    window)."""
    register()
    torch.manual_seed(0)
    cfg = yaml.safe_load(ZOO[name].task_yaml("detect", family).read_text())
    model, plain = DetectionModel({**cfg, "scale": "n"}, verbose=False).eval(), stock[family]
    layers = [type(m).__name__ for m in model.model]
    assert type(model.model[11]) is ZOO[name].module and layers[10] == "C2PSA"
    assert layers[:11] + layers[12:] == [type(m).__name__ for m in plain.model]
    assert _params(model) - _params(model.model[11]) == _params(plain)
    assert model.model[22].f == [-1, 11] and model.model[-1].f == [17, 20, 23]
    assert model.end2end == plain.end2end
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        out, reference = model(x), plain(x)
    out, reference = (o[0] if isinstance(o, (tuple, list)) else o for o in (out, reference))
    assert out.shape == reference.shape and torch.isfinite(out).all()


def test_build_detector_takes_the_family():
    model = build_detector("simam", family="yolo26")
    assert type(model.model[11]) is ZOO["simam"].module and model.yaml["yaml_file"] == "yolo26n-simam.yaml"
    with pytest.raises(ValueError, match="unknown family 'yolov5'"):
        build_detector("simam", family="yolov5")
