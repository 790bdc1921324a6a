"""``lineguard export triton``: a Triton model repository serving a bundle's encoder -> decoder chain.

Usage::

    from lineguard.export.triton_repository import export_triton_repository
    repo = export_triton_repository("bundles/default", "triton-repo", max_batch=16)
    repo.ensemble          # "lineguard_<bundle_id>": image in; s1..s4 and anomaly_prob out
    # then: tritonserver --model-repository=triton-repo ; the runtime: --backend triton --triton-url HOST:8001

Layout (Triton's model repository convention)::

    REPO/lineguard_<id>_encoder/config.pbtxt, 1/model.onnx  (or model.plan: --format plan;
                                                             1/model.py + model.onnx: --format python)
    REPO/lineguard_<id>_decoder/config.pbtxt, 1/model.onnx
    REPO/lineguard_<id>/config.pbtxt, 1/                    ensemble: encoder -> decoder, one request

Each config is built as Triton's own ``ModelConfig`` protobuf (shipped in ``tritonclient``) and written
in protobuf text format, so it parses exactly as the server parses it: platform, ``max_batch_size``,
inputs and outputs with the graph's dims (batch dimension implicit), dynamic batching with a queue
delay, instance groups, and for ONNX on GPU optionally the TensorRT execution accelerator. The
ensemble carries the bundle id (``--format python``: Python-backend models running the ONNX with ONNX
Runtime, lineguard.export.triton_python_model; ``python_path`` tells them where numpy and onnxruntime
are when the server's Python lacks them). The ensemble carries the bundle id (parameter ``lineguard_bundle_id``): the runtime's triton backend
refuses a server that serves another bundle's models than the one whose products it enrolled.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import onnxruntime as ort

from lineguard.export.triton_python_model import write_python_model
from lineguard.runtime.bundle import Bundle
from lineguard.runtime.inference.triton_backend import BUNDLE_ID_PARAMETER, default_model_name

ModelFormat = Literal["onnx", "plan", "python"]
InstanceKind = Literal["gpu", "cpu"]
TRITON_DTYPES = {"tensor(float)": "TYPE_FP32", "tensor(float16)": "TYPE_FP16", "tensor(int64)": "TYPE_INT64"}


class TritonExportError(RuntimeError):
    """The repository cannot be written (no engines for --format plan, folder exists, ...)."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    data_type: str
    dims: tuple[int, ...]  # without the batch dimension


@dataclass(frozen=True)
class TritonRepository:
    root: Path
    ensemble: str
    encoder: str
    decoder: str


def _model_config_pb2():
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError as exc:
        raise TritonExportError(f"export triton needs tritonclient: pip install 'lineguard[triton]' ({exc})") from exc
    return model_config_pb2


def manifest_dims(bundle: Bundle) -> dict[str, tuple[int, ...]]:
    """Per-sample dims the manifest states: the image, each stage's features, the probability map. The
    exported graphs leave some symbolic (the features are cropped after in-graph padding)."""
    m = bundle.manifest
    h, w = m.preprocessing.input_size
    dims = {m.encoder.input_name: (3, h, w), m.decoder.output_name: (1, h, w)}
    dims.update({s.name: (s.channels, *s.grid) for s in m.encoder.stages})
    return dims


def graph_tensors(onnx_path: Path, known: dict[str, tuple[int, ...]]) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs of an ONNX graph whose first dimension is the (dynamic) batch; a symbolic
    dimension is taken from ``known`` (the manifest), a contradicting one is refused."""
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])

    def spec(arg) -> TensorSpec:
        if arg.type not in TRITON_DTYPES:
            raise TritonExportError(f"{onnx_path.name}: {arg.name} has type {arg.type}, not one Triton config maps here")
        graph = list(arg.shape[1:])
        stated = known.get(arg.name)
        if stated is not None and len(stated) == len(graph):
            if any(isinstance(g, int) and g != d for g, d in zip(graph, stated, strict=True)):
                raise TritonExportError(f"{onnx_path.name}: {arg.name} is {arg.shape}, the manifest says {stated}")
            graph = list(stated)
        dims = tuple(graph)
        if not all(isinstance(d, int) and d > 0 for d in dims):
            raise TritonExportError(f"{onnx_path.name}: {arg.name} has dynamic non-batch dims {arg.shape}")
        return TensorSpec(arg.name, TRITON_DTYPES[arg.type], dims)

    return [spec(a) for a in session.get_inputs()], [spec(a) for a in session.get_outputs()]


def model_config(name: str, platform: str, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
                 max_batch: int, max_queue_delay_us: int, instances: int, kind: InstanceKind,
                 trt_accelerator: Literal["fp16", "fp32"] | None = None):
    """The ModelConfig of one model with dynamic batching (``platform`` "python": the Python backend)."""
    pb = _model_config_pb2()
    if platform == "python":
        config = pb.ModelConfig(name=name, backend="python", max_batch_size=max_batch)
    else:
        config = pb.ModelConfig(name=name, platform=platform, max_batch_size=max_batch)
    for tensors, field in ((inputs, config.input), (outputs, config.output)):
        for t in tensors:
            field.add(name=t.name, data_type=pb.DataType.Value(t.data_type), dims=list(t.dims))
    config.dynamic_batching.max_queue_delay_microseconds = max_queue_delay_us
    config.dynamic_batching.preferred_batch_size.extend(sorted({b for b in (max_batch // 2, max_batch) if b >= 1}))
    config.instance_group.add(count=instances, kind=pb.ModelInstanceGroup.Kind.Value(f"KIND_{kind.upper()}"))
    if trt_accelerator is not None:
        accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
        accelerator.parameters["precision_mode"] = trt_accelerator.upper()
    return config


def ensemble_config(name: str, bundle_id: str, encoder: str, decoder: str, image: TensorSpec,
                    features: Sequence[TensorSpec], decoder_inputs: Sequence[str], prob: TensorSpec, max_batch: int):
    """Encoder then decoder in one request; returns the features (few-shot scoring) and the map."""
    pb = _model_config_pb2()
    config = pb.ModelConfig(name=name, platform="ensemble", max_batch_size=max_batch)
    config.input.add(name=image.name, data_type=pb.DataType.Value(image.data_type), dims=list(image.dims))
    for t in [*features, prob]:
        config.output.add(name=t.name, data_type=pb.DataType.Value(t.data_type), dims=list(t.dims))
    first = config.ensemble_scheduling.step.add(model_name=encoder, model_version=-1)
    first.input_map[image.name] = image.name
    for t in features:
        first.output_map[t.name] = t.name
    second = config.ensemble_scheduling.step.add(model_name=decoder, model_version=-1)
    for n in decoder_inputs:
        second.input_map[n] = n
    second.output_map[prob.name] = prob.name
    config.parameters[BUNDLE_ID_PARAMETER].string_value = bundle_id
    return config


def write_config(folder: Path, config) -> Path:
    from google.protobuf import text_format

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "1").mkdir(exist_ok=True)
    path = folder / "config.pbtxt"
    path.write_text(text_format.MessageToString(config))
    return path


def export_triton_repository(bundle_dir: str | Path, out_dir: str | Path, model_format: ModelFormat = "onnx",
                             precision: Literal["fp32", "fp16", "int8"] = "fp16", max_batch: int = 8,
                             max_queue_delay_us: int = 2000, instances: int = 1, kind: InstanceKind = "gpu",
                             trt_accelerator: Literal["fp16", "fp32"] | None = None, name: str | None = None,
                             overwrite: bool = False, python_path: Sequence[str] = ()) -> TritonRepository:
    if max_batch < 1 or instances < 1 or max_queue_delay_us < 0:
        raise TritonExportError("max_batch and instances must be positive, max_queue_delay_us not negative")
    if trt_accelerator is not None and (model_format != "onnx" or kind != "gpu"):
        raise TritonExportError("the TensorRT accelerator applies to ONNX models on GPU instances only")
    bundle = Bundle.open(bundle_dir)
    manifest = bundle.manifest
    out = Path(out_dir)
    ensemble = name or default_model_name(manifest.bundle_id)
    names = {"encoder": f"{ensemble}_encoder", "decoder": f"{ensemble}_decoder"}
    existing = [out / n for n in [ensemble, *names.values()] if (out / n).exists()]
    if existing:
        if not overwrite:
            raise TritonExportError(f"{', '.join(map(str, existing))} exist(s) (use --overwrite to replace)")
        for folder in existing:
            shutil.rmtree(folder)
    onnx_files = {"encoder": manifest.encoder.file, "decoder": manifest.decoder.file}
    known = manifest_dims(bundle)
    tensors = {model: graph_tensors(bundle.path(f), known) for model, f in onnx_files.items()}
    ensemble_batch = max_batch  # at most that of every composing model
    for model, onnx_file in onnx_files.items():
        if model_format == "plan":
            current = manifest.files[onnx_file].sha256  # engines of an older graph are stale
            records = [r for r in manifest.engines if r.model == model and r.precision == precision
                       and r.parity_passed and r.onnx_sha256 == current]
            if not records:
                raise TritonExportError(f"bundle has no {precision} {model} engine of its current graph that passed "
                                        f"parity: run `lineguard export trt` on a GPU like the Triton server's first")
            devices = sorted({f"{r.gpu_name} (sm {r.compute_capability}, TensorRT {r.tensorrt_version})" for r in records})
            if len(devices) > 1:  # an engine runs only on the GPU it was built for: never guess which
                raise TritonExportError(f"the bundle has {precision} {model} engines for several GPUs ({'; '.join(devices)}): "
                                        "export ONNX (--format onnx) or a bundle copy holding one GPU's engines")
            source, platform, batch = bundle.path(records[0].file), "tensorrt_plan", min(max_batch, records[0].max_batch)
        else:
            platform = "python" if model_format == "python" else "onnxruntime_onnx"
            source, batch = bundle.path(onnx_file), max_batch
        ensemble_batch = min(ensemble_batch, batch)
        inputs, outputs = tensors[model]
        folder = out / names[model]
        write_config(folder, model_config(names[model], platform, inputs, outputs, batch, max_queue_delay_us,
                                          instances, "cpu" if model_format == "python" else kind, trt_accelerator))
        shutil.copyfile(source, folder / "1" / ("model.plan" if model_format == "plan" else "model.onnx"))
        if model_format == "python":
            write_python_model(folder / "1", python_path)
    (image,), features = tensors["encoder"]
    decoder_inputs, (prob,) = tensors["decoder"]
    write_config(out / ensemble, ensemble_config(ensemble, manifest.bundle_id, names["encoder"], names["decoder"],
                                                 image, features, [t.name for t in decoder_inputs], prob,
                                                 ensemble_batch))
    return TritonRepository(out, ensemble, names["encoder"], names["decoder"])
