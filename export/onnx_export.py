"""PyTorch -> ONNX with a dynamic batch axis, and parity of the ONNX graph against PyTorch.

Usage::

    export_onnx(encoder, (example,), path, ["image"], ["s1", "s2", "s3", "s4"])
    diff = onnx_parity(encoder, path, {"image": sample})    # max abs diff over outputs
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

OPSET = 17


def export_onnx(module: torch.nn.Module, example: tuple[torch.Tensor, ...], path: Path,
                input_names: list[str], output_names: list[str]) -> None:
    dynamic = {name: {0: "batch"} for name in [*input_names, *output_names]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The TorchScript exporter: stable dynamic_axes for these plain conv graphs, no onnxscript rewrite.
        torch.onnx.export(module.eval(), example, str(path), input_names=input_names, output_names=output_names,
                          opset_version=OPSET, dynamic_axes=dynamic, dynamo=False)
    onnx.checker.check_model(onnx.load(str(path)))


def onnx_parity(module: torch.nn.Module, path: Path, inputs: dict[str, np.ndarray]) -> float:
    """Max abs difference between ONNX Runtime (CPU) and PyTorch outputs on the same inputs."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ort_out = session.run(None, inputs)
    with torch.no_grad():
        ref = module(*(torch.from_numpy(v) for v in inputs.values()))
    ref = ref if isinstance(ref, tuple) else (ref,)
    return max(float(np.abs(o - r.numpy()).max()) for o, r in zip(ort_out, ref, strict=True))
