"""ONNX: export a loaded detector to a file that ultralytics and onnxruntime run, and run it.

The export uses torch's TorchScript-based exporter, as ultralytics does: it is the path whose
failures on attention code (``aten::diag``, non-dividing adaptive pooling, fused MHA) the rewrite
engine addresses.
"""

import ast
import collections
import contextlib
import copy
import dataclasses
import datetime
import io
import os
import re
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import AttnDeployError
from ..heads import Head
from ..loading import LoadedModel
from ..files import check_writable, write_atomic
from . import ExportResult

INPUT_NAME = "images"
MAX_IR_VERSION = 10  # what the onnxruntime releases in use read, as ultralytics caps it


@dataclass
class OnnxOptions:
    imgsz: tuple[int, int] = (640, 640)
    batch: int = 1
    dynamic: bool = False
    opset: int = 18
    simplify: bool = True
    force: bool = False
    pinned: bool = False  # the user chose ``opset``; otherwise a module that needs a higher one gets it, with a note


def _export_copy(model: nn.Module, dynamic: bool) -> nn.Module:
    """A copy whose head returns what ultralytics exports: its inference outputs alone, anchors recomputed."""
    from ultralytics.nn.modules import Classify, Detect, RTDETRDecoder

    model = copy.deepcopy(model)
    for m in model.modules():
        if isinstance(m, (Detect, RTDETRDecoder, Classify)):
            m.export, m.format, m.dynamic = True, "onnx", dynamic
        if isinstance(m, Detect):
            m.shape = None
    return model


def _dynamic_axes(dynamic: bool, outputs: list[str]) -> dict | None:
    # Only the batch axis: the rewrite engine specialises everything else to the export shape.
    return {name: {0: "batch"} for name in [INPUT_NAME, *outputs]} if dynamic else None


def _trace(module: nn.Module, args: tuple, f, opset: int, names: tuple[list, list] = (None, None),
           dynamic_axes: dict | None = None, kwargs: dict | None = None) -> None:
    from .symbolics import register

    register()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation warnings on published code are expected
        torch.onnx.export(module, args, f, kwargs=kwargs, dynamo=False, opset_version=opset, input_names=names[0],
                          output_names=names[1], dynamic_axes=dynamic_axes)


def module_to_onnx(module: nn.Module, call, opset: int = 18, dynamic: bool = False):
    """``module`` alone, exported as ``call`` (a ``rewrite.LayerCall``) calls it, and simplified."""
    import onnx

    tensors = [a for a in call.args if isinstance(a, torch.Tensor)]
    names = [f"input{i}" for i in range(len(tensors))]
    axes = {name: {0: "batch"} for name in names} if dynamic else None
    f = io.BytesIO()
    try:
        with _native_output_silenced():  # a failing trace dumps its whole graph; the failure is the answer
            _trace(module, call.args, f, opset, (names, None), axes, call.kwargs)
            return _simplify(onnx.load_from_string(f.getvalue()), [])
    except Exception as e:
        raise AttnDeployError(_failed_op(e)) from e


def op_counts(module: nn.Module, call, opset: int = 18, dynamic: bool = False) -> dict[str, int]:
    """Nodes per op type of ``module`` exported alone (``module_to_onnx``)."""
    graph = module_to_onnx(module, call, opset, dynamic).graph
    return dict(sorted(collections.Counter(node.op_type for node in graph.node).items()))


def _failed_op(error: Exception) -> str:
    """The op an export failed on (``aten::diag``, ``operator adaptive_avg_pool2d``), and the opset that has it."""
    text = str(error)
    found = re.search(r"\b(\w+::\w+)|of (operator \w+)", text)
    if not found:
        return f"{type(error).__name__}: {text.splitlines()[0][:200]}"
    since = _needed_opset(error)
    return next(g for g in found.groups() if g) + (f" (needs --opset {since})" if since else "")


def _own_code(model: nn.Module) -> list[str]:
    """Paths of the modules that are the user's code, and of torch layers inside them, deepest first.

    Ultralytics' blocks, and torch layers directly inside them, export; the attention code pasted into a
    fork, whatever its class, is what may not.
    """
    own: set[str] = set()
    for path, module in model.named_modules():
        home = type(module).__module__
        parent = path.rpartition(".")[0]
        if path and not home.startswith("ultralytics.") and (not home.startswith("torch.") or parent in own):
            own.add(path)
    return sorted(own, key=lambda p: -p.count("."))


class _Bound(nn.Module):
    """``module`` called with its keyword arguments fixed: the tracer would turn a bool keyword into a tensor."""

    def __init__(self, module: nn.Module, kwargs: dict):
        super().__init__()
        self.module, self.kwargs = module, kwargs

    def forward(self, *args):
        return self.module(*args, **self.kwargs)


def _culprits(model: nn.Module, im: torch.Tensor, options: OnnxOptions) -> list[str]:
    """Export each of the user's modules alone at its feature shape; name the leaf-most that fail, with the op."""
    from ..rewrite.capture import capture

    calls, own = capture(model, im), _own_code(model)
    failed: dict[str, str] = {}
    for path in own:
        if path not in calls or any(f.startswith(f"{path}.") for f in failed):
            continue
        module = model.get_submodule(path)
        try:
            with _native_output_silenced():  # the failing trace's graph dump; the op named is the answer
                _trace(_Bound(module, calls[path].kwargs), calls[path].args, io.BytesIO(), options.opset)
        except Exception as e:
            outer = min((p for p in own if path.startswith(f"{p}.")), key=len, default=None)
            within = f" in {outer} ({type(model.get_submodule(outer)).__name__})" if outer else ""
            failed[path] = f"{path} ({type(module).__name__}){within}: {_failed_op(e)}"
    return list(failed.values())


def _explain(model: nn.Module, im: torch.Tensor, options: OnnxOptions, error: Exception) -> AttnDeployError:
    culprits = _culprits(model, im, options) or [f"the model: {_failed_op(error)}"]
    listed = "\n  ".join(culprits)
    return AttnDeployError(
        f"ONNX export failed (opset {options.opset}); these modules use ops that torch.onnx cannot export "
        f"in their published form:\n  {listed}"
    )


@contextlib.contextmanager
def _redirected(fds: tuple[int, ...], target: int):
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(fd) for fd in fds]
    for fd in fds:
        os.dup2(target, fd)
    try:
        yield
    finally:
        for fd, copy_ in zip(fds, saved):
            os.dup2(copy_, fd)
            os.close(copy_)


@contextlib.contextmanager
def _native_output_silenced():
    with open(os.devnull, "w") as devnull, _redirected((1, 2), devnull.fileno()):
        yield


def _simplify(model_onnx, notes: list[str]):
    import onnxsim

    try:
        # its C++ core prints a line per node it cannot fold (hundreds in a dynamic or rewritten graph) on
        # stdout, which belongs to --json; its failures raise, and are noted
        with _native_output_silenced():
            simplified, ok = onnxsim.simplify(model_onnx)
        if ok:
            return simplified
        notes.append("onnxsim could not validate its simplification")
    except Exception as e:
        notes.append(f"onnxsim failed ({type(e).__name__}: {str(e).splitlines()[0][:120]})")
    import onnxslim

    try:
        slimmed = onnxslim.slim(model_onnx)
        notes.append("simplified with onnxslim instead")
        return slimmed
    except Exception as e:
        notes.append(f"onnxslim failed too ({type(e).__name__}); the graph is left unsimplified")
        return model_onnx


def metadata(loaded: LoadedModel, options: OnnxOptions, head: Head) -> dict:
    """The metadata ultralytics' AutoBackend reads from an exported model (``head``: its ``heads`` spec)."""
    import ultralytics

    from .. import __version__

    pose = {"kpt_shape": list(head.kpt_shape)} if head.task == "pose" else {}
    return {
        "description": f"attn-deploy {__version__} export of {loaded.yaml_name}",
        "author": "attn-deploy",
        "date": datetime.datetime.now().astimezone().isoformat(),
        "version": ultralytics.__version__,
        "license": "AGPL-3.0 License (https://ultralytics.com/license)",
        "docs": "https://docs.ultralytics.com",
        "stride": loaded.stride,
        "task": head.task,
        "batch": options.batch,
        "imgsz": list(options.imgsz),
        "names": loaded.names,
        "args": {"batch": options.batch, "dynamic": options.dynamic, "half": False, "nms": False},
        "channels": 3,
        "end2end": head.end2end,
        **pose,
    }


def with_outputs(model_onnx, names: list[str]):
    """A copy of ``model_onnx`` that also outputs the tensors ``names`` (typed by shape inference)."""
    import onnx

    inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(model_onnx).graph.value_info}
    present = {o.name for o in model_onnx.graph.output}
    probed = onnx.ModelProto()
    probed.CopyFrom(model_onnx)
    probed.graph.output.extend(inferred[n] for n in dict.fromkeys(names) if n in inferred and n not in present)
    return probed


def _scope(node_name: str) -> str:
    """``/model.10/attn/qkvs.0/Conv`` -> ``model.10.attn.qkvs.0``: the module path torch's exporter recorded.

    A called container's child is recorded with the container's name in front (``/model.10/fc/fc.0/MatMul``
    for ``model.10.fc.0``): the container's own segment is then dropped.
    """
    if "/" not in node_name:
        return ""
    segments = node_name.rsplit("/", 1)[0].strip("/").split("/")
    kept = [s for s, after in zip(segments, segments[1:] + [""]) if not after.startswith(f"{s}.")]
    return ".".join(kept)


def node_scopes(graph) -> dict[str, str]:
    """Each node's module path; a node the simplifier created without one takes its first input's producer's."""
    scopes, produced_in = {}, {}
    for node in graph.node:  # topologically sorted, so producers come first
        scope = _scope(node.name) or next((produced_in[i] for i in node.input if i in produced_in), "")
        scopes[node.name] = scope
        produced_in.update(dict.fromkeys(node.output, scope))
    return scopes


def _inside(scope: str, path: str) -> bool:
    return scope == path or scope.startswith(path + ".")


def module_outputs(model_onnx, paths: list[str]) -> dict[str, str]:
    """For each module path, the tensor its nodes compute and pass on (to a node outside it, or out of the graph).

    Modules whose nodes pass on no tensor, or several, are left out: their output cannot be told apart.
    """
    graph = model_onnx.graph
    scopes = node_scopes(graph)
    consumers: dict[str, list[str]] = collections.defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(scopes[node.name])
    graph_outputs = {o.name for o in graph.output}
    found = {}
    for path in paths:
        passed_on = {out for node in graph.node if node.op_type != "Constant" and _inside(scopes[node.name], path)
                     for out in node.output
                     if out in graph_outputs or any(not _inside(c, path) for c in consumers[out])}
        if len(passed_on) == 1:
            found[path] = passed_on.pop()
    return found


def read_metadata(path: Path) -> dict:
    """The ultralytics metadata of an ONNX file, with its literal values (sizes, names, args) parsed."""
    import onnx

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props
             if not p.key.startswith("onnxsim.")}  # onnxsim records its own settings there
    literal = {"stride", "batch", "imgsz", "names", "args", "channels", "end2end", "kpt_shape"}
    return {k: ast.literal_eval(v) if k in literal else v for k, v in props.items()}


def _trace_model(model: nn.Module, im: torch.Tensor, raw: Path, options: OnnxOptions, names: list[str]) -> None:
    with _native_output_silenced():  # a failing trace dumps its whole graph; _explain names the module
        _trace(model, (im,), raw, options.opset, ([INPUT_NAME], names), _dynamic_axes(options.dynamic, names))


def _needed_opset(error: Exception) -> int | None:
    """The opset an export failure says its op was added in, if it says so."""
    since = re.search(r"added in version (\d+)", str(error))
    return int(since.group(1)) if since else None


def export(loaded: LoadedModel, output: Path, options: OnnxOptions) -> ExportResult:
    """Export ``loaded`` to ``output`` (static shape unless ``options.dynamic``), written atomically; the outputs
    are named as ultralytics names them (``output0``, and ``output1`` for the segment head's prototypes)."""
    import onnx

    from ..heads import of_model

    output = Path(output)
    check_writable(output, options.force)
    loaded.check_input(options.imgsz, options.batch)
    head = of_model(loaded.model)
    model = _export_copy(loaded.model, options.dynamic)
    im = torch.zeros(options.batch, 3, *options.imgsz)
    names = head.output_names
    result = ExportResult(output, "onnx")
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.onnx"
        try:
            _trace_model(model, im, raw, options, names)
        except Exception as e:
            needed = _needed_opset(e)
            if options.pinned or needed is None or needed <= options.opset:
                raise _explain(model, im, options, e) from e
            result.notes.append(f"opset {needed}, not the default {options.opset}: {_failed_op(e).split(' (')[0]} "
                                f"exists from opset {needed} (--opset pins one)")
            options = dataclasses.replace(options, opset=needed)
            try:
                _trace_model(model, im, raw, options, names)
            except Exception as again:
                raise _explain(model, im, options, again) from again
        model_onnx = onnx.load(raw)
    if options.simplify:
        model_onnx = _simplify(model_onnx, result.notes)
    for key, value in metadata(loaded, options, head).items():
        model_onnx.metadata_props.add(key=key, value=str(value))
    model_onnx.ir_version = min(model_onnx.ir_version, MAX_IR_VERSION)
    write_atomic(output, lambda tmp: onnx.save(model_onnx, tmp))
    return result


def export_with_ultralytics(loaded: LoadedModel, output: Path, imgsz: tuple[int, int],
                            force: bool = False) -> ExportResult:
    """ultralytics' own default ONNX export of ``loaded`` (its exporter, opset and simplifier, no rewrite): what
    users get from ``yolo export format=onnx``, the baseline to beat. The model comes from the safe loader, never
    from ultralytics' own unpickling of the file. Written atomically."""
    import shutil

    import ultralytics
    from ultralytics.engine.exporter import Exporter

    output = Path(output)
    check_writable(output, force)
    model = copy.deepcopy(loaded.model)
    model.task, model.names = loaded.task, loaded.names
    with tempfile.TemporaryDirectory() as tmp:
        model.pt_path = str(Path(tmp) / f"{output.stem}.pt")  # the exporter writes beside the model's source
        try:
            with _native_output_silenced():  # its log and onnxslim's go to stdout, which belongs to --json
                written = Exporter(overrides={"format": "onnx", "imgsz": list(imgsz), "batch": 1})(model=model)
        except Exception as e:
            raise AttnDeployError(f"ultralytics' ONNX export of {loaded.source} failed: {_failed_op(e)}") from e
        write_atomic(output, lambda path: shutil.copyfile(written, path))
    return ExportResult(output, "onnx", [f"ultralytics {ultralytics.__version__} default ONNX export"])


class Runner:
    """Runs an ONNX file in onnxruntime on CPU.

    ``spinning=False`` stops the intra-op threads from spinning after each run. Leave it on for a session timed
    alone (the runtime's default); turn it off where several live sessions run in turn, or the idle ones' spinning
    threads take the cores from the one running (YOLOv8n-CGA at 640 on 2 threads: 26 ms alone, 58 ms each with two
    sessions interleaved, 35-36 ms with spinning off).
    """

    backend = "onnxruntime"
    device = "cpu"

    def __init__(self, path: Path, threads: int | None = None, profiling: bool = False, spinning: bool = True):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        if not spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.spinning = spinning
        self.profile_dir = tempfile.TemporaryDirectory() if profiling else None
        if profiling:
            options.enable_profiling = True
            options.profile_file_prefix = str(Path(self.profile_dir.name) / "ort")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise AttnDeployError(f"onnxruntime cannot load {path}: {str(e).splitlines()[0][:300]}") from e
        self.input = self.session.get_inputs()[0]
        args = ast.literal_eval(self.metadata.get("args", "{}"))  # mixed precision and Q/DQ keep fp32 in and out
        half = args.get("half", False) or self.input.type == "tensor(float16)"
        self.precision = "int8" if args.get("int8") else "fp16" if half else "fp32"
        self.version = ort.__version__
        self.runs = 0

    @property
    def input_shape(self) -> list:
        return self.input.shape

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        x = inputs[0]
        fixed = [d for d in self.input.shape]
        if len(fixed) != x.ndim or any(isinstance(d, int) and d != s for d, s in zip(fixed, x.shape)):
            raise AttnDeployError(f"input of shape {tuple(x.shape)} does not fit the model's input {fixed}")
        dtype = np.float16 if self.input.type == "tensor(float16)" else np.float32
        self.runs += 1
        return self.session.run(None, {self.input.name: x.astype(dtype, copy=False)})

    def op_times(self, x: np.ndarray, runs: int) -> list[tuple[str, str, float]]:
        """(node, op type, ms per run) over ``runs`` more runs, from session profiling (needs ``profiling=True``).

        The profile holds every run since the session opened; each node's earlier occurrences are dropped."""
        import json

        earlier = self.runs
        for _ in range(runs):
            self.run([x])
        events = json.loads(Path(self.session.end_profiling()).read_text())
        seen: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
        for e in events:
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                seen[(e["name"].removesuffix("_kernel_time"), e["args"]["op_name"])].append(e["dur"] / 1e3)
        return [(name, kind, sum(ms[earlier:]) / runs) for (name, kind), ms in seen.items() if ms[earlier:]]

    def close(self) -> None:
        self.session = None
        if self.profile_dir:
            self.profile_dir.cleanup()
