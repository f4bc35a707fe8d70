"""PNG plots of a bench report: latency per backend, throughput against batch, time per op type."""

from collections import defaultdict
from pathlib import Path

from .harness import BenchResult

TOP_OPS = 8


def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=(width, height), layout="constrained")


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
