"""Inference backends: one class per engine behind the same ``run(inputs) -> outputs``.

Usage::

    backend = OnnxRuntimeBackend(bundle.path("encoder.onnx"))
    outputs = backend.run({"image": batch})           # dict name -> np.ndarray
    backend.providers                                   # e.g. ['CPUExecutionProvider']

ONNX Runtime takes the TensorRT EP, then the CUDA EP, then the CPU EP, whichever this install has.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

log = logging.getLogger(__name__)

PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def select_providers(available: list[str] | None = None) -> list[str]:
    """The preferred providers this onnxruntime build offers, best first; CPU is always last."""
    available = ort.get_available_providers() if available is None else available
    chosen = [p for p in PREFERRED_PROVIDERS if p in available]
    return chosen or ["CPUExecutionProvider"]


class OnnxRuntimeBackend:
    """One ONNX model in one ONNX Runtime session."""

    def __init__(self, model_path: Path, providers: list[str] | None = None, threads: int | None = None) -> None:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads is None:
            threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # No busy-waiting after a run: the scoring that follows (numpy/BLAS) needs those cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.providers = providers or select_providers()
        self.session = ort.InferenceSession(str(model_path), sess_options=options, providers=self.providers)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        log.info("loaded %s on %s", Path(model_path).name, self.session.get_providers())

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self.session.run(self.output_names, inputs)
        return dict(zip(self.output_names, values, strict=True))
