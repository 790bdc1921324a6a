"""The PyTorch eager reference of a bundle's vision chain: same interface as the ONNX Runtime chain.

Usage::

    chain = TorchVisionChain(Bundle.open("bundles/default"))
    inspector = Inspector(bundle, chain=chain)      # identical scoring, PyTorch underneath

Rebuilt from the bundle: the encoder from its packaged weights (or ``weights``), the decoder from
``decoder_state.npz`` (plain arrays, no pickle). Used for parity checks and ``lineguard bench vision``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from lineguard.export.decoder import AnomalyDecoder
from lineguard.export.encoders import build_encoder
from lineguard.runtime.bundle import Bundle, DecoderAdaptation
from lineguard.runtime.inference.chain import ChainOutput, run_as_tiles
from lineguard.runtime.inference.preprocess import Preprocessor

DECODER_STATE = "decoder_state.npz"


def save_decoder_state(decoder: AnomalyDecoder, path: Path) -> None:
    np.savez(path, **{k: v.detach().cpu().numpy() for k, v in decoder.state_dict().items()})


class TorchVisionChain:
    def __init__(self, bundle: Bundle, weights: str | Path | None = None, threads: int | None = None) -> None:
        manifest = bundle.manifest
        if threads:
            torch.set_num_threads(threads)
        self.preprocessor = Preprocessor(manifest.preprocessing)
        self.stage_names = [s.name for s in manifest.encoder.stages]
        self.encoder = build_encoder(manifest.encoder.family, weights)
        normal, abnormal = bundle.prototypes()
        self.decoder = AnomalyDecoder(manifest.encoder.stages, normal, abnormal, manifest.preprocessing.input_size)
        state = bundle.load_arrays(DECODER_STATE)
        self.decoder.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
        self.decoder.eval()
        self.providers = ["pytorch-eager-cpu"]

    def decoder_for(self, adaptation: DecoderAdaptation | None) -> None:
        """The reference runs the bundle's shared decoder only (it is what ONNX parity is taken against)."""
        if adaptation is not None:
            raise ValueError("the PyTorch reference chain runs the shared decoder, not a product's own")

    def run(self, batch: np.ndarray, host_stages: Sequence[str] | None = None, decoder: None = None,
            tiles: int = 1) -> ChainOutput:
        """``host_stages``, ``tiles``: as VisionChain.run's; everything is on the host here, so every stage
        comes back."""
        return run_as_tiles(self._run_input_size, batch, tiles)

    def _run_input_size(self, batch: np.ndarray) -> ChainOutput:
        with torch.inference_mode():
            t0 = time.perf_counter()
            feats = self.encoder(torch.from_numpy(batch))
            t1 = time.perf_counter()
            prob = self.decoder(*feats)
            t2 = time.perf_counter()
        return ChainOutput(
            features={n: f.numpy() for n, f in zip(self.stage_names, feats, strict=True)},
            decoder_map=prob[:, 0].numpy(),
            timings_ms={"encoder": (t1 - t0) * 1e3, "decoder": (t2 - t1) * 1e3},
        )
