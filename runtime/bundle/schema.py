"""The bundle's typed manifest: every pydantic model that export writes and the runtime reads.

Owns: ``BundleManifest`` and its parts (encoder/decoder/scoring specs, engines, LLM, products) and a
product's ``ProductCalibration``. Imports nothing from the rest of the runtime: this file is the contract
between the export side and the edge. Files and checksums are handled by :mod:`.store`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, field_validator, model_validator

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
PARITY_FAILED_NAME = "PARITY_FAILED"  # left by an export whose parity check failed, instead of a manifest

# Names used by the bundle, the line config, the backends and the CLI's choices: defined here once.
BackendName = Literal["onnxruntime", "tensorrt", "triton"]  # what runs the chain
RequestedBackend = Literal["auto", "onnxruntime", "tensorrt", "triton"]  # what a line or a command asks for
Precision = Literal["fp32", "fp16", "int8"]  # of a TensorRT engine
CpuPrecision = Literal["fp32", "int8"]  # of the ONNX models ONNX Runtime runs on the CPU
ChainModel = Literal["encoder", "decoder"]


class BundleError(Exception):
    """A bundle cannot be used. The message says which file and why."""


class BundleNotFoundError(BundleError):
    """The folder or its manifest does not exist."""


class BundleIntegrityError(BundleError):
    """A file is missing, truncated or does not match its sha256 (tampered or partial copy)."""


class BundleIncompatibleError(BundleError):
    """The manifest is of another schema version or does not validate."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


InputSide = Annotated[int, Field(ge=32, le=4096)]  # the encoders' coarsest stage has stride 32
ChannelStd = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]  # 0 would make every pixel inf or NaN


class Preprocessing(_Strict):
    """How a camera image becomes the encoder's input tensor. Read by the runtime, never guessed."""

    input_size: tuple[InputSide, InputSide] = Field(description="(height, width) of the encoder input")
    color_order: Literal["RGB", "BGR"] = "RGB"
    mean: tuple[FiniteFloat, FiniteFloat, FiniteFloat] = Field(description="subtracted per channel, in 0..255 units")
    std: tuple[ChannelStd, ChannelStd, ChannelStd] = Field(description="divided per channel, in 0..255 units")
    resize: Literal["stretch"] = "stretch"


class StageSpec(_Strict):
    name: str
    channels: int
    stride: int
    grid: tuple[int, int] = Field(description="(height, width) of the feature grid at input_size")


class EncoderSpec(_Strict):
    family: Literal["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2", "clip"]
    file: str = "encoder.onnx"
    input_name: str = "image"
    stages: list[StageSpec]


class DecoderSpec(_Strict):
    file: str = "decoder.onnx"
    output_name: str = "anomaly_prob"
    text_dim: int
    logit_scale: float
    train_images: int
    train_steps: int
    final_loss: float


class PrototypeSpec(_Strict):
    file: str = "prototypes.npz"
    text_encoder: str
    normal_prompts: list[str]
    abnormal_prompts: list[str]


class ScoringSpec(_Strict):
    """Which stages feed which few-shot scorer, and how maps are smoothed. Fixed at export."""

    memory_stages: list[str]
    statistics_stages: list[str]
    coreset_size: int = 4096
    smoothing_sigma: float = 4.0


class FileEntry(_Strict):
    sha256: str
    size: int


class DecoderAdaptation(_Strict):
    """The product's own anomaly decoder (``lineguard adapt``): the bundle's decoder fine-tuned on simulated
    anomalies over the product's shots; the product's frames run it instead of the shared one."""

    file: str = Field(description="products/<name>/decoder.onnx, checksummed in files")
    base_decoder_sha256: str = Field(description="the shared decoder it was fine-tuned from")
    shot_images: list[str] = Field(description="pixel digests of the normals it was trained on")
    steps: int
    samples: int
    learning_rate: float
    seed: int
    final_loss: float
    parity_max_abs_diff: float = Field(description="ONNX Runtime vs the PyTorch module, on the shots' features")
    adapted_at: str


MemoryOrientation = Literal["fixed", "any"]
MAX_TILES = 4  # per side: 16 encoder passes a frame


class ProductEntry(_Strict):
    name: str
    shots: int = Field(ge=1)
    views: int = Field(ge=1)
    orientation: MemoryOrientation = Field(
        "fixed", description="any: the memory also holds each shot turned and mirrored (the 7 other orientations of "
        "a square), for parts that reach the camera in any orientation; fixed: only the shots' light views")
    tiles: int = Field(
        1, ge=1, le=MAX_TILES, description="frames are inspected at this many times the input size per side, as tiles of the "
        "input size (lineguard.runtime.inference.tiling): 2 for photos at least 3 times the input size, so thin "
        "defects keep their pixels; 1: the whole frame resized to the input size")
    memory_file: str
    calibration_file: str
    enrolled_at: str
    decoder: DecoderAdaptation | None = None  # None: the bundle's shared decoder


class ParitySummary(_Strict):
    tolerance: float
    max_abs_diff: dict[str, float]
    passed: bool


class LlmSpec(_Strict):
    """The chat model that explains verdicts (``lineguard export llm``); its checksum is in ``files``."""

    file: str = "llm.gguf"
    architecture: str
    name: str
    quantization: str
    context_length: int
    chat_template: str
    source: str = Field(description="where it came from: the packaged default or the original path")


class PromptLearnerSpec(_Strict):
    """AnomalyGPT's prompt learner (``lineguard export prompt-learner``): the anomaly map and pooled statistics
    (lineguard.runtime.llm.grounding) to ``n_tokens`` vectors in the LLM's input space. Valid only with
    the exact GGUF it was trained against (``llm_sha256``)."""

    file: str = "prompt_learner.onnx"
    llm_sha256: str = Field(description="sha256 of the GGUF it was trained against")
    n_tokens: int = Field(ge=1, description="M, the soft-prompt vectors per frame")
    n_embd: int = Field(ge=1)
    map_size: int = Field(ge=1)
    feature_names: list[str]
    trained_on: list[str] = Field(description="the normal-image folders its simulated anomalies came from")
    samples: int
    steps: int
    final_loss: float
    heldout_accuracy: float | None = Field(None, description="yes/no accuracy on held-out simulated frames (PyTorch)")
    parity_max_abs_diff: float = Field(description="ONNX Runtime vs PyTorch on sample inputs")
    created_at: str


class EngineRecord(_Strict):
    """A TensorRT engine built from one of the bundle's ONNX graphs (``lineguard export trt``).

    An engine runs only on the GPU model and TensorRT version it was built with; the runtime compares
    these fields with the running device (lineguard.runtime.inference.selection) and otherwise falls back
    to ONNX Runtime. ``onnx_sha256`` ties the engine to the exact graph it came from."""

    model: Literal["encoder", "decoder"]
    file: str
    onnx_sha256: str
    precision: Literal["fp32", "fp16", "int8"]
    min_batch: int = Field(1, ge=1)
    opt_batch: int = Field(ge=1)
    max_batch: int = Field(ge=1)
    profiles: int = Field(1, ge=1, description="identical optimisation profiles: one per concurrent worker")
    gpu_name: str
    compute_capability: str = Field(pattern=r"^\d+\.\d+$", description="major.minor, e.g. 8.7 (Orin)")
    tensorrt_version: str
    cuda_version: str
    workspace_mb: int
    built_at: str
    parity_max_abs_diff: float = Field(description="vs ONNX Runtime CPU FP32 on sample inputs")
    parity_relative_diff: float = Field(description="max abs diff / max abs reference value")
    parity_tolerance: float = Field(description="on parity_relative_diff, by precision")
    parity_passed: bool


class PrecisionCheck(_Strict):
    """One product's check of a reduced-precision model against FP32 (``lineguard export int8``): the
    product's enrolled memory, held-out images, both chains; it passes only when every verdict agrees
    and the image AUROC does not drop."""

    product: str
    memory_sha256: str = Field(description="the enrolled memory checked with; re-enrolling makes the check stale")
    n_images: int
    verdict_agreement: float = Field(description="share of images with the same verdict as FP32")
    image_auroc_fp32: float | None
    image_auroc: float | None
    accuracy_fp32: float
    accuracy: float
    passed: bool
    checked_at: str


class CpuModelRecord(_Strict):
    """A reduced-precision ONNX graph for ONNX Runtime on the CPU (static INT8, calibrated on normals).
    Used only where a line asks for it (``inference.cpu_precision``) and every product it serves passed."""

    model: ChainModel
    precision: Literal["int8"]
    file: str
    onnx_sha256: str = Field(description="the FP32 graph it was quantised from")
    calibration_images: int
    feature_relative_diff: float = Field(description="max abs diff / max abs FP32 output on held-out normals")
    checks: dict[str, PrecisionCheck] = Field(default_factory=dict, description="by product")


class BundleManifest(_Strict):
    schema_version: int
    bundle_id: str
    created_at: str
    encoder: EncoderSpec
    decoder: DecoderSpec
    preprocessing: Preprocessing
    prototypes: PrototypeSpec
    scoring: ScoringSpec
    parity: ParitySummary
    exporter: dict[str, str] = Field(description="versions of the tools that wrote this bundle")
    files: dict[str, FileEntry] = Field(default_factory=dict)
    products: dict[str, ProductEntry] = Field(default_factory=dict)
    llm: LlmSpec | None = None
    prompt_learner: PromptLearnerSpec | None = None
    engines: list[EngineRecord] = Field(default_factory=list, description="TensorRT engines; older bundles have none")
    cpu_models: list[CpuModelRecord] = Field(default_factory=list, description="reduced-precision ONNX graphs")

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, v: int) -> int:
        if v != SCHEMA_VERSION:
            raise ValueError(f"schema_version {v} is not supported by this runtime (expects {SCHEMA_VERSION})")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> BundleManifest:
        for key, product in self.products.items():
            if product.name != key:
                raise ValueError(f"products.{key} is named {product.name!r}: an entry's name is its key")
        height, width = self.preprocessing.input_size
        for stage in self.encoder.stages:  # the export measured each grid at its input size, stride = size // grid
            if (height // stage.grid[0], width // stage.grid[1]) != (stage.stride, stage.stride):
                raise ValueError(f"preprocessing.input_size {height}x{width} does not give encoder stage "
                                 f"{stage.name}'s {stage.grid[0]}x{stage.grid[1]} grid at stride {stage.stride}: "
                                 "the encoder was exported at another size")
        return self


class ComponentNorm(_Strict):
    """Patch-level statistics of one anomaly map on held-out normal views: map -> (map - mean) / std."""

    mean: float
    std: float


class TailFit(_Strict):
    """A Gumbel law fitted to image scores (lineguard.runtime.scoring.gumbel_tail.GumbelFit)."""

    location: float
    scale: float


class CellStats(_Strict):
    """One appearance channel of normal parts on a coarse grid: per cell, the mean over the enrolment views
    and how much that cell's average varies from view to view (the unit of "normal variation")."""

    mean: list[list[float]]
    std: list[list[float]]


class NormalAppearance(_Strict):
    """What normal parts look like, measured at enrolment (lineguard.runtime.scoring.region_evidence): the
    reference a region of an NG frame is compared with (brighter/darker, colour, texture, edges)."""

    grid: int = Field(ge=1, description="cells per side of the model-size image")
    views: int = Field(ge=1, description="enrolment views the statistics come from")
    channels: dict[str, CellStats] = Field(
        description="grey (0-255), contrast (local std of grey), edges (Sobel magnitude), a and b (Lab chroma)")
    residual_q999: float = Field(
        description="99.9th percentile of |grey - local median| on normals: pixels beyond it form a region's core")


class ProductCalibration(_Strict):
    """How a product's frames are scored and judged (see lineguard.runtime.scoring.calibration).

    The shots fix the score function (component norms, border profile); held-out calibration images,
    counted as images, give the split-conformal p-values. ``view_scores``/``view_tail`` (augmented
    views of the shots) only serve verdicts marked ``provisional`` while calibration images are missing.
    """

    calibration_version: Literal[2] = 2
    product: str
    shots: int
    views_per_shot: int
    method: Literal["leave-one-image-out", "leave-one-region-out"] = Field(
        description="how held-out views of the shots fixed the component norms and the border profile")
    components: dict[str, ComponentNorm]
    border_mean: list[float] = Field(description="fused-map mean of held-out normals by distance to the image edge")
    border_std: list[float] = Field(description="fused-map std of held-out normals by distance to the image edge")
    view_scores: list[float] = Field(description="image scores of the shots' held-out augmented views")
    view_tail: TailFit = Field(description="Gumbel law of view_scores: the provisional p-value")
    calibration_scores: list[float] = Field(
        default_factory=list, description="image score of each held-out calibration normal, one per image")
    calibration_images: list[str] = Field(
        default_factory=list, description="sha256 of each calibration image's pixels: none is counted twice")
    shot_images: list[str] = Field(
        default_factory=list, description="sha256 of each shot's pixels: the memory's own images never calibrate")
    appearance: NormalAppearance | None = Field(
        None, description="normal appearance statistics for region evidence (None: enrolled before they existed)")

    @model_validator(mode="after")
    def _one_hash_per_score(self) -> ProductCalibration:
        if len(self.calibration_scores) != len(self.calibration_images):
            raise ValueError("calibration_scores and calibration_images must pair up")
        return self


