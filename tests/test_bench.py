"""The timing harness on real onnxruntime and OpenVINO runners."""

import numpy as np
import pytest

from attn_deploy.bench.harness import Budget, bench, compare, median_interval, peak_rss_mb, reset_peak_rss
from attn_deploy.loading import load
from attn_deploy.exporters import open_runner, openvino
from attn_deploy.exporters.onnx import OnnxOptions, export


@pytest.fixture(scope="module")
def small_onnx(fork_checkpoints, tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "simam.onnx"
    return export(load(fork_checkpoints["simam"]), path, OnnxOptions(imgsz=(320, 320), batch=2)).path


def test_latency_statistics_are_ordered_and_throughput_follows(small_onnx):
    calls = []
    result = bench(open_runner(small_onnx, threads=1), "simam", 2, (320, 320), Budget(0.0, 7, 0.0),
                   threads=1, progress=lambda done, total: calls.append((done, total)))
    s = result.latency_ms
    assert 0 < s.min <= s.median <= s.p90 <= s.p99 <= s.max
    assert s.min <= s.mean <= s.max and s.std >= 0
    assert s.median_ci[0] <= s.median <= s.median_ci[1] and s.count == result.iters == 7
    assert result.throughput == pytest.approx(2 * 1000 / s.median)
    assert result.first_ms > 0 and result.backend == "onnxruntime" and result.threads == 1 and result.warmup >= 1
    assert calls[-1] == (7, 7)


def test_duration_keeps_timing_past_the_minimum_runs(small_onnx):
    result = bench(open_runner(small_onnx, threads=1), "simam", 2, (320, 320), Budget(0.0, 1, 0.5))
    # the timed runs fill the 500 ms (their sum, less the harness's time between runs); each run's own time
    # varies on a busy machine, so their sum, not the fastest run times their count
    assert result.iters > 1 and result.iters * result.latency_ms.mean >= 400


def test_median_interval_is_the_binomial_order_statistics():
    assert median_interval(np.arange(10.0)) == (1.0, 8.0)  # x(2), x(9): the 95 % interval for n = 10
    assert median_interval(np.arange(100.0)) == (39.0, 60.0)  # x(40), x(61)
    assert median_interval(np.arange(3.0)) == (0.0, 2.0)  # too few runs: the whole range


def test_invalid_budgets_are_refused():
    for bad in ({"iters": 0}, {"warmup_s": -1}, {"duration_s": -1}):
        with pytest.raises(ValueError):
            Budget(**bad)


def test_openvino_throughput_mode_keeps_requests_in_flight(small_onnx, tmp_path):
    ir = openvino.export(small_onnx, tmp_path / "simam_openvino_model", openvino.OpenVINOOptions()).path
    runner = openvino.Runner(ir, threads=2, mode="throughput")
    result = bench(runner, "simam", 2, (320, 320), Budget(0.0, 6, 0.0), threads=2)
    runner.close()
    assert result.mode == "throughput" and result.iters >= 6 and result.throughput > 0
    assert runner.compiled is None


def test_peak_memory_is_measured_from_a_reset():
    if not reset_peak_rss():
        pytest.skip("this kernel does not let a process reset its peak resident memory")
    before = peak_rss_mb()
    block = np.ones(256 * 2**20 // 8)  # 256 MiB, touched
    assert peak_rss_mb() - before > 200 and block.sum() > 0
    del block
    reset_peak_rss()
    assert peak_rss_mb() < before + 100


def test_interleaved_comparison_times_every_runner_against_the_first(small_onnx):
    from attn_deploy.exporters.onnx import Runner

    runners = {"a": Runner(small_onnx, 1, spinning=False), "b": Runner(small_onnx, 1, spinning=False)}
    result = compare(runners, 2, (320, 320), warmup=1, iters=9)
    assert set(result.latency_ms) == {"a", "b"} and result.ratio_to_first["a"] == 1.0
    assert result.ratio_to_first["b"] > 0 and all(s.min > 0 for s in result.latency_ms.values())
    with pytest.raises(ValueError):
        compare({}, 2, (320, 320))


def test_sessions_timed_in_turn_must_not_spin_and_the_comparison_says_so(small_onnx):
    from attn_deploy.exporters.onnx import Runner

    spinning = {"a": Runner(small_onnx, 1), "b": Runner(small_onnx, 1)}
    with pytest.raises(ValueError, match="spinning=False"):
        compare(spinning, 2, (320, 320), warmup=0, iters=1)
    quiet = {"a": Runner(small_onnx, 1, spinning=False), "b": Runner(small_onnx, 1, spinning=False)}
    entry = "session.intra_op.allow_spinning"
    assert quiet["a"].session.get_session_options().get_session_config_entry(entry) == "0"
    result = compare(quiet, 2, (320, 320), warmup=0, iters=3)
    assert result.spinning == {"a": False, "b": False} and "allow_spinning=0" in result.method
    alone = bench(spinning["a"], "simam", 2, (320, 320), Budget(0.0, 2, 0.0))
    assert alone.spinning is True and not alone.interleaved  # a session timed alone keeps the runtime's default
