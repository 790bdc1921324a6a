"""``lineguard eval``: ranking, verdicts and the false-reject budget on an MVTec-AD-style folder.

Usage::

    report = evaluate(bundle, "data/mvtec", "carpet", shots=4, seed=0)
    report.image_auroc, report.false_reject_rate, report.miss_rate, report.observed_false_reject

Layout read: ``C/train/good`` (the K shots are drawn from here with ``seed``; every other image there
calibrates, ``calib`` limits how many), ``C/test/<type>`` (``good`` is normal, every other type
anomalous), optional ``C/ground_truth/<type>/<stem>_mask.png`` (or another
naming of the mask: :mod:`lineguard.evaluation.mvtec_layout`). The product is enrolled into a
temporary copy of the bundle; the bundle itself is not modified.

Besides AUROC and the verdict's error rates at the line's budget, the report holds the *observed*
false-reject rate of the test normals at budgets 1/5/10% (how well calibration holds on normals it
never saw), miss rates per defect type, and the zero-shot decision's accuracy on the same frames.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field
from sklearn.metrics import roc_auc_score

from lineguard.evaluation.mvtec_layout import labelled_test_images, read_mask
from lineguard.runtime.bundle import Bundle, BundleError, MemoryOrientation
from lineguard.runtime.image_io import image_paths, read_image, read_images, split_normals
from lineguard.runtime.inference.tiling import resolve_tiles
from lineguard.runtime.llm.grounding import Grounder, Grounding
from lineguard.runtime.llm.judge import LlmJudge
from lineguard.runtime.llm.worker import LlmSettings, LlmWorker
from lineguard.runtime.scoring.calibration import DEFAULT_FALSE_REJECT_BUDGET, FAMILIES
from lineguard.runtime.scoring.enroll import enroll_product
from lineguard.runtime.scoring.inspector import Inspector

EVAL_BUDGETS = (0.01, 0.05, 0.10)


class EvalReport(BaseModel):
    category: str
    shots: int
    seed: int
    budget: float
    families: list[str] = Field(description="score families the product fused (fewer: an ablation)")
    orientation: MemoryOrientation = Field("any", description="enrolment's memory orientation (fixed: an ablation)")
    tiles: int = Field(1, description="tiles per side the product was inspected as (enrolment's choice, --tiles)")
    n_calibration: int
    calibration_status: str
    calibration_note: str
    image_auroc: float | None
    pixel_auroc: float | None
    accuracy: float
    balanced_accuracy: float
    n_images: int
    n_test_normals: int = Field(description="test/good images: the false-reject rate's denominator")
    ms_per_image: float
    false_reject_rate: float
    miss_rate: float
    observed_false_reject: dict[str, float] = Field(
        description="share of test normals with p <= budget, by budget: the calibration error")
    miss_rate_by_type: dict[str, float]
    zero_shot_accuracy: float
    zero_shot_false_reject_rate: float
    zero_shot_miss_rate: float
    verdict_mode: str = "vision"
    llm_accuracy: float | None = None
    llm_grounding: Grounding | None = None
    llm_fallbacks: int | None = None
    llm_false_reject_rate: float | None = None
    llm_miss_rate: float | None = None
    adapted_decoder_s: float | None = Field(None, description="seconds `lineguard adapt` took (None: shared decoder)")


def error_rates(labels: np.ndarray, predictions: np.ndarray) -> tuple[float, float, float]:
    """(false-reject rate, miss rate, balanced accuracy) of NG predictions (1) against labels (1 = defect)."""
    frr = float(predictions[labels == 0].mean()) if (labels == 0).any() else 0.0
    miss = float(1 - predictions[labels == 1].mean()) if (labels == 1).any() else 0.0
    return frr, miss, ((1 - frr) + (1 - miss)) / 2


def evaluate(bundle_dir: str | Path, data_root: str | Path, category: str, shots: int, seed: int = 0,
             calib: int | None = None, budget: float = DEFAULT_FALSE_REJECT_BUDGET, batch_size: int = 8,
             verdict_mode: str = "vision", llm_timeout_s: float = 30.0, without: Sequence[str] = (),
             grounding: Grounding = "text", adapt: bool = False, orientation: MemoryOrientation = "any",
             tiles: int | Literal["auto"] = "auto") -> EvalReport:
    """``verdict_mode="llm"`` also asks the bundle's LLM for each image and reports its accuracy, grounded by
    ``grounding`` (text evidence, the prompt learner's soft prompt, or both); ``without`` names score families
    the product is enrolled without (the ablation); ``adapt`` first fine-tunes the product's own decoder on
    the K shots (``lineguard adapt``, export side: needs torch); ``orientation`` is enrolment's (``fixed``: no
    turned and mirrored shots in the memory, the ablation), so is ``tiles`` ("auto" chooses from the photos' size; a
    number forces it, e.g. 2 for photos that "auto" would not tile: `make eval-tiles`)."""
    category_dir = Path(data_root) / category
    chosen, calibration = split_normals(image_paths(category_dir / "train" / "good"), shots, seed, calib)
    items = labelled_test_images(category_dir)
    with Bundle.scratch_copy(bundle_dir, prefix="lineguard-eval-") as bundle:
        inspector = Inspector(bundle, false_reject_budget=budget)
        shot_images = read_images(chosen)
        adaptation, adapt_s = None, None
        if adapt:
            from lineguard.export.adapt import adapt_decoder

            started = time.perf_counter()
            tiles = resolve_tiles(tiles, shot_images, bundle.manifest.preprocessing.input_size)
            adaptation, _ = adapt_decoder(bundle, shot_images, f"products/{category}/decoder.onnx", seed=seed,
                                          tiles=tiles)
            adapt_s = time.perf_counter() - started
        enroll_product(bundle, category, shot_images, calibration_images=read_images(calibration),
                       seed=seed, chain=inspector.chain, families=[f for f in FAMILIES if f not in without],
                       decoder=adaptation, orientation=orientation, tiles=tiles)
        judge_model = inspector.product_model(category).judge
        bundle_tiles = bundle.manifest.products[category].tiles
        judge = _llm_judge(bundle, grounding) if verdict_mode == "llm" else None
        inspector.image_evidence = judge is not None  # the judge decides from evidence, never the vision verdict
        scores, p_values, predictions, zero_shot, llm_predictions = [], [], [], [], []
        pixel_scores, pixel_labels = [], []
        start = time.perf_counter()
        for b in range(0, len(items), batch_size):
            batch = items[b : b + batch_size]
            images = [read_image(p) for p, _, _ in batch]
            for (_, kind, mask_path), result in zip(batch, inspector.analyze(images, category), strict=True):
                scores.append(result.verdict.score)
                p_values.append(result.verdict.p_value)
                predictions.append(int(result.verdict.verdict == "NG"))
                if judge is not None:
                    decided = judge.decide(result.verdict, llm_timeout_s, result.evidence,
                                           image=(result.anomaly_map, result.model_rgb))
                    llm_predictions.append(int(decided.verdict == "NG"))
                if mask_path is not None or kind == "good":
                    h, w = result.anomaly_map.shape
                    mask = read_mask(mask_path, (w, h)) if mask_path is not None else np.zeros((h, w), bool)
                    pixel_scores.append(result.anomaly_map[::2, ::2].ravel())
                    pixel_labels.append(mask[::2, ::2].ravel())
        elapsed = time.perf_counter() - start
        for b in range(0, len(items), batch_size):  # the zero-shot decision on the same frames, not timed
            images = [read_image(p) for p, _, _ in items[b : b + batch_size]]
            zero_shot.extend(int(v.verdict == "NG") for v in inspector.inspect_batch(images, None))
        if judge is not None:
            judge.worker.close()
    kinds = np.array([kind for _, kind, _ in items])
    labels = (kinds != "good").astype(int)
    preds = np.array(predictions)
    frr, miss, balanced = error_rates(labels, preds)
    zs_frr, zs_miss, _ = error_rates(labels, np.array(zero_shot))
    llm_rates = error_rates(labels, np.array(llm_predictions))[:2] if judge is not None else (None, None)
    normal_p = np.array(p_values, dtype=np.float64)[labels == 0]
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
        seed=seed,
        budget=budget,
        families=[f for f in FAMILIES if f not in without],
        orientation=orientation,
        tiles=bundle_tiles,
        n_calibration=judge_model.conformal.n,
        calibration_status=judge_model.status(budget),
        calibration_note=judge_model.describe(budget),
        image_auroc=float(roc_auc_score(labels, scores)) if both else None,
        pixel_auroc=pixel_auroc,
        accuracy=float((preds == labels).mean()),
        balanced_accuracy=balanced,
        n_images=len(items),
        n_test_normals=int((labels == 0).sum()),
        ms_per_image=elapsed * 1e3 / len(items),
        false_reject_rate=frr,
        miss_rate=miss,
        observed_false_reject={f"{b:g}": float((normal_p <= b * (1 + 1e-9)).mean()) if normal_p.size else 0.0
                               for b in EVAL_BUDGETS},
        miss_rate_by_type={kind: float(1 - preds[kinds == kind].mean()) for kind in sorted(set(kinds)) if kind != "good"},
        zero_shot_accuracy=float((np.array(zero_shot) == labels).mean()),
        zero_shot_false_reject_rate=zs_frr,
        zero_shot_miss_rate=zs_miss,
        verdict_mode=verdict_mode,
        llm_accuracy=float((np.array(llm_predictions) == labels).mean()) if judge is not None else None,
        llm_grounding=grounding if judge is not None else None,
        llm_fallbacks=judge.fallbacks if judge is not None else None,
        llm_false_reject_rate=llm_rates[0],
        llm_miss_rate=llm_rates[1],
        adapted_decoder_s=adapt_s,
    )


def _llm_judge(bundle: Bundle, grounding: Grounding = "text") -> LlmJudge:
    if bundle.manifest.llm is None:
        raise BundleError("--verdict llm needs an LLM in the bundle: run `lineguard export llm BUNDLE` first")
    grounder = Grounder.for_bundle(bundle, grounding)
    return LlmJudge(LlmWorker(bundle.path(bundle.manifest.llm.file), LlmSettings(n_threads=2, nice=0)).start(),
                    grounder=grounder)
