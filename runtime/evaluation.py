"""``lineguard eval``: image/pixel AUROC and verdict accuracy on an MVTec-AD-style folder.

Usage::

    report = evaluate(bundle, "data/mvtec", "carpet", shots=4, seed=0)
    report.image_auroc, report.pixel_auroc, report.accuracy

Layout read: ``C/train/good`` (the K shots are drawn from here with ``seed``), ``C/test/<type>``
(``good`` is normal, every other type anomalous), optional ``C/ground_truth/<type>/<stem>_mask.png``.
The product is enrolled into a temporary copy of the bundle; the bundle itself is not modified.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
from pydantic import BaseModel
from sklearn.metrics import roc_auc_score

from lineguard.runtime.bundle import Bundle, BundleError
from lineguard.runtime.enroll import enroll_product
from lineguard.runtime.image_io import ImageReadError, choose_shots, image_paths, read_image
from lineguard.runtime.inspector import Inspector
from lineguard.runtime.llm_judge import LlmJudge
from lineguard.runtime.llm_worker import LlmSettings, LlmWorker


class EvalReport(BaseModel):
    category: str
    shots: int
    image_auroc: float | None
    pixel_auroc: float | None
    accuracy: float
    n_images: int
    ms_per_image: float
    false_reject_rate: float
    miss_rate: float
    verdict_mode: str = "vision"
    llm_accuracy: float | None = None
    llm_fallbacks: int | None = None


def _test_set(category_dir: Path) -> list[tuple[Path, int, Path | None]]:
    test_dir = category_dir / "test"
    if not test_dir.is_dir():
        raise ImageReadError(f"{test_dir} does not exist: expected an MVTec-AD-style category folder")
    items = []
    for type_dir in sorted(p for p in test_dir.iterdir() if p.is_dir()):
        label = 0 if type_dir.name == "good" else 1
        for path in image_paths(type_dir):
            mask = category_dir / "ground_truth" / type_dir.name / f"{path.stem}_mask.png"
            items.append((path, label, mask if mask.is_file() else None))
    if not items:
        raise ImageReadError(f"{test_dir} holds no test images")
    return items


def evaluate(bundle_dir: str | Path, data_root: str | Path, category: str, shots: int, seed: int = 0,
             batch_size: int = 8, verdict_mode: str = "vision", llm_timeout_s: float = 30.0) -> EvalReport:
    """``verdict_mode="llm"`` also asks the bundle's LLM for each image and reports its accuracy."""
    category_dir = Path(data_root) / category
    chosen = choose_shots(image_paths(category_dir / "train" / "good"), shots, seed)
    items = _test_set(category_dir)
    with Bundle.scratch_copy(bundle_dir, prefix="lineguard-eval-") as bundle:
        inspector = Inspector(bundle)
        enroll_product(bundle, category, [read_image(p) for p in chosen], seed=seed, chain=inspector.chain)
        judge = _llm_judge(bundle) if verdict_mode == "llm" else None
        scores, predictions, pixel_scores, pixel_labels, llm_predictions = [], [], [], [], []
        start = time.perf_counter()
        for b in range(0, len(items), batch_size):
            batch = items[b : b + batch_size]
            images = [read_image(p) for p, _, _ in batch]
            for (_, label, mask_path), result in zip(batch, inspector.analyze(images, category), strict=True):
                scores.append(result.verdict.score)
                predictions.append(int(result.verdict.verdict == "NG"))
                if judge is not None:
                    llm_predictions.append(int(judge.decide(result.verdict, llm_timeout_s).verdict == "NG"))
                if mask_path is not None or label == 0:
                    h, w = result.anomaly_map.shape
                    mask = (cv2.resize(read_image(mask_path, cv2.IMREAD_GRAYSCALE), (w, h), interpolation=cv2.INTER_NEAREST) > 127
                            if mask_path is not None else np.zeros((h, w), bool))
                    pixel_scores.append(result.anomaly_map[::2, ::2].ravel())
                    pixel_labels.append(mask[::2, ::2].ravel())
        elapsed = time.perf_counter() - start
        if judge is not None:
            judge.worker.close()
    labels = np.array([label for _, label, _ in items])
    preds = np.array(predictions)
    both = len(set(labels.tolist())) == 2
    has_masks = any(m is not None for _, _, m in items)
    pixel_auroc = None
    if has_masks:
        pl = np.concatenate(pixel_labels)
        if 0 < pl.sum() < pl.size:
            pixel_auroc = float(roc_auc_score(pl, np.concatenate(pixel_scores)))
    return EvalReport(
        category=category,
        shots=shots,
        image_auroc=float(roc_auc_score(labels, scores)) if both else None,
        pixel_auroc=pixel_auroc,
        accuracy=float((preds == labels).mean()),
        n_images=len(items),
        ms_per_image=elapsed * 1e3 / len(items),
        false_reject_rate=float(preds[labels == 0].mean()) if (labels == 0).any() else 0.0,
        miss_rate=float(1 - preds[labels == 1].mean()) if (labels == 1).any() else 0.0,
        verdict_mode=verdict_mode,
        llm_accuracy=float((np.array(llm_predictions) == labels).mean()) if judge is not None else None,
        llm_fallbacks=judge.fallbacks if judge is not None else None,
    )


def _llm_judge(bundle: Bundle) -> LlmJudge:
    if bundle.manifest.llm is None:
        raise BundleError("--verdict llm needs an LLM in the bundle: run `lineguard export llm BUNDLE` first")
    return LlmJudge(LlmWorker(bundle.path(bundle.manifest.llm.file), LlmSettings(n_threads=2, nice=0)).start())
