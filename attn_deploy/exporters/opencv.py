"""OpenCV's DNN module as a runtime for ``.onnx`` files: what many edge YOLO applications load the export with.

There is nothing to build: OpenCV reads the ONNX file ``export`` writes, so this backend offers a ``Runner``
only, opened on a ``.onnx`` file (``open_runner(path, runtime="opencv")``). It runs on the CPU with OpenCV's
own backend. The ops its ONNX importer takes are listed in ``lint/support.py`` (``opencv``).
"""

from pathlib import Path

import numpy as np

from ..errors import AttnDeployError


def missing() -> str | None:
    """Why OpenCV's DNN module cannot run here, or None."""
    try:
        import cv2
    except ImportError:
        return "OpenCV is not installed (pip install 'attn-deploy[opencv]')"
    return None if hasattr(cv2, "dnn") else f"OpenCV {cv2.__version__} was built without its dnn module"


class Runner:
    """Runs an ONNX file in OpenCV's DNN module on the CPU (the OpenCV backend, fp32)."""

    backend = "opencv"
    device = "cpu"
    precision = "fp32"

    def __init__(self, path: Path, threads: int | None = None):
        import onnx

        from .onnx import read_metadata

        reason = missing()
        if reason:
            raise AttnDeployError(f"cannot run {path} in OpenCV: {reason}")
        import cv2

        if threads:
            cv2.setNumThreads(threads)
        hint = "run `attn-deploy lint --target opencv` on it for the ops it lacks"
        try:
            self.net = cv2.dnn.readNetFromONNX(str(path))
        except cv2.error as e:
            raise AttnDeployError(f"OpenCV {cv2.__version__} cannot load {path}: {_first_line(e)} ({hint})") from e
        if self.net.empty():  # an op its importer lacks: it logs the op and returns an empty net
            raise AttnDeployError(f"OpenCV {cv2.__version__} cannot load {path} ({hint})")
        self.net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        graph = onnx.load(str(path), load_external_data=False).graph
        self.outputs = [o.name for o in graph.output]
        self.input_shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                            for d in graph.input[0].type.tensor_type.shape.dim]
        self.metadata = read_metadata(path)
        self.version = cv2.__version__

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        import cv2

        x = np.ascontiguousarray(inputs[0], dtype=np.float32)
        if list(x.shape) != [d if isinstance(d, int) else s for d, s in zip(self.input_shape, x.shape)]:
            raise AttnDeployError(f"input of shape {tuple(x.shape)} does not fit the model's input {self.input_shape}")
        self.net.setInput(x)
        try:
            return [np.asarray(y) for y in self.net.forward(self.outputs)]
        except cv2.error as e:
            raise AttnDeployError(f"OpenCV failed to run the model: {_first_line(e)}") from e

    def close(self) -> None:
        self.net = None


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[-1] if lines else type(error).__name__)[:300]
