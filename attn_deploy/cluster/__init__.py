"""Jobs on a Ray cluster, each on a node that has the device and runtime it needs (the optional ``cluster`` extra).

Only this package imports Ray, and only when a run asks for a cluster: ``resources`` (what a node offers, what a job
needs) and ``results`` (results kept by artefact hash and settings) never import it; ``dispatch`` does.
"""

import contextlib
from collections import Counter
from pathlib import Path

from ..errors import AttnDeployError

EXTRA = "pip install 'attn-deploy[cluster]'"


def require_ray() -> None:
    """Stop at once, with one message naming the extra, where Ray is not installed."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise AttnDeployError(f"--cluster runs jobs on Ray, which is not installed: {EXTRA}") from None


@contextlib.contextmanager
def session(address: str | None, store: Path | None = None, timeout_s: float | None = None):
    """The cluster at ``address`` (``auto``: the one running here) for the ``with`` block, or None without one: then
    Ray is never imported."""
    if address is None:
        yield None
        return
    require_ray()
    from .dispatch import TIMEOUT_S, Cluster

    with Cluster(address, store, timeout_s or TIMEOUT_S) as cluster:
        yield cluster


def where(results: list) -> str:
    """``3 jobs on a (cpu), 2 on b (cpu); 1 reused``: how many of ``results`` (rows with ``node``, ``device`` and
    ``reused``) ran where."""
    ran = Counter(f"{r.node} ({r.device})" for r in results if not r.reused and r.node)
    text = ", ".join(f"{n} on {place}" for place, n in sorted(ran.items())) or "none ran"
    reused = sum(bool(r.reused) for r in results)
    return text + (f"; {reused} reused from earlier results" if reused else "")
