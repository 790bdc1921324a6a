"""Training frames for the prompt learner: simulated anomalies over a product's normals, seen by the runtime.

Usage::

    with Bundle.scratch_copy("bundles/default") as scratch:
        frames = simulated_frames(scratch, Path("normals/brick"), n=48, seed=0)
    frames[0].anomalous, frames[0].cell, frames[0].kind        # True, "top left", "scratch"

Each folder of normal images (a plain folder, or an MVTec-style category whose ``train/good`` is used) is
one product: ``shots`` images are enrolled into the given (scratch) bundle exactly as ``lineguard enroll``
does, and each other image becomes one frame, alternately kept normal or given one anomaly of the decoder's
synthesizer (lineguard.export.synthesis), whose mask and kind are the truthful answer. Every frame is then
inspected by the runtime's own Inspector, so the learner trains on the anomaly maps it will see on the line
(vision misses included: the answer stays the truth).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from lineguard.export.synthesis import synthesize
from lineguard.runtime.bundle import Bundle
from lineguard.runtime.contract import GridCell
from lineguard.runtime.image_io import image_paths, read_images, split_normals
from lineguard.runtime.llm.grounding import learner_inputs
from lineguard.runtime.scoring.enroll import enroll_product
from lineguard.runtime.scoring.inspector import Inspector
from lineguard.runtime.scoring.location import GRID_WORDS

# the synthesizer's kinds in the words of the evidence's defect classes (lineguard.runtime.scoring.region_evidence)
KIND_WORDS = {"cut-paste": "foreign material", "scratch": "scratch", "stain": "stain", "texture": "texture change"}


@dataclass(frozen=True)
class LearnerFrame:
    anomaly_map: np.ndarray  # (1, 28, 28) float32, the learner's map input
    feature: np.ndarray  # (F,) float32
    product: str
    anomalous: bool
    cell: GridCell | None  # where the simulated anomaly's centre lies
    kind: str | None  # KIND_WORDS value


def normals_folder(folder: Path) -> Path:
    """An MVTec-style category's ``train/good``, or the folder itself."""
    good = folder / "train" / "good"
    return good if good.is_dir() else folder


def mask_cell(mask: np.ndarray) -> GridCell:
    """The 3x3 cell of a mask's centre of mass (the location grid's words)."""
    ys, xs = np.nonzero(mask)
    h, w = mask.shape[:2]
    return GRID_WORDS[min(int(3 * ys.mean() / h), 2)][min(int(3 * xs.mean() / w), 2)]


def simulated_frames(bundle: Bundle, folder: Path, n: int = 48, shots: int = 4, seed: int = 0,
                     product: str | None = None) -> list[LearnerFrame]:
    """Up to ``n`` frames of the product whose normals are in ``folder`` (enrolled into ``bundle`` in place:
    pass a scratch copy), half with one simulated anomaly."""
    product = product or folder.name
    paths = image_paths(normals_folder(folder))
    chosen, rest = split_normals(paths, shots, seed, None)
    if not rest:
        raise ValueError(f"{folder}: {len(paths)} normal images; the prompt learner needs more than the {shots} shots")
    enroll_product(bundle, product, read_images(chosen), seed=seed)
    inspector = Inspector(bundle)
    size = inspector.input_size
    rng = np.random.default_rng(seed)
    frames: list[LearnerFrame] = []
    try:
        images = [inspector.chain.preprocessor.to_model_rgb(img) for img in read_images(rest)]
        for i in range(n):
            target = images[i % len(images)]
            anomalous = i % 2 == 0
            cell = kind = None
            if anomalous:
                source = images[int(rng.integers(len(images)))]
                made = synthesize(target.copy(), source, rng)
                image, mask = made.image, made.mask
                if not mask.any():
                    continue
                cell, kind = mask_cell(mask), KIND_WORDS.get(made.kind, made.kind)
            else:  # a normal frame is another view of a normal: flipped on odd rounds, so repeats differ
                image = target if (i // len(images)) % 2 == 0 else cv2.flip(target, 1)
            inspection = inspector.analyze([cv2.resize(image, size[::-1]) if image.shape[:2] != size else image],
                                           product, order="RGB")[0]
            amap, feature = learner_inputs(inspection.anomaly_map, inspection.model_rgb)
            frames.append(LearnerFrame(amap[0], feature[0], product, anomalous, cell, kind))
    finally:
        inspector.close()
    return frames
