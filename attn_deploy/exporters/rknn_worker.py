"""The RKNN worker: runs rknn-toolkit2 in its own environment, behind a process boundary.

rknn-toolkit2 pins torch <= 2.4, numpy <= 1.26.4, onnx <= 1.18 and protobuf <= 4.25.4, which conflict with
attn-deploy's own environment, so the parent never imports it. It starts this script with the other
environment's interpreter (``python rknn_worker.py``), writes one JSON job on its stdin and reads JSON back,
as ``bench/job.py`` does. The script imports nothing of attn_deploy.

Jobs (one JSON object, the first line of stdin):

- ``{"action": "probe"}``: the versions installed, so a bad environment is found before any build.
- ``{"action": "build", "onnx": ..., "platform": ..., "output": ...}``: build and write the ``.rknn`` file; with
  ``"dataset"`` (a file listing calibration images), an INT8 build calibrated on them (every job takes it); with
  ``"float"`` too (ONNX tensor names), a hybrid build: the toolkit's tensors made from those stay in float16 (its
  hybrid quantization, steps 1 and 2), and the answer names them (``"kept"``).
- ``{"action": "serve", "onnx": ..., "platform": ...}``: build, start the x86 simulator, answer ``"ready"``,
  then for each further line ``{"inputs": [npy paths], "outputs": dir}`` run the simulator, save its outputs as
  ``dir/<i>.npy`` and answer their paths. The simulator runs only models built in the same process, so a
  runner builds again from the ONNX the artefact was built from.
- ``{"action": "analyse", "onnx": ..., "platform": ..., "input": npy path, "output_dir": dir}``: build, run
  rknn-toolkit2's per-layer accuracy analysis on that image in the simulator (each layer against the toolkit's
  fp32 golden run) and answer its rows: ``{"layers": [{"type", "tensor", "entire", "single"}, ...]}``, the
  cosines as the table writes them (a number, or a marker such as ``q_inf``).

The answer is one JSON line: ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``. rknn-toolkit2 logs
to stdout, so the answer goes to the stdout this script found, and stdout is pointed at stderr.
"""

import json
import os
import re
import sys
import traceback

# This file's folder holds attn_deploy's onnx.py and torch.py, which would shadow the real packages.
sys.path = [p for p in sys.path if os.path.realpath(p or ".") != os.path.dirname(os.path.realpath(__file__))]

# The parent gives float NCHW images in [0, 1]; the model built here takes NHWC pixels in [0, 255] and divides by
# 255 itself, as ultralytics' RKNN export configures it, so a board feeds it camera frames as they come.
MEAN, STD = [[0, 0, 0]], [[255, 255, 255]]
# A row of the accuracy analysis' error_analysis.txt: "[Conv] /model.0/conv/Conv_output_0  1.00000 | 0.1449  1.00000 |
# 0.1449": the layer's type and output tensor, then the cosine and Euclidean distance of its output against the golden
# run, accumulated (entire) and with the layer fed the golden inputs (single). A value may be a marker instead:
# "q_inf" (the simulator's output overflowed), "f_zero" (the golden output is all zero).
ANALYSIS_ROW = re.compile(r"^\[(?P<type>[^\]]+)\]\s+(?P<tensor>\S+)\s+(?P<entire>\S+)\s*\|\s*\S+\s+"
                          r"(?P<single>\S+)\s*\|")


def _answer(stream, payload: dict) -> None:
    stream.write(json.dumps(payload) + "\n")
    stream.flush()


def _failure(error: BaseException) -> str:
    """The converter's own words: the last line of its message (rknn wraps a traceback in a ValueError)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[-1] if lines else ''}"[:500]


def _check(ret, call: str) -> None:
    if ret not in (0, None):
        raise RuntimeError(f"rknn-toolkit2 {call} returned {ret}")


def _built(job: dict):
    from rknn.api import RKNN

    rknn = RKNN(verbose=False)
    _check(rknn.config(mean_values=MEAN, std_values=STD, target_platform=job["platform"],
                       quantized_algorithm=job.get("algorithm", "normal")), "config")
    _check(rknn.load_onnx(model=job["onnx"]), "load_onnx")
    dataset = job.get("dataset")  # an INT8 build: the calibration images' list
    if dataset and job.get("float"):
        return _hybrid(rknn, job)
    _check(rknn.build(do_quantization=bool(dataset), dataset=dataset), "build")
    return rknn


def _hybrid(rknn, job: dict):
    """An INT8 build with the toolkit's tensors made from ``job["float"]`` in float16; ``job["kept"]`` names them.
    Step 1 writes the model, its data and its quantization config into the working directory; the config's
    ``custom_quantize_layers`` takes the tensors to keep; step 2 builds from the three."""
    import tempfile

    from rknn.api import RKNN

    stem, here = os.path.splitext(os.path.basename(job["onnx"]))[0], os.getcwd()
    with tempfile.TemporaryDirectory(prefix="rknn-hybrid-") as work:
        os.chdir(work)
        try:
            _check(rknn.hybrid_quantization_step1(dataset=job["dataset"]), "hybrid_quantization_step1")
            _keep_in_float(f"{stem}.quantization.cfg", job)
            hybrid = RKNN(verbose=False)
            _check(hybrid.hybrid_quantization_step2(model_input=f"{stem}.model", data_input=f"{stem}.data",
                                                    model_quantization_cfg=f"{stem}.quantization.cfg"),
                   "hybrid_quantization_step2")
        finally:
            os.chdir(here)
    return hybrid


def _keep_in_float(config: str, job: dict) -> None:
    """Name the tensors made from ``job["float"]`` in the config's ``custom_quantize_layers`` as float16."""
    with open(config) as f:
        text = f.read()
    empty = "custom_quantize_layers: {}\n"
    if not text.startswith(empty):
        raise RuntimeError(f"{config} does not start with an empty custom_quantize_layers")
    job["kept"] = [t for t in re.findall(r"^    (\S+):$", text, re.M) if _made_from(t, job["float"])]
    kept = "".join(f"    {json.dumps(t)}: float16\n" for t in job["kept"])
    with open(config, "w") as f:
        f.write(f"custom_quantize_layers:\n{kept}" + text[len(empty):])


def _made_from(tensor: str, names: list[str]) -> bool:
    """Whether the toolkit's ``tensor`` is one of ``names`` under the suffixes its passes add (``output0-rs``,
    ``..._sw``, ``output0_int8``)."""
    return any(re.fullmatch(re.escape(name) + r"([-_](rs|sw|int8))*", tensor) for name in names)


def _versions() -> dict:
    import numpy
    import onnx
    from importlib.metadata import version

    return {"rknn-toolkit2": version("rknn-toolkit2"), "numpy": numpy.__version__, "onnx": onnx.__version__,
            "python": sys.version.split()[0]}


def _serve(rknn, requests, out) -> None:
    import numpy as np

    _check(rknn.init_runtime(), "init_runtime")
    _answer(out, {"ok": True, "ready": True})
    for line in requests:
        request = json.loads(line)
        images = [np.load(p).transpose(0, 2, 3, 1) * 255.0 for p in request["inputs"]]
        outputs = rknn.inference(inputs=images, data_format="nhwc")
        if outputs is None:
            raise RuntimeError("the simulator returned no outputs")
        paths = [os.path.join(request["outputs"], f"{i}.npy") for i in range(len(outputs))]
        for path, output in zip(paths, outputs):
            np.save(path, np.asarray(output, dtype=np.float32))
        _answer(out, {"ok": True, "outputs": paths})


def _analyse(rknn, job: dict) -> list[dict]:
    import numpy as np

    image = os.path.join(job["output_dir"], "input.npy")  # NCHW pixels in [0, 255]: what the analysis reads
    np.save(image, (np.load(job["input"]) * 255.0).astype(np.float32))
    _check(rknn.accuracy_analysis(inputs=[image], output_dir=job["output_dir"], target=None), "accuracy_analysis")
    with open(os.path.join(job["output_dir"], "error_analysis.txt")) as table:
        rows = [ANALYSIS_ROW.match(line.strip()) for line in table]
    return [{"type": m["type"], "tensor": m["tensor"], "entire": m["entire"], "single": m["single"]}
            for m in rows if m]


def main() -> int:
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # rknn-toolkit2's logs go to stderr, the answers to the real stdout
    try:
        job = json.loads(sys.stdin.readline())
        if job["action"] == "probe":
            from rknn.api import RKNN  # noqa: F401  (the import is what is probed)

            _answer(out, {"ok": True, "versions": _versions()})
        elif job["action"] == "build":
            _check(_built(job).export_rknn(job["output"]), "export_rknn")
            _answer(out, {"ok": True, "versions": _versions(), "kept": job.get("kept", [])})
        elif job["action"] == "analyse":
            _answer(out, {"ok": True, "layers": _analyse(_built(job), job)})
        else:
            _serve(_built(job), sys.stdin, out)
    except Exception as e:  # every failure is an answer: the parent turns it into one message
        traceback.print_exc()
        _answer(out, {"ok": False, "error": _failure(e)})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
