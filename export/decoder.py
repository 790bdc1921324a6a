"""The anomaly decoder: patch features -> text space -> abnormal probability per pixel (APRIL-GAN style).

Usage::

    decoder = AnomalyDecoder(stage_specs, normal_proto, abnormal_proto, input_size=(224, 224))
    prob = decoder(s1, s2, s3, s4)          # (B, 1, H, W), softmax probability of "abnormal"

Per stage, a small learned projection (1x1 -> depthwise 3x3 -> 1x1) maps each patch into the text
embedding space; cosine similarity to the fixed normal/abnormal prototypes, scaled and softmaxed,
gives that stage's abnormal probability; stage maps are upsampled and averaged.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lineguard.runtime.bundle import StageSpec

HIDDEN = 64
LOGIT_SCALE = 1 / 0.07  # CLIP's temperature


class StageProjection(nn.Module):
    def __init__(self, channels: int, text_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, HIDDEN, 1),
            nn.GELU(),
            nn.Conv2d(HIDDEN, HIDDEN, 3, padding=1, groups=HIDDEN),
            nn.GELU(),
            nn.Conv2d(HIDDEN, text_dim, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class AnomalyDecoder(nn.Module):
    def __init__(self, stages: list[StageSpec], normal: np.ndarray, abnormal: np.ndarray,
                 input_size: tuple[int, int]) -> None:
        super().__init__()
        text_dim = int(normal.shape[0])
        self.projections = nn.ModuleList(StageProjection(s.channels, text_dim) for s in stages)
        self.register_buffer("prototypes", torch.from_numpy(np.stack([normal, abnormal])).float())
        self.input_size = tuple(input_size)
        self.text_dim = text_dim

    def stage_probabilities(self, features: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        """Per stage (B, 1, h, w) abnormal probability.

        softmax(s * [cos(e, t_normal), cos(e, t_abnormal)])[abnormal] = sigmoid(s * e.(t_a - t_n) / |e|):
        the same two-class decision, computed without materialising both similarity maps.
        """
        direction = (self.prototypes[1] - self.prototypes[0]).view(1, -1, 1, 1)
        out = []
        for projection, feats in zip(self.projections, features, strict=True):
            emb = projection(feats)
            along = F.conv2d(emb, direction)
            norm = torch.sqrt((emb * emb).sum(dim=1, keepdim=True)).clamp_min(1e-6)
            out.append(torch.sigmoid(LOGIT_SCALE * along / norm))
        return out

    def probability(self, features: tuple[torch.Tensor, ...], size: tuple[int, int]) -> torch.Tensor:
        """Stage-averaged abnormal probability at ``size`` (training uses the finest grid, export the input)."""
        maps = []
        for prob in self.stage_probabilities(features):
            maps.append(prob if prob.shape[-2:] == size else F.interpolate(prob, size=size, mode="bilinear", align_corners=False))
        return torch.stack(maps, 0).mean(0)

    def forward(self, *features: torch.Tensor) -> torch.Tensor:
        return self.probability(features, self.input_size)
