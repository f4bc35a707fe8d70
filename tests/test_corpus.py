"""The loading corpus (tests/corpus/, written by scripts/make_loading_corpus.py): checkpoints saved by ultralytics 8.0
to 8.4 through their own trainers' save code, every task. Each loads without --fork, is made current (compat) and
exports to ONNX at 64x64 with parity against the original, detections compared at every score (conf 0)."""

import copy
import importlib.util
import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from attn_deploy.cli import app
from attn_deploy.errors import AttnDeployError

from attn_deploy.heads import task_of
from attn_deploy.loading import compat, load, save_checkpoint
from attn_deploy.loading.fork import import_plugin, mounted
from attn_deploy.exporters.onnx import OnnxOptions, export
from attn_deploy.parity import Detections
from attn_deploy.verify import verify_export

from .conftest import pickled_under

CORPUS = Path(__file__).parent / "corpus"
ROWS = json.loads((CORPUS / "manifest.json").read_text())
IMGSZ = (64, 64)
runner = CliRunner()


def test_the_corpus_covers_every_version_and_task_and_stays_small():
    cells = {(r["version"], r["task"]) for r in ROWS}
    assert cells == {(v, t) for v in ("8.0", "8.1", "8.2", "8.3", "8.4")
                     for t in ("detect", "segment", "pose", "obb", "classify")} - {("8.0", "obb")}
    assert any("criterion" in r["kind"] for r in ROWS) and all((CORPUS / r["file"]).is_file() for r in ROWS)
    assert sum(p.stat().st_size for p in CORPUS.glob("*.pt")) < 11e6


@pytest.mark.parametrize("row", ROWS, ids=[r["file"] for r in ROWS])
def test_corpus_file_loads_and_exports_with_parity(row, tmp_path):
    loaded = load(CORPUS / row["file"])
    # No version stores the task in the model: the load sets it from the head, as ultralytics guesses it.
    assert task_of(loaded.model) == loaded.model.task == loaded.task == row["task"]
    left_out = " ".join(loaded.notes)
    assert ("model.criterion" in left_out) == ("criterion" in row["kind"] or row["version"] == "8.0" and
                                              row["task"] == "segment")  # 8.0's strip_optimizer keeps it
    assert ("model.transforms" in left_out) == (row["task"] == "classify" and row["version"] >= "8.3")
    built = export(loaded, tmp_path / "model.onnx", OnnxOptions(imgsz=IMGSZ, simplify=False))
    report = verify_export(built.path, loaded, detections=Detections(conf=0.0))
    assert report.passed, report.worst()
    if row["task"] != "classify":
        assert report.detections and all(d.recall is not None and d.recall > 0.9 for d in report.detections)


def test_compat_fixes_what_old_files_lack_and_says_each_fix_once():
    model = load(CORPUS / "ul8.0-detect.pt").model
    del model.stride, model.task
    upsample = next(m for m in model.modules() if isinstance(m, nn.Upsample))
    del upsample.recompute_scale_factor
    fixes = compat.apply(model)
    assert [f.split()[0] for f in fixes] == ["stride", "1"] and model.task == "detect"  # the task is set, unsaid
    assert model.stride.tolist() == [32.0] and upsample.recompute_scale_factor is None
    assert compat.apply(model) == []
    with torch.no_grad():
        model(torch.rand(1, 3, *IMGSZ))


# Fork-style variants of the idioms real forks use, as a fork's source tree written here: each checkpoint is saved
# from inside the mounted tree, then loaded with --fork and exported with parity.
NOT_RUN = "raise RuntimeError('this __init__.py must not run')\n"
FORK = {
    "ultralytics/__init__.py": NOT_RUN,
    "ultralytics/nn/__init__.py": NOT_RUN,
    "ultralytics/nn/extra_modules/__init__.py": NOT_RUN,
    "ultralytics/nn/extra_modules/fasternet.py": """
        import torch
        from torch import nn


        class PConv(nn.Module):
            \"\"\"FasterNet's partial convolution (Chen et al., CVPR 2023): the forward is chosen in __init__.\"\"\"

            def __init__(self, c, n_div=4, forward="split_cat"):
                super().__init__()
                self.dim_conv3 = c // n_div
                self.dim_untouched = c - self.dim_conv3
                self.partial_conv3 = nn.Conv2d(self.dim_conv3, self.dim_conv3, 3, 1, 1, bias=False)
                self.forward = self.forward_slicing if forward == "slicing" else self.forward_split_cat

            def forward_slicing(self, x):
                x = x.clone()
                x[:, :self.dim_conv3] = self.partial_conv3(x[:, :self.dim_conv3])
                return x

            def forward_split_cat(self, x):
                x1, x2 = torch.split(x, [self.dim_conv3, self.dim_untouched], dim=1)
                return torch.cat((self.partial_conv3(x1), x2), 1)
        """,
    "ultralytics/nn/extra_modules/head.py": """
        from torch import nn

        from ..modules.head import Detect


        class DetectSE(Detect):
            \"\"\"A head that gates each level before the stock head, as 8.0/8.1 heads call it: ``self.detect``.\"\"\"

            def __init__(self, nc=80, ch=()):
                super().__init__(nc=nc, ch=ch)
                self.detect = Detect.forward
                self.gates = nn.ModuleList(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, c, 1), nn.Sigmoid())
                                           for c in ch)

            def forward(self, x):
                return self.detect(self, [xi * g(xi) for xi, g in zip(x, self.gates)])
        """,
    "ultralytics/nn/extra_modules/timm_block.py": """
        from timm.models.layers import DropPath, trunc_normal_, weight_init
        from torch import nn


        class TimmMixer(nn.Module):
            \"\"\"Written for timm 0.x: its layers imported from timm.models.layers.\"\"\"

            def __init__(self, c):
                super().__init__()
                self.pw = nn.Conv2d(c, c, 1)
                self.drop_path = DropPath(0.1)
                trunc_normal_(self.pw.weight, std=0.02)
                weight_init.lecun_normal_(self.pw.weight)

            def forward(self, x):
                return x + self.drop_path(self.pw(x))
        """,
    "ultralytics/nn/extra_modules/moved.py": """
        from torch import nn


        class MovedAttention(nn.Module):
            \"\"\"Trained under ultralytics/nn/attention_v1.py, moved here by the fork afterwards.\"\"\"

            def __init__(self, c):
                super().__init__()
                self.fc = nn.Conv2d(c, c, 1)

            def forward(self, x):
                return x * self.fc(x.mean((2, 3), keepdim=True)).sigmoid()
        """,
}
EMA_APPENDED = """

class EMA(nn.Module):
    \"\"\"Efficient Multi-scale Attention (Ouyang et al., ICASSP 2023), appended to the fork's copy of block.py.\"\"\"

    def __init__(self, channels, factor=4):
        super().__init__()
        self.groups = factor
        self.softmax = nn.Softmax(-1)
        self.agp = nn.AdaptiveAvgPool2d((1, 1))
        self.pool_h = nn.AdaptiveAvgPool2d((None, 1))
        self.pool_w = nn.AdaptiveAvgPool2d((1, None))
        self.gn = nn.GroupNorm(channels // self.groups, channels // self.groups)
        self.conv1x1 = nn.Conv2d(channels // self.groups, channels // self.groups, 1)
        self.conv3x3 = nn.Conv2d(channels // self.groups, channels // self.groups, 3, padding=1)

    def forward(self, x):
        b, c, h, w = x.size()
        group_x = x.reshape(b * self.groups, -1, h, w)
        x_h = self.pool_h(group_x)
        x_w = self.pool_w(group_x).permute(0, 1, 3, 2)
        hw = self.conv1x1(torch.cat([x_h, x_w], dim=2))
        x_h, x_w = torch.split(hw, [h, w], dim=2)
        x1 = self.gn(group_x * x_h.sigmoid() * x_w.permute(0, 1, 3, 2).sigmoid())
        x2 = self.conv3x3(group_x)
        x11 = self.softmax(self.agp(x1).reshape(b * self.groups, -1, 1).permute(0, 2, 1))
        x12 = x2.reshape(b * self.groups, c // self.groups, -1)
        x21 = self.softmax(self.agp(x2).reshape(b * self.groups, -1, 1).permute(0, 2, 1))
        x22 = x1.reshape(b * self.groups, c // self.groups, -1)
        weights = (torch.matmul(x11, x12) + torch.matmul(x21, x22)).reshape(b * self.groups, 1, h, w)
        return (group_x * weights.sigmoid()).reshape(b, c, h, w)
"""
TIMM = importlib.util.find_spec("timm") is not None


def write_tree(root: Path) -> Path:
    import ultralytics.nn.modules.block as stock_block

    files = {**FORK, "ultralytics/nn/modules/block.py": Path(stock_block.__file__).read_text() + EMA_APPENDED}
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text) if name in FORK else text)
    return root


def with_block(detector: nn.Module, block: nn.Module) -> nn.Module:
    """``detector`` with ``block`` after the layer that feeds its head."""
    model = copy.deepcopy(detector)
    old = model.model[-2]
    pair = nn.Sequential(old, block)
    pair.i, pair.f, pair.type, pair.np = old.i, old.f, old.type, old.np
    model.model[-2] = pair
    return model.eval()


def with_head(detector: nn.Module, head_class: type) -> nn.Module:
    model = copy.deepcopy(detector)
    old = model.model[-1]
    head = head_class(nc=old.nc, ch=[seq[0].conv.in_channels for seq in old.cv2])
    head.load_state_dict(old.state_dict(), strict=False)
    for attr in ("stride", "i", "f", "type", "np"):
        setattr(head, attr, getattr(old, attr))
    model.model[-1] = head
    return model.eval()


def _fork_models(detector: nn.Module) -> dict[str, nn.Module]:
    """Built inside the mounted tree, so that each class pickles under its fork path."""
    import ultralytics.nn.modules.block as stock_block

    from ultralytics.nn.extra_modules.fasternet import PConv
    from ultralytics.nn.extra_modules.head import DetectSE
    from ultralytics.nn.extra_modules.moved import MovedAttention

    torch.manual_seed(0)
    models = {"forward chosen in __init__ (FasterNet PConv)": with_block(detector, PConv(32)),
              "head holds Detect.forward": with_head(detector, DetectSE),
              "class moved after training": with_block(detector, MovedAttention(32))}
    if TIMM:
        from ultralytics.nn.extra_modules.timm_block import TimmMixer

        models["timm 0.x imports"] = with_block(detector, TimmMixer(32))
    fork_block = import_plugin(Path(sys.modules["ultralytics.nn.extra_modules"].__path__[0]).parent
                               / "modules/block.py")
    EMA = fork_block.EMA
    EMA.__module__, stock_block.EMA = stock_block.__name__, EMA  # pickled as the fork's block.py pickles it
    models["class appended to a stock file (EMA in block.py)"] = with_block(detector, EMA(32))
    return models


@pytest.fixture(scope="module")
def fork(tmp_path_factory):
    """The tree, and one checkpoint per idiom saved from it with today's ultralytics."""
    root = write_tree(tmp_path_factory.mktemp("fork"))
    detector = load(CORPUS / "ul8.4-detect.pt").model
    import ultralytics.nn.modules.block as stock_block

    saved = {}
    with mounted([root / "ultralytics"]):
        try:
            for i, (idiom, model) in enumerate(_fork_models(detector).items()):
                path = root / f"idiom{i}.pt"
                if "moved" in idiom:
                    with pickled_under("ultralytics.nn.attention_v1", {"MovedAttention": type(model.model[-2][1])}):
                        saved[idiom] = save_checkpoint(model, path, IMGSZ[0])
                else:
                    saved[idiom] = save_checkpoint(model, path, IMGSZ[0])
        finally:
            vars(stock_block).pop("EMA", None)
    return root, saved


IDIOMS = ["forward chosen in __init__ (FasterNet PConv)", "head holds Detect.forward", "class moved after training",
          "timm 0.x imports", "class appended to a stock file (EMA in block.py)"]


@pytest.mark.filterwarnings("ignore:Importing from timm.models.layers:FutureWarning")  # the fork's timm 0.x import
@pytest.mark.parametrize("idiom", IDIOMS)
def test_fork_idiom_loads_with_fork_and_exports_with_parity(fork, idiom, tmp_path):
    root, saved = fork
    if idiom not in saved:
        pytest.skip("timm is not installed")
    loaded = load(saved[idiom], fork=root)
    notes = " ".join(loaded.notes)
    assert ("found by class name in the fork's" in notes) == ("moved" in idiom)
    assert ("fork's copy of a stock file" in notes) == ("appended" in idiom)
    assert "timm.models.layers.weight_init" not in sys.modules  # timm 0.x names live only while the fork is mounted
    built = export(loaded, tmp_path / "fork.onnx", OnnxOptions(imgsz=IMGSZ, simplify=False))
    report = verify_export(built.path, loaded, detections=Detections(conf=0.0))
    assert report.passed, report.worst()
    assert report.detections and all(d.recall is not None and d.recall > 0.9 for d in report.detections)


def test_appended_class_through_the_cli_is_reported_and_stock_classes_stay_stock(fork, tmp_path):
    import ultralytics.nn.modules.block as stock_block

    root, saved = fork
    checkpoint = saved["class appended to a stock file (EMA in block.py)"]
    out = tmp_path / "ema.onnx"
    result = runner.invoke(app, ["export", str(checkpoint), "--fork", str(root), "--imgsz", "64", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "passed" in result.stdout and "fork's copy of a stock file" in result.output and out.exists()
    loaded = load(checkpoint, fork=root)
    assert type(loaded.model.model[-2][0]) is stock_block.C3k2 and not hasattr(stock_block, "EMA")
    assert type(loaded.model.model[-2][1]).__module__ == "ultralytics.nn.modules.attn_deploy_plugin_block"


def test_without_the_class_in_the_fork_the_message_does_not_ask_for_fork(fork, tmp_path):
    root, saved = fork
    empty = write_tree(tmp_path)
    (empty / "ultralytics/nn/extra_modules/moved.py").unlink()
    with pytest.raises(AttnDeployError) as info:
        load(saved["class moved after training"], fork=empty)
    message = str(info.value)
    assert "ultralytics.nn.attention_v1.MovedAttention" in message and "Point at the fork" not in message
