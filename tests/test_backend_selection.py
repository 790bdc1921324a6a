"""Which backend runs a bundle: engine metadata against a described running device, fallbacks, reasons;
and the one Backend protocol every backend implements (run in chunks, describe, close)."""

from __future__ import annotations

import json
import logging
import types
from pathlib import Path

import numpy as np
import pytest

from lineguard.runtime.bundle import Bundle, BundleIntegrityError, BundleManifest, EngineRecord
from lineguard.runtime.inference.base import (
    Backend,
    BackendClosedError,
    BackendUnavailableError,
    GpuInfo,
    RunningDevice,
    run_in_chunks,
)
from lineguard.runtime.inference.chain import VisionChain
from lineguard.runtime.inference.selection import choose_backend, onnxruntime_provider_options

ORIN = GpuInfo(name="Orin", compute_capability="8.7", cuda_runtime_version="12.6")
RTX = GpuInfo(name="NVIDIA GeForce RTX 4090", compute_capability="8.9", cuda_runtime_version="12.4")
ON_ORIN = RunningDevice(gpu=ORIN, tensorrt_version="10.3.0", onnxruntime_providers=("CUDAExecutionProvider", "CPUExecutionProvider"))


def engine(manifest: BundleManifest, model: str, precision: str = "fp16", gpu: GpuInfo = ORIN, trt: str = "10.3.0",
           passed: bool = True, onnx_sha: str | None = None) -> EngineRecord:
    onnx_file = manifest.encoder.file if model == "encoder" else manifest.decoder.file
    return EngineRecord(model=model, file=f"engines/x/{model}.{precision}.plan",
                        onnx_sha256=onnx_sha or manifest.files[onnx_file].sha256, precision=precision, opt_batch=8,
                        max_batch=8, gpu_name=gpu.name, compute_capability=gpu.compute_capability, tensorrt_version=trt,
                        cuda_version=gpu.cuda_runtime_version, workspace_mb=2048, built_at="2026-01-01T00:00:00+00:00",
                        parity_max_abs_diff=0.01, parity_relative_diff=0.002 if passed else 0.5,
                        parity_tolerance=0.03, parity_passed=passed)


@pytest.fixture(scope="module")
def manifest(bundle_dir: Path) -> BundleManifest:
    return Bundle.open(bundle_dir).manifest


def with_engines(manifest: BundleManifest, *records: EngineRecord) -> BundleManifest:
    return manifest.model_copy(update={"engines": list(records)})


def test_matching_engines_choose_tensorrt(manifest: BundleManifest) -> None:
    m = with_engines(manifest, engine(manifest, "encoder"), engine(manifest, "decoder"))
    choice = choose_backend("auto", m, ON_ORIN)
    assert choice.backend == "tensorrt"
    assert {k: r.precision for k, r in choice.engines.items()} == {"encoder": "fp16", "decoder": "fp16"}


def test_fastest_precision_that_passed_parity_wins_per_model(manifest: BundleManifest) -> None:
    m = with_engines(manifest, *(engine(manifest, model, p) for model in ("encoder", "decoder") for p in ("fp32", "fp16")),
                     engine(manifest, "encoder", "int8", passed=False))
    choice = choose_backend("auto", m, ON_ORIN)
    assert choice.engines["encoder"].precision == "fp16" and choice.engines["decoder"].precision == "fp16"
    assert choice.reasons == ["engines match this GPU and TensorRT version"]
    fp32_first = choose_backend("auto", m, ON_ORIN, precision_order=("fp32", "fp16"))
    assert fp32_first.engines["encoder"].precision == "fp32"


@pytest.mark.parametrize(("device", "why"), [
    (RunningDevice(gpu=RTX, tensorrt_version="10.3.0"), "built for Orin (sm 8.7), running on NVIDIA GeForce RTX 4090 (sm 8.9)"),
    (RunningDevice(gpu=ORIN, tensorrt_version="10.7.0"), "built with TensorRT 10.3.0, running TensorRT 10.7.0"),
    (RunningDevice(gpu=None, gpu_error="CudaError: no CUDA device 0 (0 present)", tensorrt_version="10.3.0"),
     "no CUDA GPU here (CudaError: no CUDA device 0"),
    (RunningDevice(gpu=ORIN, tensorrt_error="ModuleNotFoundError: No module named 'tensorrt'"),
     "TensorRT is not importable here (ModuleNotFoundError"),
])
def test_mismatch_falls_back_to_onnxruntime_with_the_reason(manifest: BundleManifest, device: RunningDevice,
                                                            why: str) -> None:
    m = with_engines(manifest, engine(manifest, "encoder"), engine(manifest, "decoder"))
    choice = choose_backend("auto", m, device)
    assert choice.backend == "onnxruntime" and choice.providers == ["CPUExecutionProvider"]
    assert any(why in r for r in choice.reasons), choice.reasons
    assert why in choice.summary()
    with pytest.raises(BackendUnavailableError, match="TensorRT cannot run this bundle here"):
        choose_backend("tensorrt", m, device)


def test_engine_from_another_graph_or_failed_parity_is_passed_over(manifest: BundleManifest) -> None:
    m = with_engines(manifest, engine(manifest, "encoder", onnx_sha="0" * 64), engine(manifest, "decoder", passed=False))
    choice = choose_backend("auto", m, ON_ORIN)
    assert choice.backend == "onnxruntime"
    assert choice.providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert any("built from another encoder ONNX graph" in r for r in choice.reasons)
    assert any("failed parity vs ONNX Runtime" in r for r in choice.reasons)


def test_one_model_without_engine_means_no_tensorrt(manifest: BundleManifest) -> None:
    choice = choose_backend("auto", with_engines(manifest, engine(manifest, "encoder")), ON_ORIN)
    assert choice.backend == "onnxruntime"
    assert any("no TensorRT engine for the decoder" in r for r in choice.reasons)


def test_explicit_requests(manifest: BundleManifest) -> None:
    m = with_engines(manifest, engine(manifest, "encoder"), engine(manifest, "decoder"))
    assert choose_backend("onnxruntime", m, ON_ORIN).backend == "onnxruntime"
    assert choose_backend("triton", m, ON_ORIN, triton_url="triton:8001").triton_url == "triton:8001"
    with pytest.raises(BackendUnavailableError, match="needs a server URL"):
        choose_backend("triton", m, ON_ORIN)
    with pytest.raises(BackendUnavailableError, match="unknown backend"):
        choose_backend("openvino", m, ON_ORIN)  # type: ignore[arg-type]


def test_tensorrt_ep_gets_its_engine_cache(tmp_path: Path) -> None:
    providers = onnxruntime_provider_options(["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
                                             tmp_path, fp16=True)
    name, options = providers[0]
    assert name == "TensorrtExecutionProvider"
    assert options["trt_engine_cache_enable"] is True and options["trt_engine_cache_path"] == str(tmp_path)
    assert options["trt_fp16_enable"] is True and options["trt_timing_cache_enable"] is True
    assert providers[1:] == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_manifest_without_engines_still_loads(bundle_copy: Path) -> None:
    """Bundles written before engine records existed have no ``engines`` key."""
    raw = json.loads((bundle_copy / "manifest.json").read_text())
    raw.pop("engines", None)
    (bundle_copy / "manifest.json").write_text(json.dumps(raw))
    assert Bundle.open(bundle_copy).manifest.engines == []


def test_engine_files_are_checksummed_and_chain_falls_back_here(bundle_copy: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Records written as ``export trt`` writes them; on this GPU-less machine the chain logs why it
    runs ONNX Runtime instead, and a missing engine file is refused like any other bundle file."""
    from lineguard.export.tensorrt_engines import record_engines

    bundle = Bundle.open(bundle_copy)
    records = [engine(bundle.manifest, m).model_copy(update={"file": f"engines/orin-sm87-trt10.3.0/{m}.fp16.b8.plan"})
               for m in ("encoder", "decoder")]
    folder = bundle_copy / "engines" / "orin-sm87-trt10.3.0"
    folder.mkdir(parents=True)
    for r in records:  # stand-ins for serialized engines: only their checksums matter to the manifest
        (bundle_copy / r.file).write_bytes(np.random.default_rng(0).bytes(256))
    record_engines(bundle, records)
    reopened = Bundle.open(bundle_copy)
    assert [r.file for r in reopened.manifest.engines] == [r.file for r in records]
    assert all(r.file in reopened.manifest.files for r in records)
    parity = json.loads((bundle_copy / "parity.json").read_text())
    assert parity["tensorrt"]["engines"][records[0].file]["passed"] is True
    assert "max_abs_diff" in parity  # the ONNX Runtime vs PyTorch section stays
    with caplog.at_level(logging.WARNING, logger="lineguard.runtime.inference.chain_backends"):
        chain = VisionChain(reopened)
    assert chain.backend.backend == "onnxruntime"
    assert any("TensorRT" in r or "GPU" in r for r in chain.backend.reasons)
    assert "backend onnxruntime" in caplog.text
    with pytest.raises(BackendUnavailableError):
        VisionChain(reopened, backend="tensorrt")
    (bundle_copy / records[1].file).unlink()
    with pytest.raises(BundleIntegrityError, match="decoder.fp16.b8.plan"):
        Bundle.open(bundle_copy)


def test_int8_only_when_the_line_asks_for_it(manifest: BundleManifest) -> None:
    m = with_engines(manifest, *(engine(manifest, model, p) for model in ("encoder", "decoder") for p in ("fp32", "int8")))
    assert {r.precision for r in choose_backend("auto", m, ON_ORIN).engines.values()} == {"fp32"}
    asked = choose_backend("auto", m, ON_ORIN, precision_order=("int8", "fp16", "fp32"))
    assert {r.precision for r in asked.engines.values()} == {"int8"}


def test_a_line_runs_on_the_backend_its_config_names(bundle_dir: Path) -> None:
    """``inference`` in the line config reaches the chain (what `lineguard serve` and the demo use)."""
    from lineguard.runtime.line.config import LineConfig
    from lineguard.runtime.line.server import LineServer

    plain = LineServer.from_bundle(bundle_dir, LineConfig(line="b", inference={"backend": "onnxruntime"}))
    assert plain.inspector.chain.backend.backend == "onnxruntime"
    with pytest.raises(BackendUnavailableError, match="(?i)tensorrt"):  # no engines, no GPU here
        LineServer.from_bundle(bundle_dir, LineConfig(line="b", inference={"backend": "tensorrt"}))


def test_run_in_chunks_splits_beyond_max_batch_and_concatenates_in_order() -> None:
    calls: list[int] = []

    def twice(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert all(a.flags.c_contiguous for a in inputs.values())
        calls.append(len(inputs["x"]))
        return {"y": inputs["x"] * 2, "z": inputs["x"][:, :1] + inputs["w"]}

    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    w = np.ones((10, 1), np.float32)
    out = run_in_chunks(twice, {"x": x[:, ::-1], "w": w}, max_batch=4)  # a strided view goes in contiguous
    assert calls == [4, 4, 2]
    np.testing.assert_array_equal(out["y"], x[:, ::-1] * 2)
    np.testing.assert_array_equal(out["z"], x[:, 3:4] + 1)
    calls.clear()
    assert run_in_chunks(twice, {"x": x, "w": w}, max_batch=None)["y"].shape == (10, 4) and calls == [10]
    calls.clear()
    run_in_chunks(twice, {"x": x, "w": w}, max_batch=16)
    assert calls == [10]
    with pytest.raises(ValueError, match="disagree on the batch size"):
        run_in_chunks(twice, {"x": x, "w": w[:3]}, max_batch=4)
    with pytest.raises(ValueError, match="at least 1"):
        run_in_chunks(twice, {"x": x, "w": w}, max_batch=0)


def test_onnxruntime_backends_describe_themselves_and_close(bundle_dir: Path) -> None:
    chain = VisionChain(Bundle.open(bundle_dir), providers=["CPUExecutionProvider"])
    assert isinstance(chain.encoder, Backend) and isinstance(chain.decoder, Backend)
    described = chain.encoder.describe()
    assert described.backend == "onnxruntime" and described.model == chain.bundle.manifest.encoder.file
    assert described.providers == ["CPUExecutionProvider"] == chain.providers
    assert described.device == "cpu" and described.precision == "fp32" and described.max_batch is None
    assert described.summary() == f"onnxruntime {described.model} (fp32) on cpu via CPUExecutionProvider"
    batch = chain.preprocessor([np.zeros((32, 32, 3), np.uint8)])
    chain.close()
    chain.close()  # twice is harmless
    with pytest.raises(BackendClosedError, match="closed"):
        chain.run(batch)


class FakeTritonClient:
    """tritonclient.grpc's InferenceServerClient for one served model that doubles its input."""

    def __init__(self, url: str, max_batch: int = 4) -> None:
        from tritonclient.grpc import model_config_pb2

        self.config = model_config_pb2.ModelConfig(name="m", platform="ensemble", max_batch_size=max_batch)
        self.config.input.add(name="x")
        self.config.output.add(name="y")
        self.config.parameters["lineguard_bundle_id"].string_value = "b1"
        self.batches: list[int] = []
        self.closed = 0

    def is_server_live(self, client_timeout: float) -> bool:
        return True

    def is_model_ready(self, name: str, client_timeout: float) -> bool:
        return True

    def get_model_config(self, name: str, client_timeout: float):
        from tritonclient.grpc import service_pb2

        return service_pb2.ModelConfigResponse(config=self.config)

    def infer(self, name: str, inputs: list, outputs: list, client_timeout: float):
        x = inputs[0]._np_data  # what set_data_from_numpy kept (raw bytes over gRPC)
        self.batches.append(len(x))
        return types.SimpleNamespace(as_numpy=lambda output: x * 2)

    def close(self) -> None:
        self.closed += 1


def test_triton_backend_chunks_beyond_the_served_max_batch_and_closes(monkeypatch: pytest.MonkeyPatch) -> None:
    import tritonclient.grpc as grpcclient

    from lineguard.runtime.inference.triton_backend import TritonBackend

    client = FakeTritonClient("triton:8001")
    monkeypatch.setattr(grpcclient, "InferenceServerClient", lambda url: client)
    monkeypatch.setattr(grpcclient.InferInput, "set_data_from_numpy", lambda self, a: setattr(self, "_np_data", a))
    backend = TritonBackend("triton:8001", "m", bundle_id="b1")
    assert isinstance(backend, Backend)
    x = np.arange(10, dtype=np.float32).reshape(10, 1)
    np.testing.assert_array_equal(backend.run({"x": x})["y"], x * 2)
    assert client.batches == [4, 4, 2]
    described = backend.describe()
    assert (described.backend, described.device, described.max_batch) == ("triton", "triton:8001", 4)
    assert described.model == "m (ensemble)"
    backend.close()
    backend.close()
    assert client.closed == 1
    with pytest.raises(BackendClosedError):
        backend.run({"x": x})
