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
        return average_at(self.stage_probabilities(features), size)

    def forward(self, *features: torch.Tensor) -> torch.Tensor:
        return self.probability(features, self.input_size)

    def for_export(self) -> FactorisedDecoder:
        """The same function with a cheaper head for the deployed graph (see :class:`FactorisedDecoder`)."""
        return FactorisedDecoder(self)


class FactorisedDecoder(nn.Module):
    """:class:`AnomalyDecoder`'s function, computed without the 384-channel embedding: what ``export vision``
    writes to ``decoder.onnx``; training and the PyTorch reference keep the plain module.

    The embedding is affine in the 64 hidden channels, ``e = W h + b``, and the decision reads only
    ``d.e`` and ``|e|``: ``d.e = (W^T d).h + b.d`` and ``|e|^2 = h.(W^T W) h + 2 (W^T b).h + |b|^2``. So a
    64 -> 64 product replaces the 64 -> 384 one and the 384-channel norm, about 5x fewer operations in the
    finest stage, which is most of the decoder's time on a CPU (issue 17). Parity with the plain module
    is checked at export like any graph (``parity.json``).
    """

    def __init__(self, decoder: AnomalyDecoder) -> None:
        super().__init__()
        self.input_size = decoder.input_size
        direction = (decoder.prototypes[1] - decoder.prototypes[0]).detach()
        self.stages = nn.ModuleList(FactorisedStage(p, direction) for p in decoder.projections)

    def forward(self, *features: torch.Tensor) -> torch.Tensor:
        return average_at([stage(f) for stage, f in zip(self.stages, features, strict=True)], self.input_size)


class FactorisedStage(nn.Module):
    """One stage of :class:`FactorisedDecoder`: the projection's hidden layers, then ``d.e`` and ``|e|`` from
    the folded output layer."""

    def __init__(self, projection: StageProjection, direction: torch.Tensor) -> None:
        super().__init__()
        self.hidden = nn.Sequential(*list(projection.net)[:4])
        out = projection.net[4]
        w = out.weight.detach()[:, :, 0, 0]  # (text_dim, hidden)
        b = out.bias.detach()
        self.register_buffer("along_weight", (w.T @ direction)[None, :, None, None].contiguous())
        self.register_buffer("along_bias", (b @ direction).reshape(1))
        self.register_buffer("gram", (w.T @ w)[:, :, None, None].contiguous())
        self.register_buffer("linear", (2.0 * (w.T @ b))[None, :, None, None].contiguous())
        self.register_buffer("constant", (b @ b).reshape(1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        h = self.hidden(features)
        along = F.conv2d(h, self.along_weight, self.along_bias)
        squared = (h * (F.conv2d(h, self.gram) + self.linear)).sum(dim=1, keepdim=True) + self.constant
        norm = torch.sqrt(squared.clamp_min(1e-12)).clamp_min(1e-6)
        return torch.sigmoid(LOGIT_SCALE * along / norm)


def average_at(stage_probabilities: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """The stages' (B, 1, h, w) probabilities upsampled (bilinear) to ``size`` and averaged."""
    maps = [prob if prob.shape[-2:] == size else F.interpolate(prob, size=size, mode="bilinear", align_corners=False)
            for prob in stage_probabilities]
    return torch.stack(maps, 0).mean(0)
