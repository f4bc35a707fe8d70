"""The ``attn-deploy`` command line: a thin Typer layer that renders the library's reports.

Exit codes: 0 ok, 1 parity or lint failed, 2 bad usage or input.
"""

import contextlib
import dataclasses
import functools
import json
import os
import shutil
import time
import warnings
from enum import Enum
from pathlib import Path
from typing import Annotated

os.environ.setdefault("YOLO_VERBOSE", "False")  # ultralytics logs to stdout; --json output must stay clean

import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.markup import escape  # noqa: E402
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn  # noqa: E402
from rich.table import Table as RichTable  # noqa: E402

from . import report  # noqa: E402
from .errors import AttnDeployError  # noqa: E402
from .files import check_writable  # noqa: E402

app = typer.Typer(help="Deploy attention-augmented YOLOv8 detectors: export, verify parity, benchmark.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
out = Console()
out.width = out.width if out.is_terminal else 200  # pipes and logs get whole tables, not ellipses
err = Console(stderr=True)

CHECK_FAILED = 1  # parity or lint


class RewriteTarget(str, Enum):
    onnx = "onnx"
    ort = "ort"
    openvino = "openvino"
    trt = "trt"
    npu = "npu"
    ncnn = "ncnn"


class LintTarget(str, Enum):
    onnx = "onnx"
    ort = "ort"
    openvino = "openvino"
    trt = "trt"
    npu = "npu"
    ncnn = "ncnn"
    opencv = "opencv"


class OnnxRuntime(str, Enum):  # exporters.ONNX_RUNTIMES
    onnxruntime = "onnxruntime"
    opencv = "opencv"


class Device(str, Enum):
    cpu = "cpu"
    cuda = "cuda"


class BenchBackend(str, Enum):
    torch = "torch"
    ort = "ort"
    openvino = "openvino"
    trt = "trt"
    ncnn = "ncnn"
    opencv = "opencv"


class ShapesTask(str, Enum):  # shapes.TASKS
    detect = "detect"
    segment = "segment"
    pose = "pose"
    obb = "obb"


JsonOpt = Annotated[bool, typer.Option("--json", help="Print a machine-readable result on stdout.")]
RknnPythonOpt = Annotated[Path | None, typer.Option(envvar="ATTN_DEPLOY_RKNN_PYTHON", help="The interpreter of an "
                                                   "environment with rknn-toolkit2 2.3.2 (default: the one "
                                                   "`attn-deploy setup rknn` made).")]
CLUSTER_RESULTS = ".cluster-results"  # under --output-dir: cluster jobs' results by artefact hash and settings
ClusterOpt = Annotated[str | None, typer.Option(
    "--cluster", help="Run the jobs on the Ray cluster at ADDRESS (HOST:PORT of its head, or auto for the one "
    "running here), each on a node offering its device; needs the cluster extra. See docs/cluster.md.")]
JobTimeoutOpt = Annotated[float | None, typer.Option(
    "--job-timeout-s", min=1, help="With --cluster: the most seconds one job may run (default 1800).")]
PluginOpt = Annotated[list[Path] | None, typer.Option(
    "--plugin", help="Python file defining fork classes (repeatable); a file inside a fork's ultralytics/ folder is "
    "imported as that package's module. It is your own code and runs when imported.")]
ForkOpt = Annotated[Path | None, typer.Option(
    "--fork", help="The fork's source tree (its repository root or its ultralytics/ folder): pickled classes import "
    "from the fork's own packages, without running their __init__.py. The fork's code is your own and runs when "
    "imported.")]
TrustOpt = Annotated[bool, typer.Option(
    "--trust-checkpoint", help="Unpickle with a plain unpickler, which runs any code the file names. Only for files "
    "you trust.")]
YamlOpt = Annotated[Path | None, typer.Option("--yaml", help="Model YAML, when the checkpoint is a state dict.")]
OutputDirOpt = Annotated[Path, typer.Option(help="Where report directories go.")]
AtolOpt = Annotated[float | None, typer.Option("--atol", help="Absolute tolerance (default: by precision).")]
RtolOpt = Annotated[float | None, typer.Option("--rtol", help="Relative tolerance (default: by precision).")]
NoiseOpt = Annotated[float | None, typer.Option(
    "--noise-factor", min=0, help="Also pass an export within this many times PyTorch fp32's own error against "
    "fp64 (default 2; 0 disables).")]
ImgszOpt = Annotated[str | None, typer.Option(
    help="Input size: one int or H,W (default: the training size, else 640).")]
CheckpointArg = Annotated[Path, typer.Argument(help="best.pt: an ultralytics checkpoint, a model or a state dict.")]
TolOpt = Annotated[list[str] | None, typer.Option(
    "--tol", help="Per-precision tolerance PRECISION=ATOL,RTOL, e.g. fp16=0.02,0.02 (repeatable).")]
DetConfOpt = Annotated[float, typer.Option("--det-conf", min=0, max=1, help="Confidence threshold of the "
                                           "detection-level parity (instances on the real images, as the head "
                                           "selects them: NMS, top-k rows, top-5 classes).")]
OvDeviceOpt = Annotated[str, typer.Option("--ov-device", help="OpenVINO device: CPU, GPU, NPU, AUTO.")]
JunitOpt = Annotated[Path | None, typer.Option("--junit", help="Also write the results as a JUnit XML report.")]
ThreadsOpt = Annotated[int | None, typer.Option("--threads", min=1, help="Intra-op threads (default: runtime's).")]
DataOpt = Annotated[str | None, typer.Option(
    "--data", help="Data YAML (ultralytics format) whose val split scores mAP50 and mAP50-95 for PyTorch and every "
    "export; 'shapes' regenerates the trained fixtures' split from its seed (shapes-seg, shapes-pose, shapes-obb: "
    "with that task's labels).")]
MapTolOpt = Annotated[list[str] | None, typer.Option(
    "--map-tol", help="Allowed mAP50-95 drop per precision PRECISION=DROP, e.g. int8=0.03 (repeatable; defaults "
    "fp32 0.001, fp16 and bf16 0.005, int8 0.02).")]


def handled(command):
    """Turn the library's errors into one message on stderr and exit code 2."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return command(*args, **kwargs)
        except AttnDeployError as e:
            err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)  # "[cluster]" stays
            raise typer.Exit(e.exit_code) from None

    return run


def parse_imgsz(value: str) -> tuple[int, int]:
    try:
        sizes = [int(v) for v in value.replace("x", ",").split(",")]
    except ValueError:
        raise typer.BadParameter(f"expected one int or H,W, got {value!r}") from None
    if len(sizes) not in (1, 2) or min(sizes) <= 0:
        raise typer.BadParameter(f"expected one positive int or H,W, got {value!r}")
    return (sizes[0], sizes[-1])


@contextlib.contextmanager
def step(text: str):
    with err.status(text):
        yield
    err.print(f"[green]✓[/] {text}", highlight=False)


def progress_bar() -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                    TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(), console=err, transient=True)


def render(title: str, table: report.Table) -> None:
    headers, rows = table
    rich_table = RichTable(title=title, title_justify="left")
    for h in headers:
        rich_table.add_column(h, overflow="fold")
    for row in rows:
        rich_table.add_row(*row)
    out.print(rich_table)


def emit_json(data) -> None:
    print(json.dumps(report.jsonable(data), indent=2))


def tolerances(atol: float | None, rtol: float | None, noise_factor: float | None, tol: list[str] | None) -> dict:
    """The tolerance per precision: documented defaults, then --atol/--rtol/--noise-factor, then --tol."""
    from .parity import TOLERANCES

    given = {k: v for k, v in {"atol": atol, "rtol": rtol, "noise_factor": noise_factor}.items() if v is not None}
    chosen = {p: dataclasses.replace(t, **given) for p, t in TOLERANCES.items()}
    for item in tol or []:
        precision, _, values = item.partition("=")
        try:
            a, r = (float(v) for v in values.split(","))
        except ValueError:
            raise typer.BadParameter(f"expected PRECISION=ATOL,RTOL, got {item!r}", param_hint="--tol") from None
        if precision not in chosen:
            raise typer.BadParameter(f"unknown precision {precision!r}; one of {', '.join(chosen)}", param_hint="--tol")
        chosen[precision] = dataclasses.replace(chosen[precision], atol=a, rtol=r)
    return chosen


def map_tolerances(items: list[str] | None) -> dict[str, float]:
    """The allowed mAP50-95 drop per precision: documented defaults, then --map-tol."""
    from .accuracy import MAP_TOLERANCES

    chosen = dict(MAP_TOLERANCES)
    for item in items or []:
        precision, _, value = item.partition("=")
        if precision not in chosen:
            raise typer.BadParameter(f"unknown precision {precision!r}; one of {', '.join(chosen)}",
                                     param_hint="--map-tol")
        try:
            chosen[precision] = float(value)
        except ValueError:
            raise typer.BadParameter(f"expected PRECISION=DROP, got {item!r}", param_hint="--map-tol") from None
    return chosen


@contextlib.contextmanager
def data_yaml(value: str | None, splits: tuple[str, ...] = ("val",)):
    """The data YAML that --data names; for 'shapes' (or a task's shapes-*), regenerated into a directory
    removed afterwards."""
    import tempfile

    from . import data

    if value is None:
        yield None
        return
    if value not in data.SHAPES_TASKS:
        yield Path(value)
        return
    task = data.SHAPES_TASKS[value]
    with tempfile.TemporaryDirectory(prefix="attn-deploy-data-") as tmp:
        with step(f"Regenerating the shapes data set ({', '.join(splits)}; {task} labels) from its seed"):
            path = data.shapes_data(Path(tmp), splits, task)
        yield path


def parse_targets(value: str) -> list[str]:
    from .pipeline import TARGETS

    targets = list(TARGETS) if value == "all" else [t.strip() for t in value.split(",") if t.strip()]
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        raise typer.BadParameter(f"unknown target {', '.join(unknown) or repr(value)}; use {','.join(TARGETS)} or all",
                                 param_hint="--target")
    return list(dict.fromkeys(targets))


def load_checkpoint(path: Path, plugins, fork: Path | None, trust: bool, yaml):
    from .loading import load

    if trust:
        err.print(f"[bold yellow]warning:[/] --trust-checkpoint: {path} is unpickled with a plain unpickler, which "
                  "runs any code the file names", highlight=False, soft_wrap=True)
    with step(f"Loading {path}"):
        loaded = load(path, plugins=plugins or [], trust=trust, yaml=yaml, fork=fork)
    for fork_path, zoo_class in loaded.resolved.items():
        err.print(f"  resolved {fork_path} -> {zoo_class}", highlight=False)
    for note in loaded.notes:
        err.print(f"  note: {note}", highlight=False, soft_wrap=True)
    return loaded


def show_rewrite(rewrite_report) -> None:
    applied = len(rewrite_report.applied)
    render(f"Rewrites: {applied} applied, {len(rewrite_report.layers) - applied} refused (verified in fp64, "
           f"tolerance {rewrite_report.tolerance:g} x max(1, |output|))", report.rewrite_table(rewrite_report.layers))
    if rewrite_report.graph:
        done = sum(layer.applied for layer in rewrite_report.graph)
        render(f"Graph passes: {done} applied, {len(rewrite_report.graph) - done} refused (the graph before and after "
               f"each pass run in onnxruntime fp32 on the parity inputs, tolerance {rewrite_report.tolerance:g} x "
               "max(1, |output|) or the graph's own fp32 noise)",
               report.rewrite_table(rewrite_report.graph))
    for warning in rewrite_report.divergent.values():
        err.print(f"[bold yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)


def lint_file(path: Path, target: str):
    from .lint import lint

    with step(f"Linting {path} for {target}"):
        return lint(path, target)


def show_lint(lint_report) -> None:
    title = f"Lint of {lint_report.path.name} for {lint_report.target} ({sum(lint_report.op_counts.values())} nodes)"
    if not lint_report.findings:
        out.print(f"{title}: passed, no findings", highlight=False)
    else:
        verdict = "passed" if lint_report.passed else "FAILED"
        render(f"{title}: {verdict}, {len(lint_report.errors)} error(s), {len(lint_report.warnings)} warning(s)",
               report.lint_table(lint_report))


def show_deployment(run) -> None:
    if run.rewrite:
        show_rewrite(run.rewrite)
    for lint_report in run.lint:
        show_lint(lint_report)
    for export in run.exports:
        err.print(f"  {export.target}: {export.path}" + "".join(f"; {n}" for n in export.notes), highlight=False)
    verdict = "passed" if run.passed else "FAILED"
    matched = f"; {run.parity[0].task} head, detections matched by {run.parity[0].matcher}" if run.parity else ""
    render(f"Parity against the original PyTorch model (fp32{matched}): {verdict}", report.summary_table(run.parity))
    for note in run.notes:
        out.print(f"Reference: {note}", highlight=False, soft_wrap=True)
    for p in run.parity:
        if loc := p.localisation:
            out.print(f"Localisation ({p.backend} {p.precision}, {loc.input}): first departing module "
                      f"{loc.first or 'none of the compared modules'}", highlight=False, soft_wrap=True)
            render("Module outputs against the original, in execution order", report.localisation_table(loc))
            if loc.converter:
                out.print(f"Localisation by the converter: {loc.converter}", highlight=False, soft_wrap=True)
    for p in run.parity:
        if p.gating and not p.passed:
            err.print(f"[bold red]parity failed[/] for {p.backend} {p.precision}; the artefacts are kept",
                      highlight=False, soft_wrap=True)


def finish(run, as_json: bool, junit: Path | None) -> None:
    """Render or print ``run``, write the JUnit report, and exit 1 when a gating check failed."""
    if junit:
        report.write_junit(junit, run)
    if as_json:
        emit_json(run)
    else:
        show_deployment(run)
    if not run.passed:
        raise typer.Exit(CHECK_FAILED)


@contextlib.contextmanager
def written_or_nothing(paths: list[Path]):
    """On an error, remove the outputs this command created (an RKNN build fails after the ONNX it reads is
    written); files that existed before (--force) are left as they are."""
    before = {p for p in paths if p.exists()}
    try:
        yield
    except AttnDeployError:
        for path in paths:
            if path.exists() and path not in before:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        raise


@app.command()
@handled
def export(
    checkpoint: CheckpointArg,
    target: Annotated[str, typer.Option(help="Targets: onnx (standard ONNX ops only), ort (<stem>.ort.onnx, with "
                                        "onnxruntime's contrib ops where they ran faster), openvino, trt, npu "
                                        "(<stem>.npu.onnx, every graph pass the npu list needs), ncnn "
                                        "(<stem>_ncnn_model/, needs the ncnn extra), rknn (<stem>_rknn_model/, needs "
                                        "`setup rknn`), comma-separated, or all.")] = "onnx",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="The ONNX file; the other artefacts are "
                                                "named after it (default: beside CKPT).")] = None,
    imgsz: ImgszOpt = None,
    batch: Annotated[int, typer.Option(min=1, help="Batch size of the static export.")] = 1,
    dynamic: Annotated[bool, typer.Option(help="Symbolic batch axis (spatial axes stay static).")] = False,
    half: Annotated[bool, typer.Option(help="fp16: a mixed-precision ONNX, FP16 OpenVINO weights, a TensorRT "
                                       "fp16 engine, ncnn fp16 weights and arithmetic.")] = False,
    opset: Annotated[int | None, typer.Option(min=7, help="ONNX opset (default 18; 17 with --target ncnn, "
                                              "whose pnnx reads reductions only in that form; or the opset a module "
                                              "needs, said in the report).")] = None,
    simplify: Annotated[bool, typer.Option(help="Simplify with onnxsim (onnxslim as fallback).")] = True,
    rewrite: Annotated[bool, typer.Option(help="Apply the verified static rewrites before exporting.")] = True,
    end2end: Annotated[bool, typer.Option("--end2end", help="YOLOv10/YOLO26: export the one-to-one head (top-k "
                                          "boxes, no NMS), as ultralytics' nms=False selects it.")] = False,
    ov_device: OvDeviceOpt = "CPU",
    workspace: Annotated[float, typer.Option(min=0.1, help="TensorRT builder workspace, GiB.")] = 4.0,
    max_batch: Annotated[int, typer.Option(min=1, help="TensorRT profile's largest batch (--dynamic).")] = 16,
    timing_cache: Annotated[Path | None, typer.Option(help="TensorRT timing cache file (read and updated).")] = None,
    int8: Annotated[bool, typer.Option(help="INT8 too: a Q/DQ ONNX in onnxruntime's placement, an NNCF OpenVINO "
                                       "IR, with --target trt TensorRT's Q/DQ ONNX and an INT8 engine; judged by mAP "
                                       "(needs --data).")] = False,
    calib: Annotated[Path | None, typer.Option(help="INT8 calibration images: a directory, or a data YAML's train "
                                               "split (default: --data's).")] = None,
    data: DataOpt = None,
    map_tol: MapTolOpt = None,
    rknn_platform: Annotated[str, typer.Option(help="RKNN target platform: rk3588, rk3576, rk3568, rk3566, rk3562, "
                                               "rk2118, rv1126b; rv1103/rv1106(b) run INT8 only.")] = "rk3588",
    rknn_python: RknnPythonOpt = None,
    force: Annotated[bool, typer.Option(help="Overwrite existing outputs.")] = False,
    plugin: PluginOpt = None,
    fork: ForkOpt = None,
    trust_checkpoint: TrustOpt = False,
    yaml: YamlOpt = None,
    atol: AtolOpt = None,
    rtol: RtolOpt = None,
    noise_factor: NoiseOpt = None,
    tol: TolOpt = None,
    det_conf: DetConfOpt = 0.25,
    junit: JunitOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Rewrite and export CHECKPOINT to each target, lint the graph, and verify every artefact against the original."""
    from . import pipeline
    from .exporters import onnx, rknn, tensorrt
    from .parity import Detections

    targets = parse_targets(target)
    size = parse_imgsz(imgsz) if imgsz else None
    chosen = tolerances(atol, rtol, noise_factor, tol)
    output = output or checkpoint.with_suffix(".onnx")
    trt = tensorrt.TensorRTOptions(workspace_gib=workspace, max_batch=max_batch, timing_cache=timing_cache,
                                   precision="fp32")
    options = onnx.OnnxOptions(batch=batch, dynamic=dynamic, opset=opset or 18, pinned=opset is not None,
                               simplify=simplify, force=force)
    plan = pipeline.Plan(targets, output, options,
                         half, rewrite, ov_device, trt, chosen, Detections(conf=det_conf),
                         map_tolerances=map_tolerances(map_tol), int8=int8,
                         rknn=rknn.RKNNOptions(rknn_platform, rknn_python))
    pipeline.check_ncnn(plan)
    for path in plan.outputs():
        check_writable(path, force)
    pipeline.check_rknn(plan, step)
    if rknn_python:  # the simulator's runner finds the same interpreter
        os.environ[rknn.ENV_VAR] = str(rknn_python)
    loaded = load_checkpoint(checkpoint, plugin, fork, trust_checkpoint, yaml)
    if end2end:
        from .heads import in_form

        loaded = dataclasses.replace(loaded, model=in_form(loaded.model, True))
    plan.onnx.imgsz = size or loaded.imgsz or (640, 640)
    loaded.check_input(plan.onnx.imgsz, batch)
    with data_yaml(data, ("train", "val") if int8 and calib is None else ("val",)) as data_path:
        plan.data, plan.calib = data_path, calib or data_path
        with written_or_nothing(plan.outputs()):
            run = pipeline.deploy(loaded, plan, step)
        finish(run, as_json, junit)


@app.command("rewrite")
@handled
def rewrite_plan(
    checkpoint: CheckpointArg,
    target: Annotated[RewriteTarget, typer.Option(help="Whose needs to rewrite for (onnx: every rule).")] = (
        RewriteTarget.onnx),
    imgsz: ImgszOpt = None,
    batch: Annotated[int, typer.Option(min=1, help="Batch size.")] = 1,
    dynamic: Annotated[bool, typer.Option(help="Keep the batch axis symbolic.")] = False,
    plugin: PluginOpt = None,
    fork: ForkOpt = None,
    trust_checkpoint: TrustOpt = False,
    yaml: YamlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show which rules and graph passes rewrite which layers of CHECKPOINT, verified, without writing anything."""
    from .pipeline import rewrite_plan

    loaded = load_checkpoint(checkpoint, plugin, fork, trust_checkpoint, yaml)
    size = parse_imgsz(imgsz) if imgsz else loaded.imgsz or (640, 640)
    loaded.check_input(size, batch)
    rewrite_report = rewrite_plan(loaded, size, batch, dynamic, target.value, step)
    if as_json:
        emit_json(rewrite_report)
    else:
        show_rewrite(rewrite_report)


@app.command("lint")
@handled
def lint_command(
    exported: Annotated[Path, typer.Argument(help="An exported model (.onnx).")],
    target: Annotated[LintTarget, typer.Option(help="The runtime the graph must suit.")] = LintTarget.ort,
    as_json: JsonOpt = False,
) -> None:
    """Find what in EXPORTED will break or bloat TARGET: unsupported ops, shape arithmetic, -inf, rank > 4, batch-filling
    constants, and what cannot be static (top-k routing, learned-offset sampling), by module. Errors fail (exit 1)."""
    lint_report = lint_file(exported, target.value)
    if as_json:
        emit_json(lint_report)
    else:
        show_lint(lint_report)
    if not lint_report.passed:
        raise typer.Exit(CHECK_FAILED)


@app.command()
@handled
def verify(
    exported: Annotated[Path, typer.Argument(help="An exported model: .onnx, an OpenVINO directory or .xml, "
                                             "a TensorRT .engine.")],
    ref: Annotated[Path, typer.Option("--ref", help="The original checkpoint: the reference.")],
    runtime: Annotated[OnnxRuntime, typer.Option(help="What runs a .onnx file: onnxruntime, or OpenCV's DNN "
                                                 "module.")] = OnnxRuntime.onnxruntime,
    ov_device: OvDeviceOpt = "CPU",
    plugin: PluginOpt = None,
    fork: ForkOpt = None,
    trust_checkpoint: TrustOpt = False,
    yaml: YamlOpt = None,
    atol: AtolOpt = None,
    rtol: RtolOpt = None,
    noise_factor: NoiseOpt = None,
    tol: TolOpt = None,
    det_conf: DetConfOpt = 0.25,
    data: DataOpt = None,
    map_tol: MapTolOpt = None,
    junit: JunitOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check that EXPORTED computes what the original PyTorch checkpoint computes; localise a failure.
    With --data, also score mAP50 and mAP50-95 of both on the validation split."""
    from . import pipeline
    from .exporters import ExportResult, backend_of, onnx
    from .parity import Detections

    chosen = tolerances(atol, rtol, noise_factor, tol)
    kind = backend_of(exported)
    if runtime == OnnxRuntime.opencv and kind != "onnx":
        raise AttnDeployError(f"--runtime opencv runs .onnx files; {exported} is a {kind} artefact")
    run = pipeline.Deployment(None, [ExportResult(exported, runtime.value if kind == "onnx" else kind)])
    loaded = load_checkpoint(ref, plugin, fork, trust_checkpoint, yaml)
    plan = pipeline.Plan([], exported, onnx.OnnxOptions(), ov_device=ov_device, tolerances=chosen,
                         detections=Detections(conf=det_conf), map_tolerances=map_tolerances(map_tol))
    with data_yaml(data) as plan.data:
        finish(pipeline.check(loaded, run, plan, step=step), as_json, junit)


def parse_batches(value: str) -> list[int]:
    try:
        batches = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected batches like 1,8,32, got {value!r}") from None
    if not batches or min(batches) < 1:
        raise typer.BadParameter(f"expected positive batches like 1,8,32, got {value!r}")
    return sorted(set(batches))


def _job_lines():
    """Progress for logs (stderr is not a terminal): one line each time a new job starts."""
    started = set()

    def update(text: str, done: int, total: int) -> None:
        job = text.split(": run ")[0]
        if job not in started:
            started.add(job)
            err.print(f"[{done}/{total}] {job}", highlight=False)

    return update


@contextlib.contextmanager
def jobs_bar():
    """Progress over bench jobs, ``update(description, done, total)``: a bar on a terminal, lines in a log."""
    if not err.is_terminal:
        yield _job_lines()
        return
    with progress_bar() as bar:
        task = bar.add_task("Preparing", total=None)
        yield lambda text, done, total: bar.update(task, description=text, completed=done, total=total)


def show_bench(bench_report, directory: Path) -> None:
    render(f"Latency on {bench_report.device} ({bench_report.machine['threads']} threads)",
           report.bench_table(bench_report.results))
    if bench_report.profiles:
        render("Per-op profiles (batch of the first row)", report.profile_table(bench_report.profiles))
    for check in bench_report.trust:
        out.print(check.summary, highlight=False)
    for note in bench_report.notes:
        err.print(f"[yellow]note:[/] {note}", highlight=False)
    out.print(f"Report written to {directory / 'report.md'}, results.json and the plots beside it")


def run_study(plan, notes: list[str], directory: Path, models: list[Path] | None, as_json: bool,
              cluster=None) -> None:
    from .bench import study

    if models:
        raise AttnDeployError("--zoo builds its own models; it takes no MODEL")
    with jobs_bar() as update:
        result = study.run(plan, notes, update, cluster=cluster)
    bench = result.bench
    plotted = dataclasses.replace(bench, results=[r for r in bench.results if r.model.startswith("yolov8n")],
                                  profiles=[p for p in bench.profiles if p.model.endswith(" n-P4")])
    report.write_study_report(directory, result, plotted)
    if as_json:
        return emit_json(result)
    show_bench(result.bench, directory)
    render("Claims", report.claims_table(result.claims))


@app.command()
@handled
def bench(
    models: Annotated[list[Path] | None, typer.Argument(
        help="Checkpoints (.pt, exported on the fly) or exported files (.onnx, OpenVINO directory, .engine). "
        "Default: the demo's checkpoint.")] = None,
    device: Annotated[Device, typer.Option(help="Where to run.")] = Device.cpu,
    backend: Annotated[list[BenchBackend] | None, typer.Option(
        help="Backends (repeatable; default: every one available for --device but ncnn, which runs at --batch 1 "
             "only: fp32, unpacked, fp16 and bf16 rows).")] = None,
    batch: Annotated[str | None, typer.Option(help="Batches, comma-separated (default: a static export's own batch; "
                                              "1,8,32 for a checkpoint or a dynamic export).")] = None,
    imgsz: ImgszOpt = None,
    threads: Annotated[int | None, typer.Option("--threads", min=1, help="Threads every runtime gets (default: "
                                                "all logical cores, the same for every backend).")] = None,
    warmup_s: Annotated[float | None, typer.Option(
        min=0, help="Seconds of untimed runs first, at least one run (default 1; --zoo 0.2).")] = None,
    iters: Annotated[int | None, typer.Option(
        min=1, help="At least this many timed runs (default 10; --zoo 5)...")] = None,
    duration_s: Annotated[float | None, typer.Option(
        min=0, help="...and at least this many seconds of them (default 3; --zoo 0.5).")] = None,
    zoo: Annotated[bool, typer.Option("--zoo", help="The efficiency study: every zoo module alone at the YOLOv8 "
                                      "feature shapes and inside YOLOv8n/s, against no attention and MHSA.")] = False,
    profile: Annotated[bool, typer.Option(help="Per-op profiles in onnxruntime and OpenVINO.")] = True,
    trust: Annotated[bool, typer.Option("--trust", help="Check the harness against benchmark_app and a plain "
                                        "onnxruntime loop on the first model.")] = False,
    name: Annotated[str | None, typer.Option(
        help="Report name: reports/NAME/ (default bench-DEVICE, zoo-DEVICE).")] = None,
    output_dir: OutputDirOpt = Path("reports"),
    force: Annotated[bool, typer.Option(help="Replace an existing report directory.")] = False,
    plugin: PluginOpt = None,
    fork: ForkOpt = None,
    trust_checkpoint: TrustOpt = False,
    yaml: YamlOpt = None,
    cluster: ClusterOpt = None,
    job_timeout_s: JobTimeoutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Latency, throughput, memory and per-op profiles of MODELS on every backend, written to reports/NAME/.
    With --zoo, the efficiency study of the attention zoo, ending with a claims table."""
    from . import cluster as clusters
    from . import fixtures
    from .bench import Budget, suite
    from .bench.study import BUDGET

    if cluster:
        clusters.require_ray()

    missing = [str(p) for p in models or [] if not p.exists()]
    if missing:
        raise AttnDeployError(f"{', '.join(missing)} does not exist")
    directory = output_dir / (name or f"{'zoo' if zoo else 'bench'}-{device.value}")
    check_writable(directory, force)
    given = {k: v for k, v in {"warmup_s": warmup_s, "iters": iters, "duration_s": duration_s}.items() if v is not None}
    budget = dataclasses.replace(BUDGET if zoo else Budget(), **given)
    variants, notes = suite.choose_variants(device.value, [b.value for b in backend] if backend else None)
    plan = suite.Plan(device.value, variants, parse_batches(batch) if batch else None, threads or os.cpu_count(),
                      budget, profile)
    if trust and not zoo and not {"onnxruntime", "openvino"} & {v.backend for v in variants}:
        raise AttnDeployError("--trust compares onnxruntime and OpenVINO timings; neither is among the backends")
    with clusters.session(cluster, output_dir / CLUSTER_RESULTS, job_timeout_s) as joined:
        if zoo:
            return run_study(plan, notes, directory, models, as_json, joined)
        with jobs_bar() as update:
            result = suite.bench_models(models or [fixtures.checkpoint("cga")], plan,
                                        parse_imgsz(imgsz) if imgsz else None, notes, trust,
                                        lambda p: load_checkpoint(p, plugin, fork, trust_checkpoint, yaml), step,
                                        update, joined)
    report.write_bench_report(directory, result, "attn-deploy bench")
    if as_json:
        emit_json(result)
    else:
        show_bench(result, directory)


def show_tune(result, directory: Path) -> None:
    render(f"Tune candidates for {result.checkpoint.name} at {result.imgsz[0]}x{result.imgsz[1]} (batch 1)",
           report.tune_table(result))
    for note in result.notes:
        err.print(f"[yellow]note:[/] {note}", highlight=False)
    if result.recommended:
        out.print(f"Recommended: {result.recommended.reason}", highlight=False, soft_wrap=True)
        out.print(f"Written to {result.recommended.path} (record: {result.recommended.metadata})", highlight=False)
    else:
        err.print("[bold red]no candidate passed[/] parity and the mAP budget; nothing was recommended",
                  highlight=False)
    out.print(f"Report written to {directory / 'report.md'}, results.json and the plot beside it", highlight=False)


@app.command("tune")
@handled
def tune_command(
    checkpoint: CheckpointArg,
    imgsz: ImgszOpt = None,
    data: DataOpt = None,
    calib: Annotated[Path | None, typer.Option(help="INT8 calibration images: a directory, or a data YAML's train "
                                               "split (default: --data's).")] = None,
    map_tol: Annotated[float, typer.Option("--map-tol", min=0, help="The largest mAP50-95 drop a recommendation may "
                                           "cost, at any precision (with --data).")] = 0.005,
    budget_s: Annotated[float | None, typer.Option("--budget-s", min=0, help="Seconds for the search once the "
                                                   "artefacts are built; candidates not reached are skipped.")] = None,
    threads: Annotated[int | None, typer.Option("--threads", min=1, help="Threads of every runtime (default: every "
                                                "logical core, and the physical cores where they differ).")] = None,
    warmup_s: Annotated[float, typer.Option(min=0, help="Seconds of untimed runs per candidate.")] = 1.0,
    iters: Annotated[int, typer.Option(min=1, help="At least this many timed runs per candidate...")] = 10,
    duration_s: Annotated[float, typer.Option(min=0, help="...and at least this many seconds of them.")] = 3.0,
    workdir: Annotated[Path | None, typer.Option(help="Build and keep every candidate's artefact here (default: a "
                                                 "temporary directory, removed).")] = None,
    name: Annotated[str | None, typer.Option(help="Report name: reports/NAME/ (default tune-STEM).")] = None,
    output_dir: OutputDirOpt = Path("reports"),
    rknn_platform: Annotated[str | None, typer.Option(help="Also build for this Rockchip NPU (rk3588, ...; see "
                                                      "export) and verify it in rknn-toolkit2's simulator, which "
                                                      "cannot time it: listed, never recommended.")] = None,
    rknn_python: RknnPythonOpt = None,
    force: Annotated[bool, typer.Option(help="Replace an earlier recommendation and report.")] = False,
    plugin: PluginOpt = None,
    fork: ForkOpt = None,
    trust_checkpoint: TrustOpt = False,
    yaml: YamlOpt = None,
    atol: AtolOpt = None,
    rtol: RtolOpt = None,
    noise_factor: NoiseOpt = None,
    tol: TolOpt = None,
    cluster: ClusterOpt = None,
    job_timeout_s: JobTimeoutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Find the fastest artefact of CHECKPOINT on this machine that passes parity (and with --data the mAP budget):
    every backend and precision it can run, timed one at a time against ultralytics' own ONNX export; the winner is
    written beside CHECKPOINT as <stem>.tuned.* with <stem>.tuned.json."""
    from . import cluster as clusters
    from .bench import Budget, tune
    from .exporters import rknn

    if cluster:
        clusters.require_ray()
    if rknn_python:  # the simulator's runner finds the same interpreter
        os.environ[rknn.ENV_VAR] = str(rknn_python)
    directory = output_dir / (name or f"tune-{checkpoint.stem}")
    check_writable(directory, force)
    tune.check_outputs(checkpoint, force)
    chosen = tolerances(atol, rtol, noise_factor, tol)
    loaded = load_checkpoint(checkpoint, plugin, fork, trust_checkpoint, yaml)
    size = parse_imgsz(imgsz) if imgsz else loaded.imgsz or (640, 640)
    loaded.check_input(size, 1)
    loading = {"plugins": [str(p) for p in plugin or []], "trust": trust_checkpoint,
               "yaml": str(yaml) if yaml else None, "fork": str(fork) if fork else None}  # so that a job can load the reference in another process
    with data_yaml(data, ("train", "val") if data and calib is None else ("val",)) as data_path:
        request = tune.Request(size, data_path, calib, map_tol, budget_s, Budget(warmup_s, iters, duration_s), threads,
                               chosen, loading=loading, force=force,
                               rknn=rknn.RKNNOptions(rknn_platform, rknn_python) if rknn_platform else None)
        with clusters.session(cluster, output_dir / CLUSTER_RESULTS, job_timeout_s) as joined, jobs_bar() as update:
            result = tune.run(loaded, request, step, update, workdir, joined)
    report.write_tune_report(directory, result)
    if as_json:
        emit_json(result)
    else:
        show_tune(result, directory)
    if result.recommended is None:
        raise typer.Exit(CHECK_FAILED)


@app.command()
@handled
def node(
    start: Annotated[bool, typer.Option("--start", help="Run `ray start` offering these resources: a head node, or "
                                        "with --address a node that joins the head there.")] = False,
    address: Annotated[str | None, typer.Option(help="The head node's HOST:PORT, for --start.")] = None,
    name: Annotated[str | None, typer.Option(help="The node's name in the rows (default: the host name).")] = None,
    num_cpus: Annotated[int | None, typer.Option("--num-cpus", min=0, help="CPUs Ray may schedule other work "
                                                 "on (attn-deploy's jobs ask for none).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The resources this machine offers to a Ray cluster: its CPU and CUDA devices (one timing job at a time on
    each), CPU features, runtimes (onnxruntime, OpenVINO and its devices, torch, TensorRT, ncnn, RKNN)."""
    import subprocess

    from .cluster import require_ray, resources

    offer = resources.offers(name)
    command = resources.start_command(offer, address, num_cpus)
    if as_json:
        emit_json({**dataclasses.asdict(offer), "start": command})
    else:
        render(f"Node {offer.node}: Ray resources", (["resource", "amount"],
                                                     [[k, f"{v:g}"] for k, v in offer.resources.items()]))
        render("Details", (["what", "found"], [[k, v] for k, v in offer.details.items()]))
        out.print("Start: " + " ".join(command[:-1]) + f" '{command[-1]}'", highlight=False, soft_wrap=True)
    if start:
        require_ray()
        if subprocess.run(command).returncode:
            raise AttnDeployError("`ray start` failed (its output above says why)")


@app.command()
@handled
def zoo(as_json: JsonOpt = False) -> None:
    """The attention modules, their papers and the shipped YAMLs."""
    from .models import ZOO

    columns = ["name", "module", "variant", "paper", "yamls", "tasks"]
    rows = [[e.name, e.module.__name__, e.variant, e.paper, ", ".join(p.name for p in e.yamls), ", ".join(e.tasks)]
            for e in ZOO.values()]
    if as_json:
        emit_json([dict(zip(columns, row)) for row in rows])
    else:
        render("Attention zoo (each at P5: after SPPF in YOLOv8, after C2PSA in YOLO11 and YOLO26; scales n/s/m/l/x; "
               "a task's YAML ends -seg, -pose, -obb)", (columns, rows))


@app.command()
@handled
def demo(
    output_dir: Annotated[Path, typer.Option(help="Where the report and artefacts go.")] = Path("reports/demo"),
    iters: Annotated[int, typer.Option(min=1, help="Timed benchmark iterations.")] = 30,
    as_json: JsonOpt = False,
) -> None:
    """Export the trained YOLOv8n-CGA fixture to ONNX and OpenVINO, verify outputs and mAP, benchmark, report."""
    import shutil

    from . import fixtures, pipeline
    from .bench import Budget, suite
    from .exporters import onnx

    started = time.perf_counter()
    checkpoint = output_dir / "artifacts" / fixtures.checkpoint("cga").name
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(fixtures.checkpoint("cga"), checkpoint)
    loaded = load_checkpoint(checkpoint, None, None, False, None)
    plan = pipeline.Plan(["onnx", "openvino"], checkpoint.with_suffix(".onnx"), onnx.OnnxOptions(force=True))
    plan.onnx.imgsz = loaded.imgsz
    with data_yaml("shapes") as plan.data:
        run = pipeline.deploy(loaded, plan, step)
    subject = suite.Subject(checkpoint.stem, loaded.imgsz, artefacts={"onnxruntime": run.exports[0].path})
    timing = suite.time_variant(subject, suite.Variant("onnxruntime"), 1,
                                suite.Plan(threads=os.cpu_count(), budget=Budget(0.5, iters, 0.0)))
    summary = report.write_demo_report(output_dir, run, timing, time.perf_counter() - started)
    if as_json:
        emit_json(summary)
    else:
        show_deployment(run)
        render("onnxruntime CPU latency", report.bench_table([timing]))
        out.print(f"Report written to {output_dir / 'report.md'} and {output_dir / 'report.json'}")
    if not run.passed:
        raise typer.Exit(CHECK_FAILED)


@app.command("data")
@handled
def data_command(
    output_dir: Annotated[Path, typer.Argument(help="Where to write the data set (replaced whole).")],
    split: Annotated[list[str] | None, typer.Option(help="Splits to write: train, val (default both).")] = None,
    seed: Annotated[int | None, typer.Option(help="Generator seed (default: the fixtures' own).")] = None,
    task: Annotated[ShapesTask, typer.Option(help="Which labels to write: boxes, outlines, keypoints or "
                                             "rotated boxes (the images are the same).")] = ShapesTask.detect,
    force: Annotated[bool, typer.Option(help="Replace an existing directory.")] = False,
) -> None:
    """Regenerate the procedural shapes data set that the trained fixtures learned, in YOLO format."""
    from . import fixtures, shapes

    check_writable(output_dir, force)
    spec = fixtures.shapes_spec()
    spec = spec if seed is None else dataclasses.replace(spec, seed=seed)
    with progress_bar() as bar:
        drawing = bar.add_task("Drawing images", total=None)
        path = shapes.generate(output_dir, spec, tuple(split or ("train", "val")), task=task.value,
                               progress=lambda name, done, total: bar.update(
                                   drawing, description=f"Drawing {name} images", completed=done, total=total))
    out.print(f"Wrote {path} ({task.value} labels, seed {spec.seed})", highlight=False)


setup_app = typer.Typer(help="Create the environments of converters whose pins conflict with attn-deploy's.")
app.add_typer(setup_app, name="setup")


@setup_app.command("rknn")
@handled
def setup_rknn(
    path: Annotated[Path | None, typer.Option(help="Where to create it (default: ~/.cache/attn-deploy/rknn).")] = None,
    torch_index: Annotated[str | None, typer.Option(help="A package index with CPU torch wheels, e.g. "
                                                    "https://download.pytorch.org/whl/cpu (default: pip's).")] = None,
    force: Annotated[bool, typer.Option(help="Create it again where one exists.")] = False,
) -> None:
    """Create the environment rknn-toolkit2 2.3.2 runs in (pinned; its torch, numpy and onnx pins conflict with ours)."""
    from .exporters import rknn

    started = time.perf_counter()
    with step(f"Creating the RKNN environment in {path or rknn.default_env()}"):
        python, versions = rknn.setup(path, torch_index, force)
    out.print(f"RKNN environment ready in {time.perf_counter() - started:.0f} s: {python} ("
              + ", ".join(f"{k} {v}" for k, v in versions.items()) + ")", highlight=False)


def main() -> None:
    app()
