"""What a node offers and what a job needs, as Ray custom resources.

A device is a resource of 1 per node (``dev_cpu``, ``dev_cuda``), so that a job holding it is the only one timed on
it. Runtimes and CPU features are capabilities, offered in a large amount (``rt_openvino``, ``isa_avx512_bf16``), so
that any number of jobs may ask for them at once.
"""

import importlib.metadata
import json
import re
import importlib.util
import platform
from dataclasses import dataclass, field
from pathlib import Path

from ..bench.job import Job

PLENTY = 1000.0  # a capability's amount: never what limits how many jobs run
# CPU features that change what a runtime computes or how fast: bf16 and int8 paths, vector widths (x86 and ARM)
ISA = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "asimd", "asimddp", "bf16", "i8mm",
       "sve")
# runtime resource -> the Python module that provides it
RUNTIMES = {"onnxruntime": "onnxruntime", "openvino": "openvino", "torch": "torch", "tensorrt": "tensorrt",
            "ncnn": "ncnn", "rknn": "rknnlite"}
NODE_PREFIX = "attn_node_"  # a resource ``attn_node_NAME`` of 1 names the node in the rows


@dataclass
class Offer:
    """What this machine offers: Ray custom resources, and the details behind them (versions, device names)."""

    node: str
    resources: dict[str, float] = field(default_factory=dict)
    details: dict[str, str] = field(default_factory=dict)


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """The CPU's features of ``ISA`` (x86 ``flags``, ARM ``Features``); none where cpuinfo is not readable."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return []
    found = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            found |= set(value.split())
    return [flag for flag in ISA if flag in found]


def _version(module: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return None
    for dist in importlib.metadata.packages_distributions().get(module, [module]):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "installed"


def _accelerators(offer: Offer) -> None:
    """CUDA devices (through torch) and OpenVINO's devices besides the CPU."""
    if "rt_torch" in offer.resources:
        import torch

        if torch.cuda.is_available():
            offer.resources["dev_cuda"] = float(torch.cuda.device_count())
            offer.details["cuda"] = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    if "rt_openvino" in offer.resources:
        import openvino as ov

        devices = ov.Core().available_devices
        offer.details["openvino devices"] = ", ".join(devices)
        for device in devices:
            if device != "CPU":
                offer.resources[f"dev_openvino_{device.lower().replace('.', '_')}"] = 1.0


def offers(node: str | None = None) -> Offer:
    """What this machine offers as a cluster node, named ``node`` (default: its host name): its CPU (a device), CPU
    features, runtimes and accelerators."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", node or platform.node())
    offer = Offer(name, {"dev_cpu": 1.0, NODE_PREFIX + name: 1.0}, {"cpu": platform.machine()})
    for flag in cpu_flags():
        offer.resources[f"isa_{flag}"] = PLENTY
    for name, module in RUNTIMES.items():
        version = _version(module)
        if version:
            offer.resources[f"rt_{name}"] = PLENTY
            offer.details[name] = version
    _accelerators(offer)
    return offer


def start_command(offer: Offer, address: str | None, num_cpus: int | None = None) -> list[str]:
    """``ray start`` offering ``offer``'s resources: a head node without ``address``, else a node joining it."""
    where = ["--address", address] if address else ["--head"]
    cpus = ["--num-cpus", str(num_cpus)] if num_cpus is not None else []
    return ["ray", "start", *where, *cpus, "--resources", json.dumps(offer.resources)]


def device_of(job: Job) -> str:
    """The device resource ``job`` times: the CPU, or a CUDA device."""
    return "dev_cuda" if job.settings.device == "cuda" or job.backend == "tensorrt" else "dev_cpu"


def needs(job: Job) -> dict[str, float]:
    """The resources ``job`` asks for: its device, whole, and its runtime."""
    return {device_of(job): 1.0, f"rt_{job.backend}": 1.0}
