"""The timing harness on a real onnxruntime session."""

import pytest

from attn_deploy.bench import bench, compare
from attn_deploy.checkpoint import load
from attn_deploy.exporters import open_runner
from attn_deploy.exporters.onnx import OnnxOptions, export


@pytest.fixture(scope="module")
def small_onnx(fork_checkpoints, tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "simam.onnx"
    return export(load(fork_checkpoints["simam"]), path, OnnxOptions(imgsz=(320, 320), batch=2)).path


def test_latency_statistics_are_ordered_and_throughput_follows(small_onnx):
    calls = []
    result = bench(open_runner(small_onnx, threads=1), "simam", 2, (320, 320), warmup=2, iters=7,
                   threads=1, progress=lambda done, total: calls.append((done, total)))
    s = result.latency_ms
    assert 0 < s.min <= s.median <= s.p90 <= s.p99 <= s.max
    assert s.min <= s.mean <= s.max and s.std >= 0
    assert result.throughput == pytest.approx(2 * 1000 / s.median)
    assert result.first_ms > 0 and result.backend == "onnxruntime" and result.threads == 1
    assert calls[-1] == (9, 9) and len(calls) == 9


def test_invalid_iteration_counts_are_refused(small_onnx):
    with pytest.raises(ValueError):
        bench(open_runner(small_onnx), "simam", 2, (320, 320), warmup=0, iters=0)


def test_interleaved_comparison_times_every_runner_against_the_first(small_onnx):
    runners = {"a": open_runner(small_onnx, threads=1), "b": open_runner(small_onnx, threads=1)}
    result = compare(runners, 2, (320, 320), warmup=1, iters=9)
    assert set(result.latency_ms) == {"a", "b"} and result.ratio_to_first["a"] == 1.0
    assert result.ratio_to_first["b"] > 0 and all(s.min > 0 for s in result.latency_ms.values())
    with pytest.raises(ValueError):
        compare({}, 2, (320, 320))
