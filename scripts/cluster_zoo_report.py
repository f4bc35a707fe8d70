"""Wall time of ``bench --zoo`` on a local Ray cluster against the same study run here, and how many jobs ran where.

The cluster is ``ray.cluster_utils.Cluster`` on loopback addresses: a head that runs nothing and NODES nodes, each
offering what this machine offers (``attn-deploy node``) under its own name. This is one machine: the nodes share
its cores, so the figure is the cost of the cluster's machinery (worker start-up, artefacts through the object
store, one job per device), not the gain of more machines. On the cluster the modules timed alone go out as jobs;
torch units (the modules live in memory, no file to send), the detectors (timed in interleaved rounds on one device)
and the per-op profiles stay on the driver. Runs alternate, local then cluster, ROUNDS times; the ratio is the median
of the per-round ratios.

Writes reports/cluster/report.json and report.md.
Run: python scripts/cluster_zoo_report.py [--rounds 2] [--imgsz 320] [--nodes 2]
"""

import argparse
import os
import platform
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attn_deploy.bench import study, suite  # noqa: E402
from attn_deploy.bench.study import BUDGET, Scope  # noqa: E402
from attn_deploy.cluster import resources  # noqa: E402
from attn_deploy.machine import machine  # noqa: E402
from attn_deploy.report import machine_lines, markdown_table, write_json, write_markdown  # noqa: E402

OUT = Path("reports/cluster")
MODULES = ["simam", "cga", "gam", "mhsa"]


def start_cluster(nodes: int):
    """A head that runs nothing and ``nodes`` nodes named node0, node1, ... offering this machine's resources."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # loopback addresses only
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    for i in range(nodes):
        cluster.add_node(num_cpus=0, resources=resources.offers(f"node{i}").resources)
    cluster.wait_for_nodes()
    return cluster


def one_run(scope: Scope, plan: suite.Plan, address: str | None) -> dict:
    """The study's wall time, and its rows by where they were timed."""
    from attn_deploy.cluster import session

    with session(address) as joined:
        started = time.perf_counter()
        found = study.run(plan, [], scope=scope, cluster=joined)
        seconds = time.perf_counter() - started
    rows = Counter(r.node or "driver" for r in found.bench.results)
    return {"seconds": seconds, "rows": dict(rows), "notes": [n for n in found.bench.notes if " on " in n]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--nodes", type=int, default=2)
    args = parser.parse_args()
    threads = 1
    scope = Scope(modules=MODULES, scales=["n"], levels=["P4", "P5"], families=[], contrast=False,
                  imgsz=args.imgsz, fused=False)
    variants, _ = suite.choose_variants("cpu", None)
    plan = suite.Plan("cpu", variants, None, threads, BUDGET, profile=False)
    cluster = start_cluster(args.nodes)
    try:
        rounds = [{where: one_run(scope, plan, address) for where, address in
                   (("local", None), ("cluster", cluster.address))} for _ in range(args.rounds)]
    finally:
        cluster.shutdown()
    ratios = [r["cluster"]["seconds"] / r["local"]["seconds"] for r in rounds]
    result = {"scope": scope, "threads": threads, "nodes": args.nodes, "rounds": rounds,
              "cluster_to_local": float(np.median(ratios)), "machine": machine(threads), "host": platform.node()}
    write_json(OUT / "report.json", result)
    table = (["round", "local s", "cluster s", "cluster / local", "rows by where (cluster run)"],
             [[str(i + 1), f"{r['local']['seconds']:.1f}", f"{r['cluster']['seconds']:.1f}",
               f"{ratio:.2f}", ", ".join(f"{k}: {v}" for k, v in sorted(r["cluster"]["rows"].items()))]
              for i, (r, ratio) in enumerate(zip(rounds, ratios))])
    write_markdown(OUT / "report.md", "bench --zoo on a local Ray cluster against a local run", {
        "Wall time": markdown_table(table) + f"\n\nMedian of the per-round ratios: {np.median(ratios):.2f}.",
        "Method": "\n".join([
            f"- the study narrowed to {', '.join(MODULES)} alone at P4 and P5 (scale n) and inside YOLOv8n, input "
            f"{args.imgsz}, one thread per runtime, the study's own timing budget, no profiles",
            f"- the cluster: `ray.cluster_utils.Cluster` on loopback, a head that runs nothing and {args.nodes} nodes "
            "offering this machine's resources (`attn-deploy node`), all on this one machine",
            "- on the cluster the onnxruntime and OpenVINO units of the modules alone run as jobs, one per node "
            "and device at a time; torch units, the interleaved detectors and the claims stay on the driver",
            "- runs alternate local then cluster; worker start-up on the nodes counts in the cluster's time",
            "- the machine was shared with other work while this ran (6 other agents): read the ratio, not the "
            "seconds"]),
        "Machine": machine_lines(result["machine"])})


if __name__ == "__main__":
    main()
