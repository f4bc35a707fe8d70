"""The export flow for one checkpoint and several targets: rewrite once, export the ONNX every target
builds from, lint it for each target, build each artefact, and check each against the original model.

Rows of the parity table: ONNX fp32; with ``half`` the mixed-precision fp16 ONNX; with ``int8`` the Q/DQ INT8
ONNX in onnxruntime's placement (and in TensorRT's, with the trt target) and the NNCF INT8 OpenVINO IR;
OpenVINO at the f32 inference-precision hint (FP32 or FP16-compressed weights); OpenVINO at the device's
default precision (bf16 on CPUs with AVX512-BF16 or AMX), reported for information and not gating; TensorRT;
with the npu target, the npu graph (every graph pass the npu support list needs, run in onnxruntime). With a
validation split every row also gets its mAP against the original model's; INT8 rows are judged by that alone.
A gating row that fails is localised: the first YOLO block or attention module whose output departs.

After the module rules, the exported ONNX gets the graph passes its targets need (Expand removal and
batch-constant folding help every target); ``<stem>.npu.onnx`` gets every pass npu needs on top, and
``<stem>.ort.onnx`` the onnxruntime-only forms (contrib ops such as com.microsoft.MultiHeadAttention). The
ONNX file itself holds only standard-domain ops: it is the portable one.
"""

import contextlib
import dataclasses
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import data, heads, parity
from .accuracy import MAP_TOLERANCES, AccuracyCheck, scored
from .loading import LoadedModel
from .errors import AttnDeployError
from .exporters import ExportResult, artefact_metadata, mixed_precision, ncnn, onnx, openvino, qdq, tensorrt
from .exporters import rknn as rknn_backend
from .exporters import torch as torch_backend
from .files import check_writable
from .lint import LintReport, lint
from .parity import TOLERANCES, Detections, ParityReport, Tolerance
from .verify import localise_export, verify_export

TARGETS = ("onnx", "ort", "openvino", "trt", "npu", "ncnn", "rknn")
LINT_TARGET = {"onnx": "onnx", "ort": "ort", "openvino": "openvino", "trt": "trt", "npu": "npu", "ncnn": "ncnn",
               "rknn": "rknn"}
DERIVED = ("npu", "ort")  # targets that get a file of their own, built from the shared ONNX with their passes
Step = Callable[[str], contextlib.AbstractContextManager]
GRAPH_LABEL = {"npu": "npu graph", "ort": "onnxruntime-only graph", "opencv": "OpenCV DNN",
               "trt-qdq": "TensorRT's Q/DQ placement"}  # parity rows' labels


@dataclass
class Plan:
    """What to build: the targets, the fp32 ONNX path the others derive their names from, and how to check."""

    targets: list[str]
    output: Path
    onnx: onnx.OnnxOptions
    half: bool = False
    rewrite: bool = True
    ov_device: str = "CPU"
    trt: tensorrt.TensorRTOptions = field(default_factory=tensorrt.TensorRTOptions)
    tolerances: dict[str, Tolerance] = field(default_factory=lambda: dict(TOLERANCES))
    detections: Detections = field(default_factory=Detections)
    data: Path | None = None  # a data YAML: its validation split scores every row in mAP
    map_tolerances: dict[str, float] = field(default_factory=lambda: dict(MAP_TOLERANCES))
    int8: bool = False
    calib: Path | None = None  # INT8 calibration images: a directory, or a data YAML's train split
    openvino_half: bool | None = None  # FP16-compressed OpenVINO weights (None: as ``half``)
    rknn: rknn_backend.RKNNOptions = field(default_factory=rknn_backend.RKNNOptions)
    trt_qdq: bool = False  # with int8, TensorRT's Q/DQ placement too without the trt target (engines built later)

    def __post_init__(self):
        if "ncnn" in self.targets and not self.onnx.pinned:  # the opset pnnx reads reductions in
            self.onnx = dataclasses.replace(self.onnx, opset=ncnn.OPSET)

    def outputs(self) -> list[Path]:
        paths = [self.output] + [self.derived(t) for t in DERIVED if t in self.targets]
        paths += ([self.fp16_onnx] if self.half else []) + ([self.int8_onnx] if self.int8 else [])
        paths += [self.trt_int8_onnx] if self.writes_trt_qdq else []
        if "openvino" in self.targets:
            paths += [openvino.model_dir(self.output)] + ([openvino.int8_dir(self.output)] if self.int8 else [])
        paths += [ncnn.model_dir(self.output)] if "ncnn" in self.targets else []
        paths += [rknn_backend.model_dir(self.output)] if "rknn" in self.targets and rknn_backend.builds_float(
            self.rknn) else []
        if "rknn" in self.targets and self.int8:
            paths += [rknn_backend.int8_source(self.output), rknn_backend.int8_dir(self.output)]
        return paths + ([self.output.with_suffix(".engine")] if "trt" in self.targets else [])

    @property
    def int8_onnx(self) -> Path:
        return qdq.output_path(self.output)

    @property
    def trt_int8_onnx(self) -> Path:
        return qdq.output_path(self.output, "tensorrt")

    @property
    def writes_trt_qdq(self) -> bool:
        return self.int8 and ("trt" in self.targets or self.trt_qdq)

    @property
    def fp16_onnx(self) -> Path:
        return self.output.with_suffix(".fp16.onnx")

    @property
    def npu_onnx(self) -> Path:
        return self.derived("npu")

    def derived(self, target: str) -> Path:
        """``<stem>.<target>.onnx``: the shared ONNX with the graph passes of a ``DERIVED`` target on top."""
        return self.output.with_suffix(f".{target}.onnx")

    def linted(self, target: str) -> Path:
        """The ONNX file that ``target`` builds from."""
        return self.derived(target) if target in DERIVED else self.output


@dataclass
class Deployment:
    rewrite: object | None  # RewriteReport; None when the published code was exported as it is
    exports: list[ExportResult] = field(default_factory=list)
    lint: list[LintReport] = field(default_factory=list)
    parity: list[ParityReport] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the parity reference is, per class rebuilt from the zoo

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.lint) and all(p.passed for p in self.parity if p.gating)


def _quiet(text: str):
    return contextlib.nullcontext()


def rewrite_target(targets: list[str]) -> str:
    """One target's needs, or every rule's ("onnx") when several targets share the graph. With ncnn among them,
    ncnn's: its rules differ from the others' only where they keep attention windows off the batch axis, which
    every target runs."""
    return "ncnn" if "ncnn" in targets else targets[0] if len(targets) == 1 else "onnx"


def check_ncnn(plan: Plan, loaded: LoadedModel | None = None) -> None:
    """Fail at once when ncnn is asked for and cannot be built (for ``loaded``, when given), writing nothing."""
    if "ncnn" not in plan.targets:
        return
    ncnn.require()
    if plan.onnx.batch != 1 or plan.onnx.dynamic:
        raise AttnDeployError("--target ncnn: ncnn takes one image at a time (it has no batch axis); export at "
                              "--batch 1 without --dynamic. Nothing was written.")
    if loaded is not None and heads.of_model(loaded.model).end2end:
        raise AttnDeployError("--target ncnn: ncnn has no top-k layer, so the end-to-end head (--end2end) cannot "
                              "run in it (pnnx leaves its top-k as a layer that ncnn does not have); export without "
                              "--end2end (the one-to-many head, NMS after), as ultralytics does for ncnn. Nothing was "
                              "written.")


def check_trt(plan: Plan, loaded: LoadedModel, step: Step = _quiet) -> None:
    """Fail at once when TensorRT is asked for and cannot run, writing nothing; the lint says if it would parse."""
    reason = tensorrt.missing() if "trt" in plan.targets else None
    if reason is None:
        return
    with tempfile.TemporaryDirectory() as tmp:
        model = _rewritten(loaded, plan, step)[0]
        path = onnx.export(model, Path(tmp) / plan.output.name, dataclasses.replace(plan.onnx, force=True)).path
        with step("Linting the rewritten graph for trt"):
            found = lint(path, "trt")
    verdict = "passes, so TensorRT would parse it" if found.passed else "FAILS: " + "; ".join(
        f"{f.check}: {f.detail}" for f in found.findings)
    raise AttnDeployError(f"--target trt: {reason}. Nothing was written. The lint of the graph for trt {verdict}.")


def check_rknn(plan: Plan, step: Step = _quiet) -> None:
    """Fail at once, writing nothing, when RKNN is asked for and its platform or environment will not do."""
    if "rknn" not in plan.targets:
        return
    with step("Checking the RKNN environment (rknn-toolkit2 in its own interpreter)"):
        rknn_backend.ready(plan.rknn, plan.int8)


def _rewritten(loaded: LoadedModel, plan: Plan, step: Step):
    from .rewrite import rewrite

    if not plan.rewrite:
        return loaded, None
    o = plan.onnx
    with step(f"Rewriting for {rewrite_target(plan.targets)} at {o.imgsz[0]}x{o.imgsz[1]}, batch {o.batch}"
              f"{' (dynamic)' if o.dynamic else ''}"):
        done = rewrite(loaded.model, o.imgsz, o.batch, o.dynamic, rewrite_target(plan.targets), o.opset)
    return dataclasses.replace(loaded, model=done.model), done.report


def deploy(loaded: LoadedModel, plan: Plan, step: Step = _quiet) -> Deployment:
    """Build every artefact of ``plan`` and check each against ``loaded`` (the original model)."""
    split = _read_split(plan, step, heads.of_model(loaded.model))  # an unknown head or bad --data fail here
    result = build(loaded, plan, step)
    return check(loaded, result, plan, result.rewrite.reference if result.rewrite else "eager", step, split)


def build(loaded: LoadedModel, plan: Plan, step: Step = _quiet) -> Deployment:
    """Build and lint every artefact of ``plan``, unchecked (``check`` compares them with ``loaded``)."""
    for path in plan.outputs():
        check_writable(path, plan.onnx.force)
    check_ncnn(plan, loaded)
    check_trt(plan, loaded, step)
    check_rknn(plan, step)
    calibration = calibration_paths(plan)  # bad --calib fails here, before anything is written
    model, rewrite_report = _rewritten(loaded, plan, step)
    result = Deployment(rewrite_report)
    with step(f"Exporting ONNX to {plan.output}"):
        result.exports.append(onnx.export(model, plan.output, plan.onnx))
    _graph_passes(loaded, plan, result, step)
    for target in plan.targets:
        with step(f"Linting {plan.linted(target).name} for {LINT_TARGET[target]}"):
            result.lint.append(lint(plan.linted(target), LINT_TARGET[target]))
    _build(plan, result, step, calibration)
    return result


def check(loaded: LoadedModel, result: Deployment, plan: Plan, semantics: str = "eager",
          step: Step = _quiet, split: data.Split | None = None) -> Deployment:
    """Parity of every artefact in ``result.exports`` against ``loaded``, its head in the form the artefacts were
    exported in (end-to-end or not); failing gating rows are localised."""
    end2end = bool(artefact_metadata(result.exports[0].path).get("end2end")) if result.exports else False
    loaded = dataclasses.replace(loaded, model=heads.in_form(loaded.model, end2end))
    head = heads.of_model(loaded.model)
    split = split or _read_split(plan, step, head)
    result.notes = list(loaded.notes)
    accuracy = AccuracyCheck(split, torch_backend.Runner(loaded.model, semantics=semantics), head,
                             plan.map_tolerances) if split else None
    for export, ov_precision, gating in _checks(result.exports):
        _check(loaded, plan, result, export, ov_precision, gating, semantics, step, accuracy)
    return result


def _passes(loaded: LoadedModel, source: Path, output: Path, targets: list[str], plan: Plan, step: Step,
            note: str = "", readers: list[str] | None = None) -> list:
    from .rewrite import graph

    feeds = [{onnx.INPUT_NAME: x} for x in parity.parity_inputs(plan.onnx.imgsz, plan.onnx.batch).values()]
    classes = {path: type(m).__name__ for path, m in loaded.model.named_modules()}
    with step(f"Applying the graph passes for {', '.join(targets)}, each verified in onnxruntime"):
        return graph.apply_file(source, output, targets, feeds, classes, note, readers)


def _graph_passes(loaded: LoadedModel, plan: Plan, result: Deployment, step: Step) -> None:
    """The passes the exported ONNX's targets need, in place; for npu and ort, every pass each needs on a copy.
    The shared file is always read as the portable ``onnx`` too, so passes that put in other domains' ops stay off it.

    Without rewrites (``--no-rewrite``) the derived graphs are the export as it is.
    """
    derived = [t for t in DERIVED if t in plan.targets]
    if result.rewrite is None:
        for at, target in enumerate(derived, 1):
            result.exports.insert(at, ExportResult(shutil.copyfile(plan.output, plan.derived(target)), target))
        return
    shared = list(dict.fromkeys([LINT_TARGET["onnx"]] + [LINT_TARGET[t] for t in plan.targets if t not in DERIVED]))
    result.rewrite.graph += _passes(loaded, plan.output, plan.output, shared, plan, step, f"in {plan.output.name}",
                                    shared + derived)  # the derived graphs are built from the shared file
    for at, target in enumerate(derived, 1):
        path = plan.derived(target)
        result.rewrite.graph += _passes(loaded, plan.output, path, [target], plan, step, f"in {path.name}")
        result.exports.insert(at, ExportResult(path, target))


def rewrite_plan(loaded: LoadedModel, imgsz: tuple[int, int], batch: int, dynamic: bool, target: str,
                 step: Step = _quiet):
    """What ``export`` rewrites for ``target`` (a rewrite target: onnx, ort, openvino, trt or npu), writing nothing:
    the module rules, then the graph passes on an export to a temporary file."""
    plan = Plan([target], Path(), onnx.OnnxOptions(imgsz, batch, dynamic))
    model, report = _rewritten(loaded, plan, step)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        with step("Exporting to a temporary ONNX file for the graph passes"):
            onnx.export(model, path, plan.onnx)
        report.graph = _passes(loaded, path, path, [LINT_TARGET.get(target, target)], plan, step)
    return report


def calibration_paths(plan: Plan) -> list[Path]:
    """The INT8 calibration images of ``plan`` (none without ``int8``)."""
    if not plan.int8:
        return []
    if plan.calib is None:
        raise AttnDeployError("--int8 calibrates on images: pass --calib DIR or --data")
    return data.calibration_paths(plan.calib)


def _read_split(plan: Plan, step: Step, head: heads.Head) -> data.Split | None:
    """The validation split with the labels of ``head``'s task; refused where the head cannot be scored on it."""
    if plan.data is None:
        return None
    with step(f"Reading the validation split of {plan.data} ({head.task} labels)"):
        split = data.load_split(plan.data, task=head.task)
    scored(head, split)
    return split


def _build(plan: Plan, result: Deployment, step: Step, calibration: list[Path]) -> None:
    chosen = None
    if plan.half or plan.int8:
        with step("Measuring which nodes cannot take fp16 (they stay in float in the fp16 and INT8 exports)"):
            chosen = mixed_precision.measure(plan.output, parity.parity_inputs(plan.onnx.imgsz, plan.onnx.batch))
    if plan.half:
        with step(f"Writing the mixed-precision fp16 ONNX {plan.fp16_onnx.name}"):
            result.exports.append(mixed_precision.export(plan.output, plan.fp16_onnx, chosen, True))
    if "openvino" in plan.targets:
        half = plan.half if plan.openvino_half is None else plan.openvino_half
        with step(f"Converting to OpenVINO IR ({'FP16' if half else 'FP32'} weights)"):
            result.exports.append(openvino.export(plan.output, openvino.model_dir(plan.output),
                                                  openvino.OpenVINOOptions(half, force=True)))
    if "rknn" in plan.targets and rknn_backend.builds_float(plan.rknn):
        with step(f"Building for {plan.rknn.platform} with rknn-toolkit2 (in its own environment)"):
            result.exports.append(rknn_backend.export(plan.output, rknn_backend.model_dir(plan.output),
                                                      dataclasses.replace(plan.rknn, force=True)))
    if plan.int8:
        _build_int8(plan, result, calibration, mixed_precision.int8_float_nodes(plan.output, chosen), step)
    if "trt" in plan.targets:
        result.exports.append(build_trt(plan, calibration, step))
    if "ncnn" in plan.targets:
        with step(f"Converting to ncnn with pnnx ({'fp16' if plan.half else 'fp32'} weights)"):
            result.exports.append(ncnn.export(plan.output, ncnn.model_dir(plan.output),
                                              ncnn.NcnnOptions(plan.half, force=True)))


def _build_int8(plan: Plan, result: Deployment, paths: list[Path], keep: list[str], step: Step) -> None:
    """The Q/DQ INT8 ONNX and, for OpenVINO, the NNCF INT8 IR, calibrated on ``paths`` (read batch by batch as the
    quantizers ask), ``keep`` left in float."""
    calibration = data.Batches(tuple(paths), plan.onnx.imgsz, plan.onnx.batch)
    used = qdq.batches_used("onnxruntime", len(calibration))
    with step(f"Quantizing to Q/DQ INT8 ONNX for onnxruntime on {used} of {len(calibration)} calibration batches "
              f"from {plan.calib} (read one at a time)"):
        result.exports.append(qdq.export(plan.output, plan.int8_onnx, calibration, keep, force=True))
    if plan.writes_trt_qdq:
        with step(f"Quantizing to Q/DQ INT8 ONNX in TensorRT's placement ({len(calibration)} batches)"):
            result.exports.append(qdq.export(plan.output, plan.trt_int8_onnx, calibration, keep, force=True,
                                             placement="tensorrt"))
    if "openvino" in plan.targets:
        with step(f"Quantizing to OpenVINO INT8 with NNCF ({len(calibration)} calibration batches)"):
            result.exports.append(openvino.quantize(plan.output, openvino.int8_dir(plan.output), calibration, keep,
                                                    force=True))
    if "rknn" in plan.targets:
        _build_rknn_int8(plan, result, paths, step)


def _build_rknn_int8(plan: Plan, result: Deployment, paths: list[Path], step: Step) -> None:
    """The INT8 RKNN build, from the ONNX with input-relative coordinates (one int8 scale then keeps the scores)."""
    source = rknn_backend.int8_source(plan.output)
    normalised = rknn_backend.normalise_coordinates(plan.output, source)
    used = len(rknn_backend.spread(paths))
    with step(f"Building INT8 for {plan.rknn.platform} with rknn-toolkit2 on {used} of {len(paths)} calibration "
              f"images{' (coordinates divided by the input size)' if normalised else ''}"):
        result.exports.append(rknn_backend.export(source, rknn_backend.int8_dir(plan.output),
                                                  dataclasses.replace(plan.rknn, force=True), paths))


def build_trt(plan: Plan, calibration: list[Path], step: Step = _quiet, precision: str | None = None,
              output: Path | None = None) -> ExportResult:
    """A TensorRT engine at ``precision`` (default: the plan's highest: int8, fp16, else its TensorRT options'),
    written to ``output`` (default: ``<stem>.engine``), from the ONNX files ``build`` wrote."""
    typed = tensorrt.strongly_typed()
    precision = precision or ("int8" if plan.int8 else "fp16" if plan.half else plan.trt.precision)
    # TensorRT 11 is strongly typed: precision comes from the ONNX (mixed fp16, or Q/DQ for INT8).
    source = {"int8": plan.trt_int8_onnx, "fp16": plan.fp16_onnx}.get(precision, plan.output) if typed else plan.output
    options = dataclasses.replace(plan.trt, precision=precision, batch=plan.onnx.batch, dynamic=plan.onnx.dynamic,
                                  calibration=calibration if precision == "int8" and not typed else [], force=True)
    output = output or plan.output.with_suffix(".engine")
    with step(f"Building a TensorRT {options.precision} engine from {source.name}"):
        return tensorrt.export(source, output, options, onnx.read_metadata(plan.output))


def _rknn_analysis(path: Path, plan: Plan, input_name: str) -> str:
    x = parity.parity_inputs(tuple(plan.onnx.imgsz), 1)[input_name]
    try:
        return rknn_backend.departure(rknn_backend.analyse(path, x, plan.rknn.python))
    except AttnDeployError as e:  # the parity verdict stands; the analysis is what could not be had
        return str(e)


def _checks(exports: list[ExportResult]):
    """(artefact, OpenVINO inference precision, gating) for each parity row."""
    for export in exports:
        yield export, "fp32", True
        if export.target == "openvino":
            yield export, None, False


def _check(loaded, plan: Plan, result: Deployment, export: ExportResult, ov_precision, gating: bool,
           semantics: str, step: Step, accuracy: AccuracyCheck | None) -> None:
    label = "device default precision" if ov_precision is None else GRAPH_LABEL.get(export.target, "")
    against = "the original model" + (" with true shifts" if semantics == "true-shift" else "")
    scored = f" and scoring mAP on {accuracy.split.source}" if accuracy else ""
    with step(f"Checking parity of {export.path.name}{f' at the {label}' if label else ''} against {against}"
              f"{scored}"):
        report = verify_export(export.path, loaded, plan.tolerances, semantics=semantics, detections=plan.detections,
                               ov_device=plan.ov_device, ov_precision=ov_precision, accuracy=accuracy,
                               runtime="opencv" if export.target == "opencv" else "onnxruntime")
    # An INT8 row is judged by its accuracy: without a validation split it is reported, not gating.
    report.gating = gating and (report.precision != "int8" or report.accuracy is not None)
    report.label = label
    result.parity.append(report)
    if report.gating and not report.passed and report.precision != "int8":
        with step(f"Localising the departure in {export.path.name}"):
            report.localisation = localise_export(export.path, loaded, report.worst.input, report.tolerance,
                                                  semantics, plan.ov_device, ov_precision)
        if export.target == "rknn":
            with step("Localising it with rknn-toolkit2's per-layer accuracy analysis"):
                report.localisation.converter = _rknn_analysis(export.path, plan, report.worst.input)
