"""Hostile checkpoints, written by hand with pickle opcodes: every one is refused through the CLI with exit 2,
one message naming what it asked for, no traceback, and no side effect (each would create a marker file).
Then a seeded fuzz of a valid checkpoint: every mutation loads or is refused, and none runs code or hangs."""

import os
import pickle
import random
import signal
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner
from ultralytics.nn.modules import Conv

from attn_deploy.cli import app
from attn_deploy.errors import AttnDeployError
from attn_deploy.loading import load
from attn_deploy.models import SimAM

from .conftest import FORK_PATH, pickled_under

runner = CliRunner()


# -- writing pickles by hand (protocol 2, as torch.save writes them)

def name(module: str, attr: str) -> bytes:
    return b"c" + f"{module}\n{attr}\n".encode()


def value(obj) -> bytes:
    return pickle.dumps(obj, protocol=2)[2:-1]  # the opcodes that push obj, without PROTO and STOP


def call(func: bytes, *args: bytes) -> bytes:
    return func + b"(" + b"".join(args) + b"tR"  # MARK args TUPLE REDUCE


def new(cls: bytes, state: bytes) -> bytes:
    return cls + b")\x81" + state + b"b"  # EMPTY_TUPLE NEWOBJ state BUILD


def checkpoint(**fields: bytes) -> bytes:
    return b"\x80\x02}(" + b"".join(value(k) + v for k, v in fields.items()) + b"u."


def torch_zip(path: Path, data_pkl: bytes | None, storages: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        if data_pkl is not None:
            z.writestr("archive/data.pkl", data_pkl)
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")
        for key, raw in (storages or {}).items():
            z.writestr(f"archive/data/{key}", raw)
    return path


def module_state(**extra: bytes) -> bytes:
    """An nn.Module's pickled state: Identity's own, plus ``extra`` attributes."""
    state = dict(nn.Identity().__getstate__())
    return b"}(" + b"".join(value(k) + value(v) for k, v in state.items()) + b"".join(
        value(k) + v for k, v in extra.items()) + b"u"


IDENTITY = name("torch.nn.modules.linear", "Identity")
CASES = (
    "os.system", "posix.system", "nt.system", "eval", "exec", "getattr", "__import__", "subprocess", "runpy",
    "importlib", "AutoBackend path", "AutoBackend URL", "YOLO", "DetectionModel YAML", "Conv2d called",
    "torch.load nested", "pickle.loads nested", "numpy object array", "numpy object array of calls", "legacy format",
    "no data.pkl", "truncated data.pkl", "huge storage", "fork path beside os.system", "INST constructs",
    "APPENDS calls a method", "forward replaced", "hooks", "attribute walk", "dunder", "state set twice",
    # Values the tool or torch would call after loading (each function reads a pickle or writes a file when called).
    "train_args get", "names keys", "namespace shadows its method", "compiled call", "attribute hides submodule",
    "stride is_floating_point", "forward bound to another module", "getattr load method", "getattr property",
    "getattr non-module class", "unimported module",
    # Bounds: each would hang or end in a traceback without them.
    "LSTM layers", "tuple DAG key", "one-hash keys", "deep list", "huge imgsz", "legacy then zip", "dotdot folder",
)


def namespace(cls: bytes, **attrs: bytes) -> bytes:
    return new(cls, b"}(" + b"".join(value(k) + v for k, v in attrs.items()) + b"u")


def tuple_dag(levels: int) -> bytes:
    """A tuple whose hash visits 2**levels leaves, in a few bytes: each level holds the one below twice (memo)."""
    out = value(1) + value(1) + b"\x86q\x800"  # TUPLE2, BINPUT 128, POP
    for i in range(128, 128 + levels):
        out += (b"h" + bytes([i])) * 2 + b"\x86q" + bytes([i + 1]) + b"0"  # BINGET i twice, TUPLE2, BINPUT, POP
    out += b"h" + bytes([128 + levels])
    return out


def legacy_then_zip(root: Path, marker: Path) -> Path:
    """torch's legacy format (torch.load runs it) with a harmless torch zip after it (which a zip reader finds)."""
    legacy, harmless = root / "legacy-part.pt", root / "zip-part.pt"
    torch.save({"model": _System(f"touch {marker}")}, legacy, _use_new_zipfile_serialization=False)
    torch.save({"model": nn.Identity()}, harmless)
    both = root / "both.pt"
    both.write_bytes(legacy.read_bytes() + harmless.read_bytes())
    return both


def dotdot_folder(root: Path) -> Path:
    source = root / "plain.pt"
    torch.save({"model": nn.Identity()}, source)
    target = root / "dotdot.pt"
    with zipfile.ZipFile(source) as z, zipfile.ZipFile(target, "w") as out:
        for info in z.infolist():
            out.writestr("../" + info.filename.partition("/")[2], z.read(info))
    return target


def huge_imgsz(root: Path) -> Path:
    path = root / "imgsz.pt"
    torch.save({"model": nn.Sequential(Conv(3, 8, 3, 2)), "train_args": {"imgsz": 16384}}, path)
    return path


class _System:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _cases(marker: Path, root: Path) -> dict[str, tuple[bytes | Path, str]]:
    """Each hostile file: its data.pkl (or the file itself) and what the message must name."""
    touch = value(f"touch {marker}")
    python = value(f"open({str(marker)!r}, 'w')")
    evil = root / "second.pt"
    torch.save({"model": _System(f"touch {marker}")}, evil)  # what AutoBackend would load with a plain unpickler
    script = root / "evil.py"
    script.write_text(f"open({str(marker)!r}, 'w')\n")
    nested = pickle.dumps(_System(f"touch {marker}"))
    legacy = root / "legacy.pt"
    torch.save({"model": _System(f"touch {marker}")}, legacy, _use_new_zipfile_serialization=False)
    objects = np.array([1, "a"], dtype=object)
    return {
        "os.system": (checkpoint(model=call(name("os", "system"), touch)), "os.system"),
        "posix.system": (checkpoint(model=call(name("posix", "system"), touch)), "posix.system"),
        "nt.system": (checkpoint(model=call(name("nt", "system"), touch)), "nt.system"),
        "eval": (checkpoint(model=call(name("builtins", "eval"), value(f"__import__('os').system('touch {marker}')"))),
                 "builtins.eval"),
        "exec": (checkpoint(model=call(name("builtins", "exec"), python)), "builtins.exec"),
        "getattr": (checkpoint(model=call(call(name("builtins", "getattr"), call(name("builtins", "__import__"),
                                                                              value("os")), value("system")), touch)),
                    "builtins.__import__"),
        "__import__": (checkpoint(model=call(name("builtins", "__import__"), value("os"))), "builtins.__import__"),
        "subprocess": (checkpoint(model=call(name("subprocess", "check_call"), value(["touch", str(marker)]))),
                       "subprocess.check_call"),
        "runpy": (checkpoint(model=call(name("runpy", "run_path"), value(str(script)))), "runpy.run_path"),
        "importlib": (checkpoint(model=call(name("importlib", "import_module"), value("evil"))),
                      "importlib.import_module"),
        "AutoBackend path": (checkpoint(model=call(name("ultralytics.nn.autobackend", "AutoBackend"),
                                                   value(str(evil)))), "ultralytics.nn.autobackend.AutoBackend"),
        "AutoBackend URL": (checkpoint(model=call(name("ultralytics.nn.autobackend", "AutoBackend"),
                                                  value("http://127.0.0.1:9/evil.pt"))),
                            "ultralytics.nn.autobackend.AutoBackend"),
        "YOLO": (checkpoint(model=call(name("ultralytics.models.yolo.model", "YOLO"), value(str(evil)))),
                 "ultralytics.models.yolo.model.YOLO"),
        "DetectionModel YAML": (checkpoint(model=call(name("ultralytics.nn.tasks", "DetectionModel"),
                                                      value("yolov8n.yaml"))), "ultralytics.nn.tasks.DetectionModel"),
        "Conv2d called": (checkpoint(model=call(name("torch.nn", "Conv2d"), value(3), value(8), value(1))),
                          "torch.nn.Conv2d"),
        "torch.load nested": (checkpoint(model=call(name("torch", "load"), value(nested))), "torch.load"),
        "pickle.loads nested": (checkpoint(model=call(name("pickle", "loads"), value(nested))), "pickle.loads"),
        "numpy object array": (checkpoint(model=value(objects)), "numpy.dtype('O8')"),
        "numpy object array of calls": (checkpoint(model=value(np.array([_System(f"touch {marker}")], dtype=object))),
                                        "posix.system"),
        "legacy format": (legacy, "legacy (non-zip) format"),
        "no data.pkl": (torch_zip(root / "empty.pt", None), "0 top-level data.pkl"),
        "truncated data.pkl": (checkpoint(model=call(name("posix", "system"), touch))[:20], "truncated"),
        "huge storage": (torch_zip(root / "huge.pt", checkpoint(model=call(
            name("torch._utils", "_rebuild_tensor_v2"),
            b"(" + value("storage") + name("torch", "FloatStorage") + value("0") + value("cpu") + value(10**12) + b"tQ",
            value(0), value((10**12,)), value((1,)), value(False), call(name("collections", "OrderedDict")))),
            {"0": bytes(16)}), "declares 1000000000000"),
        "fork path beside os.system": (checkpoint(
            model=new(name(FORK_PATH, "SimAM"), module_state(e_lambda=value(1e-4))),
            note=call(name("posix", "system"), touch)), "posix.system"),
        # Our own variants: ways to make the unpickler call something other than REDUCE.
        "INST constructs": (checkpoint(model=b"(itorch.nn.modules.linear\nIdentity\n"),
                            "torch.nn.modules.linear.Identity"),
        "APPENDS calls a method": (checkpoint(model=new(IDENTITY, module_state(extend=name("torch", "sigmoid")))
                                              + b"(" + value(1) + b"e"), "Identity"),
        "forward replaced": (checkpoint(model=new(IDENTITY, module_state(forward=name("torch", "sigmoid")))),
                             "'forward'"),
        "hooks": (checkpoint(model=new(IDENTITY, module_state(_forward_hooks=b"}" + value(0) + name("torch", "sigmoid")
                                                              + b"s"))), "_forward_hooks"),
        "attribute walk": (checkpoint(model=call(name("torch", "os.system"), touch)), "torch.os.system"),
        "dunder": (checkpoint(model=name("torch", "__builtins__")), "torch.__builtins__"),
        "state set twice": (checkpoint(model=new(IDENTITY, module_state()) + module_state() + b"b"), "Identity"),
        **_after_loading_cases(),
        **_bound_cases(marker, root),
    }


STRIP = name("ultralytics.utils.torch_utils", "strip_optimizer")  # reads a file with plain torch.load when called
SETTINGS = name("ultralytics.utils", "SettingsManager")  # writes a settings file when called
NAMESPACE = name("types", "SimpleNamespace")
ITERABLE = name("ultralytics.utils", "IterableSimpleNamespace")


def _after_loading_cases() -> dict[str, tuple[bytes, str]]:
    """Values the tool's later steps (describe, metadata, .float(), forward) would call."""
    sequential = name("torch.nn.modules.container", "Sequential")
    conv = name("ultralytics.nn.modules.conv", "Conv")
    return {
        "train_args get": (checkpoint(model=new(IDENTITY, module_state()),
                                      train_args=namespace(NAMESPACE, get=STRIP)), "strip_optimizer"),
        "names keys": (checkpoint(model=new(IDENTITY, module_state(names=namespace(NAMESPACE, keys=SETTINGS)))),
                       "SettingsManager"),
        "namespace shadows its method": (checkpoint(model=new(IDENTITY, module_state()), train_args=namespace(
            ITERABLE, get=name("torch", "sigmoid"))), "would replace its own methods"),
        "compiled call": (checkpoint(model=new(IDENTITY, module_state(_compiled_call_impl=name("torch", "sigmoid")))),
                          "_compiled_call_impl"),
        "attribute hides submodule": (checkpoint(model=new(sequential, module_state(
            _modules=b"}" + value("act") + new(IDENTITY, module_state()) + b"s", act=name("torch", "sigmoid")))),
            "would hide its submodules"),
        "stride is_floating_point": (checkpoint(model=new(conv, module_state(
            stride=namespace(NAMESPACE, is_floating_point=name("torch", "sigmoid"))))), "namespace"),
        "forward bound to another module": (checkpoint(model=new(sequential, module_state(
            forward=call(name("builtins", "getattr"), new(IDENTITY, module_state()), value("forward"))))),
            "'forward'"),
        "getattr load method": (checkpoint(model=new(IDENTITY, module_state(
            f=call(name("builtins", "getattr"), IDENTITY, value("load_state_dict"))))), "load_state_dict"),
        "getattr property": (checkpoint(model=new(IDENTITY, module_state(
            f=call(name("builtins", "getattr"), name("ultralytics.nn.modules.head", "Detect"), value("one2one"))))),
            "Detect.one2one"),
        "getattr non-module class": (checkpoint(model=new(IDENTITY, module_state(
            f=call(name("builtins", "getattr"), SETTINGS, value("update"))))), "SettingsManager"),
        "unimported module": (checkpoint(model=name("ultralytics.trackers.utils.matching", "linear_assignment")),
                              "ultralytics.trackers.utils.matching"),
    }


def _bound_cases(marker: Path, root: Path) -> dict[str, tuple[bytes | Path, str]]:
    """Files whose sizes or shapes would hang the loader or end in a traceback."""
    lstm = name("torch.nn.modules.rnn", "LSTM")
    collide = b"}(" + b"".join(value(k * (2**61 - 1)) + value(0) for k in range(1, 200_001)) + b"u"
    return {
        "LSTM layers": (checkpoint(model=new(lstm, module_state(num_layers=value(10**12), bidirectional=value(False),
                                                                _flat_weights_names=value([])))), "num_layers"),
        "tuple DAG key": (checkpoint(model=b"}" + tuple_dag(64) + value(0) + b"s"), "too large to hash"),
        "one-hash keys": (checkpoint(model=collide), "keys with one hash"),
        "deep list": (checkpoint(model=b"]" * 200_000 + b"a" * 199_999), "levels"),
        "huge imgsz": (huge_imgsz(root), "16384"),
        "legacy then zip": (legacy_then_zip(root, marker), "two readers would read it differently"),
        "dotdot folder": (dotdot_folder(root), "not a plain path"),
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    marker = root / "pwned"
    files = {}
    for case, (content, named) in _cases(marker, root).items():
        path = content if isinstance(content, Path) else torch_zip(root / f"{len(files)}.pt", content)
        files[case] = (path, named)
    return files, marker


def test_corpus_covers_every_case(corpus):
    assert set(corpus[0]) == set(CASES) and len(CASES) >= 20


@pytest.mark.parametrize("case", CASES)
def test_hostile_file_is_refused_by_the_cli_without_side_effect(corpus, case, tmp_path):
    files, marker = corpus
    path, named = files[case]
    out = tmp_path / "out.onnx"
    result = runner.invoke(app, ["export", str(path), "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert named in result.output and "Traceback" not in result.output
    assert result.output.count("error:") == 1
    assert not marker.exists() and not out.exists()


def test_the_payloads_are_real_a_trusted_load_runs_them(tmp_path):
    marker = tmp_path / "ran"
    path = torch_zip(tmp_path / "evil.pt", checkpoint(model=call(name("posix", "system"), value(f"touch {marker}"))))
    result = runner.invoke(app, ["export", str(path), "-o", str(tmp_path / "x.onnx"), "--trust-checkpoint"])
    assert marker.exists()  # what the refusals above prevent
    assert result.exit_code == 2 and "runs any code the file names" in result.output


# -- the seeded fuzz

class _Hang(BaseException):
    """Raised by the alarm: a BaseException, so that the loader's own error handling cannot swallow it."""


def _valid_checkpoint(path: Path, marker: Path) -> Path:
    """A tiny module tree saved the ultralytics way (fp16, in a dict), a zoo class under a fork path."""
    torch.manual_seed(0)
    model = nn.Sequential(Conv(3, 8, 3, 2), SimAM(), nn.Conv2d(8, 4, 1))
    ckpt = {"model": model.half(), "train_args": {"imgsz": 64, "note": f"touch {marker}"}, "epoch": -1}
    with pickled_under(FORK_PATH, {"SimAM": SimAM}):
        torch.save(ckpt, path)
    return path


def _rezip(source: Path, target: Path, rng: random.Random, what: str) -> Path:
    """``source`` rewritten with valid CRCs: data.pkl or one storage with bytes replaced, or the entries shuffled."""
    with zipfile.ZipFile(source) as z:
        entries = [(i.filename, z.read(i)) for i in z.infolist()]
    if what == "shuffle":
        rng.shuffle(entries)
    else:
        chosen = rng.choice([i for i, (n, _) in enumerate(entries) if n.endswith("data.pkl") == (what == "pickle")
                             and (what == "pickle" or "/data/" in n)])
        raw = bytearray(entries[chosen][1])
        for _ in range(rng.randint(1, 3)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        entries[chosen] = (entries[chosen][0], bytes(raw))
    with zipfile.ZipFile(target, "w") as z:
        for filename, raw in entries:
            z.writestr(filename, raw)
    return target


def _raw(source: Path, target: Path, rng: random.Random, what: str) -> Path:
    """``source``'s bytes with some replaced anywhere (the zip's checks see them), or cut at a random offset."""
    raw = bytearray(source.read_bytes())
    if what == "truncate":
        raw = raw[:rng.randrange(len(raw))]
    else:
        for _ in range(rng.randint(1, 4)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
    target.write_bytes(raw)
    return target


MUTATIONS = {"pickle": (_rezip, 150), "storage": (_rezip, 40), "shuffle": (_rezip, 20), "flip": (_raw, 40),
             "truncate": (_raw, 50)}


def _load_within(path: Path, seconds: int) -> str | None:
    """None when ``path`` loads, else the refusal; a hang fails the test (a bound far above any load, a few ms
    each: not a speed assertion)."""
    def hang(signum, frame):
        raise _Hang(f"loading {path} took over {seconds} s")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(seconds)
    try:
        load(path)
        return None
    except AttnDeployError as e:
        return str(e)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_seeded_fuzz_every_mutation_loads_or_is_refused_and_none_runs_code_or_hangs(tmp_path):
    marker = tmp_path / "ran"
    valid = _valid_checkpoint(tmp_path / "valid.pt", marker)
    assert _load_within(valid, 60) is None
    rng, outcomes, refused = random.Random(0), {}, []
    for what, (mutate, count) in MUTATIONS.items():
        for i in range(count):
            path = mutate(valid, tmp_path / f"{what}-{i}.pt", rng, what)
            outcome = "refused" if _load_within(path, 60) else "loaded"
            outcomes.setdefault(what, {}).setdefault(outcome, 0)
            outcomes[what][outcome] += 1
            if outcome == "refused":
                refused.append(path)
            else:
                path.unlink()
    print("fuzz outcomes:", outcomes)
    assert not marker.exists()
    assert outcomes["shuffle"] == {"loaded": 20}  # the entries' order is no part of the format
    assert outcomes["pickle"].get("refused") and outcomes["pickle"].get("loaded")  # both ways were exercised
    for path in random.Random(1).sample(refused, 6):
        result = runner.invoke(app, ["export", str(path), "-o", str(tmp_path / "x.onnx")])
        assert result.exit_code == 2 and "Traceback" not in result.output and result.output.count("error:") == 1


def _doubling(depth: int) -> nn.Module:
    """Each level holds two modules that both hold the next level: a walk from the top visits the bottom 2**depth
    times (what .float() and .eval() do), though the file holds only 3 * depth modules."""
    module = nn.Identity()
    for _ in range(depth):
        parent = nn.Module()
        parent.a, parent.b = nn.Sequential(module), nn.Sequential(module)
        module = parent
    return module


def _self_holding() -> nn.Module:
    module = nn.Module()
    module.inner = nn.Module()
    module.inner.outer = module
    return module


@pytest.mark.parametrize("build, message", [(_doubling, "share submodules so often"),
                                            (_self_holding, "contain themselves")])
def test_module_graphs_no_walk_would_finish_are_refused(tmp_path, build, message):
    path = tmp_path / "graph.pt"
    torch.save({"model": build(24) if build is _doubling else build()}, path)  # 2**24 visits, 48 levels
    assert message in (_load_within(path, 60) or "loaded")
