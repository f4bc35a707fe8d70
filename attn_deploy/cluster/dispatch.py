"""Run ``bench.job`` jobs on a Ray cluster: each on a node that offers its device and runtime, one job per device at a
time, artefacts through Ray's object store, results back as the same ``JobResult`` a local run returns.

Each (node, device) gets one actor that holds the device's resource (of 1) for its life and runs its jobs in turn,
so no two timing jobs ever share a device; the actor keeps the loaded reference model between its jobs. The driver
hands an actor its next job only when the last one came back, so a job's timeout counts from its start. A node that
leaves, a job that fails and a job that times out each give a row naming the node and device, and the run goes on.
"""

import io
import socket
import tarfile
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import ray
from ray.exceptions import RayActorError, RayError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ..bench.job import Context, Job, JobResult, run_job
from ..errors import AttnDeployError
from .resources import NODE_PREFIX, device_of, needs
from .results import Store, content_hash, key

TIMEOUT_S = 1800.0  # a job's limit from its start (parity, mAP and timing of one candidate)
STARTUP_S = 600.0  # a device's worker's limit to start and import its runtimes
POLL_S = 0.5
Progress = Callable[[str, int, int], None]


@dataclass
class Node:
    id: str
    name: str
    resources: dict[str, float]

    def offers(self, needed: dict[str, float]) -> bool:
        return all(self.resources.get(k, 0.0) >= v for k, v in needed.items())


@dataclass
class Slot:
    """One device of one node, and the jobs waiting for it (indices into the run's jobs)."""

    node: Node
    device: str  # the device resource: dev_cpu, dev_cuda
    queue: deque = field(default_factory=deque)
    worker: object | None = None  # the actor, started with the slot's first job

    @property
    def where(self) -> tuple[str, str]:
        return self.node.name, self.device.removeprefix("dev_")


def connect(address: str) -> None:
    """Join the cluster at ``address`` (``auto``: the one running on this machine). Run from a checkout, the workers
    import attn_deploy from that checkout's path where it exists on their node; else from their own installation."""
    root = Path(__file__).resolve().parents[2]
    checkout = (root / "pyproject.toml").exists()
    if address != "auto":
        _reachable(address)
    try:
        ray.init(address=address, runtime_env={"env_vars": {"PYTHONPATH": str(root)}} if checkout else None,
                 log_to_driver=False, logging_level="ERROR")
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise AttnDeployError(f"no Ray cluster at {address}: {e}") from None


def _reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail at once where nothing listens at ``host:port`` (Ray itself retries for minutes)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout_s).close()
    except (OSError, ValueError) as e:
        raise AttnDeployError(f"no Ray cluster at {address} (expected HOST:PORT of a running head node, or auto): "
                              f"{e}") from None


def _name(node: dict) -> str:
    """The node's ``attn_node_NAME`` resource, else its host name and the start of its id."""
    named = [k.removeprefix(NODE_PREFIX) for k in node["Resources"] if k.startswith(NODE_PREFIX)]
    return named[0] if named else f"{node['NodeManagerHostname']}:{node['NodeID'][:8]}"


def alive_nodes() -> list[Node]:
    return [Node(n["NodeID"], _name(n), n["Resources"]) for n in ray.nodes() if n["Alive"]]


def pack(path: Path) -> bytes:
    """A file or directory as an uncompressed tar, under its own name."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(path, arcname=path.name)
    return buffer.getvalue()


def unpack(blob: bytes, digest: str) -> Path:
    """Where ``blob`` lies on this node, extracted once per content hash (a whole directory renamed into place)."""
    root = Path(tempfile.gettempdir()) / "attn-deploy-cluster" / digest
    if not root.exists():
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{digest}.", dir=root.parent))
        with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
            tar.extractall(tmp, filter="data")
        try:
            tmp.rename(root)
        except OSError:  # another worker of this node unpacked it first
            pass
    return next(root.iterdir())


class DeviceWorker:
    """Runs jobs on one device of its node, one after another; the reference model stays loaded between them."""

    def __init__(self):
        self.context = Context()

    def ready(self) -> bool:
        """Whether the worker is up, its runtimes imported: a job's time counts from here."""
        from ..bench import suite  # noqa: F401 (torch and the exporters' imports, before any job's clock starts)

        return True

    def run(self, job_json: str, files: list[tuple[str, str]], *blobs: bytes) -> str:
        """``files``: (the job's path field, content hash) for each blob, which replaces that path here."""
        job = Job.from_json(job_json)
        for (name, digest), blob in zip(files, blobs):
            setattr(job, name, str(unpack(blob, digest)))
        return run_job(job, self.context).to_json()


class Cluster:
    """A connection to a Ray cluster that runs job lists; ``store`` keeps results for reruns."""

    def __init__(self, address: str, store: Path | None = None, timeout_s: float = TIMEOUT_S):
        connect(address)
        self.store = Store(store) if store else None
        self.timeout_s = timeout_s
        self.worker = ray.remote(num_cpus=0, max_restarts=0, max_task_retries=0)(DeviceWorker)

    def close(self) -> None:
        ray.shutdown()

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def offers(self, resource: str) -> bool:
        return any(resource in n.resources for n in alive_nodes())

    def run(self, jobs: list[Job], progress: Progress | None = None) -> list[JobResult]:
        """Every job's result, in order: run on the cluster, or reused from the store."""
        hashes = {p: content_hash(Path(p)) for p in {j.artefact for j in jobs} | {j.checkpoint for j in jobs}
                  if p and Path(p).exists()}
        keys = [key(j, hashes) for j in jobs]
        results = dict(self._reused(keys))
        slots = {}
        results.update(_assign([i for i in range(len(jobs)) if i not in results], jobs, alive_nodes(), slots))
        blobs = {path: ray.put(pack(Path(path))) for path in hashes}
        _Run(self, jobs, keys, hashes, blobs, results, progress, slots).until_done()
        return [results[i] for i in range(len(jobs))]

    def _reused(self, keys: list[str]) -> dict[int, JobResult]:
        found = {i: self.store.get(k) for i, k in enumerate(keys)} if self.store else {}
        for result in found.values():
            if result:
                result.reused = True
        return {i: r for i, r in found.items() if r}


def _assign(todo: list[int], jobs: list[Job], nodes: list[Node], slots: dict[tuple[str, str], Slot]
            ) -> dict[int, JobResult]:
    """Queue each job on the node offering its resources that has the fewest jobs waiting (``slots`` by node id and
    device grows); rows for the jobs that no node takes."""
    unplaced = {}
    for i in todo:
        job, needed = jobs[i], needs(jobs[i])
        fit = [n for n in nodes if n.offers(needed)]
        if not fit:
            unplaced[i] = JobResult(job.name, error="no node of the cluster offers " + ", ".join(sorted(needed)))
            continue
        node = min(fit, key=lambda n: sum(len(s.queue) for s in slots.values() if s.node.id == n.id))
        slots.setdefault((node.id, device_of(job)), Slot(node, device_of(job))).queue.append(i)
    return unplaced


@dataclass
class _Run:
    """One run's bookkeeping: the slots' next jobs started, results collected, faults turned into rows."""

    cluster: Cluster
    jobs: list[Job]
    keys: list[str]
    hashes: dict[str, str]
    blobs: dict[str, object]
    results: dict[int, JobResult]
    progress: Progress | None
    slots: dict[tuple[str, str], Slot]
    running: dict = field(default_factory=dict)  # ObjectRef -> (slot, job index, start time, a job or start-up)

    def until_done(self) -> None:
        """Keep every slot busy until no job is left; then end the workers, so the devices are free again."""
        try:
            while any(s.queue for s in self.slots.values()) or self.running:
                busy = {id(entry[0]) for entry in self.running.values()}
                for slot in list(self.slots.values()):
                    if slot.queue and id(slot) not in busy:
                        self._start(slot, slot.queue.popleft())
                ready, _ = ray.wait(list(self.running), num_returns=1, timeout=POLL_S)
                for ref in ready:
                    self._collect(ref)
                self._time_out()
        finally:
            for slot in self.slots.values():
                if slot.worker is not None:
                    ray.kill(slot.worker)

    def _start(self, slot: Slot, i: int) -> None:
        """Send job ``i`` to its slot's worker; a slot without one first starts it (the job follows once it is up)."""
        job = self.jobs[i]
        if slot.worker is None:
            slot.worker = self.cluster.worker.options(
                resources={slot.device: 1.0}, scheduling_strategy=NodeAffinitySchedulingStrategy(slot.node.id, False)
            ).remote()
            self.running[slot.worker.ready.remote()] = (slot, i, time.monotonic(), False)
            return
        files = [(name, self.hashes[path]) for name, path in (("artefact", job.artefact), ("checkpoint", job.checkpoint))
                 if path in self.hashes]
        refs = [self.blobs[getattr(job, name)] for name, _ in files]
        if self.progress:
            self.progress(f"{job.name} on {slot.node.name}", len(self.results), len(self.jobs))
        self.running[slot.worker.run.remote(job.to_json(), files, *refs)] = (slot, i, time.monotonic(), True)

    def _collect(self, ref) -> None:
        slot, i, _, job = self.running.pop(ref)
        try:
            if not job:  # the slot's worker is up: now its job
                ray.get(ref)
                return self._start(slot, i)
            result = JobResult.from_json(ray.get(ref))
        except RayActorError as e:
            result = self._lost(slot, i, e)
        except RayTaskError as e:
            result = JobResult(self.jobs[i].name, error=f"failed: {type(e.cause).__name__}: {e.cause}")
        except RayError as e:
            result = JobResult(self.jobs[i].name, error=f"failed: {type(e).__name__}: {e}")
        self._keep(slot, i, result)

    def _keep(self, slot: Slot, i: int, result: JobResult) -> None:
        result.node, result.device = slot.where
        self.results[i] = result
        if self.cluster.store:
            self.cluster.store.put(self.keys[i], result)

    def _lost(self, slot: Slot, i: int, error: RayActorError) -> JobResult:
        """The slot's worker is gone: its node left (its waiting jobs move to other nodes, or get rows), or the
        worker died (a new one takes the slot's next job)."""
        slot.worker = None
        name = self.jobs[i].name
        if slot.node.id in {n.id for n in alive_nodes()}:
            return JobResult(name, error=f"the worker died mid-job: {str(error).splitlines()[0]}")
        waiting, slot.queue = list(slot.queue), deque()
        for j, row in _assign(waiting, self.jobs, alive_nodes(), self.slots).items():
            row.error = f"not run: node {slot.node.name} left, and {row.error}"
            self._keep(slot, j, row)
        return JobResult(name, error=f"node {slot.node.name} left mid-run")

    def _time_out(self) -> None:
        now = time.monotonic()
        for ref, (slot, i, started, job) in list(self.running.items()):
            limit = self.cluster.timeout_s if job else STARTUP_S
            if now - started > limit:
                del self.running[ref]
                ray.kill(slot.worker)
                slot.worker = None  # the slot's next job gets a fresh worker
                what = "timed out" if job else "its worker did not start"
                self._keep(slot, i, JobResult(self.jobs[i].name, error=f"{what} after {limit:g} s"))
