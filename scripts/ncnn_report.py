"""ncnn for every model attn-deploy knows: what the ncnn lint predicted, and what pnnx and ncnn then did.

Rows, each a seeded model (seed 0) saved as best.pt and exported for ncnn at --imgsz (CGA at 224, the smallest size
it runs at; the variants at 128), batch 1, fp32:
- every zoo module at P5 of YOLOv8n, YOLO11n and YOLO26n (attn_deploy.models ZOO, build_detector), and on YOLOv8n
  also exported without the rewrites (--no-rewrite), the form a user who skips them hands to pnnx;
- every variant in tests/variants.py (GRAPH_VARIANTS) at P5 of YOLOv8n;
- every family and task head ultralytics ships (tests/task_models.py: trained-like statistics), the end-to-end forms
  of YOLOv10 and YOLO26 included.
Per row: the lint's verdict for ncnn (its error checks), whether pnnx converted (its warnings), whether ncnn loaded
(the layer it refused), parity in ncnn against the original PyTorch model at fp32 (worst max abs), and, where the
lint and the outcome disagree, why. "agrees": the lint passed and everything else did, or the lint failed and
something else did.

Writes reports/ncnn/report.json and report.md.
Run: python scripts/ncnn_report.py [--imgsz 96] [--render] [--resume] [ROW ...]
(named rows are run again, the others kept from report.json; --resume keeps every row there and names the
one the process died on). The variants run at 128 at least: their windows
of 2 tile YOLOv8's P5 map from 4x4. The report is rewritten after every row.
"""

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests/variants.py and tests/task_models.py build the models

from attn_deploy import (AttnDeployError, LoadedModel, OnnxOptions, heads, lint, load, pipeline,  # noqa: E402
                         localise_export, save_checkpoint, verify_export)
from attn_deploy.verify import verify_runner  # noqa: E402
from attn_deploy.exporters import input_geometry, ncnn  # noqa: E402
from attn_deploy.machine import machine  # noqa: E402
from attn_deploy.models import ZOO  # noqa: E402
from attn_deploy.models.detector import VARIANCE_FLOOR, build_detector, build_detector_with  # noqa: E402
from attn_deploy.report import machine_lines, markdown_table, write_json, write_markdown  # noqa: E402
from tests.task_models import build  # noqa: E402
from tests.variants import GRAPH_VARIANTS  # noqa: E402

OUT = ROOT / "reports/ncnn"
PENDING = Path(tempfile.gettempdir()) / "ncnn_report.pending"  # the row running, to name it if the process dies
# CGA's attention biases are built for 7x7 windows: a P5 map smaller than 7x7 does not run (224 is the smallest size).
SMALLEST = {"cga": 224}
FAMILIES = [  # (row, YAML, task, end-to-end)
    *[(name, f"{name}.yaml", "detect", False) for name in ("yolov5nu", "yolov8n", "yolov9t", "yolov10n")],
    ("yolov10n --end2end", "yolov10n.yaml", "detect", True),
    *[(name, f"{name}.yaml", "detect", False) for name in ("yolo11n", "yolo12n", "yolo26n")],
    ("yolo26n --end2end", "yolo26n.yaml", "detect", True),
    ("rtdetr-l", "rtdetr-l.yaml", "rtdetr", False),
    *[(f"{family}-{suffix}", f"{family}-{suffix}.yaml", task, False)
      for suffix, task in (("seg", "segment"), ("pose", "pose"), ("obb", "obb"), ("cls", "classify"))
      for family in ("yolov8n", "yolo11n")],
]


@dataclasses.dataclass
class Row:
    group: str
    name: str
    lint_passed: bool | None = None
    lint_errors: list[str] = dataclasses.field(default_factory=list)
    converted: bool = False
    loaded: bool = False
    parity: bool = False
    onnx_parity: bool | None = None
    max_abs: float | None = None
    worst: str = ""  # the input and what its worst element holds, with its relative error
    departs_at: str = ""  # the first YOLO block or attention module whose output departs in ncnn
    parity_without_winograd: bool | None = None  # where parity failed: with Winograd convolutions off
    pnnx_warnings: list[str] = dataclasses.field(default_factory=list)
    error: str = ""
    seconds: float = 0.0

    @property
    def agrees(self) -> bool:
        return bool(self.lint_passed) == (self.converted and self.loaded and self.parity)


def builders(imgsz: int) -> dict[str, tuple[str, object, bool, int]]:
    """Row name -> (group, a function building the model, whether to rewrite, the size to export at)."""
    rows = {}
    for name in ZOO:
        rows.update(_zoo(name, "yolov8", imgsz, True))
    for name, make in GRAPH_VARIANTS.items():  # windows and regions of 2 need an even P5 map: 128 at least
        size = max(imgsz, 128)
        rows[name] = ("variant", lambda m=make, s=size: build_detector_with(m, imgsz=s), True, size)
    for name, yaml, task, end2end in FAMILIES:
        rows[name] = ("family", lambda y=yaml, t=task, e=end2end: build(y, t, end2end=e), True, imgsz)
    for family in ("yolo11", "yolo26"):  # last: the same modules on other backbones
        for name in ZOO:
            rows.update(_zoo(name, family, imgsz, False))
    return rows


def _zoo(name: str, family: str, imgsz: int, plain: bool) -> dict[str, tuple[str, object, bool, int]]:
    """Zoo module ``name`` at P5 of ``family``; with ``plain`` also exported without the rewrites."""
    size = max(imgsz, SMALLEST.get(name, imgsz))
    make = (lambda: build_detector(name, family=family, imgsz=size))
    rows = {f"{family}n-{name}": ("zoo", make, True, size)}
    return rows | ({f"{family}n-{name} --no-rewrite": ("zoo, no rewrites", make, False, size)} if plain else {})


def _outcome(row: Row, error: AttnDeployError) -> None:
    text = str(error)
    row.converted = not text.startswith("pnnx cannot convert") and "ncnn cannot load" in text
    row.error = text.split("; pnnx warned:")[0][:300]
    row.pnnx_warnings = sorted(set(text.split("; pnnx warned: ")[1].split("; "))) if "pnnx warned:" in text else []


def measure(name: str, group: str, make, rewrite: bool, root: Path, imgsz: int) -> Row:
    row, started = Row(group, name), time.perf_counter()
    stem = name.replace(" --", ".")  # its own files: a failing export must not leave another row's to be linted
    try:
        model = make()
        if group == "variant":  # code of a user's own, which the loader refuses to import from a file: as loaded
            loaded = LoadedModel(model, root / f"{stem}.pt", model.names, 32, "detect", (imgsz, imgsz))
        else:
            loaded = load(save_checkpoint(model, root / f"{stem}.pt", imgsz=imgsz))
        if name.endswith("--end2end"):
            loaded = dataclasses.replace(loaded, model=heads.in_form(loaded.model, True))
        plan = pipeline.Plan(["ncnn"], root / f"{stem}.onnx", OnnxOptions((imgsz, imgsz), force=True),
                             rewrite=rewrite)
        try:
            run = pipeline.build(loaded, plan)
        except AttnDeployError as e:
            if plan.output.exists():
                found = lint(plan.output, "ncnn")
                row.lint_passed, row.lint_errors = found.passed, sorted({f.check for f in found.errors})
            _outcome(row, e)
            return row
        row.lint_passed, row.lint_errors = run.passed, sorted({f.check for r in run.lint for f in r.errors})
        row.converted = row.loaded = True
        row.pnnx_warnings = [n.removeprefix("pnnx: ") for e in run.exports for n in e.notes if n.startswith("pnnx:")]
        semantics = run.rewrite.reference if run.rewrite else "eager"
        found = verify_export(ncnn.model_dir(plan.output), loaded, semantics=semantics)
        row.parity, row.max_abs = found.passed, found.worst.max_abs
        failing = [r for r in found.results if not r.passed] or [found.worst]
        row.worst = "; ".join(f"{r.input} {r.worst_field} rel {r.max_rel:.2g}" for r in failing)
        if not row.parity:  # is it ncnn's, or does the ONNX it was built from depart as much? where does it start?
            row.onnx_parity = verify_export(plan.output, loaded, semantics=semantics).passed
            found = localise_export(ncnn.model_dir(plan.output), loaded, found.worst.input, found.tolerance, semantics)
            row.departs_at = found.first or ""
            row.parity_without_winograd = _without_winograd(plan.output, loaded, semantics)
    except Exception as e:  # a model that does not build or run at this size is a row that says so
        row.error = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
    finally:
        row.seconds = round(time.perf_counter() - started, 1)
    return row


def _without_winograd(path: Path, loaded, semantics: str) -> bool:
    runner = ncnn.Runner(ncnn.model_dir(path), settings=ncnn.NcnnSettings(winograd=False))
    try:
        batch, imgsz = input_geometry(runner)
        return verify_runner(runner, loaded, imgsz, batch, semantics=semantics).passed
    finally:
        runner.close()


def why(row: Row) -> str:
    """Where the lint and the outcome disagree (or both fail), what the outcome says."""
    if row.agrees and row.lint_passed:
        return ""
    said = [row.error] if row.error else []
    said += [f"pnnx: {'; '.join(row.pnnx_warnings)}"] if row.pnnx_warnings else []
    if row.loaded and not row.parity:
        where = f"first at {row.departs_at}" if row.departs_at else "no module's output departs by more than " \
            "atol + rtol x its largest value: an element-wise departure"
        winograd = {True: "; passes with Winograd convolutions off", False: "; fails with Winograd off too",
                    None: ""}[row.parity_without_winograd]
        said.append(f"ncnn departs by {row.max_abs:.3g} ({row.worst}); {where}{winograd}"
                    + (" (onnxruntime departs too)" if not row.onnx_parity else ""))
    return "; ".join(said)[:400]


def _mark(value: bool | None) -> str:
    return "-" if value is None else "yes" if value else "**no**"


def sections(rows: list[Row], imgsz: int) -> dict[str, str]:
    body = [[r.group, r.name, "pass" if r.lint_passed else ", ".join(r.lint_errors) or "-", _mark(r.converted),
             _mark(r.loaded), _mark(r.parity), f"{r.max_abs:.2g}" if r.max_abs is not None else "-",
             "yes" if r.agrees else "**no**", why(r)] for r in rows]
    rewritten = [r for r in rows if r.group != "zoo, no rewrites"]
    good = sum(r.converted and r.loaded and r.parity for r in rewritten)
    agree = sum(r.agrees for r in rows)
    summary = [
        f"Every model seeded (seed 0), exported for ncnn at {imgsz}x{imgsz} (CGA at 224: its attention biases are "
        "built for 7x7 windows; the variants at 128: their windows of 2 need an even P5 map), batch 1, fp32 weights "
        "(`--target ncnn`: "
        f"the module rules and graph passes ncnn needs, the ONNX linted for ncnn, pnnx {ncnn.version()[1]}, "
        f"ncnn {ncnn.version()[0]}), parity in ncnn against the original PyTorch model at the fp32 tolerance, "
        "ncnn's default options (Winograd convolutions on). Each model's batch norms are calibrated at its export "
        "size on the bundled images and two noise images, each variance floored at "
        f"{VARIANCE_FLOOR} as a trained model's are (`attn_deploy.models.detector`). Without the floor on the zoo "
        "detectors and variants (the report of commit 7d0ef0a), rounding decided their outputs on noise: 36 of 62 "
        "passed, and 14 of the failures passed with Winograd off.",
        "", f"- exported with the rewrites: **{good} of {len(rewritten)}** convert, load and pass parity in ncnn "
        f"({good / max(len(rewritten), 1):.0%}).",
        f"- the lint agrees with the converter and runtime on **{agree} of {len(rows)}** rows (the rows exported "
        "without the rewrites included)."]
    runs = [r for r in rows if r.lint_passed is not None]
    structural = sum(bool(r.lint_passed) == (r.converted and r.loaded) for r in runs)
    numeric = [r for r in rewritten if r.loaded and not r.parity]
    summary += [
        f"- the lint agrees with pnnx and ncnn on whether the model converts and loads on **{structural} of "
        f"{len(runs)}** rows that exported to ONNX (what an op list and graph checks can tell).",
        f"- of the {len(numeric)} rows that load but fail parity: {sum(not r.onnx_parity for r in numeric)} depart "
        "in onnxruntime too (the seeded model is that sensitive), "
        f"{sum(bool(r.parity_without_winograd) for r in numeric)} pass with ncnn's Winograd convolutions off; all "
        "fail on the seeded noise inputs (seed0, seed1), none on the real images."
        if all("seed" in r.worst and "jpg" not in r.worst for r in numeric) else
        f"- of the {len(numeric)} rows that load but fail parity: see the why column."]
    missing = [name for name in builders(imgsz) if name not in {r.name for r in rows}]
    if missing:
        summary.append(f"- not run yet ({len(missing)}; `--resume` runs them): {', '.join(missing)}.")
    table = markdown_table((["group", "model", "ncnn lint", "pnnx converted", "ncnn loaded", "parity", "max abs",
                             "lint agrees", "why"], body))
    return {"Summary": "\n".join(summary), "Rows": table, "Machine": machine_lines(machine())}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--imgsz", type=int, default=96)
    parser.add_argument("--render", action="store_true", help="rewrite report.md from report.json, running nothing")
    parser.add_argument("--resume", action="store_true", help="keep the rows report.json holds, run the others")
    parser.add_argument("rows", nargs="*")
    args = parser.parse_args()
    kept = {}
    if (args.rows or args.render or args.resume) and (OUT / "report.json").exists():
        kept = {r["name"]: Row(**{k: v for k, v in r.items() if k in Row.__dataclass_fields__})
                for r in json.loads((OUT / "report.json").read_text())["rows"]}
    if args.render:
        write(list(kept.values()), json.loads((OUT / "report.json").read_text())["imgsz"])
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (group, make, rewrite, size) in builders(args.imgsz).items():
            if name in kept and (args.resume or args.rows and name not in args.rows):
                rows.append(kept[name])
                continue
            if args.resume and PENDING.exists() and PENDING.read_text() == name:
                rows.append(Row(group, name, error="the process died running this row (a crash in pnnx or ncnn)"))
                continue
            PENDING.write_text(name)
            rows.append(measure(name, group, make, rewrite, Path(tmp), size))
            print(f"{name}: lint {rows[-1].lint_passed} parity {rows[-1].parity} {why(rows[-1])[:120]}", flush=True)
            write(rows, args.imgsz)
    write(rows, args.imgsz)  # the kept rows after the last one run
    PENDING.unlink(missing_ok=True)


def write(rows: list[Row], imgsz: int) -> None:
    write_json(OUT / "report.json", {"imgsz": imgsz, "rows": [dataclasses.asdict(r) for r in rows],
                                     "machine": machine()})
    write_markdown(OUT / "report.md", "ncnn: the lint's prediction against pnnx and ncnn", sections(rows, imgsz))


if __name__ == "__main__":
    main()
