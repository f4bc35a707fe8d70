"""attn-deploy: ship attention-augmented YOLOv8 detectors to ONNX with proven output parity."""

__version__ = "0.1.0"

from .bench import BenchResult, bench  # noqa: E402
from .checkpoint import LoadedModel, load, save_checkpoint  # noqa: E402
from .errors import AttnDeployError  # noqa: E402
from .exporters import open_runner, verify_export  # noqa: E402
from .exporters.onnx import OnnxOptions  # noqa: E402
from .exporters.onnx import export as export_onnx  # noqa: E402
from .models import ZOO, register  # noqa: E402
from .models.detector import build_detector  # noqa: E402
from .parity import TOLERANCES, ParityReport, Tolerance, verify  # noqa: E402

__all__ = [
    "AttnDeployError", "BenchResult", "LoadedModel", "OnnxOptions", "ParityReport", "TOLERANCES", "Tolerance",
    "ZOO", "bench", "build_detector", "export_onnx", "load", "open_runner", "register", "save_checkpoint",
    "verify", "verify_export",
]
