"""The inspection API the line service wraps: image in, threshold-free verdict out.

Usage::

    from lineguard.runtime.inspector import Inspector
    inspector = Inspector("bundles/default")
    verdict = inspector.inspect(cv2.imread("part.png"), product="tile")
    verdict.verdict, verdict.p_value, [r.grid for r in verdict.regions]
    results = inspector.analyze([img1, img2], product="tile")   # batched, with anomaly maps

Decision, per product:

* enrolled (few-shot): fused z-map of decoder + memory + statistics; NG when the p-value of the image
  score among the product's held-out calibration normals is at most the false-reject budget (default
  1%); every verdict says how far its p-value can be trusted (``calibration``: conformal, tail or
  provisional, see lineguard.runtime.calibration);
* ``product=None`` (zero-shot, opt-in per line): NG when some region's abnormal probability beats its
  normal probability, the decoder's own two-class decision; ``calibration: "uncalibrated"``.

``reload_products()`` picks up a re-enrolment or `lineguard calibrate` written to the bundle while the
inspector runs (the line service calls it when the manifest changes): no restart.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from lineguard.runtime.bundle import MANIFEST_NAME, Bundle
from lineguard.runtime.calibration import image_scores, smooth
from lineguard.runtime.chain import VisionChain
from lineguard.runtime.location import locate
from lineguard.runtime.messages import CalibrationStatus, ImageEvidence, LatencyBreakdown, Verdict
from lineguard.runtime.preprocess import ChannelOrder
from lineguard.runtime.product_model import ProductModel, is_ng
from lineguard.runtime.region_evidence import image_evidence, regions_with_evidence

DEFAULT_FALSE_REJECT_BUDGET = 0.01
ZERO_SHOT_DECISION = 0.5  # abnormal probability beats normal probability: the decoder's argmax


class UnknownProductError(KeyError):
    """The product has not been enrolled in this bundle."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass
class Inspection:
    """A verdict with the evidence behind it (kept for archives, the panel and explanations)."""

    verdict: Verdict
    anomaly_map: np.ndarray  # (H, W) float32 at model input size; z units (few-shot) or probability
    model_rgb: np.ndarray  # (H, W, 3) uint8, the image the map belongs to
    evidence: ImageEvidence | None = None  # every frame's top candidate, only with image_evidence on (LLM verdict)


class Inspector:
    def __init__(
        self,
        bundle: Bundle | str | os.PathLike[str],
        false_reject_budget: float = DEFAULT_FALSE_REJECT_BUDGET,
        providers: list[str] | None = None,
        threads: int | None = None,
        chain: VisionChain | None = None,
    ) -> None:
        if not 0.0 < false_reject_budget < 0.5:
            raise ValueError(f"false_reject_budget must be in (0, 0.5), got {false_reject_budget}")
        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
        self.false_reject_budget = false_reject_budget
        # any object with VisionChain's preprocessor/run() serves (the PyTorch reference in bench)
        self.chain = chain or VisionChain(self.bundle, providers, threads)
        self._products: dict[str, ProductModel] = {}
        self._manifest_mtime = self._manifest_stamp()
        self.image_evidence = False  # the LLM verdict turns it on: evidence of OK frames too

    @cached_property
    def input_size(self) -> tuple[int, int]:
        return self.bundle.manifest.preprocessing.input_size

    @property
    def products(self) -> list[str]:
        return sorted(self.bundle.manifest.products)

    def product_model(self, product: str) -> ProductModel:
        model = self._products.get(product)
        if model is None:
            if product not in self.bundle.manifest.products:
                raise UnknownProductError(
                    f"product {product!r} is not enrolled in bundle {self.bundle.manifest.bundle_id}; "
                    f"enrolled: {self.products or 'none'}"
                )
            model = self._products[product] = ProductModel.load(self.bundle, product)
        return model

    def _manifest_stamp(self) -> tuple[int, int] | None:
        try:
            st = (self.bundle.root / MANIFEST_NAME).stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def reload_products(self, force: bool = False) -> bool:
        """Re-read the bundle's products when its manifest changed on disk (enrol, calibrate).

        The new manifest and every file it lists are verified first; a bundle caught half-written or
        tampered keeps the products already loaded. Returns whether anything was reloaded.
        """
        stamp = self._manifest_stamp()
        if not force and stamp == self._manifest_mtime:
            return False
        fresh = Bundle.open(self.bundle.root)
        if fresh.manifest.bundle_id != self.bundle.manifest.bundle_id:
            raise ValueError("the bundle folder now holds another bundle: restart the service to switch")
        models = {name: ProductModel.load(fresh, name) for name in self._products if name in fresh.manifest.products}
        self.bundle.manifest = fresh.manifest
        self._products = models
        self._manifest_mtime = stamp
        return True

    def calibration_status(self, product: str) -> CalibrationStatus:
        return self.product_model(product).judge.status(self.false_reject_budget)

    def inspect(self, image: np.ndarray, product: str | None, order: ChannelOrder = "BGR") -> Verdict:
        return self.analyze([image], product, order)[0].verdict

    def inspect_batch(self, images: Sequence[np.ndarray], product: str | None, order: ChannelOrder = "BGR") -> list[Verdict]:
        return [r.verdict for r in self.analyze(images, product, order)]

    def analyze(self, images: Sequence[np.ndarray], product: str | None, order: ChannelOrder = "BGR") -> list[Inspection]:
        """Inspect a batch of images of one product."""
        model = self.product_model(product) if product is not None else None
        t0 = time.perf_counter()
        rgbs = [self.chain.preprocessor.to_model_rgb(img, order) for img in images]
        batch = self.chain.preprocessor.normalise_batch(rgbs)  # written in place, no stacking copy
        t1 = time.perf_counter()
        # zero-shot reads only the map: a device chain (GPU) then copies nothing else back
        out = self.chain.run(batch) if model is not None else self.chain.run(batch, host_stages=())
        t2 = time.perf_counter()
        sigma = self.bundle.manifest.scoring.smoothing_sigma
        budget = self.false_reject_budget
        status: CalibrationStatus
        if model is None:
            fused = smooth(out.decoder_map.astype(np.float32), sigma)
            scores = image_scores(fused)
            p_values: list[float | None] = [None] * len(images)
            ng = [bool(s > ZERO_SHOT_DECISION) for s in scores]
            region_level = ZERO_SHOT_DECISION
            status = "uncalibrated"
        else:
            fused = model.scorer.fused(out, self.input_size, sigma)
            scores = image_scores(fused)
            p_values = [model.judge.p_value(float(s), budget) for s in scores]
            ng = [is_ng(p, budget) for p in p_values]
            # pixels above the level at which a map maximum would already be NG
            region_level = model.judge.decision_level(budget)
            status = model.judge.status(budget)
        t3 = time.perf_counter()
        per_image = 1e3 / len(images)
        latency = LatencyBreakdown(
            preprocess=(t1 - t0) * per_image,
            encoder=out.timings_ms["encoder"] / len(images),
            decoder=out.timings_ms["decoder"] / len(images),
            scoring=(t3 - t2) * per_image,
            total=(t3 - t0) * per_image,
        )
        results = []
        for i, image in enumerate(images):
            if model is None:
                regions = locate(fused[i], fused[i] > region_level, image.shape[:2]) if ng[i] else []
            else:  # NG regions measured against the enrolled normals (lineguard.runtime.region_evidence)
                regions = regions_with_evidence(fused[i], fused[i] > region_level, image.shape[:2], rgbs[i],
                                                model.calibration) if ng[i] else []
            evidence = (image_evidence(rgbs[i], fused[i], image.shape[:2], model.calibration)
                        if self.image_evidence and model is not None else None)
            verdict = Verdict(
                product=product or "",
                verdict="NG" if ng[i] else "OK",
                decided_by="zero-shot" if model is None else "few-shot",
                score=float(scores[i]),
                p_value=p_values[i],
                calibration=status,
                regions=regions,
                latency_ms=latency,
                bundle_id=self.bundle.manifest.bundle_id,
            )
            results.append(Inspection(verdict=verdict, anomaly_map=fused[i], model_rgb=rgbs[i], evidence=evidence))
        return results
