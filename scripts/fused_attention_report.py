"""Fused attention against the plain graph: the measurement behind FASTER in attn_deploy/rewrite/graph/attention.py.

It runs attn_deploy/bench/fused.py alone, on these subjects, and prints the table for the rule file.

Subjects: the zoo MHSA (nn.MultiheadAttention over the flattened map), ultralytics' AIFI (a transformer encoder
layer, cm = 4 x channels, 8 heads) and the zoo CGA (LocalWindowAttention, window 7) alone at the YOLOv8 feature maps
of a 640 input (P3 80x80, P4 40x40, P5 20x20, YOLOv8n channels 64/128/256), and YOLOv8n with MHSA and with CGA at
P5, 640, batch 1, seed 0. Each gets every fused form (com.microsoft.MultiHeadAttention; ONNX Attention, opset 23),
verified in onnxruntime against its plain export and checked in OpenVINO (f32) against the plain IR; then the
plain graph and its forms are timed interleaved, one run each per round (onnxruntime sessions with intra-op
spinning off), in onnxruntime and in OpenVINO (latency hint, f32), on THREADS threads.

Writes reports/fused-attention/report.md and report.json, and prints the FASTER table these figures give.
Run (a quiet machine; about 20-30 min with P3): python scripts/fused_attention_report.py
Smoke: python scripts/fused_attention_report.py --levels P5 --rounds 2 --no-detectors --out /tmp/fused
"""

import argparse
import pprint
import sys
import tempfile
import time
from pathlib import Path

import torch

from attn_deploy.bench import fused, study, suite
from attn_deploy.bench.harness import Budget, seeded_input
from attn_deploy.machine import machine
from attn_deploy.report import fused_sections, machine_lines, markdown_table, write_json, write_markdown
from attn_deploy.rewrite.graph.attention import FASTER

MODULES = ("mhsa", "aifi", "cga")
DETECTORS = ("mhsa", "cga")


def aifi_subject(scale: str, level: str, workdir: Path) -> suite.Subject:
    """ultralytics' AIFI alone, as RT-DETR configures it (cm = 4 x channels, 8 heads), seeded."""
    from ultralytics.nn.modules.transformer import AIFI

    channels, side = study.WIDTHS[scale][level], study.IMGSZ // study.LEVELS[level]
    torch.manual_seed(0)
    model = AIFI(channels, 4 * channels, 8).eval()
    subject = suite.describe(suite.Subject(f"aifi {scale}-{level}", (side, side), model, channels=channels))
    x = torch.from_numpy(seeded_input(1, subject.imgsz, channels))
    subject.artefacts = study._exportable(model, x, workdir, f"aifi-{scale}-{level}")
    return subject


def subjects(args, workdir: Path) -> list[suite.Subject]:
    built = []
    for name in args.modules:
        for level in args.levels:
            print(f"exporting {name} n-{level}", file=sys.stderr, flush=True)
            built.append(aifi_subject("n", level, workdir) if name == "aifi" else
                         study.module_subject(name, "n", level, workdir))
    for name in args.detectors:
        print(f"exporting YOLOv8n-{name}", file=sys.stderr, flush=True)
        built.append(study.detector_subject(name, "n", workdir))
    return built


def _progress(what: str, done: int, total: int) -> None:
    print(f"[{done + 1}/{total}] {what}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", type=lambda s: s.split(","), default=list(MODULES))
    parser.add_argument("--levels", type=lambda s: s.split(","), default=list(study.LEVELS))
    parser.add_argument("--no-detectors", dest="detectors", action="store_const", const=[], default=list(DETECTORS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=study.ROUNDS, help="interleaved rounds (at least 16)")
    parser.add_argument("--out", type=Path, default=Path("reports/fused-attention"))
    args = parser.parse_args()

    started = time.perf_counter()
    variants = [suite.Variant("onnxruntime"), suite.Variant("openvino", "latency")]
    plan = suite.Plan("cpu", variants, [1], args.threads, Budget(iters=args.rounds))
    with tempfile.TemporaryDirectory() as tmp:
        found = fused.run(subjects(args, Path(tmp)), plan, Path(tmp), _progress)
    table = fused.choice(found.ratios)
    rounds = max(study.ROUNDS, args.rounds)
    method = (f"Batch 1, {args.threads} threads. Per subject and backend, the plain graph and each fused form are "
              f"timed interleaved: {study.WARMUP_ROUNDS} untimed rounds, then {rounds} rounds of one run each; "
              f"{found.ratios[0].method if found.ratios else ''}. A ratio is the median over rounds of fused / plain, "
              "with its 95 % interval; a form is faster where the interval lies below 1. Wall time "
              f"{(time.perf_counter() - started) / 60:.1f} min.")
    choice_rows = [[form, kind, ", ".join(table[form][kind]) or "(plain everywhere)",
                    ", ".join(FASTER[form][kind]) or "(plain everywhere)"] for form in table for kind in table[form]]
    sections = {
        "What was measured": method,
        **fused_sections(found),
        "The choice these figures give": markdown_table((["form", "kind", "faster for (this run)",
                                                          "FASTER in the rule file"], choice_rows))
        + f"\n\n```python\nFASTER = {pprint.pformat(table, width=100)}\n```",
        "Machine": machine_lines(machine(args.threads)),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "report.json", {"study": found, "choice": table, "machine": machine(args.threads)})
    write_markdown(args.out / "report.md", "Fused attention against the plain graph", sections)
    print(f"FASTER = {pprint.pformat(table, width=100)}")
    print(f"wrote {args.out / 'report.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
