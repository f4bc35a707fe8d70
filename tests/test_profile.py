"""Per-op profiles from onnxruntime's session profiling and OpenVINO's per-layer counters, on a real detector."""

import pytest

from attn_deploy.bench.harness import seeded_input
from attn_deploy.loading import load
from attn_deploy.exporters import onnx, openvino
from attn_deploy.bench.profile import aggregate, block_of, op_class, profile


@pytest.fixture(scope="module")
def simam_exports(fork_checkpoints, tmp_path_factory):
    root = tmp_path_factory.mktemp("profile")
    path = onnx.export(load(fork_checkpoints["simam"]), root / "simam.onnx", onnx.OnnxOptions(imgsz=(320, 320))).path
    return path, openvino.export(path, root / "simam_openvino_model", openvino.OpenVINOOptions()).path


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_profile_splits_time_by_op_type_block_and_class(simam_exports, backend):
    path, ir = simam_exports
    runner = onnx.Runner(path, 2, profiling=True) if backend == "onnxruntime" else \
        openvino.Runner(ir, threads=2, profiling=True)
    found = profile(runner, seeded_input(1, (320, 320)), runs=3)
    runner.close()
    assert found.backend == backend and found.runs == 3 and found.total_ms > 0
    assert sum(found.by_type.values()) == pytest.approx(found.total_ms)
    assert sum(found.by_block.values()) == pytest.approx(found.total_ms)
    assert sum(found.by_class.values()) == pytest.approx(found.total_ms)
    assert found.by_class["compute-bound"] > 0 and found.by_class["memory-bound"] > 0
    assert "model.10" in found.by_block and "model.0" in found.by_block  # SimAM's block and the stem
    ms, share = found.inside(["model.10"])
    assert ms == found.by_block["model.10"] and 0 < share < 1


def test_profiles_count_only_the_runs_asked_for(simam_exports):
    runner = onnx.Runner(simam_exports[0], 2, profiling=True)
    x = seeded_input(1, (320, 320))
    for _ in range(4):
        runner.run([x])
    rows = runner.op_times(x, 2)
    runner.close()
    convs = [ms for _, kind, ms in rows if kind in ("Conv", "FusedConv")]
    assert convs and all(ms > 0 for ms in convs)
    assert len({name for name, _, _ in rows}) == len(rows)  # one row per node: per-run means, not every run


def test_op_classes_and_blocks():
    assert op_class("MatMul") == op_class("Convolution") == "compute-bound"
    assert op_class("Softmax") == op_class("Transpose") == op_class("ReduceMean") == "memory-bound"
    assert op_class("Subgraph") == "memory-bound"  # OpenVINO's fused element-wise chains
    assert op_class("MaxPool") == op_class("Subgraph+MatMul") == "other"
    assert block_of("/model.10/attn/Softmax") == "model.10"
    assert block_of("images_abcd_acdb_/model.0/conv/Conv/WithoutBiases") == "model.0"
    assert block_of("ReorderInput_token_27") == "(graph)"
    found = aggregate("x", [("/model.1/Conv", "Conv", 3.0), ("/model.2/Softmax", "Softmax", 1.0)], 1)
    assert found.memory_bound_share == 0.25 and found.compute_bound_share == 0.75
    assert list(found.by_block) == ["model.1", "model.2"]


def test_openvino_names_subgraphs_that_fused_attention(tmp_path):
    from attn_deploy.bench import study

    mhsa = study.module_subject("mhsa", "n", "P4", tmp_path)
    runner = openvino.Runner(mhsa.artefacts["openvino"], threads=2, profiling=True)
    found = profile(runner, seeded_input(1, mhsa.imgsz, mhsa.channels), runs=2)
    runner.close()
    assert found.by_type.get("Subgraph+MatMul", 0) > 0.5 * found.total_ms  # MatMul-Softmax-MatMul, fused
    assert found.by_class["other"] >= found.by_type["Subgraph+MatMul"]
