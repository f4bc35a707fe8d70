"""What a figure was measured on: CPU, cores, threads, GPU and the runtimes' versions."""

import os
import platform
from pathlib import Path


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _gpu() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"


def _version(package: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine(threads: int | None = None) -> dict:
    """What the figures were measured on: CPU, cores, the threads the runtimes were given, GPU, versions."""
    import onnxruntime
    import torch

    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "threads": threads or "runtime default",
        "gpu": _gpu(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        **{name: _version(name) for name in ("openvino", "onnx", "ultralytics", "tensorrt")},
    }
