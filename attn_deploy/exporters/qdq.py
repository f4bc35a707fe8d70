"""INT8 ONNX with QuantizeLinear/DequantizeLinear pairs, calibrated by onnxruntime's static quantizer.

This is the INT8 input of TensorRT 11, which dropped implicit (calibrator) quantization for explicit
Q/DQ: symmetric int8 scales with zero points of 0, per-channel for weights, as TensorRT requires.
onnxruntime runs the same file on CPU, which is how its accuracy is checked where TensorRT is absent.
The attention-sensitive nodes (measured, as for fp16) are left unquantized.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import AttnDeployError
from ..files import check_writable, write_atomic
from . import ExportResult, silenced


def output_path(onnx_path: Path) -> Path:
    return onnx_path.with_suffix(".int8.onnx")


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over a sequence of input batches (``data.Batches`` reads each
    from disk when asked), with the ranges that ``CalibStridedMinMax`` sets."""

    def __init__(self, input_name: str, batches: Sequence[np.ndarray]):
        self.input_name, self.batches = input_name, batches
        self.set_range(0, len(batches))

    def __len__(self) -> int:
        return len(self.batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.items = iter(range(start_index, end_index))

    def get_next(self) -> dict | None:
        index = next(self.items, None)
        return None if index is None else {self.input_name: self.batches[index]}


def export(onnx_path: Path, output: Path, calibration: Sequence[np.ndarray], keep: list[str],
           force: bool = False) -> ExportResult:
    """Write the Q/DQ INT8 version of ``onnx_path`` to ``output``, calibrated on ``calibration``; atomic.

    The calibrator sees one batch at a time and adds its activations to per-tensor histograms before the next
    (``CalibStridedMinMax`` of 1), so peak memory holds one batch's activations, not every image's: at 640 the
    quantizer otherwise keeps every intermediate tensor of every calibration image until the end (YOLOv8n-CGA:
    5.9 GB with 32 images, killed at 24 GB with 300). The price is CPU time: histograms merged batch by batch bin
    against the edges so far, about 1.6x the per-image cost of one histogram over everything (1.5 s against 0.9 s
    of CPU per 640 image here)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    check_writable(output, force)
    source = onnx.load(str(onnx_path))
    reader = _Reader(source.graph.input[0].name, calibration)

    def write(tmp: Path) -> None:
        # Q/DQ on the inputs of Conv and MatMul only, as TensorRT places them: the rest fuses or stays float.
        # Symmetric activation ranges from the 99.99th percentile: on the SimAM fixture min-max and entropy
        # ranges lost 0.034 mAP50-95, the percentile none.
        with silenced():
            quantize_static(str(onnx_path), str(tmp), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                            op_types_to_quantize=["Conv", "MatMul", "Gemm"],
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.Percentile, nodes_to_exclude=keep,
                            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                           "CalibPercentile": 99.99, "CalibStridedMinMax": 1})
        _copy_metadata(source, tmp)

    try:
        write_atomic(output, write)
    except AttnDeployError:
        raise
    except Exception as e:
        raise AttnDeployError(f"INT8 quantization of {onnx_path} failed: {type(e).__name__}: {str(e)[:300]}") from e
    note = f"Q/DQ INT8, {len(calibration)} calibration batches; {len(keep)} sensitive nodes left in float"
    return ExportResult(output, "onnx-int8", [note])


def _copy_metadata(source, path: Path) -> None:
    """The quantizer drops ultralytics' metadata; put it back, with ``int8`` set in its args."""
    import ast

    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    for prop in source.metadata_props:
        value = str({**ast.literal_eval(prop.value), "int8": True}) if prop.key == "args" else prop.value
        model.metadata_props.add(key=prop.key, value=value)
    onnx.save(model, str(path))


def is_quantized(model) -> bool:
    return any(node.op_type == "QuantizeLinear" for node in model.graph.node)
