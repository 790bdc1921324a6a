"""One enrolled product as the inspector uses it: how its frames are scored, and how a score is judged.

Usage::

    model = ProductModel.load(bundle, "tile")
    fused = model.scorer.fused(chain_output, input_size, sigma)      # (B, H, W) anomaly maps, z units
    model.judge.p_value(score, budget=0.01), model.judge.status(0.01)  # "conformal" | "tail" | "provisional"

The scorer (memory, component norms, border profile) comes from the shots alone; the judge from
held-out calibration images (lineguard.runtime.scoring.calibration), falling back to the shots' augmented views,
marked ``provisional``, while there are too few of those to decide at the line's budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lineguard.runtime.bundle import Bundle, ComponentNorm, ProductCalibration
from lineguard.runtime.contract import CalibrationStatus
from lineguard.runtime.inference.chain import ChainOutput
from lineguard.runtime.scoring.anomaly_maps import patch_component_maps
from lineguard.runtime.scoring.calibration import (
    MIN_TAIL_IMAGES,
    TAIL_DECADES,
    BorderProfile,
    ConformalCalibration,
    fuse_maps,
    needed_images,
)
from lineguard.runtime.scoring.gumbel_tail import GumbelFit
from lineguard.runtime.scoring.patch_scoring import PatchMemory


@dataclass(frozen=True)
class ProductScorer:
    """Chain output -> fused, border-standardised anomaly maps of one product."""

    memory: PatchMemory
    components: dict[str, ComponentNorm]
    border: BorderProfile

    def fused(self, out: ChainOutput, input_size: tuple[int, int], sigma: float) -> np.ndarray:
        maps = patch_component_maps(out, self.memory)
        return self.border.apply(fuse_maps(maps, self.components, sigma, input_size))


@dataclass(frozen=True)
class ProductJudge:
    """Score -> p-value and calibration status at a false-reject budget."""

    conformal: ConformalCalibration
    views: GumbelFit
    n_views: int

    @classmethod
    def from_calibration(cls, calibration: ProductCalibration) -> ProductJudge:
        return cls(
            conformal=ConformalCalibration.from_scores(calibration.calibration_scores),
            views=GumbelFit(calibration.view_tail.location, calibration.view_tail.scale),
            n_views=len(calibration.view_scores),
        )

    def status(self, budget: float) -> CalibrationStatus:
        return self.conformal.status(budget) if self.conformal.usable(budget) else "provisional"

    def p_value(self, score: float, budget: float) -> float:
        if self.conformal.usable(budget):
            return self.conformal.p_value(score)
        floor = 10.0 ** (-TAIL_DECADES) / (self.n_views + 1)
        return max(self.views.p_value(score), floor)

    def decision_level(self, budget: float) -> float:
        if self.conformal.usable(budget):
            return self.conformal.decision_level(budget)
        return self.views.quantile(budget)

    def missing_images(self, budget: float) -> int:
        """Further calibration images before the rank test alone resolves ``budget``."""
        return max(needed_images(budget) - self.conformal.n, 0)

    def describe(self, budget: float) -> str:
        """One line for enrol/calibrate output and the logs: what decides, and what is missing."""
        n, status = self.conformal.n, self.status(budget)
        if status == "conformal":
            return (f"conformal on {n} calibration images: p >= 1/{n + 1} = {1 / (n + 1):.2g} resolves the "
                    f"{budget:g} false-reject budget")
        missing = self.missing_images(budget)
        if status == "tail":
            return (f"tail: {n} calibration images give p >= {1 / (n + 1):.2g}, above the {budget:g} budget; the "
                    f"predictive Gumbel tail of their scores decides beyond the largest; {missing} more normal images make the "
                    f"rank test alone resolve it")
        return (f"PROVISIONAL: {n} calibration images (a tail needs {max(MIN_TAIL_IMAGES - n, 0)} more, the rank test "
                f"{missing} more); verdicts use augmented views of the shots, which over-reject on real parts")


@dataclass(frozen=True)
class ProductModel:
    scorer: ProductScorer
    judge: ProductJudge
    calibration: ProductCalibration

    @classmethod
    def load(cls, bundle: Bundle, product: str) -> ProductModel:
        entry = bundle.manifest.products[product]
        calibration = bundle.calibration(product)
        return cls(
            scorer=ProductScorer(
                memory=PatchMemory(bundle.manifest.scoring, bundle.load_arrays(entry.memory_file)),
                components=dict(calibration.components),
                border=BorderProfile(np.asarray(calibration.border_mean, np.float32),
                                     np.asarray(calibration.border_std, np.float32)),
            ),
            judge=ProductJudge.from_calibration(calibration),
            calibration=calibration,
        )


def is_ng(p_value: float, budget: float) -> bool:
    """The threshold-free decision: p <= budget (a conformal p-value is valid at equality)."""
    return p_value <= budget * (1 + 1e-9) and not math.isnan(p_value)
