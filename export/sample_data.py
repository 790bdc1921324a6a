"""Generated MVTec-AD-style categories: what the demo and the tests inspect, no download needed.

Usage::

    write_category("data", "weave", family="weave", seed=3)
    # data/weave/train/good/*.png, data/weave/test/{good,defect}/*.png, data/weave/ground_truth/defect/*_mask.png

Defects are the simulated anomalies of lineguard.export.synthesis, pasted into unseen normal parts.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from lineguard.export.synthesis import synthesize
from lineguard.export.textures import texture_variants


def write_category(root: str | Path, name: str, family: str, seed: int = 0, train: int = 8,
                   test_good: int = 8, test_defect: int = 8, size: int = 256) -> Path:
    base = Path(root) / name
    parts = texture_variants(family, train + test_good + test_defect * 2, seed, size)
    rng = np.random.default_rng([seed, 2])
    folders = {k: base / k for k in ("train/good", "test/good", "test/defect", "ground_truth/defect")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(parts[:train]):
        cv2.imwrite(str(folders["train/good"] / f"{i:03d}.png"), img)
    for i, img in enumerate(parts[train : train + test_good]):
        cv2.imwrite(str(folders["test/good"] / f"{i:03d}.png"), img)
    sources = parts[train + test_good + test_defect :]
    for i, img in enumerate(parts[train + test_good : train + test_good + test_defect]):
        sample = synthesize(img, sources[i], rng)
        cv2.imwrite(str(folders["test/defect"] / f"{i:03d}.png"), sample.image)
        cv2.imwrite(str(folders["ground_truth/defect"] / f"{i:03d}_mask.png"), sample.mask * 255)
    return base
