"""INT8 ONNX with QuantizeLinear/DequantizeLinear pairs, calibrated by onnxruntime's static quantizer, in the
placement of the runtime that runs it (``PLACEMENTS``).

- ``onnxruntime``: Q/DQ around every op onnxruntime has an integer kernel for, uint8 activations (min-max ranges
  over 32 batches spread over the calibration set) and int8 per-channel weights, which its CPU provider fuses into
  QLinearConv, QLinearMatMul and their kin. The weights keep 7 bits (``reduce_range``): x86 CPUs without VNNI
  multiply uint8 by int8 in 16-bit sums that saturate, and with 8-bit weights the CGA fixture lost 0.10 mAP50-95
  at 160 (0.001 gained with 7 bits).
- ``tensorrt``: the INT8 input of TensorRT 11, which dropped implicit (calibrator) quantization for explicit
  Q/DQ: Q/DQ on the inputs of Conv and MatMul only, symmetric int8 scales with zero points of 0, per-channel for
  weights, as TensorRT requires. onnxruntime runs it too, unfused and slower than fp32.

The attention-sensitive nodes (measured, as for fp16) and the head's decode are left unquantized in both.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import AttnDeployError
from ..files import check_writable, write_atomic
from . import ExportResult, silenced


def output_path(onnx_path: Path, placement: str = "onnxruntime") -> Path:
    """``<stem>.int8.onnx`` for onnxruntime (the ONNX target's INT8), ``<stem>.trt.int8.onnx`` for TensorRT."""
    return onnx_path.with_suffix(".int8.onnx" if placement == "onnxruntime" else ".trt.int8.onnx")


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


# quantize_static's settings per placement; ranges streamed one batch at a time (``CalibStridedMinMax`` of 1)
PLACEMENTS = {
    # Min-max ranges over 32 batches spread over the calibration set: they widen with every image (CGA fixture
    # at 160: 0.0011 mAP50-95 gained with 32 images, 0.0048 lost with 300), and the 99.99th percentile over 300
    # lost 0.0008 at 160 but 0.0086 at 640 (32 min-max: 0.0003).
    "onnxruntime": dict(op_types_to_quantize=None, activation_type="QUInt8", reduce_range=True,
                        calibrate_method="MinMax", extra_options={"CalibStridedMinMax": 1}, batches=32),
    # Symmetric activation ranges from the 99.99th percentile: on the SimAM fixture min-max and entropy ranges
    # lost 0.034 mAP50-95, the percentile none.
    "tensorrt": dict(op_types_to_quantize=["Conv", "MatMul", "Gemm"], activation_type="QInt8", reduce_range=False,
                     calibrate_method="Percentile",
                     extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "CalibPercentile": 99.99,
                                    "CalibStridedMinMax": 1}, batches=None),
}


def batches_used(placement: str, available: int) -> int:
    """How many of ``available`` calibration batches ``placement`` calibrates on."""
    return min(PLACEMENTS[placement]["batches"] or available, available)


class _Spread:
    """``count`` of ``batches``, evenly spaced over them, each read when asked."""

    def __init__(self, batches: Sequence[np.ndarray], count: int):
        self.batches = batches
        self.index = sorted({int(i) for i in np.linspace(0, len(batches) - 1, count).round()})

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.batches[self.index[i]]


def export(onnx_path: Path, output: Path, calibration: Sequence[np.ndarray], keep: list[str],
           force: bool = False, placement: str = "onnxruntime") -> ExportResult:
    """Write the Q/DQ INT8 version of ``onnx_path`` in ``placement`` to ``output``, calibrated on
    ``calibration``, ``keep`` left in float; atomic.

    The calibrator sees one batch at a time and folds its activations into the ranges before the next, so peak
    memory holds one batch's activations, not every image's: at 640 the quantizer otherwise keeps every
    intermediate tensor of every calibration image until the end (YOLOv8n-CGA: 5.9 GB with 32 images, killed at
    24 GB with 300). The price is CPU time for percentile ranges: histograms merged batch by batch bin against
    the edges so far, about 1.6x the per-image cost of one histogram over everything."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    check_writable(output, force)
    source = onnx.load(str(onnx_path))
    recipe = dict(PLACEMENTS[placement])
    recipe.pop("batches")
    used = _Spread(calibration, batches_used(placement, len(calibration)))
    reader = _Reader(source.graph.input[0].name, used)
    recipe.update(activation_type=QuantType[recipe["activation_type"]],
                  calibrate_method=CalibrationMethod[recipe["calibrate_method"]])

    def write(tmp: Path) -> None:
        with silenced():
            quantize_static(str(onnx_path), str(tmp), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                            weight_type=QuantType.QInt8, nodes_to_exclude=keep, **recipe)
        _copy_metadata(source, tmp)

    try:
        write_atomic(output, write)
    except AttnDeployError:
        raise
    except Exception as e:
        raise AttnDeployError(f"INT8 quantization of {onnx_path} failed: {type(e).__name__}: {str(e)[:300]}") from e
    note = (f"Q/DQ INT8 in {placement}'s placement, {len(used)} of {len(calibration)} calibration batches; "
            f"{len(keep)} sensitive nodes left in float")
    return ExportResult(output, "onnx-int8" if placement == "onnxruntime" else "trt-qdq", [note])


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
