"""Mixed-precision fp16 ONNX: fp16 everywhere except the nodes that measurably cannot take it.

The fp32 set is chosen by measurement, not by a list of op types. Every node's output is compared,
on the parity inputs (seeded tensors and real images), between the fp32 graph and the fp16 graph.
A node departs when its fp16 output overflows, or differs by more than ``atol + rtol * max|ref|``
(fp16 tolerance). The nodes where a departure starts (none of their inputs departs) go to fp32, with
casts around them, and the measurement repeats until nothing departs or ``MAX_ROUNDS`` is reached.
In attention that finds softmax and its logits, SimAM's reductions and normalisations; weights
and inputs/outputs keep their types at the file's boundary (fp32 in, fp32 out).

The file feeds onnxruntime (CPU and GPU) and TensorRT 11's strongly typed builder.
"""

import collections
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import AttnDeployError
from ..files import check_writable, write_atomic
from . import ExportResult

MAX_ROUNDS = 4
AMPLIFICATION = 2.5  # a node whose relative error exceeds this many times its inputs' error makes error
FP16_ROUNDOFF = 2.0**-11  # the relative error of rounding an exact value to fp16
FP16_MAX = 65504.0
TINY = 1e-12


@dataclass
class Measurement:
    """What one round found: nodes that amplify fp16 error or overflow, and what goes to fp32 for them."""

    amplifiers: list[str]
    kept: list[str]


@dataclass
class MixedPrecision:
    kept_fp32: list[str] = field(default_factory=list)  # node names
    rounds: list[Measurement] = field(default_factory=list)


def _with_all_outputs(model):
    """``model`` with every node output also a graph output, for measuring (shape inference keeps the floats)."""
    from .onnx import with_outputs

    return with_outputs(model, [name for node in model.graph.node for name in node.output])


def _run_all(model, inputs: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    """Every probed output of ``model``, as fp32, for each input."""
    import onnxruntime as ort

    session = ort.InferenceSession(_with_all_outputs(model).SerializeToString(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    names = [o.name for o in session.get_outputs()]
    values = collections.defaultdict(list)
    for x in inputs.values():
        for out_name, value in zip(names, session.run(None, {name: x})):
            values[out_name].append(np.asarray(value, dtype=np.float32))
    return values


def _relative_error(ref: list[np.ndarray], half: list[np.ndarray]) -> float:
    """Mean |half - ref| over mean |ref| (inf on a new NaN or Inf): robust where a tensor crosses zero."""
    worst = 0.0
    for r, h in zip(ref, half):
        if not np.array_equal(np.isfinite(r), np.isfinite(h)):
            return float("inf")
        finite = np.isfinite(r)
        worst = max(worst, float(np.abs(r - h)[finite].mean()) / max(float(np.abs(r[finite]).mean()), TINY))
    return worst


def _measure(model, reference: dict, blocked: list[str], inputs: dict) -> Measurement:
    half = _run_all(_convert(model, blocked), inputs)
    error = {name: _relative_error(reference[name], half[name]) for name in reference if name in half}
    amplifiers = []
    for node in model.graph.node:
        out = [error[o] for o in node.output if o in error]
        if not out:
            continue
        before = max([error.get(i, 0.0) for i in node.input] + [FP16_ROUNDOFF])
        if max(out) > AMPLIFICATION * before or any(np.abs(reference[o][0]).max() > FP16_MAX for o in node.output
                                                     if o in reference):
            amplifiers.append(node)
    return Measurement(sorted(n.name for n in amplifiers), _with_producers(model, amplifiers, blocked))


def _with_producers(model, nodes: list, blocked: list[str]) -> list[str]:
    """``nodes`` and the nodes computing their inputs: a value rounded to fp16 stays rounded after a cast."""
    producers = {out: node for node in model.graph.node for out in node.output}
    chosen = {n.name for n in nodes} | {producers[i].name for n in nodes for i in n.input
                                        if i in producers and producers[i].op_type != "Constant"}
    return sorted(chosen - set(blocked))


def _convert(model, blocked: list[str]):
    from onnxruntime.transformers.float16 import convert_float_to_float16

    half = convert_float_to_float16(model, keep_io_types=True, node_block_list=blocked, disable_shape_infer=False)
    _drop_repeated_nodes(half)
    return half


def _drop_repeated_nodes(model) -> None:
    """The converter casts a shared fp32-only input (Resize scales) once per consumer, under one name."""
    seen, unique = set(), []
    for node in model.graph.node:
        key = node.SerializeToString()
        if key not in seen:
            seen.add(key)
            unique.append(node)
    del model.graph.node[:]
    model.graph.node.extend(unique)


def choose_fp32_nodes(model, inputs: dict[str, np.ndarray]) -> MixedPrecision:
    """Measure, round after round, which nodes must stay fp32 for ``model`` (fp32 ModelProto) on ``inputs``."""
    reference = _run_all(model, inputs)
    result = MixedPrecision()
    for _ in range(MAX_ROUNDS):
        found = _measure(model, reference, result.kept_fp32, inputs)
        result.rounds.append(found)
        if not found.kept:
            break
        result.kept_fp32 += found.kept
    return result


def kept_op_types(model, kept: list[str]) -> dict[str, int]:
    chosen = set(kept)
    return dict(collections.Counter(node.op_type for node in model.graph.node if node.name in chosen).most_common())


def measure(onnx_path: Path, inputs: dict[str, np.ndarray]) -> MixedPrecision:
    """``choose_fp32_nodes`` for the fp32 ONNX file ``onnx_path``: what the fp16 and INT8 exports keep in float."""
    import onnx

    try:
        return choose_fp32_nodes(onnx.load(str(onnx_path)), inputs)
    except Exception as e:
        raise AttnDeployError(f"fp16 measurement of {onnx_path} failed: {type(e).__name__}: {str(e)[:300]}") from e


def export(onnx_path: Path, output: Path, chosen: MixedPrecision, force: bool = False) -> ExportResult:
    """Write the mixed-precision fp16 version of the fp32 ONNX file ``onnx_path`` to ``output``, atomically,
    with the nodes ``chosen`` (by ``measure``) kept in fp32."""
    import onnx

    check_writable(output, force)
    model = onnx.load(str(onnx_path))
    try:
        half = _convert(model, chosen.kept_fp32)
    except Exception as e:
        raise AttnDeployError(f"fp16 conversion of {onnx_path} failed: {type(e).__name__}: {str(e)[:300]}") from e
    _mark_half(half)
    write_atomic(output, lambda tmp: onnx.save(half, tmp))
    kept = ", ".join(f"{op} x{n}" for op, n in kept_op_types(model, chosen.kept_fp32).items()) or "none"
    notes = [f"kept in fp32 after {len(chosen.rounds)} measuring rounds: {kept}"]
    if chosen.rounds[-1].kept:
        notes.append(f"measuring stopped after {MAX_ROUNDS} rounds with {len(chosen.rounds[-1].kept)} more candidates")
    return ExportResult(output, "onnx-fp16", notes)


def _mark_half(model) -> None:
    """Set ``args.half`` in the ultralytics metadata, which tells runners that the file computes in fp16."""
    import ast

    for prop in model.metadata_props:
        if prop.key == "args":
            prop.value = str({**ast.literal_eval(prop.value), "half": True})


def _head_scope(model) -> str:
    """The node-name scope of the detection head: the last ``/model.N/`` block."""
    blocks = [int(m.group(1)) for n in model.graph.node if (m := re.match(r"/model\.(\d+)/", n.name))]
    return f"/model.{max(blocks)}/" if blocks else "/"


def int8_float_nodes(onnx_path: Path, chosen: MixedPrecision) -> list[str]:
    """The nodes INT8 leaves in float: those the fp16 measurement keeps in fp32 (softmaxes, SimAM's
    variance), and the head's decoding after its last class and box convolutions (DFL, anchor
    arithmetic, sigmoid, the concat of pixel boxes with probabilities, which one int8 scale cannot hold), with the
    mask prototypes' non-Conv nodes as before. The activations between the head's convolutions are quantized: in
    float, their Q/DQ pairs and layout transposes cost the CGA fixture at 640 3.5 ms of 28 in onnxruntime."""
    import onnx

    model = onnx.load(str(onnx_path))
    scope = _head_scope(model)
    head = [n for n in model.graph.node if n.name.startswith(scope)]
    feeding = _feeding_convolutions(head)
    tail = [n.name for n in head if (n.op_type != "Conv" or "/dfl/" in n.name)
            and (n.name not in feeding or "/proto/" in n.name)]
    return sorted(set(chosen.kept_fp32) | set(tail))


def _feeding_convolutions(nodes) -> set[str]:
    """The names of ``nodes`` whose outputs reach a convolution among them (the DFL's fixed one aside)."""
    producer = {out: n for n in nodes for out in n.output}
    found: set[str] = set()
    stack = [i for n in nodes if n.op_type == "Conv" and "/dfl/" not in n.name for i in n.input]
    while stack:
        node = producer.get(stack.pop())
        if node is not None and node.name not in found:
            found.add(node.name)
            stack.extend(node.input)
    return found
