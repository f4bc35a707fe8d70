"""The comparator: statistics and verdicts on real arrays, and the inputs it is fed."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from attn_deploy.parity import (NOISE_FACTOR, TOLERANCES, DetectionParity, OutputParity, ParityReport, compare_output,
                                parity_inputs)

FP32 = TOLERANCES["fp32"]


@pytest.fixture
def ref():
    return np.random.default_rng(0).normal(scale=100, size=(1, 84, 500)).astype(np.float32)


def test_identical_outputs_pass_with_zero_error(ref):
    stats = compare_output(ref, ref.copy(), FP32)
    assert stats["passed"] and stats["max_abs"] == 0 and stats["cosine"] == pytest.approx(1.0)


def test_error_beyond_tolerance_fails_and_is_measured(ref):
    out = ref.copy()
    out[0, 5, 7] += 0.5 + abs(ref[0, 5, 7]) * 2e-3
    stats = compare_output(ref, out, FP32)
    assert not stats["passed"]
    assert stats["max_abs"] == pytest.approx(0.5 + abs(ref[0, 5, 7]) * 2e-3, rel=1e-4)


def test_relative_tolerance_scales_with_the_reference(ref):
    out = ref * (1 + 5e-4)
    assert compare_output(ref, out, FP32)["passed"]
    assert not compare_output(ref, ref * (1 + 5e-3), FP32)["passed"]


def test_nan_where_reference_is_finite_fails(ref):
    out = ref.copy()
    out[0, 0, 0] = np.nan
    stats = compare_output(ref, out, FP32)
    assert not stats["passed"] and stats["nan"] == 1


def test_export_as_exact_as_the_reference_passes_beyond_tolerance(ref):
    exact = ref.astype(np.float64)
    noisy_ref = ref + 1.0  # a reference that is itself 1.0 off the exact answer
    out = ref + 1.5
    assert not compare_output(noisy_ref, out, FP32)["passed"]
    stats = compare_output(noisy_ref, out, FP32, exact)
    assert stats["ref_noise"] == pytest.approx(1.0, rel=1e-4) and 1.5 <= NOISE_FACTOR * 1.0
    assert stats["passed"]
    assert not compare_output(noisy_ref, ref + 2.5, FP32, exact)["passed"]


def test_parity_inputs_are_seeded_and_include_the_bundled_images():
    a, b = parity_inputs((320, 256), batch=2), parity_inputs((320, 256), batch=2)
    assert set(a) == {"seed0", "seed1", "bus.jpg", "zidane.jpg"}
    for name in a:
        assert a[name].shape == (2, 3, 320, 256) and a[name].dtype == np.float32
        assert np.array_equal(a[name], b[name])
    assert 0.0 <= a["bus.jpg"].min() and a["bus.jpg"].max() <= 1.0
    assert np.allclose(a["bus.jpg"][0, :, :, 0], 114 / 255)  # portrait image: grey letterbox padding left


finite = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False)


@given(arrays(np.float64, (3, 7), elements=finite), st.floats(0.0, 0.99), st.sampled_from([-1.0, 1.0]))
def test_any_perturbation_inside_the_bound_passes_and_outside_fails(ref, fraction, sign):
    bound = FP32.atol + FP32.rtol * np.abs(ref)
    assert compare_output(ref, ref + sign * fraction * bound, FP32)["passed"]
    assert not compare_output(ref, ref + sign * 1.01 * bound, FP32)["passed"]


def test_tolerance_follows_what_each_channel_holds():
    from attn_deploy.heads import Detect

    rng = np.random.default_rng(0)
    ref = np.concatenate([rng.uniform(0, 640, (1, 4, 50)), rng.uniform(0, 1, (1, 2, 50))], 1).astype(np.float32)
    ref[0, 2, 0] = 5.0  # a 5 px wide box
    scale = Detect(nc=2).outputs[0].scale(ref, (640, 640))
    assert scale.ravel().tolist() == [640] * 4 + [1] * 2
    fp16 = TOLERANCES["fp16"]
    width = ref.copy()
    width[0, 2, 0] += 1.5  # fp16's spacing near 640 is 0.5 px: 3 spacings off on a width computed from corners
    assert compare_output(ref, width, fp16, scale=scale)["passed"]
    assert not compare_output(ref, width, fp16)["passed"]  # without the scale: the old 1e-2 + 1e-2 * 5 px bound
    assert not compare_output(ref, width, FP32, scale=scale)["passed"]  # fp32's spacings at 640 are 6e-5 px
    score = ref.copy()
    score[0, 4, 0] += 0.05  # a score is no pixel: its bound stays near 1e-2
    assert not compare_output(ref, score, fp16, scale=scale)["passed"]


def _report(precision: str, elements_pass: bool, ref_boxes: int, accuracy=None) -> ParityReport:
    element = OutputParity("bus.jpg", 0, 1.0, 1.0, 1.0, 0.99, 0, 0, None, elements_pass)
    detection = DetectionParity("bus.jpg", ref_boxes, ref_boxes, 1.0 if ref_boxes else None,
                                1.0 if ref_boxes else None, 0.0, True)
    return ParityReport("onnxruntime", precision, TOLERANCES[precision], [element], detections=[detection],
                        accuracy=accuracy)


@pytest.mark.parametrize("precision, ref_boxes, passed", [
    ("fp16", 3, True),  # the detection-level check had instances to decide on, and they all match
    ("bf16", 3, True),
    ("fp16", 0, False),  # nothing to match on the real images: element parity decides
    ("fp32", 3, False),  # fp32 is always held to its elements
])
def test_reduced_precisions_are_decided_by_the_detection_level_check(precision, ref_boxes, passed):
    report = _report(precision, False, ref_boxes)
    assert report.passed is passed and report.elements_gate is not passed


def _detect_output(anchors: list[tuple[tuple[float, float, float, float], tuple[float, ...]]]) -> np.ndarray:
    """A (1, 4 + nc, anchors) Detect output: xywh pixels and class scores, anchor by anchor."""
    return np.array([[*box, *scores] for box, scores in anchors], np.float32).T[None]


def _detections(ref: np.ndarray, out: np.ndarray, precision: str = "fp16") -> DetectionParity:
    from attn_deploy.heads.detect import Detect
    from attn_deploy.parity import Detections, compare_detections

    (found,) = compare_detections("image", [ref], [out], Detect(nc=2), TOLERANCES[precision], Detections(), (64, 64))
    return found


@pytest.mark.parametrize("first, second, passed", [
    (0.795, 0.800, True),  # two overlapping boxes whose scores trade places within fp16's atol
    (0.600, 0.800, False),  # the same boxes, one score moved by 0.2: a different detection
])
def test_nms_keeping_the_other_of_two_near_equal_boxes_is_not_a_miss(first, second, passed):
    boxes = (30.0, 30.0, 20.0, 20.0), (32.0, 30.0, 20.0, 20.0)  # IoU 0.82: NMS at 0.7 keeps one
    ref = _detect_output([(boxes[0], (0.800, 0.0)), (boxes[1], (0.795, 0.0))])
    found = _detections(ref, _detect_output([(boxes[0], (first, 0.0)), (boxes[1], (second, 0.0))]))
    assert (found.ref_boxes, found.boxes) == (1, 1)
    assert found.passed is passed and found.recall == (1.0 if passed else 0.0)


@pytest.mark.parametrize("scores, passed", [
    ((0.698, 0.700), True),  # the anchor's two best classes trade places within atol
    ((0.500, 0.700), False),  # a class score moved by 0.2
])
def test_an_anchor_whose_best_class_is_a_near_tie_matches_either(scores, passed):
    box = (30.0, 30.0, 20.0, 20.0)
    found = _detections(_detect_output([(box, (0.700, 0.698))]), _detect_output([(box, scores)]))
    assert found.passed is passed


@pytest.mark.parametrize("ref_shift, out_shift, passed", [
    (3.50, 3.53, True),  # IoU 0.702 in the reference (one box kept), 0.69996 in the export (both): within atol of 0.7
    (2.90, 3.60, False),  # IoU 0.75 against 0.69: the box the export keeps is one NMS clearly suppressed
])
def test_an_overlap_within_atol_of_the_nms_threshold_is_not_a_miss(ref_shift, out_shift, passed):
    def output(shift: float) -> np.ndarray:
        return _detect_output([((30.0, 30.0, 20.0, 20.0), (0.8, 0.0)), ((30.0 + shift, 30.0, 20.0, 20.0), (0.7, 0.0))])

    found = _detections(output(ref_shift), output(out_shift))
    assert (found.ref_boxes, found.boxes) == (1, 2)
    assert found.passed is passed


@pytest.mark.parametrize("first, second, passed", [
    (0.7498, 0.7500, True),  # B overtakes C by 2e-4: B survives and suppresses A, which C had let through
    (0.6000, 0.8000, False),  # B overtakes C by 0.2: A is suppressed for sure, a real difference
])
def test_what_a_near_tie_in_nms_frees_in_turn_is_not_a_miss(first, second, passed):
    """C and B overlap at IoU 0.87 and score within 2e-4; A overlaps B at 0.77 and C at 0.66 (YOLOv9t's seeded
    model in rknn's simulator: fp16 rounded both to 0.75 and the tie went the other way)."""
    c, b, a = ((x, 30.0, 20.0, 20.0) for x in (30.0, 31.436, 34.073))
    ref = _detect_output([(c, (0.7499, 0.0)), (b, (0.7498, 0.0)), (a, (0.7362, 0.0))])
    found = _detections(ref, _detect_output([(c, (first, 0.0)), (b, (second, 0.0)), (a, (0.7363, 0.0))]))
    assert (found.ref_boxes, found.boxes, found.passed) == (2, 1, passed)
