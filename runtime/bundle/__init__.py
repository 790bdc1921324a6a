"""The bundle: the one contract between the export side and the edge runtime.

Owns the bundle folder: its typed manifest (:mod:`.schema`), reading, verifying and writing it
(:mod:`.store`) and its Ed25519 signature (:mod:`.signature`). The bottom layer of the runtime: it
imports nothing from the other runtime packages except ``security.key_files`` (key file naming).
export/ imports this package; nothing here imports export/.

Usage::

    from lineguard.runtime.bundle import Bundle
    bundle = Bundle.open("bundles/default")       # verifies every checksum
"""

from lineguard.runtime.bundle.schema import (
    MANIFEST_NAME,
    MAX_TILES,
    PARITY_FAILED_NAME,
    SCHEMA_VERSION,
    BackendName,
    BundleError,
    BundleIncompatibleError,
    BundleIntegrityError,
    BundleManifest,
    BundleNotFoundError,
    CellStats,
    ChainModel,
    ComponentNorm,
    CpuModelRecord,
    CpuPrecision,
    DecoderAdaptation,
    DecoderSpec,
    EncoderSpec,
    EngineRecord,
    FileEntry,
    LlmSpec,
    MemoryOrientation,
    NormalAppearance,
    ParitySummary,
    Precision,
    PrecisionCheck,
    Preprocessing,
    ProductCalibration,
    ProductEntry,
    PromptLearnerSpec,
    PrototypeSpec,
    RequestedBackend,
    ScoringSpec,
    StageSpec,
    TailFit,
)
from lineguard.runtime.bundle.store import (
    Bundle,
    new_bundle_id,
    sha256_file,
    utc_now,
)

__all__ = [
    "MANIFEST_NAME",
    "MAX_TILES",
    "PARITY_FAILED_NAME",
    "SCHEMA_VERSION",
    "BackendName",
    "Bundle",
    "BundleError",
    "BundleIncompatibleError",
    "BundleIntegrityError",
    "BundleManifest",
    "BundleNotFoundError",
    "CellStats",
    "ChainModel",
    "ComponentNorm",
    "CpuModelRecord",
    "CpuPrecision",
    "DecoderSpec",
    "EncoderSpec",
    "EngineRecord",
    "FileEntry",
    "LlmSpec",
    "MemoryOrientation",
    "PromptLearnerSpec",
    "DecoderAdaptation",
    "NormalAppearance",
    "ParitySummary",
    "Precision",
    "PrecisionCheck",
    "Preprocessing",
    "ProductCalibration",
    "ProductEntry",
    "PrototypeSpec",
    "RequestedBackend",
    "ScoringSpec",
    "StageSpec",
    "TailFit",
    "new_bundle_id",
    "sha256_file",
    "utc_now",
]
