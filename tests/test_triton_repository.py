"""``export triton`` and the runtime's triton backend.

The repository's configs are parsed with Triton's own protobuf (``tritonclient``'s model_config_pb2)
and checked against the ONNX graphs. The backend is then run against a small in-process server of the
KServe v2 gRPC protocol (the servicer classes ship in ``tritonclient.grpc``), loopback only, that
loads the generated repository as Triton would: ONNX models through ONNX Runtime, the ensemble by
following its steps' input/output maps, requests checked against each config's dims and
``max_batch_size``. It is not Triton (no scheduler, no dynamic batching): it proves the repository's
wiring and the client side, and ``tests/test_tensorrt_export.py``'s gpu tests cover real engines.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

from lineguard.cli import main
from lineguard.export.triton_repository import TritonExportError, export_triton_repository
from lineguard.runtime.bundle import Bundle
from lineguard.runtime.inference.base import BackendUnavailableError
from lineguard.runtime.inference.chain import VisionChain
from lineguard.runtime.inference.triton_backend import BUNDLE_ID_PARAMETER, TritonBackend, TritonError


def load_config(folder: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


class RepositoryServicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    """The subset of Triton's gRPC service a client needs, over a model repository folder."""

    def __init__(self, root: Path) -> None:
        self.configs = {p.parent.name: load_config(p.parent) for p in root.glob("*/config.pbtxt")}
        self.sessions = {
            name: ort.InferenceSession(str(root / name / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
            for name, c in self.configs.items() if c.platform == "onnxruntime_onnx"
        }

    def ServerLive(self, request, context):
        return service_pb2.ServerLiveResponse(live=True)

    def ServerReady(self, request, context):
        return service_pb2.ServerReadyResponse(ready=True)

    def ModelReady(self, request, context):
        return service_pb2.ModelReadyResponse(ready=request.name in self.configs)

    def ModelConfig(self, request, context):
        if request.name not in self.configs:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no model {request.name}")
        return service_pb2.ModelConfigResponse(config=self.configs[request.name])

    def _run(self, name: str, inputs: dict[str, np.ndarray], context) -> dict[str, np.ndarray]:
        config = self.configs[name]
        for spec in config.input:
            array = inputs[spec.name]
            if tuple(array.shape[1:]) != tuple(spec.dims) or len(array) > config.max_batch_size:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{name}: {spec.name} shape {array.shape} vs config "
                              f"dims {list(spec.dims)}, max_batch_size {config.max_batch_size}")
        if config.platform == "ensemble":
            tensors = dict(inputs)
            for step in config.ensemble_scheduling.step:
                outputs = self._run(step.model_name, {k: tensors[v] for k, v in step.input_map.items()}, context)
                tensors.update({v: outputs[k] for k, v in step.output_map.items()})
            return {spec.name: tensors[spec.name] for spec in config.output}
        session = self.sessions[name]
        values = session.run([o.name for o in config.output], {i.name: inputs[i.name] for i in config.input})
        return dict(zip([o.name for o in config.output], values, strict=True))

    def ModelInfer(self, request, context):
        if request.model_name not in self.configs:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no model {request.model_name}")
        inputs = {spec.name: np.frombuffer(raw, dtype=np.float32).reshape(tuple(spec.shape))
                  for spec, raw in zip(request.inputs, request.raw_input_contents, strict=True)}
        outputs = self._run(request.model_name, inputs, context)
        wanted = [o.name for o in request.outputs] or list(outputs)
        response = service_pb2.ModelInferResponse(model_name=request.model_name, id=request.id)
        for name in wanted:
            array = np.ascontiguousarray(outputs[name], dtype=np.float32)
            response.outputs.add(name=name, datatype="FP32", shape=list(array.shape))
            response.raw_output_contents.append(array.tobytes())
        return response


@pytest.fixture(scope="module")
def repository(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("triton") / "repo"
    export_triton_repository(bundle_dir, out, max_batch=4, max_queue_delay_us=500, instances=2)
    return out


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[str]:
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(RepositoryServicer(repository), grpc_server)
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()
    yield f"127.0.0.1:{port}"
    grpc_server.stop(grace=None)


def test_configs_parse_as_triton_model_configs_and_match_the_graphs(repository: Path, bundle_dir: Path) -> None:
    manifest = Bundle.open(bundle_dir).manifest
    ensemble = f"lineguard_{manifest.bundle_id}"
    assert sorted(p.name for p in repository.iterdir()) == sorted([ensemble, f"{ensemble}_encoder", f"{ensemble}_decoder"])
    encoder, decoder, chain = (load_config(repository / n) for n in (f"{ensemble}_encoder", f"{ensemble}_decoder", ensemble))
    for config, onnx_file in ((encoder, manifest.encoder.file), (decoder, manifest.decoder.file)):
        assert config.platform == "onnxruntime_onnx" and config.max_batch_size == 4
        assert config.dynamic_batching.max_queue_delay_microseconds == 500
        assert config.instance_group[0].count == 2
        assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
        session = ort.InferenceSession(str(bundle_dir / onnx_file), providers=["CPUExecutionProvider"])
        assert [i.name for i in config.input] == [a.name for a in session.get_inputs()]
        assert [o.name for o in config.output] == [a.name for a in session.get_outputs()]
        # the dims a real batch of the graph has (symbolic ones in the graph come from the manifest)
        shapes = {a.name: [d if isinstance(d, int) else None for d in a.shape[1:]]
                  for a in [*session.get_inputs(), *session.get_outputs()]}
        for t in [*config.input, *config.output]:
            assert all(g is None or g == d for g, d in zip(shapes[t.name], t.dims, strict=True)), t.name
        assert (repository / config.name / "1" / "model.onnx").read_bytes() == (bundle_dir / onnx_file).read_bytes()
    h, w = manifest.preprocessing.input_size
    assert list(encoder.input[0].dims) == [3, h, w]
    assert [list(o.dims) for o in encoder.output] == [[s.channels, *s.grid] for s in manifest.encoder.stages]
    assert chain.platform == "ensemble"
    assert [s.model_name for s in chain.ensemble_scheduling.step] == [encoder.name, decoder.name]
    assert dict(chain.ensemble_scheduling.step[1].input_map) == {i.name: i.name for i in decoder.input}
    assert [o.name for o in chain.output] == [s.name for s in manifest.encoder.stages] + [manifest.decoder.output_name]
    assert chain.parameters[BUNDLE_ID_PARAMETER].string_value == manifest.bundle_id


def test_tensorrt_accelerator_and_refusals(bundle_dir: Path, tmp_path: Path) -> None:
    repo = export_triton_repository(bundle_dir, tmp_path / "repo", trt_accelerator="fp16")
    accel = load_config(tmp_path / "repo" / repo.encoder).optimization.execution_accelerators
    assert accel.gpu_execution_accelerator[0].name == "tensorrt"
    assert accel.gpu_execution_accelerator[0].parameters["precision_mode"] == "FP16"
    with pytest.raises(TritonExportError, match="exist"):
        export_triton_repository(bundle_dir, tmp_path / "repo")
    with pytest.raises(TritonExportError, match="no fp16 encoder engine"):
        export_triton_repository(bundle_dir, tmp_path / "plans", model_format="plan")
    with pytest.raises(TritonExportError, match="ONNX models on GPU"):
        export_triton_repository(bundle_dir, tmp_path / "cpu", kind="cpu", trt_accelerator="fp16")


def test_cli_writes_the_repository(bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "triton", str(bundle_dir), "--out", str(tmp_path / "repo"), "--kind", "cpu"]) == 0
    assert "tritonserver --model-repository" in capsys.readouterr().out
    config = load_config(next((tmp_path / "repo").glob("*_encoder")))
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert main(["export", "triton", str(bundle_dir), "--out", str(tmp_path / "repo")]) == 2


def test_chain_on_triton_matches_onnxruntime(bundle_dir: Path, server: str, weave_parts: list[np.ndarray]) -> None:
    bundle = Bundle.open(bundle_dir)
    local = VisionChain(bundle, backend="onnxruntime")
    remote = VisionChain(bundle, backend="triton", triton_url=server)
    assert remote.backend.backend == "triton" and remote.decoder is None
    batch = local.preprocessor(weave_parts[:6])  # beyond max_batch_size 4: sent in two requests
    want, got = local.run(batch), remote.run(batch)
    np.testing.assert_allclose(got.decoder_map, want.decoder_map, atol=1e-5)
    for name in local.stage_names:
        np.testing.assert_allclose(got.features[name], want.features[name], atol=1e-5)


def test_triton_backend_refuses_another_bundles_model(server: str, bundle_dir: Path) -> None:
    model = f"lineguard_{Bundle.open(bundle_dir).manifest.bundle_id}"
    with pytest.raises(TritonError, match="exported from bundle"):
        TritonBackend(server, model, bundle_id="0123456789ab")
    with pytest.raises(TritonError, match="not ready"):
        TritonBackend(server, "lineguard_missing")


def test_triton_backend_needs_a_url_and_a_live_server(bundle_dir: Path, tmp_path: Path) -> None:
    bundle = Bundle.open(bundle_dir)
    with pytest.raises(BackendUnavailableError, match="needs a server URL"):
        VisionChain(bundle, backend="triton")
    with pytest.raises(BackendUnavailableError, match="Triton at 127.0.0.1:9"):
        VisionChain(bundle, backend="triton", triton_url="127.0.0.1:9")  # discard port: nothing listens


def test_repository_without_tritonclient_message(monkeypatch: pytest.MonkeyPatch, bundle_dir: Path, tmp_path: Path) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "tritonclient.grpc", None)  # as if the triton extra were not installed
    with pytest.raises(TritonExportError, match=r"lineguard\[triton\]"):
        export_triton_repository(bundle_dir, tmp_path / "repo")
    shutil.rmtree(tmp_path / "repo", ignore_errors=True)


def test_plan_export_takes_only_current_engines_of_one_gpu(bundle_copy: Path, tmp_path: Path) -> None:
    """--format plan ships an engine only when it was built from the bundle's current graph, and refuses to
    guess when the bundle holds engines for several GPUs (an engine runs only where it was built)."""
    from lineguard.export.tensorrt_engines import record_engines
    from lineguard.runtime.bundle import Bundle, EngineRecord

    bundle = Bundle.open(bundle_copy)

    def engine(model: str, gpu: str, sha: str | None = None) -> EngineRecord:
        onnx = bundle.manifest.encoder.file if model == "encoder" else bundle.manifest.decoder.file
        file = f"engines/{gpu}/{model}.fp16.plan"
        bundle.path(file).parent.mkdir(parents=True, exist_ok=True)
        bundle.path(file).write_bytes(f"plan {model} {gpu}".encode())
        return EngineRecord(model=model, file=file, onnx_sha256=sha or bundle.manifest.files[onnx].sha256,
                            precision="fp16", opt_batch=4, max_batch=4, gpu_name=gpu, compute_capability="8.7",
                            tensorrt_version="10.3.0", cuda_version="12.6", workspace_mb=1024,
                            built_at="2026-01-01T00:00:00+00:00", parity_max_abs_diff=0.01,
                            parity_relative_diff=0.001, parity_tolerance=0.03, parity_passed=True)

    record_engines(bundle, [engine("encoder", "orin", sha="0" * 64), engine("decoder", "orin", sha="0" * 64)])
    with pytest.raises(TritonExportError, match="current graph"):  # stale: built from an older ONNX
        export_triton_repository(bundle_copy, tmp_path / "stale", model_format="plan")

    record_engines(bundle, [engine("encoder", "orin"), engine("decoder", "orin")])
    repo = export_triton_repository(bundle_copy, tmp_path / "one", model_format="plan")
    plan = tmp_path / "one" / repo.encoder / "1" / "model.plan"
    assert plan.read_bytes() == b"plan encoder orin"
    assert load_config(tmp_path / "one" / repo.encoder).platform == "tensorrt_plan"

    record_engines(bundle, [engine("encoder", "a100"), engine("decoder", "a100")])
    with pytest.raises(TritonExportError, match="several GPUs"):
        export_triton_repository(bundle_copy, tmp_path / "two", model_format="plan")
