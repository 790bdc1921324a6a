"""How the LLM is grounded on a frame: measured text evidence, AnomalyGPT's soft prompt, or both (no torch).

Usage::

    grounder = Grounder.for_bundle(bundle, "soft")                      # the bundle's prompt_learner.onnx
    vectors = grounder.vectors(inspection.anomaly_map, inspection.model_rgb)    # (M, n_embd) float32; None: text
    messages = explanation_messages(verdict, question, grounding=grounder.mode) # holds SOFT_PROMPT_MARKER
    worker.submit(job_id, messages, soft_prompt=vectors)

The prompt learner (``lineguard export prompt-learner``, lineguard/export/prompt_learner.py) maps the
frame's anomaly map and a few pooled statistics to M vectors in the LLM's input space; the worker feeds
them where the messages hold the marker (lineguard.runtime.llm.soft_prompt). Its inputs are computed here,
once, for training and for the line alike:

* ``anomaly_map``: the inspection's map (z units of the product's normals) resized to 28 x 28 and squashed
  to 0..1 by ``tanh(max(z, 0) / 6)``;
* ``feature``: ``FEATURE_NAMES``, statistics of the map and of the image inside its strongest area.

AnomalyGPT pools encoder features into the prompt learner; lineguard's encoder features end with the batch
(the archive keeps the map and the image), so the learner sees what the text evidence is measured from --
the map and the image -- and text and soft grounding compete on the same information.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

from lineguard.runtime.bundle import Bundle, BundleError

Grounding = Literal["text", "soft", "both"]
GROUNDINGS: tuple[Grounding, ...] = ("text", "soft", "both")
MAP_SIZE = 28
Z_SCALE = 6.0
FEATURE_NAMES = ("peak", "mean", "share_z3", "share_z6", "grey_delta", "log_contrast", "area_share")


class GroundingError(BundleError):
    """The bundle has no usable prompt learner for its LLM."""


def learner_inputs(anomaly_map: np.ndarray, image_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The prompt learner's inputs of one frame: (map (1, 1, 28, 28), feature (1, len(FEATURE_NAMES))), float32."""
    z = np.nan_to_num(np.asarray(anomaly_map, np.float32), nan=0.0, posinf=50.0, neginf=0.0)
    small = cv2.resize(z, (MAP_SIZE, MAP_SIZE), interpolation=cv2.INTER_AREA)
    squashed = np.tanh(np.maximum(small, 0.0) / Z_SCALE).astype(np.float32)
    grey = cv2.cvtColor(np.ascontiguousarray(image_rgb, np.uint8), cv2.COLOR_RGB2GRAY).astype(np.float32)
    grey = cv2.resize(grey, (z.shape[1], z.shape[0]), interpolation=cv2.INTER_AREA)
    peak = float(z.max(initial=0.0))
    strong = z >= 0.5 * peak if peak > 0 else np.zeros(z.shape, bool)
    inside, outside = grey[strong], grey[~strong]
    if inside.size and outside.size:
        grey_delta = (inside.mean() - outside.mean()) / 64.0
        log_contrast = np.log((inside.std() + 1.0) / (outside.std() + 1.0))
    else:
        grey_delta = log_contrast = 0.0
    feature = np.array([np.tanh(peak / 8.0), np.tanh(np.maximum(z, 0).mean() / 2.0), (z > 3).mean(), (z > 6).mean(),
                        grey_delta, log_contrast, strong.mean()], np.float32)
    return squashed[None, None], feature[None]


class SoftGrounding:
    """The bundle's prompt learner on ONNX Runtime (CPU: a few milliseconds a frame)."""

    def __init__(self, bundle: Bundle) -> None:
        spec = bundle.manifest.prompt_learner
        if spec is None:
            raise GroundingError(f"{bundle.root} has no prompt learner: run `lineguard export prompt-learner "
                                 f"{bundle.root} --normals DIR` (or use llm.grounding: text)")
        llm_entry = bundle.manifest.files.get(bundle.manifest.llm.file) if bundle.manifest.llm else None
        if llm_entry is None or llm_entry.sha256 != spec.llm_sha256:
            raise GroundingError("the bundle's prompt learner was trained against another LLM than the bundle's "
                                 "(a prompt learner is valid only with the exact GGUF it was trained on): "
                                 "rerun `lineguard export prompt-learner`")
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.spec = spec
        self._session = ort.InferenceSession(str(bundle.path(spec.file)), options, providers=["CPUExecutionProvider"])

    def vectors(self, anomaly_map: np.ndarray, image_rgb: np.ndarray) -> np.ndarray:
        """The M soft-prompt vectors of one frame, (M, n_embd) float32."""
        amap, feature = learner_inputs(anomaly_map, image_rgb)
        return self._session.run(None, {"anomaly_map": amap, "feature": feature})[0][0]


class Grounder:
    """A line's grounding choice (``llm.grounding``): which prompt the messages use and, for soft and both,
    the frame's soft-prompt vectors (None for text)."""

    def __init__(self, mode: Grounding = "text", soft: SoftGrounding | None = None) -> None:
        if mode not in GROUNDINGS:
            raise ValueError(f"grounding must be one of {GROUNDINGS}, got {mode!r}")
        if mode != "text" and soft is None:
            raise GroundingError(f"grounding {mode!r} needs the bundle's prompt learner")
        self.mode: Grounding = mode
        self.soft = soft

    @classmethod
    def for_bundle(cls, bundle: Bundle, mode: Grounding) -> Grounder:
        return cls(mode, SoftGrounding(bundle) if mode != "text" else None)

    def vectors(self, anomaly_map: np.ndarray, image_rgb: np.ndarray) -> np.ndarray | None:
        return None if self.soft is None or self.mode == "text" else self.soft.vectors(anomaly_map, image_rgb)
