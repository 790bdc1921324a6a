"""All component anomaly maps of a batch at the model's input resolution.

Usage::

    maps = component_maps(chain_output, memory, input_size=(224, 224))
    maps.keys()   # "decoder", "memory/s2", "memory/s3", "statistics/s2", ...
    patch_component_maps(chain_output, memory)["memory/s2"].shape   # (B, 28, 28): before upsampling
"""

from __future__ import annotations

import cv2
import numpy as np

from lineguard.runtime.inference.chain import ChainOutput
from lineguard.runtime.scoring.patch_scoring import PatchMemory

DECODER_COMPONENT = "decoder"


def upsample(maps: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """(B, h, w) patch maps -> (B, H, W), bilinear."""
    h, w = size_hw
    return np.stack([cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR) for m in maps]).astype(np.float32)


def decoder_logit(prob: np.ndarray) -> np.ndarray:
    """Abnormal probability -> log-odds, so the decoder map is on an unbounded scale like the others."""
    p = np.clip(prob, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p)).astype(np.float32)


def patch_component_maps(out: ChainOutput, memory: PatchMemory) -> dict[str, np.ndarray]:
    """The decoder's map (input resolution, log-odds) and each scorer's map on its own patch grid."""
    return {DECODER_COMPONENT: decoder_logit(out.decoder_map), **memory.score(out.features)}


def component_maps(out: ChainOutput, memory: PatchMemory, input_size: tuple[int, int]) -> dict[str, np.ndarray]:
    """Every component map at input resolution (enrolment's per-component statistics are taken there)."""
    return {name: m if m.shape[1:] == tuple(input_size) else upsample(m, input_size)
            for name, m in patch_component_maps(out, memory).items()}
