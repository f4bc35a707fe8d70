"""INT8 ONNX with QuantizeLinear/DequantizeLinear pairs, calibrated by onnxruntime's static quantizer, placed for
the runtime that runs it (``PLACEMENTS``):

- ``trt``: the INT8 input of TensorRT 11, which dropped implicit (calibrator) quantization for explicit Q/DQ:
  symmetric int8 scales with zero points of 0, per-channel for weights, on the inputs of Conv, MatMul and Gemm
  only, as TensorRT requires and fuses. onnxruntime's CPU provider does not fuse it (0.55-0.62x fp32).
- ``ort``: what onnxruntime's CPU provider turns into integer kernels: every op type quantized, uint8
  activations with min-max ranges, int8 per-channel weights.

Either way the attention-sensitive nodes (measured, as for fp16) and the head's decode are left unquantized.
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


def _trt_options(quant) -> dict:
    # Symmetric activation ranges from the 99.99th percentile: on the SimAM fixture min-max and entropy ranges
    # lost 0.034 mAP50-95, the percentile none.
    return {"op_types_to_quantize": ["Conv", "MatMul", "Gemm"], "activation_type": quant.QuantType.QInt8,
            "calibrate_method": quant.CalibrationMethod.Percentile,
            "extra_options": {"ActivationSymmetric": True, "WeightSymmetric": True, "CalibPercentile": 99.99,
                              "CalibStridedMinMax": 1}}


def _ort_options(quant) -> dict:
    # uint8 activations: onnxruntime's integer Conv and MatMul kernels take U8S8 (with int8 activations the CGA
    # fixture ran at 0.64x fp32); min-max ranges, streamed a batch at a time.
    return {"op_types_to_quantize": None, "activation_type": quant.QuantType.QUInt8,
            "calibrate_method": quant.CalibrationMethod.MinMax,
            "extra_options": {"WeightSymmetric": True, "CalibStridedMinMax": 1}}


PLACEMENTS = {"trt": _trt_options, "ort": _ort_options}


def export(onnx_path: Path, output: Path, calibration: Sequence[np.ndarray], keep: list[str],
           force: bool = False, placement: str = "trt") -> ExportResult:
    """Write the Q/DQ INT8 version of ``onnx_path`` to ``output``, calibrated on ``calibration``; atomic.

    The calibrator sees one batch at a time and adds its activations to per-tensor histograms before the next
    (``CalibStridedMinMax`` of 1), so peak memory holds one batch's activations, not every image's: at 640 the
    quantizer otherwise keeps every intermediate tensor of every calibration image until the end (YOLOv8n-CGA:
    5.9 GB with 32 images, killed at 24 GB with 300). The price is CPU time: histograms merged batch by batch bin
    against the edges so far, about 1.6x the per-image cost of one histogram over everything (1.5 s against 0.9 s
    of CPU per 640 image here)."""
    import onnx
    from onnxruntime import quantization as quant

    check_writable(output, force)
    source = onnx.load(str(onnx_path))
    reader = _Reader(source.graph.input[0].name, calibration)

    def write(tmp: Path) -> None:
        with silenced():
            quant.quantize_static(str(onnx_path), str(tmp), reader, quant_format=quant.QuantFormat.QDQ,
                                  per_channel=True, weight_type=quant.QuantType.QInt8, nodes_to_exclude=keep,
                                  **PLACEMENTS[placement](quant))
        _copy_metadata(source, tmp)

    try:
        write_atomic(output, write)
    except AttnDeployError:
        raise
    except Exception as e:
        raise AttnDeployError(f"INT8 quantization of {onnx_path} failed: {type(e).__name__}: {str(e)[:300]}") from e
    note = (f"Q/DQ INT8 placed for {placement}, {len(calibration)} calibration batches; {len(keep)} sensitive and "
            "decode nodes left in float")
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
