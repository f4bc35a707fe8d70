"""The export flow for one checkpoint and several targets: rewrite once, export the ONNX every target
builds from, lint it for each target, build each artefact, and check each against the original model.

Rows of the parity table: ONNX fp32; with ``half`` the mixed-precision fp16 ONNX; OpenVINO at the f32
inference-precision hint (FP32 or FP16-compressed weights); OpenVINO at the device's default precision
(bf16 on CPUs with AVX512-BF16 or AMX), reported for information and not gating; TensorRT.
A gating row that fails is localised: the first YOLO block or attention module whose output departs.
"""

import contextlib
import dataclasses
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import parity
from .parity import Detections, ParityReport, Tolerance, TOLERANCES
from .checkpoint import LoadedModel
from .errors import AttnDeployError
from .exporters import ExportResult, localise_export, verify_export
from .exporters import mixed_precision, onnx, openvino, tensorrt
from .files import check_writable
from .lint import LintReport, lint

TARGETS = ("onnx", "openvino", "trt")
LINT_TARGET = {"onnx": "ort", "openvino": "openvino", "trt": "trt"}
Step = Callable[[str], contextlib.AbstractContextManager]


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

    def outputs(self) -> list[Path]:
        paths = [self.output] + ([self.fp16_onnx] if self.half else [])
        paths += [openvino.model_dir(self.output)] if "openvino" in self.targets else []
        return paths + ([self.output.with_suffix(".engine")] if "trt" in self.targets else [])

    @property
    def fp16_onnx(self) -> Path:
        return self.output.with_suffix(".fp16.onnx")


@dataclass
class Deployment:
    rewrite: object | None  # RewriteReport; None when the published code was exported as it is
    exports: list[ExportResult] = field(default_factory=list)
    lint: list[LintReport] = field(default_factory=list)
    parity: list[ParityReport] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.lint) and all(p.passed for p in self.parity if p.gating)


def _quiet(text: str):
    return contextlib.nullcontext()


def rewrite_target(targets: list[str]) -> str:
    """One target's needs, or every rule's ("onnx") when several targets share the graph."""
    return targets[0] if len(targets) == 1 else "onnx"


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


def _rewritten(loaded: LoadedModel, plan: Plan, step: Step):
    from .rewrite import rewrite

    if not plan.rewrite:
        return loaded, None
    o = plan.onnx
    with step(f"Rewriting for {rewrite_target(plan.targets)} at {o.imgsz[0]}x{o.imgsz[1]}, batch {o.batch}"
              f"{' (dynamic)' if o.dynamic else ''}"):
        done = rewrite(loaded.model, o.imgsz, o.batch, o.dynamic, rewrite_target(plan.targets))
    return dataclasses.replace(loaded, model=done.model), done.report


def deploy(loaded: LoadedModel, plan: Plan, step: Step = _quiet) -> Deployment:
    """Build every artefact of ``plan`` and check each against ``loaded`` (the original model)."""
    for path in plan.outputs():
        check_writable(path, plan.onnx.force)
    check_trt(plan, loaded, step)
    model, rewrite_report = _rewritten(loaded, plan, step)
    result = Deployment(rewrite_report)
    with step(f"Exporting ONNX to {plan.output}"):
        result.exports.append(onnx.export(model, plan.output, plan.onnx))
    for target in plan.targets:
        with step(f"Linting {plan.output.name} for {LINT_TARGET[target]}"):
            result.lint.append(lint(plan.output, LINT_TARGET[target]))
    _build(plan, result, step)
    return check(loaded, result, plan, rewrite_report.reference if rewrite_report else "eager", step)


def check(loaded: LoadedModel, result: Deployment, plan: Plan, semantics: str = "eager",
          step: Step = _quiet) -> Deployment:
    """Parity of every artefact in ``result.exports`` against ``loaded``; failing gating rows are localised."""
    for export, ov_precision, gating in _checks(result.exports):
        _check(loaded, plan, result, export, ov_precision, gating, semantics, step)
    return result


def _build(plan: Plan, result: Deployment, step: Step) -> None:
    size = plan.onnx.imgsz
    if plan.half:
        with step("Choosing the fp32 nodes of the mixed-precision fp16 ONNX by measurement"):
            result.exports.append(mixed_precision.export(plan.output, plan.fp16_onnx,
                                                         parity.parity_inputs(size, plan.onnx.batch), True))
    if "openvino" in plan.targets:
        with step(f"Converting to OpenVINO IR ({'FP16' if plan.half else 'FP32'} weights)"):
            result.exports.append(openvino.export(plan.output, openvino.model_dir(plan.output),
                                                  openvino.OpenVINOOptions(plan.half, force=True)))
    if "trt" in plan.targets:
        typed = tensorrt.strongly_typed() and plan.half
        source = plan.fp16_onnx if typed else plan.output
        options = dataclasses.replace(plan.trt, precision="fp16" if plan.half else plan.trt.precision,
                                      batch=plan.onnx.batch, dynamic=plan.onnx.dynamic, force=True)
        with step(f"Building a TensorRT {options.precision} engine from {source.name}"):
            result.exports.append(tensorrt.export(source, plan.output.with_suffix(".engine"), options,
                                                  onnx.read_metadata(plan.output)))


def _checks(exports: list[ExportResult]):
    """(artefact, OpenVINO inference precision, gating) for each parity row."""
    for export in exports:
        yield export, "fp32", True
        if export.target == "openvino":
            yield export, None, False


def _check(loaded, plan: Plan, result: Deployment, export: ExportResult, ov_precision, gating: bool,
           semantics: str, step: Step) -> None:
    label = "device default precision" if ov_precision is None else ""
    against = "the original model" + (" with true shifts" if semantics == "true-shift" else "")
    with step(f"Checking parity of {export.path.name}{f' at the {label}' if label else ''} against {against}"):
        report = verify_export(export.path, loaded, plan.tolerances, semantics=semantics, detections=plan.detections,
                               ov_device=plan.ov_device, ov_precision=ov_precision)
    report.gating, report.label = gating, label
    result.parity.append(report)
    if gating and not report.passed:
        with step(f"Localising the departure in {export.path.name}"):
            report.localisation = localise_export(export.path, loaded, report.worst.input, report.tolerance,
                                                  semantics, plan.ov_device, ov_precision)
