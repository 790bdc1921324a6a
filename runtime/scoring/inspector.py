"""The inspection API the line service wraps: image in, threshold-free verdict out.

Usage::

    from lineguard.runtime.scoring.inspector import Inspector
    inspector = Inspector("bundles/default")
    verdict = inspector.inspect(cv2.imread("part.png"), product="tile")
    verdict.verdict, verdict.p_value, [r.grid for r in verdict.regions]
    results = inspector.analyze([img1, img2], product="tile")   # batched, with anomaly maps
    results[0].to_verdict(camera_id="cam0", frame_id="f1", decode_ms=1.2, total_ms=41.0)   # the line's verdict

Decision, per product:

* enrolled (few-shot): fused z-map of decoder + memory + statistics; NG when the p-value of the image
  score among the product's held-out calibration normals is at most the false-reject budget (default
  1%); every verdict says how far its p-value can be trusted (``calibration``: conformal, tail or
  provisional, see lineguard.runtime.scoring.calibration);
* ``product=None`` (zero-shot, opt-in per line): NG when some region's abnormal probability beats its
  normal probability, the decoder's own two-class decision; ``calibration: "uncalibrated"``.

``analyze`` returns :class:`Inspection` findings, not verdicts: the decision, score, regions and
the evidence behind them. A :class:`Verdict` is assembled from them in one place,
:meth:`Inspection.to_verdict`, once the caller knows what the analysis cannot (the frame's ids, its
decode time and total latency, whether its deadline passed, the LLM judge's answer, the camera's pixel
scale); ``Inspection.verdict`` is that verdict without them (what ``inspect`` returns).

``reload_products()`` picks up a re-enrolment or `lineguard calibrate` written to the bundle while the
inspector runs (the line service calls it when the manifest changes): no restart.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from lineguard.runtime.bundle import MANIFEST_NAME, Bundle, BundleManifest, ProductEntry
from lineguard.runtime.contract import (
    CalibrationStatus,
    DecisionMode,
    ImageEvidence,
    LatencyBreakdown,
    Region,
    Verdict,
)
from lineguard.runtime.inference.chain import VisionChain
from lineguard.runtime.inference.preprocess import ChannelOrder
from lineguard.runtime.scoring.calibration import DEFAULT_FALSE_REJECT_BUDGET, image_scores, smooth
from lineguard.runtime.scoring.location import locate
from lineguard.runtime.scoring.product_model import ProductModel, is_ng
from lineguard.runtime.scoring.region_evidence import image_evidence, regions_in_mm, regions_with_evidence

ZERO_SHOT_DECISION = 0.5  # abnormal probability beats normal probability: the decoder's argmax


class UnknownProductError(KeyError):
    """The product has not been enrolled in this bundle."""

    def __str__(self) -> str:  # KeyError's own would quote the message
        return str(self.args[0])


class NonFiniteScoreError(ArithmeticError):
    """The chain gave an image a NaN or infinite anomaly score: its models or their inputs are broken. Such an
    image gets no verdict from the inspector (NaN compares as "not above the budget": it would pass as OK)."""


@dataclass(frozen=True)
class Inspection:
    """What analysing one image found: the vision decision and the evidence behind it (kept for archives,
    the panel and explanations). It holds no frame ids and no end-to-end latency: :meth:`to_verdict` adds
    them when the verdict is made."""

    product: str
    ng: bool  # the vision decision
    anomaly_map: np.ndarray  # (H, W) float32 at model input size; z units (few-shot) or probability
    model_rgb: np.ndarray  # (H, W, 3) uint8, the image the map belongs to
    decided_by: DecisionMode = "few-shot"
    score: float | None = None
    p_value: float | None = None
    calibration: CalibrationStatus | None = None
    regions: list[Region] = field(default_factory=list)
    latency: LatencyBreakdown = field(default_factory=LatencyBreakdown)  # this image's share of the batch's stages
    bundle_id: str = ""
    evidence: ImageEvidence | None = None  # every frame's top candidate, only with image_evidence on (LLM verdict)

    def to_verdict(self, camera_id: str = "", frame_id: str = "", *, decode_ms: float = 0.0,
                   total_ms: float | None = None, timed_out: bool = False, llm_says_anomaly: bool | None = None,
                   mm_per_pixel: float | None = None) -> Verdict:
        """The verdict, assembled once. ``total_ms``: receipt to verdict (default: the analysis alone);
        ``timed_out``: the deadline passed, the verdict is TIMEOUT (findings kept); ``llm_says_anomaly``: the
        LLM judge's answer (None: it gave none, the vision decision stands); ``mm_per_pixel``: the camera's
        pixel scale, region sizes in mm too."""
        decided_by = self.decided_by
        ng = self.ng
        if llm_says_anomaly is not None and not timed_out:
            ng, decided_by = llm_says_anomaly, "llm"
        stages = self.latency
        latency = LatencyBreakdown(decode=decode_ms, preprocess=stages.preprocess, encoder=stages.encoder,
                                   decoder=stages.decoder, scoring=stages.scoring,
                                   total=stages.total + decode_ms if total_ms is None else total_ms)
        return Verdict(
            frame_id=frame_id,
            camera_id=camera_id,
            product=self.product,
            verdict="TIMEOUT" if timed_out else "NG" if ng else "OK",
            decided_by=decided_by,
            score=self.score,
            p_value=self.p_value,
            calibration=self.calibration,
            regions=regions_in_mm(self.regions, mm_per_pixel),
            latency_ms=latency,
            bundle_id=self.bundle_id,
        )

    @property
    def verdict(self) -> Verdict:
        """The vision verdict, without frame ids (what :meth:`Inspector.inspect` returns)."""
        return self.to_verdict()


def entry_files(entry: ProductEntry) -> list[str]:
    """The files a product's enrolment writes: memory, calibration, and its own decoder where adapted."""
    return [entry.memory_file, entry.calibration_file, *([entry.decoder.file] if entry.decoder else [])]


def product_files(manifest: BundleManifest) -> set[str]:
    return {file for entry in manifest.products.values() for file in entry_files(entry)}


def _product_state(manifest: BundleManifest, name: str) -> tuple[object, ...]:
    """A product's entry and its files' checksums: what changes when it is enrolled or calibrated anew."""
    entry = manifest.products.get(name)
    return () if entry is None else (entry, *(manifest.files.get(file) for file in entry_files(entry)))


def _without_products(manifest: BundleManifest) -> dict[str, object]:
    return manifest.model_dump(exclude={"products", "files"})


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

    def close(self) -> None:
        """Release the chain's backends (ONNX Runtime sessions, TensorRT contexts, the Triton channel)."""
        close = getattr(self.chain, "close", None)  # a stand-in chain (bench's PyTorch reference) may have none
        if close is not None:
            close()

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

    def reload_products(self, force: bool = False) -> list[str]:
        """Re-read the bundle's products when its manifest changed on disk (enrol, calibrate); returns the
        products whose enrolment or calibration changed (empty: nothing to take).

        Cheap enough for the serving loop: the manifest (its signature checked with the key the bundle was
        opened with) and the products' own files are verified, not the models loaded at start (the encoder,
        decoders, the LLM's GGUF), whose manifest entries must be unchanged: a bundle whose models changed
        (another export) needs a restart. A bundle caught half-written or tampered keeps the products
        already loaded, and the same manifest is not tried again until it is written anew.
        """
        stamp = self._manifest_stamp()
        if not force and stamp == self._manifest_mtime:
            return []
        self._manifest_mtime = stamp
        loaded = self.bundle.manifest
        fresh = Bundle.open(self.bundle.root, verify=False, trusted_key=self.bundle.trusted_key)
        if fresh.manifest.bundle_id != loaded.bundle_id:
            raise ValueError("the bundle folder now holds another bundle: restart the service to switch")
        ours, theirs = product_files(loaded), product_files(fresh.manifest)
        models_changed = sorted(name for name in (set(loaded.files) | set(fresh.manifest.files)) - ours - theirs
                                if loaded.files.get(name) != fresh.manifest.files.get(name))
        if models_changed or _without_products(fresh.manifest) != _without_products(loaded):
            raise ValueError(f"the bundle's models changed on disk ({', '.join(models_changed) or 'manifest'}): "
                             "restart the service to serve them")
        fresh.verify(only=theirs)
        changed = sorted(name for name in set(loaded.products) | set(fresh.manifest.products)
                         if _product_state(loaded, name) != _product_state(fresh.manifest, name))
        models = {name: ProductModel.load(fresh, name) for name in self._products if name in fresh.manifest.products}
        self.bundle.manifest = fresh.manifest
        self._products = models
        return changed

    def frame_units(self, product: str | None) -> int:
        """What a frame of ``product`` costs, in frames inspected whole: the encoder items it runs (n² for a
        product inspected as n x n tiles; 1 for a product not enrolled, which runs zero-shot or fails)."""
        entry = self.bundle.manifest.products.get(product) if product is not None else None
        return entry.tiles**2 if entry is not None else 1

    def calibration_status(self, product: str) -> CalibrationStatus:
        return self.product_model(product).judge.status(self.false_reject_budget)

    def inspect(self, image: np.ndarray, product: str | None, order: ChannelOrder = "BGR") -> Verdict:
        return self.analyze([image], product, order)[0].verdict

    def inspect_batch(self, images: Sequence[np.ndarray], product: str | None, order: ChannelOrder = "BGR") -> list[Verdict]:
        return [r.verdict for r in self.analyze(images, product, order)]

    def analyze(self, images: Sequence[np.ndarray], product: str | None, order: ChannelOrder = "BGR") -> list[Inspection]:
        """Inspect a batch of images of one product: the findings of each (``to_verdict`` makes its verdict)."""
        model = self.product_model(product) if product is not None else None
        entry = self.bundle.manifest.products[product] if product is not None else None
        tiles = entry.tiles if entry is not None else 1  # a product of large photos is inspected as tiles
        t0 = time.perf_counter()
        rgbs = [self.chain.preprocessor.to_model_rgb(img, order, tiles) for img in images]
        batch = self.chain.preprocessor.normalise_batch(rgbs)  # written in place, no stacking copy
        t1 = time.perf_counter()
        # zero-shot reads only the map: a device chain (GPU) then copies nothing else back
        if entry is None:
            out = self.chain.run(batch, host_stages=())
        else:  # the product's own decoder where it was adapted (lineguard adapt)
            out = self.chain.run(batch, decoder=self.chain.decoder_for(entry.decoder), tiles=tiles)
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
            fused = model.scorer.fused(out, self.chain.preprocessor.size(tiles), sigma)
            scores = image_scores(fused)
            p_values = [model.judge.p_value(float(s), budget) for s in scores]
            ng = [is_ng(p, budget) for p in p_values]
            # pixels above the level at which a map maximum would already be NG
            region_level = model.judge.decision_level(budget)
            status = model.judge.status(budget)
        broken = [i for i, s in enumerate(scores) if not np.isfinite(s)]
        if broken:
            raise NonFiniteScoreError(f"the chain gave {len(broken)} of {len(images)} images a non-finite anomaly "
                                      f"score (NaN or inf): the bundle's models or preprocessing are broken")
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
            else:  # NG regions measured against the enrolled normals (lineguard.runtime.scoring.region_evidence)
                regions = regions_with_evidence(fused[i], fused[i] > region_level, image.shape[:2], rgbs[i],
                                                model.calibration) if ng[i] else []
            evidence = (image_evidence(rgbs[i], fused[i], image.shape[:2], model.calibration)
                        if self.image_evidence and model is not None else None)
            results.append(Inspection(
                product=product or "",
                ng=ng[i],
                anomaly_map=fused[i],
                model_rgb=rgbs[i],
                decided_by="zero-shot" if model is None else "few-shot",
                score=float(scores[i]),
                p_value=p_values[i],
                calibration=status,
                regions=regions,
                latency=latency,
                bundle_id=self.bundle.manifest.bundle_id,
                evidence=evidence,
            ))
        return results
