"""PNG plots of a bench report: latency per backend, throughput against batch, time per op type; and of a tune:
latency and throughput against mAP50-95 with the Pareto front."""

from collections import defaultdict
from pathlib import Path

from .harness import BenchResult

TOP_OPS = 8


def _figure(width: float, height: float, columns: int = 1):
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(1, columns, figsize=(width, height), layout="constrained")


def latency(results: list[BenchResult], path: Path) -> Path:
    """Median latency at the smallest batch, per model and backend, with the 95 % interval of the median."""
    batch = min(r.batch for r in results)
    rows = [r for r in results if r.batch == batch]
    plt, fig, ax = _figure(8, 1 + 0.35 * len(rows))
    names = [f"{r.model} · {r.variant}" for r in rows]
    medians = [r.latency_ms.median for r in rows]
    errors = [[m - r.latency_ms.median_ci[0] for m, r in zip(medians, rows)],
              [r.latency_ms.median_ci[1] - m for m, r in zip(medians, rows)]]
    ax.barh(names, medians, xerr=errors, color="tab:blue", capsize=3)
    ax.invert_yaxis()
    ax.set_xlabel(f"median latency, ms (batch {batch}; bars: 95 % interval of the median)")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def throughput(results: list[BenchResult], path: Path) -> Path:
    """Images per second against batch, one line per model and backend."""
    lines: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for r in results:
        lines[f"{r.model} · {r.variant}"].append((r.batch, r.throughput))
    plt, fig, ax = _figure(8, 5)
    for name, points in lines.items():
        batches, values = zip(*sorted(points))
        ax.plot(batches, values, marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch")
    ax.set_ylabel("images / s")
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def op_types(profiles: list, path: Path) -> Path:
    """Per model and backend, its time split by op type (the largest few, the rest together)."""
    plt, fig, ax = _figure(9, 1.2 + 0.45 * len(profiles))
    names = [f"{p.model} · {p.backend}" for p in profiles]
    ranked = defaultdict(float)
    for p in profiles:
        for kind, ms in p.profile.by_type.items():
            ranked[kind] += ms / p.profile.total_ms
    top = sorted(ranked, key=ranked.get, reverse=True)[:TOP_OPS]
    left = [0.0] * len(profiles)
    for kind in [*top, "other ops"]:
        shares = [100 * (sum(ms for k, ms in p.profile.by_type.items() if k not in top) if kind == "other ops"
                         else p.profile.by_type.get(kind, 0.0)) / p.profile.total_ms for p in profiles]
        ax.barh(names, shares, left=left, label=kind)
        left = [a + b for a, b in zip(left, shares)]
    ax.invert_yaxis()
    ax.set_xlabel("share of profiled time, %")
    ax.legend(fontsize="small", ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.12))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _scatter(ax, candidates: list, axis: str, recommended: str | None) -> None:
    """One panel: each candidate at (``axis`` value, mAP50-95); the front of the passing ones joined."""
    value = {"latency": lambda c: c.latency_ms, "throughput": lambda c: c.throughput}[axis]
    for c in candidates:
        style = {"marker": "s", "color": "tab:gray"} if c.baseline else (
            {"marker": "o", "color": "tab:blue"} if c.passed else {"marker": "x", "color": "tab:red"})
        ax.scatter(value(c), c.map50_95, zorder=3, **style)
        ax.annotate(c.name, (value(c), c.map50_95), fontsize=6, xytext=(3, 3), textcoords="offset points")
    on_front = sorted((c for c in candidates if axis in c.pareto), key=value)
    ax.plot([value(c) for c in on_front], [c.map50_95 for c in on_front], color="tab:green", marker="o", ms=12,
            mfc="none", zorder=2, label="Pareto front (passing)")
    best = [c for c in candidates if c.name == recommended]
    ax.scatter([value(c) for c in best], [c.map50_95 for c in best], marker="*", s=250, color="gold",
               edgecolors="black", zorder=4, label="recommended")
    ax.set_ylabel("mAP50-95")
    ax.legend(fontsize="small")


def pareto(candidates: list, recommended: str | None, path: Path) -> Path:
    """Latency (lower is better) and throughput (higher is better) against mAP50-95, for the tune candidates that
    ran and were scored: passing ones as dots, failing ones as crosses, the baseline as a square, the recommended
    one starred."""
    scored = [c for c in candidates if c.map50_95 is not None and c.latency_ms]
    plt, fig, (left, right) = _figure(13, 5.5, columns=2)
    _scatter(left, scored, "latency", recommended)
    left.set_xscale("log")  # eager PyTorch and INT8 OpenVINO lie an order of magnitude apart
    left.set_xlabel("median latency, ms (batch 1, log scale)")
    _scatter(right, scored, "throughput", recommended)
    right.set_xlabel("images / s")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
