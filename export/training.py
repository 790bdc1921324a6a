"""Decoder training on simulated anomalies, with the encoder frozen (features computed once).

Usage::

    report = train_decoder(encoder, decoder, normals, preprocessing, steps=600)
    report.final_loss

Loss: focal (gamma 2) + dice on the pixel map, as APRIL-GAN / AnomalyGPT train their decoders.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from lineguard.export.decoder import AnomalyDecoder
from lineguard.export.encoders import StageEncoder
from lineguard.export.synthesis import synthesize
from lineguard.runtime.bundle import Preprocessing
from lineguard.runtime.inference.preprocess import Preprocessor, resize_to

ANOMALOUS_SHARE = 0.75


@dataclass
class TrainReport:
    images: int
    samples: int
    steps: int
    final_loss: float


def focal_loss(prob: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    prob = prob.clamp(1e-6, 1 - 1e-6)
    pt = torch.where(target > 0.5, prob, 1 - prob)
    return (-((1 - pt) ** gamma) * torch.log(pt)).mean()


def dice_loss(prob: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    inter = (prob * target).flatten(1).sum(1)
    total = prob.flatten(1).sum(1) + target.flatten(1).sum(1)
    return (1 - (2 * inter + smooth) / (total + smooth)).mean()


def simulated_dataset(
    normals: Sequence[np.ndarray], samples: int, preprocessing: Preprocessing, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(samples, 3, H, W) normalised inputs and (samples, 1, H, W) masks; a quarter stay normal."""
    pre = Preprocessor(preprocessing)
    size = preprocessing.input_size
    inputs, masks = [], []
    for _ in tqdm(range(samples), desc="simulating anomalies", unit="img", leave=False):
        target = pre.to_model_rgb(normals[int(rng.integers(len(normals)))], "BGR")
        if rng.random() < 0.5:
            target = np.ascontiguousarray(target[:, ::-1])
        if rng.random() < ANOMALOUS_SHARE:
            source = pre.to_model_rgb(normals[int(rng.integers(len(normals)))], "BGR")
            sample = synthesize(target, source, rng)
            image, mask = sample.image, sample.mask
        else:
            image, mask = target, np.zeros(size, np.uint8)
        inputs.append(pre.normalise(resize_to(image, size)))
        masks.append(mask[None].astype(np.float32))
    return np.stack(inputs), np.stack(masks)


def train_decoder(
    encoder: StageEncoder,
    decoder: AnomalyDecoder,
    normals: Sequence[np.ndarray],
    preprocessing: Preprocessing,
    steps: int = 400,
    samples: int = 320,
    batch_size: int = 8,
    seed: int = 0,
    lr: float = 2e-3,
) -> TrainReport:
    if not normals:
        raise ValueError("decoder training needs at least one normal image")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    inputs, masks = simulated_dataset(normals, samples, preprocessing, rng)
    features: list[list[torch.Tensor]] = []
    with torch.no_grad():
        for start in tqdm(range(0, samples, 16), desc="encoding", unit="batch", leave=False):
            features.append(list(encoder(torch.from_numpy(inputs[start : start + 16]))))
    stage_feats = [torch.cat([f[i] for f in features]) for i in range(len(features[0]))]
    grid = tuple(stage_feats[0].shape[-2:])
    target = F.interpolate(torch.from_numpy(masks), size=grid, mode="area")

    optimiser = torch.optim.AdamW(decoder.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps)
    decoder.train()
    loss_value = float("nan")
    bar = tqdm(range(steps), desc="training decoder", unit="step")
    for _ in bar:
        index = torch.from_numpy(rng.choice(samples, size=min(batch_size, samples), replace=False))
        # loss on the finest feature grid: the upsampling to input size adds nothing to learn
        prob = decoder.probability(tuple(f[index] for f in stage_feats), grid)
        mask = target[index]
        loss = focal_loss(prob, mask) + dice_loss(prob, mask)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        value = float(loss.detach())
        loss_value = value if np.isnan(loss_value) else 0.9 * loss_value + 0.1 * value
        bar.set_postfix(loss=f"{loss_value:.3f}")
    decoder.eval()
    return TrainReport(images=len(normals), samples=samples, steps=steps, final_loss=loss_value)
