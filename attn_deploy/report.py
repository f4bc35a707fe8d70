"""Writers for the reports: plain rows that the CLI renders as tables, JSON and Markdown files."""

import dataclasses
import json
from pathlib import Path
from typing import Any

from .bench.harness import SPINNING_OFF, BenchResult
from .files import write_atomic, write_dir_atomic
from .machine import machine
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
    return {name: getattr(obj, name) for name in ("passed", "reference", "delta", "delta50", "box_delta", "noisy",
                                                  "elements_gate", "memory_bound_share", "compute_bound_share",
                                                  "difference", "agrees")
            if isinstance(getattr(type(obj), name, None), property)}


def parity_table(report: ParityReport) -> Table:
    """Every output of every input: its name and what it holds, its errors, and where the largest one is."""
    headers = ["input", "output", "max abs", "at", "max rel", "mean abs", "cosine", "NaN/Inf", "fp32 noise", "result"]
    rows = [
        [r.input, f"{r.name}: {r.holds}", f"{r.max_abs:.3g}", r.worst_field, f"{r.max_rel:.3g}", f"{r.mean_abs:.3g}",
         f"{r.cosine:.7f}", f"{r.nan}/{r.inf}", "-" if r.ref_noise is None else f"{r.ref_noise:.3g}",
         "pass" if r.passed else "FAIL"]
        for r in report.results
    ]
    return headers, rows


def detections_table(report: ParityReport) -> Table:
    """The detection-level check per image: instances on each side, recall, precision, how alike matched pairs are."""
    headers = ["input", "matched by", "reference", "export", "recall", "precision", "least alike pair",
               "max score diff", "result"]
    rows = [[d.input, d.matcher, str(d.ref_boxes), str(d.boxes), _fmt(d.recall, ".4f"), _fmt(d.precision, ".4f"),
             _fmt(d.min_similarity, ".4f"), _fmt(d.max_score_diff), "pass" if d.passed else "FAIL"]
            for d in report.detections]
    return headers, rows


def bench_table(results: list[BenchResult]) -> Table:
    """Latency and throughput: the median with its 95 % interval, the spread, images per second."""
    headers = ["model", "backend", "node (device)", "batch", "median ms [95% CI]", "mean", "p90", "p99", "min", "max",
               "std", "runs", "img/s", "noisy"]
    rows = [
        [r.model, r.variant, f"{r.node or 'this machine'} ({r.device})", str(r.batch),
         f"{r.latency_ms.median:.2f} [{r.latency_ms.median_ci[0]:.2f}, {r.latency_ms.median_ci[1]:.2f}]",
         *(f"{getattr(r.latency_ms, k):.2f}" for k in ("mean", "p90", "p99", "min", "max", "std")),
         str(r.iters), f"{r.throughput:.1f}", "YES" if r.latency_ms.noisy else "no"]
        for r in results
    ]
    return headers, rows


def cost_table(results: list[BenchResult]) -> Table:
    """What running costs besides latency: first inference, session creation or compile, memory, model size."""
    headers = ["model", "backend", "batch", "first run ms", "session ms", "peak RSS MB", "file MB", "params M",
               "GFLOPs/img"]
    rows = [
        [r.model, r.variant, str(r.batch), f"{r.first_ms:.1f}", _fmt(r.session_ms, ".0f"),
         _fmt(r.peak_rss_mb, ".0f"), _fmt(r.model_info.get("file_mb"), ".2f"),
         _fmt(r.model_info["params"] / 1e6 if r.model_info.get("params") else None, ".3f"),
         _fmt(r.model_info.get("gflops"), ".2f")]
        for r in results
    ]
    return headers, rows


def profile_table(profiles: list) -> Table:
    """Per model and backend: memory- and compute-bound shares, attention time, the three costliest op types."""
    headers = ["model", "backend", "profiled ms", "memory-bound", "compute-bound", "attention ms", "attention %",
               "top op types (ms)"]
    rows = [
        [p.model, p.backend, f"{p.profile.total_ms:.2f}", f"{100 * p.profile.memory_bound_share:.1f} %",
         f"{100 * p.profile.compute_bound_share:.1f} %",
         f"{p.attention_ms:.3f}" if p.attention_blocks else "-",
         f"{100 * p.attention_share:.1f} %" if p.attention_blocks else "-",
         ", ".join(f"{k} {v:.2f}" for k, v in list(p.profile.by_type.items())[:3])]
        for p in profiles
    ]
    return headers, rows


def blocks_table(profile) -> Table:
    """One profile's time per model block, the attention blocks marked."""
    rows = [[block + (" (attention)" if block in profile.attention_blocks else ""), f"{ms:.3f}",
             f"{100 * ms / profile.profile.total_ms:.1f} %"] for block, ms in profile.profile.by_block.items()]
    return ["block", "ms", "share"], rows


def ops_change(before: dict[str, int] | None, after: dict[str, int] | None) -> str:
    """``41 → 30 nodes (-ScatterND 8, +Conv 4)``: the node total and every op type whose count changed."""
    if after is None:
        return "-"
    if before is None:
        return f"does not export → {sum(after.values())} nodes"
    delta = {op: after.get(op, 0) - before.get(op, 0) for op in sorted({*before, *after})}
    changes = ", ".join(f"{'+' if d > 0 else '-'}{op} {abs(d)}" for op, d in delta.items() if d)
    return f"{sum(before.values())} → {sum(after.values())} nodes" + (f" ({changes})" if changes else "")


def rewrite_table(layers: list) -> Table:
    """Module rules or graph passes (``RewriteReport.layers`` or ``.graph``), one row per layer and rule."""
    headers = ["layer", "module", "rule", "applied", "verified max abs", "ONNX ops", "note"]
    rows = [
        [r.path, r.module, r.rule, "yes" if r.applied else "NO", "-" if r.max_abs is None else f"{r.max_abs:.3g}",
         ops_change(r.ops_before, r.ops_after), r.note]
        for r in layers
    ]
    return headers, rows


def lint_table(report) -> Table:
    return ["severity", "check", "finding", "where"], [[f.severity, f.check, f.detail, ", ".join(f.nodes)]
                                                       for f in report.findings]


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


def _worst_per_output(results: list) -> str:
    """The largest error of each output, named: ``output0 2.3e-05 (boxes); output1 4.8e-07 (prototypes)``."""
    worst = {}
    for x in results:
        if x.name not in worst or x.max_abs > worst[x.name].max_abs:
            worst[x.name] = x
    return "; ".join(f"{name} {x.max_abs:.3g} ({x.worst_field})" if name else f"{x.max_abs:.3g}"
                     for name, x in worst.items())


def summary_row(report: ParityReport) -> dict:
    """One parity report as the figures of one table row: the worst over its inputs, per output."""
    r = report.results
    verdict = ("pass" if report.passed else "FAIL") + ("" if report.gating else " (not gating)")
    elements = "" if report.elements_gate else " (decided by detections)"
    return {
        "backend": _row_name(report), "precision": report.precision, "max abs": _worst_per_output(r) + elements,
        "max rel": _fmt(max(x.max_rel for x in r)), "cosine": _fmt(min(x.cosine for x in r), ".7f"),
        "NaN/Inf": f"{sum(x.nan for x in r)}/{sum(x.inf for x in r)}",
        "det recall": _fmt(_worst_detection(report, "recall"), ".4f"),
        "det precision": _fmt(_worst_detection(report, "precision"), ".4f"),
        "max score diff": _fmt(max((d.max_score_diff for d in report.detections), default=None)),
        "atol/rtol": f"{report.tolerance.atol:g}/{report.tolerance.rtol:g}", **_accuracy_cells(report.accuracy),
        "result": verdict,
    }


def _map_headers(accuracy) -> tuple[str, str]:
    metric = accuracy.reference.metric
    return ("mAP50", "mAP50-95") if metric == "box" else (f"{metric} mAP50", f"{metric} mAP50-95")


def _accuracy_cells(accuracy) -> dict:
    if accuracy is None:
        return {}
    at50, at = _map_headers(accuracy)
    cells = {at50: f"{accuracy.accuracy.map50:.4f} ({accuracy.delta50:+.4f})",
             at: f"{accuracy.accuracy.map:.4f} ({accuracy.delta:+.4f})"}
    if accuracy.accuracy.box is not None:
        cells["box mAP50-95"] = f"{accuracy.accuracy.box[1]:.4f} ({accuracy.box_delta:+.4f})"
    return {**cells, "mAP drop tol": f"{accuracy.tolerance:g}"}


def _reference_row(accuracy, headers: list[str]) -> list[str]:
    """The original PyTorch model's own mAP, as the first row of a table with mAP columns."""
    at50, at = _map_headers(accuracy)
    box = accuracy.reference.box
    cells = {"backend": "pytorch (reference)", "precision": "fp32", at50: f"{accuracy.reference.map50:.4f}",
             at: f"{accuracy.reference.map:.4f}", "box mAP50-95": "-" if box is None else f"{box[1]:.4f}"}
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
    sections = {"Rewrites": markdown_table(rewrite_table(run.rewrite.layers + run.rewrite.graph)),
                "Exports": "\n".join(f"- `{e.path}` ({e.target}); notes: {'; '.join(e.notes) or 'none'}"
                                     for e in run.exports)}
    for lint in run.lint:
        sections[f"Lint for {lint.target}: {'passed' if lint.passed else 'FAILED'}"] = (
            markdown_table(lint_table(lint)) if lint.findings else "No findings.")
    sections[f"Parity against PyTorch fp32: {'passed' if run.passed else 'FAILED'}"] = "\n\n".join(
        [markdown_table(summary_table(run.parity))] + [markdown_table(parity_table(p)) for p in run.parity]
        + [markdown_table(detections_table(p)) for p in run.parity if p.detections])
    sections["onnxruntime CPU latency"] = markdown_table(bench_table([timing]))
    sections["Machine"] = machine_lines(summary["machine"])
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
            ET.SubElement(case, "failure", message=f"{len(lint.errors)} errors").text = "\n".join(
                f"{f.check}: {f.detail}" for f in lint.errors)
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


def machine_lines(facts: dict) -> str:
    return "\n".join(f"- {k}: {v}" for k, v in facts.items())


def _bench_summary(bench) -> str:
    b = bench.budget
    lines = [f"- device: {bench.device}; threads: {bench.threads or 'runtime default'}",
             f"- each row: at least {b.warmup_s:g} s of warm-up runs (one at least), then at least {b.iters} timed "
             f"runs and {b.duration_s:g} s of them; latency is per call, throughput is images per second "
             "(OpenVINO's throughput mode: requests in flight over wall time)",
             "- the median's 95 % interval comes from order statistics; a row is noisy when the interval reaches "
             "more than 5 % from the median", *timing_method(bench.results)]
    return "\n".join(lines + [f"- note: {n}" for n in bench.notes])


def timing_method(results: list[BenchResult]) -> list[str]:
    """How the rows were timed: alone (one live runtime, its default settings) or interleaved with other runners."""
    alone = sum(not r.interleaved for r in results)
    interleaved = [r for r in results if r.interleaved]
    lines = [f"- {alone} rows timed alone: one live runtime at a time, with its default settings (onnxruntime's "
             "intra-op threads spin between runs)"] if alone else []
    if interleaved:
        sessions = f"; {SPINNING_OFF}" if any(r.spinning is False for r in interleaved) else ""
        lines.append(f"- {len(interleaved)} rows timed interleaved, one run of each model per round{sessions}")
    return lines


def bench_sections(bench, plots: dict[str, str], blocks: bool = True) -> dict[str, str]:
    """The Markdown sections every bench report has, in order."""
    sections = {"Summary": _bench_summary(bench),
                "Latency and throughput": markdown_table(bench_table(bench.results)),
                "First run, session, memory, size": markdown_table(cost_table(bench.results)),
                "Plots": "\n".join(f"![{title}]({name})" for title, name in plots.items())}
    if bench.profiles:
        sections["Per-op profiles"] = markdown_table(profile_table(bench.profiles)) + "\n\n" + "\n\n".join(
            f"**{p.model} · {p.backend}**, by block:\n\n" + markdown_table(blocks_table(p)) for p in bench.profiles
            if p.attention_blocks and blocks)
    if bench.trust:
        sections["Trust checks"] = "\n".join(f"- {c.summary}; `{c.command}`" for c in bench.trust)
    return sections


def write_plots(directory: Path, bench) -> dict[str, str]:
    """latency.png, throughput.png and, with profiles, ops.png in ``directory``; returns {title: file name}."""
    from .bench import plots

    made = {"latency per backend": plots.latency(bench.results, directory / "latency.png").name,
            "throughput against batch": plots.throughput(bench.results, directory / "throughput.png").name}
    if bench.profiles:
        made["time per op type"] = plots.op_types(bench.profiles, directory / "ops.png").name
    return made


def write_bench_report(directory: Path, bench, title: str) -> Path:
    """``results.json``, ``report.md`` and the plots, written into ``directory`` whole (it is replaced)."""
    def write(tmp: Path) -> None:
        sections = {**bench_sections(bench, write_plots(tmp, bench)), "Machine": machine_lines(bench.machine)}
        write_json(tmp / "results.json", bench)
        write_markdown(tmp / "report.md", title, sections)

    return write_dir_atomic(Path(directory), write)


def _by_subject(bench) -> tuple[list[str], list[str], dict, dict, dict]:
    """Variant labels, profiled backends, medians by (subject, label), profiles by (subject, backend), and each
    subject's first row."""
    labels = list(dict.fromkeys(r.variant for r in bench.results))
    backends = list(dict.fromkeys(p.backend for p in bench.profiles))
    medians = {(r.model, r.variant): r.latency_ms.median for r in bench.results}
    profiles = {(p.model, p.backend): p for p in bench.profiles}
    first = {r.model: r for r in reversed(bench.results)}
    return labels, backends, medians, profiles, first


def modules_table(bench, names: list[str]) -> Table:
    """Each module alone: parameters, GFLOPs, median ms per backend, memory-bound share per profile."""
    labels, backends, medians, profiles, first = _by_subject(bench)
    headers = ["module", "shape", "params", "GFLOPs", *(f"{v} ms" for v in labels),
               *(f"memory-bound ({b})" for b in backends)]
    rows = []
    for name in names:
        info = first[name].model_info
        module, shape = name.split(" ", 1)
        rows.append([module, shape, str(info["params"]), _fmt(info["gflops"], ".3f"),
                     *(_fmt(medians.get((name, v)), ".3f") for v in labels),
                     *(f"{100 * profiles[name, b].profile.memory_bound_share:.0f} %" if (name, b) in profiles else "-"
                       for b in backends)])
    return headers, rows


def _overhead(found) -> str:
    return f"({found.ms:+.2f} ms, {100 * found.share:+.1f} %)" if found else "(baseline)"


def detectors_table(bench, overheads: list, names: list[str]) -> Table:
    """Each detector: size, median ms per backend with its overhead against no attention (where ``overheads`` has
    them), attention time."""
    labels, backends, medians, profiles, first = _by_subject(bench)
    extra = {(f"{o.family}{o.scale}-{o.module}", o.backend): o for o in overheads}
    headers = ["detector", "params M", "GFLOPs", *(f"{v} ms" + (" (overhead)" if overheads else "") for v in labels),
               *(f"attention ({b})" for b in backends)]
    rows = []
    for name in names:
        info = first[name].model_info
        cells = [f"{medians[name, v]:.2f}" + (" " + _overhead(extra.get((name, v))) if overheads else "")
                 for v in labels]
        attention = [f"{profiles[name, b].attention_ms:.2f} ms, {100 * profiles[name, b].attention_share:.1f} %"
                     if (name, b) in profiles and profiles[name, b].attention_blocks else "-" for b in backends]
        rows.append([name, f"{info['params'] / 1e6:.3f}", _fmt(info["gflops"], ".2f"), *cells, *attention])
    return headers, rows


def ratios_table(ratios: list) -> Table:
    """Latency ratios from interleaved rounds: one row per comparison, a column per backend variant."""
    labels = list(dict.fromkeys(r.variant for r in ratios))
    cells = {(r.where, r.variant): f"{r.value:.2f}x [{r.low:.2f}, {r.high:.2f}]" for r in ratios}
    return ["latency ratio", *labels], [[where, *(cells.get((where, v), "-") for v in labels)]
                                        for where in dict.fromkeys(r.where for r in ratios)]


def claims_table(claims: list) -> Table:
    return ["claim", "measured", "verdict", "why"], [[c.claim, c.measured, c.verdict, c.reason] for c in claims]


def fused_sections(fused) -> dict[str, str]:
    """The fused attention forms (bench/fused.py): each verified against the plain graph, then timed against it."""
    verified = (["subject", "form", "kind", "sites", "max abs error, onnxruntime", "max abs error, OpenVINO f32"],
                [[name, f.form, f.kind, str(f.sites), _fmt(f.error), _fmt(f.openvino_error)]
                 for name, forms in fused.forms.items() for f in forms])
    timed = (["module", "where", "backend", "form", "kind", "plain ms", "fused ms", "fused / plain [95 %]", ""],
             [[r.module, r.ratio.where, r.ratio.variant, r.form, r.kind, f"{r.plain_ms:.3f}", f"{r.fused_ms:.3f}",
               f"{r.ratio.value:.2f} [{r.ratio.low:.2f}, {r.ratio.high:.2f}]", r.ratio.sign] for r in fused.ratios])
    refused = "\n".join(f"- {note}" for note in fused.notes)
    return {"Fused attention: each form against the plain graph": markdown_table(verified) + (
                f"\n\nNot applied:\n{refused}" if refused else ""),
            "Fused attention: latency against the plain graph": markdown_table(timed)}


def write_study_report(directory: Path, study, plotted) -> Path:
    """The ``bench --zoo`` report: modules alone, inside the detectors, every timing, and the claims table last.
    ``plotted`` is the part of the bench report the plots show (a few dozen bars, not hundreds)."""
    bench = study.bench
    names = list(dict.fromkeys(r.model for r in bench.results))
    inside = {f"{o.family}{o.scale}-{m}" for o in study.overheads for m in (o.module, "none")}
    head = {
        "What was measured": (
            "Every zoo module alone at the YOLOv8 feature maps of a 640x640 input (P3 80x80, P4 40x40, P5 20x20; "
            "channels n: 64/128/256, s: 128/256/512), inside YOLOv8n and YOLOv8s after SPPF at P5 and inside YOLO11n "
            "and YOLO26n after C2PSA at P5, against no attention (`none`: the family's own detector, YOLO11n and "
            "YOLO26n with their C2PSA) and plain MHSA (`mhsa`). Batch 1. Detectors of one family and scale are timed "
            "interleaved, one run of each per round (onnxruntime sessions with intra-op spinning off), and the "
            "overhead is the median per-round ratio to `none`. "
            "YOLO12n (area attention) and YOLO11n (C2PSA), each also without its attention (`yolo11n-no-c2psa`: "
            "C2PSA an identity; `yolo12n-no-area-attention`: A2C2f with C3k blocks), are timed interleaved too. "
            f"Wall time of the study: {study.seconds / 60:.1f} min."),
        "Modules alone": markdown_table(modules_table(bench, [n for n in names if not n.startswith("yolo")])),
        "Inside the detectors at P5": markdown_table(detectors_table(bench, study.overheads,
                                                                     [n for n in names if n in inside])),
        **(fused_sections(study.fused) if study.fused else {}),
    }
    if study.contrast:
        contrasted = [n for n in names if n.startswith("yolo") and n not in inside]
        head["Area attention (YOLO12n) and C2PSA (YOLO11n)"] = (
            markdown_table(detectors_table(bench, [], contrasted)) + "\n\n"
            + markdown_table(ratios_table(study.contrast)))
    tail = {"Claims": markdown_table(claims_table(study.claims))}

    def write(tmp: Path) -> None:
        plots = write_plots(tmp, plotted)
        sections = {**head, **bench_sections(bench, plots, blocks=False), **tail,
                    "Machine": machine_lines(bench.machine)}
        write_json(tmp / "results.json", study)
        write_markdown(tmp / "report.md", "attn-deploy bench --zoo: what attention costs on this machine", sections)

    return write_dir_atomic(Path(directory), write)


def _settings_text(candidate) -> str:
    """``latency, 2 threads, 1 stream``: how the runtime ran the candidate, as set and as the plugin chose."""
    runtime, settings = candidate.runtime, candidate.settings
    counts = {"threads": settings.threads, "streams": runtime.get("streams"),
              "requests": runtime.get("requests") if settings.mode == "throughput" else None}
    parts = [settings.mode, *(f"{n} {what.removesuffix('s') if n == 1 else what}" for what, n in counts.items() if n),
             settings.device if settings.device != "cpu" else ""]
    return ", ".join(p for p in parts if p) or "-"


def _verdict(candidate, recommended: str | None) -> str:
    if candidate.skipped:
        return f"skipped: {candidate.skipped}"
    if candidate.error:
        return f"error: {candidate.error}"
    if candidate.name == recommended:
        return "RECOMMENDED"
    verdict = "pass" if candidate.passed else f"FAIL: {candidate.failed}"
    verdict = ("baseline, " if candidate.baseline else "") + verdict
    return verdict + (f"; not timed: {candidate.untimed}" if candidate.untimed else "")


def tune_table(tune) -> Table:
    """Every candidate: its precision and settings, latency, throughput, speed-up, parity, mAP, fronts, verdict."""
    headers = ["candidate", "precision", "settings", "node (device)", "median ms [95% CI]", "img/s",
               "x ultralytics ONNX [95% CI]", "parity", "mAP50-95 (drop)", "Pareto", "result"]
    recommended = tune.recommended.name if tune.recommended else None
    rows = []
    for c in tune.candidates:
        latency = (f"{c.latency.median:.2f} [{c.latency.median_ci[0]:.2f}, {c.latency.median_ci[1]:.2f}]"
                   if c.latency else "-")
        speedup = f"{c.speedup[0]:.2f} [{c.speedup[1]:.2f}, {c.speedup[2]:.2f}]" if c.speedup else "-"
        accuracy = f"{c.map50_95:.4f} ({c.map50_95_drop:+.4f})" if c.map50_95 is not None else "-"
        rows.append([c.name, c.precision or c.settings.precision, _settings_text(c), _where(c), latency,
                     _fmt(c.throughput, ".1f"),
                     speedup, c.parity, accuracy, ", ".join(c.pareto) or "-", _verdict(c, recommended)])
    return headers, rows


def _where(row) -> str:
    """``node (device)``, marked when the result was reused from an earlier cluster run."""
    if not row.node:
        return "-"
    return f"{row.node} ({row.device})" + (", reused" if getattr(row, "reused", False) else "")


def _tune_method(tune) -> str:
    request, budget = tune.request, tune.request.timing
    accuracy = (f"mAP50-95 on the validation split of {request.data}, a drop (positive: worse than PyTorch) of at "
                f"most {request.map_budget:g} and within its precision's tolerance" if request.data
                else "no --data: mAP was not scored, and INT8 candidates were not built")
    return "\n".join([
        "- every candidate: parity against the original PyTorch model at its precision's tolerance (INT8: judged by "
        f"its mAP alone); {accuracy}",
        f"- timing: one live runtime at a time, batch 1, at least {budget.warmup_s:g} s of warm-up, then at least "
        f"{budget.iters} runs and {budget.duration_s:g} s; OpenVINO's throughput hint keeps its optimal number of "
        "requests in flight (latency per request, throughput over wall time)",
        "- speed-up against ultralytics' own ONNX export (onnxruntime, same threads): the ratio of the medians, with "
        "an interval from the extremes of their 95 % intervals",
        "- recommended: the passing candidate with the lowest median latency; the Pareto fronts hold the passing "
        "candidates that no other beats in both latency (or throughput) and mAP50-95",
        f"- artefacts built in {tune.build_s:.0f} s; the search took {tune.search_s:.0f} s"
        + (f" (--budget-s {request.budget_s:g})" if request.budget_s is not None else ""),
        *(f"- note: {n}" for n in tune.notes)])


def write_tune_report(directory: Path, tune) -> Path:
    """``results.json``, ``report.md`` and, with mAP scored, ``pareto.png``, written into ``directory`` whole."""
    from .bench import plots

    recommended = tune.recommended

    def write(tmp: Path) -> None:
        sections = {"Recommendation": (f"{recommended.reason}.\n\nWritten to `{recommended.path}`, with "
                                       f"`{recommended.metadata}`." if recommended else
                                       "None: no candidate passed parity and the mAP budget."),
                    "Candidates": markdown_table(tune_table(tune))}
        if any(c.map50_95 is not None and c.latency_ms for c in tune.candidates):
            plots.pareto(tune.candidates, recommended.name if recommended else None, tmp / "pareto.png")
            sections["Latency and throughput against mAP50-95"] = "![Pareto fronts](pareto.png)"
        sections |= {"Method": _tune_method(tune), "Machine": machine_lines(tune.machine)}
        write_json(tmp / "results.json", tune)
        write_markdown(tmp / "report.md", f"attn-deploy tune: {tune.checkpoint.name} at {tune.imgsz[0]}x"
                                          f"{tune.imgsz[1]}", sections)

    return write_dir_atomic(Path(directory), write)
