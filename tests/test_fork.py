"""A fork's source tree as it is: a synthetic fork written by the test, checkpoints saved from inside it, loaded
with --fork and with --plugin, exported with parity. And resolution by name rebuilding the zoo's module."""

import copy
import sys
import textwrap
import types

import pytest
import torch
import ultralytics
from torch import nn
from typer.testing import CliRunner

from attn_deploy.cli import app
from attn_deploy.errors import AttnDeployError
from attn_deploy.loading import load, save_checkpoint
from attn_deploy.loading.fork import mounted
from attn_deploy.models import SimAM

from .conftest import FORK_PATH, pickled_under

runner = CliRunner()
IMGSZ = "64"
NOT_RUN = "raise RuntimeError('this __init__.py must not run: it imports every module and CUDA extension')\n"

FORK = {
    "ultralytics/__init__.py": NOT_RUN,
    "ultralytics/nn/__init__.py": NOT_RUN,
    # The fork's copies of stock modules: stock stays stock; a copy given as --plugin adds its own classes.
    "ultralytics/nn/modules/conv.py": "raise RuntimeError('the fork must not replace stock modules')\n",
    "ultralytics/nn/modules/block.py": """
        from torch import nn

        from .conv import Conv


        class C2fFork(nn.Module):
            def __init__(self, c):
                super().__init__()
                self.cv = Conv(c, c, 1)

            def forward(self, x):
                return self.cv(x)
        """,
    "ultralytics/nn/extra_modules/__init__.py": NOT_RUN,
    "ultralytics/nn/extra_modules/gates.py": """
        import torch


        def hard_gate(x):
            return torch.nn.functional.hardsigmoid(x)
        """,
    "ultralytics/nn/extra_modules/attention.py": """
        from torch import nn

        from ..backbone.mixer import ChannelMixer
        from ..modules.conv import Conv
        from .gates import hard_gate


        class FocusAttention(nn.Module):
            def __init__(self, c):
                super().__init__()
                self.cv = Conv(c, c, 1)
                self.mix = ChannelMixer(c)
                self.gate = hard_gate  # a function held as an attribute

            def forward(self, x):
                return x * self.gate(self.mix(self.cv(x)))
        """,
    "ultralytics/nn/extra_modules/library.py": """
        from efficientnet_pytorch.utils import MemoryEfficientSwish
        from einops.layers.torch import Reduce
        from timm.layers.mlp import ConvMlp
        from torch import nn

        from ..modules.conv import Conv


        class LibraryAttention(nn.Module):
            def __init__(self, c):
                super().__init__()
                self.mlp = ConvMlp(c, c // 2)
                self.act = MemoryEfficientSwish()
                self.pool = Reduce("b c h w -> b c 1 1", "mean")
                self.cv = Conv(c, c, 1)

            def forward(self, x):
                return self.cv(x + self.act(self.mlp(x)) * self.pool(x).sigmoid())
        """,
    "ultralytics/nn/extra_modules/deformable.py": """
        from torch import nn

        import DCNv3  # the fork's CUDA extension, not built here


        class DeformAttention(nn.Module):
            pass
        """,
    "ultralytics/nn/backbone/__init__.py": NOT_RUN,
    "ultralytics/nn/backbone/mixer.py": """
        from torch import nn

        from ..modules.block import Bottleneck


        class ChannelMixer(nn.Module):
            def __init__(self, c):
                super().__init__()
                self.block = Bottleneck(c, c)
                self.proj = nn.Conv2d(c, c, 1)

            def forward(self, x):
                return self.proj(self.block(x))
        """,
}


def write_tree(root, files: dict[str, str]):
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))
    return root


@pytest.fixture(scope="module")
def detector(fork_checkpoints):
    """The suite's seeded YOLOv8n (norms calibrated, so detection-level parity means something)."""
    return load(fork_checkpoints["simam"]).model


def at_p5(detector: nn.Module, block: nn.Module) -> nn.Module:
    """``detector`` with ``block`` as its attention layer after SPPF, where a fork's YAML places it."""
    model = copy.deepcopy(detector)
    old = model.model[10]
    block.i, block.f, block.type, block.np = old.i, old.f, old.type, old.np
    model.model[10] = block
    return model.eval()


def _installed(*modules: str) -> bool:
    try:
        for module in modules:
            __import__(module)
    except ImportError:
        return False
    return True


LIBRARIES = _installed("timm", "einops", "efficientnet_pytorch")


@pytest.fixture(scope="module")
def fork(tmp_path_factory, detector):
    """The fork tree, and checkpoints saved from inside it (its modules importable by their fork paths): a
    detector with the fork's attention (and, where timm, einops and efficientnet_pytorch are installed, a block
    of their layers), and a model whose module needs the fork's CUDA extension."""
    root = write_tree(tmp_path_factory.mktemp("fork"), FORK)
    with mounted([root / "ultralytics"]):
        from ultralytics.nn.extra_modules.attention import FocusAttention

        torch.manual_seed(0)
        blocks = [FocusAttention(256)]
        if LIBRARIES:
            from ultralytics.nn.extra_modules.library import LibraryAttention

            blocks.append(LibraryAttention(256))
        attention = save_checkpoint(at_p5(detector, nn.Sequential(*blocks)), root / "fork.pt", 64)
        sys.modules["DCNv3"] = types.ModuleType("DCNv3")  # as on the machine the fork was trained on
        try:
            from ultralytics.nn.extra_modules.deformable import DeformAttention

            torch.save({"model": nn.Sequential(DeformAttention())}, root / "dcn.pt")
        finally:
            del sys.modules["DCNv3"]
    return root, attention, root / "dcn.pt"


@pytest.mark.parametrize("how", ["--fork", "--plugin"])
def test_fork_checkpoint_exports_with_parity(fork, how, tmp_path):
    root, checkpoint, _ = fork
    source = root if how == "--fork" else root / "ultralytics/nn/extra_modules/attention.py"
    out = tmp_path / "fork.onnx"
    result = runner.invoke(app, ["export", str(checkpoint), how, str(source), "--imgsz", IMGSZ, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "passed" in result.stdout and "FAIL" not in result.stdout and "resolved" not in result.output
    assert out.exists()


def test_fork_classes_are_the_forks_own_and_the_mount_is_gone_after(fork):
    root, checkpoint, _ = fork
    loaded = load(checkpoint, fork=root)
    focus = loaded.model.model[10][0]
    assert type(focus).__module__ == "ultralytics.nn.extra_modules.attention" and loaded.resolved == {}
    assert type(focus.mix).__module__ == "ultralytics.nn.backbone.mixer"
    assert focus.gate.__module__ == "ultralytics.nn.extra_modules.gates"
    assert sys.modules[type(focus.cv).__module__].__file__.startswith(ultralytics.__path__[0])  # stock's Conv
    if LIBRARIES:
        library = loaded.model.model[10][1]
        assert {type(m).__module__.partition(".")[0] for m in library.children()} >= {
            "timm", "efficientnet_pytorch", "einops"}
    assert "ultralytics.nn.extra_modules" not in sys.modules and "ultralytics.nn.backbone" not in sys.modules


def test_without_the_fork_its_classes_are_unresolved_with_both_hints(fork):
    with pytest.raises(AttnDeployError) as info:
        load(fork[1])
    message = str(info.value)
    assert "ultralytics.nn.extra_modules.attention.FocusAttention" in message
    assert "--fork" in message and "--plugin" in message


def test_a_fork_module_that_fails_to_import_names_the_dependency_and_the_classes(fork):
    root, _, dcn = fork
    with pytest.raises(AttnDeployError) as info:
        load(dcn, fork=root)
    message = str(info.value)
    assert "needs DCNv3" in message and "ultralytics.nn.extra_modules.deformable.DeformAttention" in message


def test_a_forks_copy_of_a_stock_module_as_plugin_supplies_the_classes_it_added(fork, tmp_path):
    """Forks also add classes to stock files (block.py): the copy loads beside stock's, its classes by name."""
    import ultralytics.nn.modules.block as stock

    class C2fFork(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.cv = nn.Conv2d(c, c, 1)

    # Pickled as the fork's block.py pickles it: under the stock module's path.
    C2fFork.__module__, C2fFork.__qualname__, stock.C2fFork = stock.__name__, "C2fFork", C2fFork
    try:
        torch.save({"model": nn.Sequential(C2fFork(8))}, tmp_path / "block.pt")
    finally:
        del stock.C2fFork
    loaded = load(tmp_path / "block.pt", plugins=[fork[0] / "ultralytics/nn/modules/block.py"])
    assert type(loaded.model[0]).__module__ == "ultralytics.nn.modules.attn_deploy_plugin_block"
    assert type(loaded.model[0]).__init__.__globals__["Conv"].__module__ == "ultralytics.nn.modules.conv"  # stock's
    assert "ultralytics.nn.modules.block.C2fFork" in loaded.resolved


def test_fork_that_is_not_an_ultralytics_tree_is_a_clear_error(fork, tmp_path):
    with pytest.raises(AttnDeployError, match="neither it nor .* is an ultralytics source folder"):
        load(fork[1], fork=tmp_path)


class TutorialSimAM(nn.Module):
    """SimAM as a popular tutorial prints it: ``self.activation``, where the paper's code has ``self.activaton``."""

    def __init__(self, e_lambda=1e-4):
        super().__init__()
        self.activation = nn.Sigmoid()
        self.e_lambda = e_lambda

    def forward(self, x):
        n = x.shape[2] * x.shape[3] - 1
        d = (x - x.mean(dim=[2, 3], keepdim=True)).pow(2)
        return x * self.activation(d / (4 * (d.sum(dim=[2, 3], keepdim=True) / n + self.e_lambda)) + 0.5)


@pytest.fixture(scope="module")
def tutorial_simam(tmp_path_factory, detector):
    path = tmp_path_factory.mktemp("tutorial") / "simam.pt"
    with pickled_under(FORK_PATH, {"SimAM": TutorialSimAM}):
        return save_checkpoint(at_p5(detector, TutorialSimAM(1e-3)), path, 64)


def test_resolved_class_is_rebuilt_as_a_fresh_zoo_module(tutorial_simam):
    loaded = load(tutorial_simam)
    block = loaded.model.model[10]
    assert type(block) is SimAM and block.e_lambda == 1e-3 and not hasattr(block, "activation")
    assert loaded.resolved == {f"{FORK_PATH}.SimAM": "attn_deploy.models.simam.SimAM"}
    (note,) = loaded.notes
    assert f"{FORK_PATH}.SimAM" in note and "zoo's published form" in note
    with torch.no_grad():
        loaded.model(torch.rand(1, 3, 64, 64))


def test_resolved_tutorial_simam_exports_to_onnx_and_openvino_with_parity(tutorial_simam, tmp_path):
    out = tmp_path / "simam.onnx"
    result = runner.invoke(app, ["export", str(tutorial_simam), "--target", "onnx,openvino", "--imgsz", IMGSZ,
                                 "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "FAIL" not in result.stdout and "openvino" in result.stdout
    assert "Reference:" in result.stdout and "zoo's published form" in result.stdout
