"""Configuration of one production line's service, validated at load with errors that name the field.

Usage::

    from lineguard.runtime.line.config import LineConfig
    config = LineConfig.from_yaml("deploy/line.example.yaml")
    config.endpoints.frames, config.deadline_for("cam0"), config.batching.max_batch

    LineConfig(line="press3", batching={"max_bach": 4})   # LineConfigError: batching.max_bach: ...

    # the file with command-line flags on top, validated as one (``lineguard serve --config ... --max-batch 4``)
    layer_config("line.yaml", {"batching.max_batch": 4}, origins={"batching.max_batch": "--max-batch"})

Every section refuses unknown keys, so a misspelt option fails loudly instead of silently keeping
its default. ``deploy/line.example.yaml`` documents every field.

Secure by default: the endpoints bind loopback unless the config says otherwise, and a config that binds
a ZeroMQ endpoint beyond this machine without ``security.curve``, or the HTTP port without
``http.token_file``, is refused unless it says ``security: insecure`` (``security.insecure: true``).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lineguard.runtime.bundle import CpuPrecision, Precision, RequestedBackend
from lineguard.runtime.contract import QUESTION_CHARS_CAP, FrameLimits
from lineguard.runtime.contract.addresses import tcp_address
from lineguard.runtime.contract.validation import describe_validation_error
from lineguard.runtime.inference.ort_threading import OrtThreading, choose_threading, usable_cores
from lineguard.runtime.line.drift_monitor import DriftSettings
from lineguard.runtime.llm.grounding import Grounding
from lineguard.runtime.scoring.calibration import DEFAULT_FALSE_REJECT_BUDGET, FalseRejectBudget
from lineguard.runtime.security.curve import CurveServerConfig

ENDPOINT_SCHEMES = ("tcp://", "ipc://", "inproc://")

class LineConfigError(ValueError):
    """A line configuration that cannot be used; the message names the file and the field."""

    def __init__(self, message: str, validation: ValidationError | None = None) -> None:
        super().__init__(message)
        self.validation = validation  # the model's own errors, where it refused the values


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def is_loopback_host(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 or ::1 (brackets allowed); ``*``, 0.0.0.0, names and interfaces are not."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


WILDCARD_HOSTS = ("*", "0.0.0.0", "::", "[::]")


def bind_clash(first: str, second: str) -> str | None:
    """What two endpoints one process binds would both take (``tcp port 5555``, the ipc path), or None. A tcp
    port clashes on the same host or where either binds every interface; ``*`` or 0 asks for a free port."""
    a, b = tcp_address(first), tcp_address(second)
    if a is None or b is None:
        return first if first == second else None
    (host_a, port_a), (host_b, port_b) = a, b
    if port_a != port_b or port_a in ("*", "0"):
        return None
    hosts = {host_a, host_b}
    return f"tcp port {port_a}" if len(hosts) == 1 or hosts & set(WILDCARD_HOSTS) else None


def is_local_endpoint(endpoint: str) -> bool:
    """A ZeroMQ endpoint only this machine can reach: ipc://, inproc://, or tcp:// on a loopback address."""
    address = tcp_address(endpoint)
    return address is None or is_loopback_host(address[0])  # ipc (a socket file) and inproc (this process): local


class Endpoints(_Section):
    """Where the service binds (DESIGN.md section 4)."""

    frames: str = Field("tcp://127.0.0.1:5555", description="PULL: cameras PUSH [header, payload] here")
    verdicts: str = Field("tcp://127.0.0.1:5556", description="PUB: [topic, Verdict JSON] and heartbeats")
    inspect: str = Field("tcp://127.0.0.1:5558", description="ROUTER: one frame in, one Verdict back (REQ/DEALER)")
    explanations: str = Field("tcp://127.0.0.1:5557", description="ROUTER: ExplainRequest in, streamed ExplainReply out")

    @field_validator("frames", "verdicts", "inspect", "explanations")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if not value.startswith(ENDPOINT_SCHEMES):
            raise ValueError(f"{value!r} is not a ZeroMQ endpoint ({', '.join(ENDPOINT_SCHEMES)})")
        return value


class Batching(_Section):
    """Dynamic batching of same-product frames, up to max_batch or max_queue_delay_ms, planned against each
    batch size's measured latency so that a batch only forms if it can finish before its deadline."""

    max_batch: int = Field(8, ge=1, le=256)
    max_queue_delay_ms: float = Field(5.0, ge=0.0, le=1000.0)
    max_queue: int = Field(64, ge=1, description="frames waiting beyond this are answered OVERLOADED")
    workers: int = Field(1, ge=1, le=16, description="inference threads")
    deadline_aware: bool = Field(True, description="form only batches whose measured latency ends before "
                                 "their earliest deadline, and answer a frame that no batch can finish in time "
                                 "TIMEOUT at once; false: plain dynamic batching (Triton's)")
    latency_margin_deviations: float = Field(2.0, ge=0.0, le=10.0, description="safety margin of a batch's "
                                             "planned latency, in mean deviations of the measured one: higher "
                                             "means smaller batches that miss their deadline less often")


class Watermarks(_Section):
    """ZeroMQ high-water marks (messages) of each socket: the bounds on memory held by the sockets."""

    frames_rcv: int = Field(64, ge=1)
    inspect_rcv: int = Field(64, ge=1)
    inspect_snd: int = Field(256, ge=1)
    verdicts_snd: int = Field(1000, ge=1, description="per subscriber; beyond it PUB drops (seq gaps)")


class CameraConfig(_Section):
    deadline_ms: float | None = Field(None, gt=0.0, description="overrides the line's deadline_ms")
    product: str | None = Field(None, description="used when a frame's header names no product")
    mm_per_pixel: float | None = Field(None, gt=0.0, description="pixel scale of this camera's images: region "
                                       "evidence gives sizes in mm too")


class Archive(_Section):
    """Every NG frame (and one OK frame in ``ok_sample_every``) kept with its anomaly map, for audit and
    explanations: a ring on disk, oldest evicted beyond ``max_bytes``. No ``dir``: nothing is kept."""

    dir: Path | None = None
    max_bytes: int = Field(2 * 1024**3, gt=0)
    ok_sample_every: int = Field(0, ge=0, description="0: keep no OK frames")


class Explanations(_Section):
    """LLM explanations of archived frames (needs an LLM in the bundle and ``archive.dir``)."""

    enabled: bool = True
    max_pending: int = Field(4, ge=1, description="queued requests beyond this are answered BUSY")
    max_tokens: int = Field(160, ge=1, le=4096)
    max_seconds: float = Field(60.0, gt=0.0, description="wall-time bound of one answer")
    context_tokens: int = Field(2048, ge=256)
    threads: int = Field(1, ge=1, description="LLM threads; keep low: verdicts share these cores")
    max_question_chars: int = Field(500, ge=1, le=QUESTION_CHARS_CAP,
                                    description="longer questions are answered with an OVERSIZE error")
    max_request_bytes: int = Field(65536, ge=1024, description="ZeroMQ drops larger requests and "
                                   "disconnects their sender (MAXMSGSIZE)")


class LanguageModel(_Section):
    """How the bundle's LLM sees a frame (explanations and the LLM verdict alike)."""

    grounding: Grounding = Field("text", description="text: the measured evidence in words; soft: AnomalyGPT's "
                                 "prompt learner turns the anomaly map into soft-prompt vectors (`lineguard export "
                                 "prompt-learner`); both: the two together")


class Security(_Section):
    """CURVE on every endpoint, and the key bundles must be signed with. Without CURVE the line binds
    loopback only, unless ``insecure`` says explicitly that it runs open (``security: insecure`` for short)."""

    curve: CurveServerConfig | None = Field(None, description="encryption + per-endpoint client allow-lists + "
                                            "key -> camera binding; null: off (loopback binds only)")
    insecure: bool = Field(False, description="true: bind beyond loopback without CURVE and serve /api/frames "
                           "without a token; anyone who reaches the ports can push frames and read verdicts")
    bundle_public_key: Path | None = Field(None, description="Ed25519 public key (PEM) the bundle's "
                                           "manifest must be signed with; null: signatures not checked")


class HttpEndpoint(_Section):
    """Where the runtime's HTTP port listens. Localhost by default; 0.0.0.0 for Kubernetes probes."""

    enabled: bool = True
    host: str = Field("127.0.0.1", description="interface to bind; 0.0.0.0 exposes it to the network")
    port: int = Field(8081, ge=0, le=65535, description="0: any free port (tests)")
    token_file: Path | None = Field(None, description="bearer token /api/frames* requires (health, readiness and "
                                    "metrics stay open); needed to bind beyond loopback")


class Inference(_Section):
    """Which backend runs the models (lineguard.runtime.inference.selection): ``auto`` takes the bundle's
    TensorRT engines when they match this GPU and TensorRT version, else ONNX Runtime (TensorRT EP,
    CUDA EP or CPU); ``triton`` sends batches to a central Triton server (``export triton``)."""

    backend: RequestedBackend = "auto"
    triton_url: str | None = Field(None, description="host:port of Triton's gRPC endpoint (backend triton)")
    triton_model: str | None = Field(None, description="ensemble name; default lineguard_<bundle_id>")
    engine_cache_dir: Path | None = Field(None, description="ONNX Runtime TensorRT EP engine cache; "
                                          "default ~/.cache/lineguard/ort-tensorrt/<bundle_id>")
    precisions: list[Precision] = Field(
        default_factory=lambda: ["fp16", "fp32"], min_length=1,
        description="TensorRT engine precisions to use, preferred first; add int8 only after evaluating it")
    # ONNX Runtime on the CPU (lineguard.runtime.inference.ort_threading); `serve` logs what it chose and why
    intra_op_threads: int | None = Field(None, ge=1, le=256, description="ONNX Runtime threads per model; "
                                         "null: the cores this process may use, less the LLM's threads")
    allow_spinning: bool | None = Field(None, description="ONNX Runtime threads busy-wait between ops; "
                                        "null: off (the LLM, workers and scoring share the cores)")
    cpu_cores: list[int] | None = Field(None, min_length=1, description="CPU numbers ONNX Runtime's threads "
                                        "are pinned to (one each); null: not pinned")
    cpu_precision: CpuPrecision = Field("fp32", description="int8: the INT8 encoder of `lineguard export int8`, "
                                        "only if it passed its check on every product served")

    @model_validator(mode="after")
    def _triton_needs_url(self) -> Inference:
        if self.backend == "triton" and not self.triton_url:
            raise ValueError("backend triton needs triton_url (host:port of the server's gRPC endpoint)")
        return self


class LineConfig(_Section):
    line: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="name; part of every verdict topic")
    endpoints: Endpoints = Field(default_factory=Endpoints)
    products: list[str] = Field(default_factory=list,
                                description="products served (and warmed up); empty: every enrolled one")
    zero_shot: bool = Field(False, description="opt-in: frames naming no product get the decoder's uncalibrated "
                                               "zero-shot decision (decided_by zero-shot, calibration "
                                               "uncalibrated); false: they are refused UNKNOWN_PRODUCT")
    deadline_ms: float = Field(200.0, gt=0.0, description="receipt to verdict; later verdicts are TIMEOUT")
    cameras: dict[str, CameraConfig] = Field(default_factory=dict)
    batching: Batching = Field(default_factory=Batching)
    hwm: Watermarks = Field(default_factory=Watermarks)
    linger_ms: int = Field(500, ge=0, description="how long closing sockets may flush pending messages")
    heartbeat_interval_ms: float = Field(1000.0, gt=0.0)
    drain_timeout_ms: float = Field(2000.0, ge=0.0, description="stop(): longest wait for in-flight frames")
    false_reject_budget: FalseRejectBudget = Field(DEFAULT_FALSE_REJECT_BUDGET, description="share of normal "
                                                   "parts the line may reject (p-value at most this: NG)")
    archive: Archive = Field(default_factory=Archive)
    explanations: Explanations = Field(default_factory=Explanations)
    llm: LanguageModel = Field(default_factory=LanguageModel)
    llm_verdict: list[str] = Field(default_factory=list, description="products whose verdict the LLM decides "
                                   "(yes/no, AnomalyGPT style) within the deadline; vision verdict as fallback")
    limits: FrameLimits = Field(default_factory=FrameLimits)
    security: Security = Field(default_factory=Security)
    state_file: Path | None = Field(None, description="lifetime counters kept across restarts (JSON, replaced "
                                    "atomically each heartbeat); None: counters start over with every boot")
    http: HttpEndpoint = Field(default_factory=HttpEndpoint)
    inference: Inference = Field(default_factory=Inference)
    drift: DriftSettings = Field(default_factory=DriftSettings)  # the calibration-drift alarm

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise LineConfigError(describe_validation_error(exc), exc) from None

    @field_validator("security", mode="before")
    @classmethod
    def _insecure_shorthand(cls, value: Any) -> Any:
        return {"insecure": True} if value == "insecure" else value

    @model_validator(mode="after")
    def _endpoints_distinct(self) -> LineConfig:
        """Two sockets cannot bind one address: caught here, naming both, rather than at the second bind."""
        names = ["frames", "verdicts", "inspect"] + (["explanations"] if self.explanations.enabled else [])
        for i, first in enumerate(names):
            for second in names[i + 1:]:
                clash = bind_clash(getattr(self.endpoints, first), getattr(self.endpoints, second))
                if clash is not None:
                    raise ValueError(f"endpoints.{first} and endpoints.{second} both bind {clash}")
        return self

    @model_validator(mode="after")
    def _secure_by_default(self) -> LineConfig:
        """Nothing beyond loopback runs open unless the config says ``security: insecure``."""
        if self.security.insecure:
            return self
        if self.security.curve is None:
            for name, endpoint in self.endpoints.model_dump().items():
                if not is_local_endpoint(endpoint):
                    raise ValueError(f"endpoints.{name}: {endpoint} binds beyond this machine without CURVE: set "
                                     "security.curve (README, Security), bind 127.0.0.1, or say security: insecure")
        if self.http.enabled and not is_loopback_host(self.http.host) and self.http.token_file is None:
            raise ValueError(f"http.host: {self.http.host} serves archived part images beyond this machine: set "
                             "http.token_file (lineguard keys init), bind 127.0.0.1, or say security: insecure")
        return self

    def deadline_for(self, camera_id: str) -> float:
        """The deadline of a camera's frames, in milliseconds."""
        camera = self.cameras.get(camera_id)
        return camera.deadline_ms if camera and camera.deadline_ms is not None else self.deadline_ms

    def product_for(self, camera_id: str, product: str | None) -> str | None:
        """The header's product, else the camera's configured one, else None (zero-shot)."""
        if product is not None:
            return product
        camera = self.cameras.get(camera_id)
        return camera.product if camera else None

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> LineConfig:
        return layer_config(path)


def layer_config(path: str | os.PathLike[str] | None = None, overrides: Mapping[str, Any] | None = None,
                 origins: Mapping[str, str] | None = None) -> LineConfig:
    """The line config of the YAML file ``path`` (no file: the defaults) with ``overrides`` on top, validated as one.

    ``overrides`` maps dotted field paths (``"batching.max_batch"``) to values; each replaces that one field
    and keeps the file's other fields. The layered mapping is validated by :class:`LineConfig` like a file,
    so an override the model refuses fails with the same message, led by its field path and, where
    ``origins`` says where that path's value came from (``{"batching.max_batch": "--max-batch"}``), that too.
    Without a file ``overrides`` must name the ``line``.
    """
    data = _read_yaml(Path(path)) if path is not None else {}
    prefix = f"{path}: " if path is not None else ""
    origins = origins or {}
    for key, value in (overrides or {}).items():
        *sections, name = key.split(".")
        node = data
        for depth, section in enumerate(sections):
            child = node.get(section)
            if child is None:
                child = node[section] = {}
            elif not isinstance(child, dict):
                where = ".".join(sections[: depth + 1])
                by = f" ({origins[key]})" if key in origins else ""
                raise LineConfigError(f"{prefix}{where}: expected a mapping of fields, got {child!r}, "
                                      f"to override {key}{by}")
            node = child
        node[name] = value
    try:  # LineConfig(**data) is model_validate(data) plus this class's readable error (pydantic runs a custom
        return LineConfig(**{str(k): v for k, v in data.items()})  # __init__ inside model_validate too)
    except LineConfigError as exc:
        detail = describe_validation_error(exc.validation, origins) if exc.validation is not None else str(exc)
        raise LineConfigError(prefix + detail, exc.validation) from None


def _read_yaml(path: Path) -> dict[Any, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise LineConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise LineConfigError(f"{path}: not valid YAML: {yaml_problem(exc)}") from None
    if not isinstance(data, dict):
        raise LineConfigError(f"{path}: expected a mapping of fields at the top level")
    return data


def yaml_problem(exc: yaml.YAMLError) -> str:
    """One line for a YAML syntax error, with 1-based line and column (PyYAML's own text spans several lines
    and quotes the parser's '<unicode string>')."""
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem_mark is None:
        return " ".join(str(exc).split())
    mark = exc.problem_mark
    text = f"line {mark.line + 1}, column {mark.column + 1}: {exc.problem}"
    if exc.context and exc.context_mark is not None:
        text += f" ({exc.context} at line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1})"
    return text


def threading_for_line(config: LineConfig, has_llm: bool) -> OrtThreading:
    """What ``lineguard serve`` runs ONNX Runtime with for this line config and bundle."""
    inference = config.inference
    pinned = list(inference.cpu_cores) if inference.cpu_cores else None
    missing = sorted(set(pinned or ()) - set(usable_cores()))
    if missing:  # pinning to them would fail in ONNX Runtime, or be claimed and not happen
        raise LineConfigError(f"inference.cpu_cores: CPUs {missing} are not available to this process "
                              f"(available: {usable_cores()})")
    explains = has_llm and (config.explanations.enabled or bool(config.llm_verdict))
    return choose_threading(pinned or usable_cores(), llm_threads=config.explanations.threads if explains else 0,
                            workers=config.batching.workers, intra_op_threads=inference.intra_op_threads,
                            allow_spinning=inference.allow_spinning, pin=pinned is not None)
