"""The ``model.py`` of a Triton Python-backend model that runs one of the bundle's ONNX graphs with ONNX
Runtime (``lineguard export triton --format python``): for a Triton server without the ONNX Runtime
backend (e.g. the one inside ``nvidia-pytriton``), or to run lineguard's exact ONNX Runtime build there.

Usage::

    from lineguard.export.triton_python_model import write_python_model
    write_python_model(Path("repo/lineguard_x_encoder/1"), python_path=["/opt/venv/lib/python3.11/site-packages"])

The written model reads ``model.onnx`` beside it, concatenates the requests Triton's dynamic batcher
hands it into one batch, runs it once, and splits the outputs back per request. ``python_path.txt``
(one folder a line) is put in front of ``sys.path`` before anything is imported: how a server whose
Python lacks numpy/onnxruntime finds them (Triton's ``EXECUTION_ENV_PATH`` is the other way).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

MODEL_PY = '''"""Triton Python backend: one ONNX graph on ONNX Runtime (written by lineguard export triton --format python)."""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
_PATHS = os.path.join(_HERE, "python_path.txt")
if os.path.isfile(_PATHS):
    with open(_PATHS) as _fh:
        sys.path[:0] = [line.strip() for line in _fh if line.strip()]

import json  # noqa: E402

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        threads = int(config.get("parameters", {}).get("intra_op_threads", {}).get("string_value", "0") or 0)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(os.path.join(_HERE, "model.onnx"), options,
                                            providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def execute(self, requests):
        arrays = [[pb_utils.get_input_tensor_by_name(r, name).as_numpy() for name in self.inputs] for r in requests]
        sizes = [len(a[0]) for a in arrays]
        feed = {name: np.ascontiguousarray(np.concatenate([a[i] for a in arrays])) for i, name in enumerate(self.inputs)}
        results = self.session.run(self.outputs, feed)
        responses, start = [], 0
        for size in sizes:
            tensors = [pb_utils.Tensor(name, np.ascontiguousarray(value[start : start + size]))
                       for name, value in zip(self.outputs, results)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += size
        return responses
'''


def write_python_model(version_dir: Path, python_path: Sequence[str] = ()) -> Path:
    """Write ``model.py`` (and ``python_path.txt`` when given) into a model's version folder."""
    version_dir.mkdir(parents=True, exist_ok=True)
    path = version_dir / "model.py"
    path.write_text(MODEL_PY)
    if python_path:
        (version_dir / "python_path.txt").write_text("".join(f"{p}\n" for p in python_path))
    return path
