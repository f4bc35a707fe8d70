"""Writers for the reports: plain rows that the CLI renders as tables, JSON and Markdown files."""

import dataclasses
import json
import os
import platform
from pathlib import Path
from typing import Any

from .bench import BenchResult
from .files import write_atomic
from .parity import ParityReport

Table = tuple[list[str], list[list[str]]]


def jsonable(obj: Any) -> Any:
    """Dataclasses, paths and tuples as plain JSON values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)} | _properties(obj)
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _properties(obj: Any) -> dict:
    """The verdicts reports compute rather than store."""
    return {name: getattr(obj, name) for name in ("passed", "reference", "delta", "delta50")
            if isinstance(getattr(type(obj), name, None), property)}


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine() -> dict:
    """What the figures were measured on."""
    import onnxruntime
    import torch

    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def parity_table(report: ParityReport) -> Table:
    headers = ["input", "max abs", "max rel", "mean abs", "cosine", "NaN/Inf", "fp32 noise", "result"]
    rows = [
        [r.input, f"{r.max_abs:.3g}", f"{r.max_rel:.3g}", f"{r.mean_abs:.3g}", f"{r.cosine:.7f}",
         f"{r.nan}/{r.inf}", "-" if r.ref_noise is None else f"{r.ref_noise:.3g}", "pass" if r.passed else "FAIL"]
        for r in report.results
    ]
    return headers, rows


def bench_table(results: list[BenchResult]) -> Table:
    headers = ["model", "backend", "batch", "threads", "median ms", "p90 ms", "p99 ms", "mean ms", "img/s"]
    rows = [
        [r.model, r.backend, str(r.batch), str(r.threads or "default"), f"{r.latency_ms.median:.2f}",
         f"{r.latency_ms.p90:.2f}", f"{r.latency_ms.p99:.2f}", f"{r.latency_ms.mean:.2f}", f"{r.throughput:.2f}"]
        for r in results
    ]
    return headers, rows


def ops_change(before: dict[str, int] | None, after: dict[str, int] | None) -> str:
    """``41 → 30 nodes (-ScatterND 8, +Conv 4)``: the node total and every op type whose count changed."""
    if after is None:
        return "-"
    if before is None:
        return f"does not export → {sum(after.values())} nodes"
    delta = {op: after.get(op, 0) - before.get(op, 0) for op in sorted({*before, *after})}
    changes = ", ".join(f"{'+' if d > 0 else '-'}{op} {abs(d)}" for op, d in delta.items() if d)
    return f"{sum(before.values())} → {sum(after.values())} nodes" + (f" ({changes})" if changes else "")


def rewrite_table(report) -> Table:
    headers = ["layer", "module", "rule", "applied", "verified max abs", "ONNX ops", "note"]
    rows = [
        [r.path, r.module, r.rule, "yes" if r.applied else "NO", "-" if r.max_abs is None else f"{r.max_abs:.3g}",
         ops_change(r.ops_before, r.ops_after), r.note]
        for r in report.layers
    ]
    return headers, rows


def lint_table(report) -> Table:
    return ["check", "finding", "where"], [[f.check, f.detail, ", ".join(f.nodes)] for f in report.findings]


def markdown_table(table: Table) -> str:
    headers, rows = table
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def write_json(path: Path, data: Any) -> Path:
    return write_atomic(Path(path), lambda tmp: tmp.write_text(json.dumps(jsonable(data), indent=2) + "\n"))


def write_markdown(path: Path, title: str, sections: dict[str, str]) -> Path:
    body = "\n\n".join(f"## {heading}\n\n{text}" for heading, text in sections.items())
    return write_atomic(Path(path), lambda tmp: tmp.write_text(f"# {title}\n\n{body}\n"))


def _fmt(value: float | None, spec: str = ".3g") -> str:
    return "-" if value is None else format(value, spec)


def _row_name(report: ParityReport) -> str:
    return f"{report.backend} ({report.label})" if report.label else report.backend


def _worst_detection(report: ParityReport, name: str) -> float | None:
    values = [getattr(d, name) for d in report.detections if getattr(d, name) is not None]
    return min(values) if values else None


def summary_row(report: ParityReport) -> dict:
    """One parity report as the figures of one table row: the worst over its inputs."""
    r = report.results
    verdict = ("pass" if report.passed else "FAIL") + ("" if report.gating else " (not gating)")
    return {
        "backend": _row_name(report), "precision": report.precision, "max abs": _fmt(max(x.max_abs for x in r)),
        "max rel": _fmt(max(x.max_rel for x in r)), "cosine": _fmt(min(x.cosine for x in r), ".7f"),
        "NaN/Inf": f"{sum(x.nan for x in r)}/{sum(x.inf for x in r)}",
        "det recall": _fmt(_worst_detection(report, "recall"), ".4f"),
        "det precision": _fmt(_worst_detection(report, "precision"), ".4f"),
        "max score diff": _fmt(max((d.max_score_diff for d in report.detections), default=None)),
        "atol/rtol": f"{report.tolerance.atol:g}/{report.tolerance.rtol:g}", **_accuracy_cells(report.accuracy),
        "result": verdict,
    }


def _accuracy_cells(accuracy) -> dict:
    if accuracy is None:
        return {}
    return {"mAP50": f"{accuracy.accuracy.map50:.4f} ({accuracy.delta50:+.4f})",
            "mAP50-95": f"{accuracy.accuracy.map:.4f} ({accuracy.delta:+.4f})", "mAP drop tol": f"{accuracy.tolerance:g}"}


def _reference_row(accuracy, headers: list[str]) -> list[str]:
    """The original PyTorch model's own mAP, as the first row of a table with mAP columns."""
    cells = {"backend": "pytorch (reference)", "precision": "fp32", "mAP50": f"{accuracy.reference.map50:.4f}",
             "mAP50-95": f"{accuracy.reference.map:.4f}"}
    return [cells.get(h, "-") for h in headers]


def summary_table(reports: list[ParityReport]) -> Table:
    rows = [summary_row(r) for r in reports]
    headers = list(rows[0]) if rows else []
    scored = next((r.accuracy for r in reports if r.accuracy is not None), None)
    return headers, ([_reference_row(scored, headers)] if scored else []) + [list(r.values()) for r in rows]


def localisation_table(localisation) -> Table:
    headers = ["module", "max abs", "bound", "departs"]
    return headers, [[x.path, _fmt(x.max_abs), _fmt(x.bound), "YES" if x.departs else "no"]
                     for x in localisation.layers]


def write_demo_report(directory: Path, run, timing: BenchResult, seconds: float) -> dict:
    """``report.json`` and ``report.md`` for ``attn-deploy demo`` (``run``: a ``pipeline.Deployment``)."""
    summary = {
        "model": "yolov8n-cga-shapes: YOLOv8n with LocalWindowAttention (Cascaded Group Attention) at P5, trained "
                 "on the procedural shapes data set (attn_deploy/fixtures)",
        **{f.name: getattr(run, f.name) for f in dataclasses.fields(run)},
        "passed": run.passed,
        "latency": timing,
        "wall_seconds": round(seconds, 2),
        "machine": machine(),
    }
    write_json(directory / "report.json", summary)
    sections = {"Rewrites": markdown_table(rewrite_table(run.rewrite)),
                "Exports": "\n".join(f"- `{e.path}` ({e.target}); notes: {'; '.join(e.notes) or 'none'}"
                                     for e in run.exports)}
    for lint in run.lint:
        sections[f"Lint for {lint.target}: {'passed' if lint.passed else 'FAILED'}"] = (
            markdown_table(lint_table(lint)) if lint.findings else "No findings.")
    sections[f"Parity against PyTorch fp32: {'passed' if run.passed else 'FAILED'}"] = "\n\n".join(
        [markdown_table(summary_table(run.parity))] + [markdown_table(parity_table(p)) for p in run.parity])
    sections["onnxruntime CPU latency"] = markdown_table(bench_table([timing]))
    sections["Machine"] = "\n".join(f"- {k}: {v}" for k, v in summary["machine"].items())
    sections["Wall time"] = f"{seconds:.1f} s"
    write_markdown(directory / "report.md", "attn-deploy demo: YOLOv8n-CGA", sections)
    return summary


def junit_xml(run) -> str:
    """A JUnit XML report of a ``pipeline.Deployment``: one test case per lint and per parity row."""
    from xml.etree import ElementTree as ET

    suite = ET.Element("testsuite", name="attn-deploy")
    for lint in run.lint:
        case = ET.SubElement(suite, "testcase", classname="attn-deploy.lint", name=f"lint {lint.target}")
        if not lint.passed:
            ET.SubElement(case, "failure", message=f"{len(lint.findings)} findings").text = "\n".join(
                f"{f.check}: {f.detail}" for f in lint.findings)
    for report in run.parity:
        row = summary_row(report)
        case = ET.SubElement(suite, "testcase", classname="attn-deploy.parity",
                             name=f"parity {row['backend']} {report.precision}")
        detail = ", ".join(f"{k} {v}" for k, v in row.items() if k not in ("backend", "precision", "result"))
        if not report.passed:
            kind = "failure" if report.gating else "skipped"
            ET.SubElement(case, kind, message=f"parity failed ({row['result']})").text = (
                detail + _localised(report))
        else:
            ET.SubElement(case, "system-out").text = detail
    suite.set("tests", str(len(suite)))
    suite.set("failures", str(len(suite.findall("testcase/failure"))))
    suite.set("skipped", str(len(suite.findall("testcase/skipped"))))
    return ET.tostring(suite, encoding="unicode", xml_declaration=True)


def _localised(report: ParityReport) -> str:
    first = report.localisation.first if report.localisation else None
    return f"\nfirst departing module: {first}" if first else ""


def write_junit(path: Path, run) -> Path:
    return write_atomic(Path(path), lambda tmp: tmp.write_text(junit_xml(run)))
