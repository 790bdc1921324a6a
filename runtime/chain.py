"""The vision chain on ONNX Runtime: preprocessed batch -> stage features + decoder probability map.

Usage::

    chain = VisionChain(bundle)
    out = chain.run(chain.preprocessor(images))
    out.features["s2"].shape        # (B, 40, 28, 28)
    out.decoder_map.shape           # (B, 224, 224), abnormal probability
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from lineguard.runtime.backends import OnnxRuntimeBackend
from lineguard.runtime.bundle import Bundle
from lineguard.runtime.preprocess import Preprocessor


@dataclass
class ChainOutput:
    features: dict[str, np.ndarray]
    decoder_map: np.ndarray
    timings_ms: dict[str, float] = field(default_factory=dict)


class VisionChain:
    """Encoder and decoder sessions of one bundle, run back to back."""

    def __init__(self, bundle: Bundle, providers: list[str] | None = None, threads: int | None = None) -> None:
        manifest = bundle.manifest
        self.bundle = bundle
        self.preprocessor = Preprocessor(manifest.preprocessing)
        self.stage_names = [s.name for s in manifest.encoder.stages]
        self.encoder = OnnxRuntimeBackend(bundle.path(manifest.encoder.file), providers, threads)
        self.decoder = OnnxRuntimeBackend(bundle.path(manifest.decoder.file), providers, threads)
        self.input_name = manifest.encoder.input_name
        self.output_name = manifest.decoder.output_name

    @property
    def providers(self) -> list[str]:
        return self.encoder.session.get_providers()

    def run(self, batch: np.ndarray) -> ChainOutput:
        t0 = time.perf_counter()
        features = self.encoder.run({self.input_name: batch})
        t1 = time.perf_counter()
        decoder_inputs = {name: features[name] for name in self.decoder.input_names}
        prob = self.decoder.run(decoder_inputs)[self.output_name]
        t2 = time.perf_counter()
        return ChainOutput(
            features={name: features[name] for name in self.stage_names},
            decoder_map=prob[:, 0] if prob.ndim == 4 else prob,
            timings_ms={"encoder": (t1 - t0) * 1e3, "decoder": (t2 - t1) * 1e3},
        )

    def run_chunked(self, batch: np.ndarray, chunk: int = 8) -> ChainOutput:
        """Run a large batch in chunks (enrolment, evaluation) and concatenate."""
        parts = [self.run(batch[i : i + chunk]) for i in range(0, len(batch), chunk)]
        return ChainOutput(
            features={k: np.concatenate([p.features[k] for p in parts]) for k in self.stage_names},
            decoder_map=np.concatenate([p.decoder_map for p in parts]),
        )
