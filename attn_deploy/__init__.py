"""attn-deploy: ship attention-augmented YOLOv8 detectors to ONNX with proven output parity."""

__version__ = "0.1.0"

from . import heads  # noqa: E402
from .accuracy import MAP_TOLERANCES, Accuracy, AccuracyCheck, evaluate  # noqa: E402
from .bench import BenchReport, BenchResult, Budget, bench, bench_models  # noqa: E402
from .loading import LoadedModel, load, save_checkpoint  # noqa: E402
from .data import Split, load_split  # noqa: E402
from .errors import AttnDeployError  # noqa: E402
from .exporters import open_runner  # noqa: E402
from .exporters.onnx import OnnxOptions  # noqa: E402
from .exporters.onnx import export as export_onnx  # noqa: E402
from .models import ZOO, register  # noqa: E402
from .models.detector import build_detector  # noqa: E402
from .lint import LintReport, lint  # noqa: E402
from .parity import TOLERANCES, ParityReport, Tolerance, verify  # noqa: E402
from .rewrite import RewriteReport, Rewritten, rewrite  # noqa: E402
from .verify import localise_export, verify_export  # noqa: E402

__all__ = [
    "Accuracy", "AccuracyCheck", "MAP_TOLERANCES", "Split", "evaluate", "load_split",
    "AttnDeployError", "BenchReport", "BenchResult", "Budget", "bench_models",
    "LintReport", "LoadedModel", "OnnxOptions", "ParityReport", "RewriteReport",
    "Rewritten", "TOLERANCES", "Tolerance", "ZOO", "bench", "build_detector", "export_onnx", "heads", "lint", "load",
    "localise_export", "open_runner", "register", "rewrite", "save_checkpoint", "verify", "verify_export",
]
