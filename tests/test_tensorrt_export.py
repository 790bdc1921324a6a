"""``export trt`` and the TensorRT backend.

On a CPU machine: the calibrator's batch feeding, the parser-error report, the engine folder key and the
CLI's errors without TensorRT. Where TensorRT imports and a GPU is present: the ONNX parser's error
path on a deliberately broken graph, then (``gpu``) FP16 engines, parity against ONNX Runtime, the
line service end to end on engines, and ``bench vision --backend tensorrt``.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from lineguard.cli import main
from lineguard.export.tensorrt_engines import (
    CalibrationBatches,
    EngineSpec,
    OnnxParseError,
    ParserIssue,
    device_folder,
    relative_diff,
)
from lineguard.runtime.inference.base import GpuInfo


def tensorrt_builder_or_skip():
    """TensorRT's builder, or a skip saying why (it needs both the package and a CUDA device)."""
    try:
        import tensorrt as trt
    except (ImportError, OSError) as exc:
        pytest.skip(f"tensorrt is not importable here ({exc}); the parser path runs where it is")
    logger = trt.Logger(trt.Logger.ERROR)
    try:
        builder = trt.Builder(logger)
    except (RuntimeError, TypeError) as exc:
        pytest.skip(f"tensorrt imports but has no usable GPU ({exc})")
    return trt, builder, logger


def test_calibration_batches_are_fixed_size_contiguous_float32() -> None:
    images = np.arange(10 * 3 * 4 * 4, dtype=np.float64).reshape(10, 3, 4, 4)
    batches = CalibrationBatches({"image": images}, batch_size=4)
    assert len(batches) == 2 and batches.dropped == 2 and batches.shape("image") == (4, 3, 4, 4)
    got = list(batches)
    assert len(got) == 2
    for i, batch in enumerate(got):
        assert batch["image"].dtype == np.float32 and batch["image"].flags.c_contiguous
        np.testing.assert_array_equal(batch["image"], images[i * 4 : (i + 1) * 4].astype(np.float32))
    assert len(list(batches)) == 2  # iterable again: TensorRT may calibrate more than once


def test_calibration_batches_refuse_what_cannot_calibrate() -> None:
    with pytest.raises(ValueError, match="cannot fill one batch of 8"):
        CalibrationBatches({"image": np.zeros((3, 3, 4, 4))}, 8)
    with pytest.raises(ValueError, match="same number of samples"):
        CalibrationBatches({"s1": np.zeros((8, 2)), "s2": np.zeros((9, 2))}, 4)
    decoder = CalibrationBatches({"s1": np.ones((8, 2)), "s2": np.zeros((8, 5))}, 4)
    assert [sorted(b) for b in decoder] == [["s1", "s2"], ["s1", "s2"]]


def test_parse_error_names_each_node() -> None:
    error = OnnxParseError(Path("encoder.onnx"), [
        ParserIssue(3, "/blocks.1/Foo", "NotARealOp", "UNSUPPORTED_NODE", "No importer registered for op: NotARealOp"),
        ParserIssue(-1, "", "", "INVALID_GRAPH", "graph has no outputs"),
    ])
    text = str(error)
    assert "TensorRT cannot parse encoder.onnx (2 error(s))" in text
    assert "node 3 '/blocks.1/Foo' (NotARealOp): No importer registered for op: NotARealOp [UNSUPPORTED_NODE]" in text
    assert "graph: graph has no outputs [INVALID_GRAPH]" in text


def test_engine_folder_keys_gpu_capability_and_version() -> None:
    gpu = GpuInfo(name="NVIDIA GeForce RTX 4090", compute_capability="8.9", cuda_runtime_version="12.4")
    assert device_folder(gpu, "10.3.0") == "engines/nvidia-geforce-rtx-4090-sm89-trt10.3.0"


def test_engine_spec_and_parity_metric() -> None:
    with pytest.raises(ValueError, match="precision"):
        EngineSpec("bf16")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="opt_batch"):
        EngineSpec("fp16", max_batch=4, opt_batch=8)
    ref = {"a": np.array([10.0, -20.0]), "b": np.array([0.5])}
    assert relative_diff(ref, {"a": np.array([10.0, -19.8]), "b": np.array([0.5])}) == pytest.approx((0.2, 0.01))


def test_cli_without_tensorrt_says_how_to_get_it(bundle_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        import tensorrt  # noqa: F401

        pytest.skip("tensorrt is importable here")
    except (ImportError, OSError):
        pass
    assert main(["export", "trt", str(bundle_dir), "--fp16"]) == 2
    err = capsys.readouterr().err
    assert "TensorRT is not importable here" in err and "lineguard[gpu]" in err


def test_cli_refuses_int8_without_calibration_images(bundle_dir: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "trt", str(bundle_dir), "--int8"]) == 2
    assert "--int8 needs --calib DIR" in capsys.readouterr().err
    assert main(["export", "trt", str(bundle_dir), "--calib", str(tmp_path)]) == 2
    assert "add --int8" in capsys.readouterr().err
    assert main(["export", "trt", str(bundle_dir), "--int8", "--calib", str(tmp_path)]) == 2
    assert "INT8 calibration needs at least 8" in capsys.readouterr().err


def broken_graph(path: Path) -> Path:
    """A graph TensorRT cannot import: an operator no ONNX domain defines."""
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 8, 8])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 3, 8, 8])
    node = helper.make_node("NotARealOp", ["image"], ["out"], name="the_broken_node")
    model = helper.make_model(helper.make_graph([node], "broken", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


def test_parser_errors_are_reported_per_node(tmp_path: Path) -> None:
    from lineguard.export.tensorrt_engines import build_engine

    tensorrt_builder_or_skip()
    with pytest.raises(OnnxParseError) as caught:
        build_engine(broken_graph(tmp_path / "broken.onnx"), tmp_path / "broken.plan", EngineSpec("fp32", 2),
                     tmp_path / "timing.cache")
    assert any(i.node_index == 0 and "NotARealOp" in (i.operator + i.description) for i in caught.value.issues)
    assert "the_broken_node" in str(caught.value) or "node 0" in str(caught.value)
    assert not (tmp_path / "broken.plan").exists()


# -- on a GPU with TensorRT ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def engine_bundle(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import shutil

    from lineguard.export.tensorrt_engines import export_tensorrt

    copy = tmp_path_factory.mktemp("trt") / "bundle"
    shutil.copytree(bundle_dir, copy)
    export_tensorrt(copy, ("fp32", "fp16"), max_batch=8, profiles=2, workspace_mb=1024)
    return copy


@pytest.mark.gpu
def test_fp16_engines_build_and_pass_parity(engine_bundle: Path) -> None:
    from lineguard.runtime.bundle import Bundle

    manifest = Bundle.open(engine_bundle).manifest
    built = {(r.model, r.precision) for r in manifest.engines}
    assert built == {(m, p) for m in ("encoder", "decoder") for p in ("fp32", "fp16")}
    for r in manifest.engines:
        assert r.parity_passed, r
        assert (engine_bundle / r.file).stat().st_size > 0
    parity = json.loads((engine_bundle / "parity.json").read_text())["tensorrt"]["engines"]
    assert {e["precision"] for e in parity.values()} == {"fp32", "fp16"}
    timing_caches = list((engine_bundle / "engines").glob("*/timing.cache"))
    assert len(timing_caches) == 1 and timing_caches[0].stat().st_size > 0


@pytest.mark.gpu
def test_tensorrt_chain_matches_onnxruntime_from_concurrent_workers(engine_bundle: Path,
                                                                    weave_parts: list[np.ndarray]) -> None:
    from lineguard.runtime.bundle import Bundle
    from lineguard.runtime.inference.chain import VisionChain

    bundle = Bundle.open(engine_bundle)
    engines = VisionChain(bundle)  # auto: the engines match this GPU
    assert engines.backend.backend == "tensorrt", engines.backend.summary()
    reference = VisionChain(bundle, backend="onnxruntime", providers=["CPUExecutionProvider"])
    batch = reference.preprocessor(weave_parts[:10])  # beyond max batch 8: two chunks
    want = reference.run(batch)
    results: list = [None, None]

    def worker(i: int) -> None:
        results[i] = engines.run(batch)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]  # one profile and stream each
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got in results:
        assert float(np.abs(got.decoder_map - want.decoder_map).max()) < 0.05


@pytest.mark.gpu
def test_serve_end_to_end_on_tensorrt(engine_bundle: Path, weave_parts: list[np.ndarray]) -> None:
    import zmq

    from lineguard.runtime.bundle import Bundle
    from lineguard.runtime.contract import Verdict, encode_frame, new_header
    from lineguard.runtime.inference.chain import VisionChain
    from lineguard.runtime.line.config import LineConfig
    from lineguard.runtime.line.server import LineServer
    from lineguard.runtime.scoring.enroll import enroll_product
    from lineguard.runtime.scoring.inspector import Inspector

    bundle = Bundle.open(engine_bundle)
    chain = VisionChain(bundle, backend="tensorrt")
    enroll_product(bundle, "weave", weave_parts[:4], chain=chain)
    config = LineConfig(line="gpu", endpoints={"frames": "tcp://127.0.0.1:*", "verdicts": "tcp://127.0.0.1:*",
                                               "inspect": "tcp://127.0.0.1:*"}, deadline_ms=5000,
                        batching={"workers": 2}, http={"enabled": False})
    with LineServer(Inspector(bundle, chain=chain), config) as server:
        req = zmq.Context.instance().socket(zmq.REQ)
        req.setsockopt(zmq.RCVTIMEO, 10000)
        req.setsockopt(zmq.LINGER, 0)
        req.connect(server.endpoints.inspect)
        for i, image in enumerate(weave_parts[4:8]):
            req.send_multipart(encode_frame(new_header("cam0", f"f{i}", "weave"), image))
            verdict = Verdict.model_validate_json(req.recv())
            assert verdict.verdict in ("OK", "NG") and verdict.error is None
        req.close()


@pytest.mark.gpu
def test_bench_vision_reports_tensorrt_against_onnxruntime(engine_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    assert main(["bench", "vision", "--bundle", str(engine_bundle), "--backend", "tensorrt", "--batch", "1", "8",
                 "--rounds", "5", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["candidate"].startswith("tensorrt")
    assert [r["batch_size"] for r in result["runs"]] == [1, 8]
    assert all(r["candidate"]["frames_per_s"] > 0 and r["reference"]["frames_per_s"] > 0 for r in result["runs"])


@pytest.mark.gpu
def test_fp32_engine_chain_gives_the_verdicts_of_fp32_onnxruntime(engine_bundle: Path, tmp_path: Path,
                                                                   weave_parts: list[np.ndarray]) -> None:
    """FP32 engines (TF32 off) chained on the device: the map within the FP32 parity tolerance of ONNX
    Runtime on the CPU, and the same verdicts for the same frames."""
    import shutil

    from lineguard.runtime.bundle import Bundle
    from lineguard.runtime.inference.chain import VisionChain
    from lineguard.runtime.inference.tensorrt_backend import TensorRTChain
    from lineguard.runtime.scoring.enroll import enroll_product
    from lineguard.runtime.scoring.inspector import Inspector

    copy = tmp_path / "bundle"
    shutil.copytree(engine_bundle, copy)
    bundle = Bundle.open(copy)
    reference = VisionChain(bundle, backend="onnxruntime", providers=["CPUExecutionProvider"])
    enroll_product(bundle, "weave", weave_parts[:4], chain=reference)
    bundle = Bundle.open(copy)
    engines = VisionChain(bundle, backend="tensorrt", precisions=("fp32",))
    assert isinstance(engines.device_chain, TensorRTChain)
    assert {r.precision for r in engines.backend.engines.values()} == {"fp32"}
    reference = VisionChain(bundle, backend="onnxruntime", providers=["CPUExecutionProvider"])
    batch = reference.preprocessor(weave_parts[4:14])
    want, got = reference.run(batch), engines.run(batch)
    assert set(got.features) == set(engines.host_stages)
    scale = float(np.abs(want.decoder_map).max())
    assert float(np.abs(got.decoder_map - want.decoder_map).max()) / scale < 1e-3
    frames = weave_parts[4:16]
    pairs = zip(Inspector(bundle, chain=reference).analyze(frames, "weave"),
                Inspector(bundle, chain=engines).analyze(frames, "weave"), strict=True)
    for w, g in pairs:
        assert g.verdict.verdict == w.verdict.verdict
        assert g.verdict.score == pytest.approx(w.verdict.score, rel=1e-2, abs=1e-2)
