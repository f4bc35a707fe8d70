"""ONNX symbolics that torch's TorchScript exporter lacks, registered before an export.

torchvision registers symbolics for ``nms``, ``roi_align`` and ``roi_pool``, not for
``deform_conv2d``; ONNX has had ``DeformConv`` since opset 19, with the same offset layout
((y, x) pairs per kernel position and offset group) and the same optional mask. Below opset 19 the
symbolic refuses with torch's own error for an op added in a later opset, which the export error
turns into the opset to ask for, naming the module.
"""

import functools

DEFORM_CONV_OPSET = 19


def _deform_conv2d(g, input, weight, offset, mask, bias, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
                   groups, offset_groups, use_mask):
    from torch.onnx import errors, symbolic_helper

    if g.opset < DEFORM_CONV_OPSET:
        raise errors.UnsupportedOperatorError("torchvision::deform_conv2d", g.opset, DEFORM_CONV_OPSET)
    ints = [symbolic_helper._get_const(v, "i", "deform_conv2d") for v in (
        stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups, offset_groups)]
    inputs = [input, weight, offset, bias] + ([mask] if symbolic_helper._get_const(use_mask, "b", "use_mask") else [])
    return g.op("DeformConv", *inputs, strides_i=ints[0:2], pads_i=ints[2:4] * 2, dilations_i=ints[4:6],
                group_i=ints[6], offset_group_i=ints[7])


@functools.cache
def register() -> None:
    """Register the symbolics above (once per process)."""
    import torch

    torch.onnx.register_custom_op_symbolic("torchvision::deform_conv2d", _deform_conv2d, 7)
