"""Shared fixtures: one small real bundle per test session (real encoder, real training, real ONNX)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# A short training run: enough to prove the chain, fast enough for CI (about a minute on 2 cores).
TEST_STEPS = 120
TEST_SAMPLES = 128


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import tensorrt  # noqa: F401

        has_gpu = True
    except ImportError:
        has_gpu = False
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU with TensorRT")
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lineguard.export.vision import export_vision

    out = tmp_path_factory.mktemp("bundle") / "default"
    export_vision(out, steps=TEST_STEPS, samples=TEST_SAMPLES, seed=0)
    return out


@pytest.fixture
def bundle_copy(bundle_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the session bundle, free to enrol into or tamper with."""
    copy = tmp_path / "bundle"
    shutil.copytree(bundle_dir, copy)
    return copy


@pytest.fixture(scope="session")
def weave_parts() -> list[np.ndarray]:
    from lineguard.export.textures import texture_variants

    return texture_variants("weave", 16, seed=7)


@pytest.fixture(scope="session")
def enrolled_dir(bundle_dir: Path, weave_parts: list[np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lineguard.runtime.bundle import Bundle
    from lineguard.runtime.enroll import enroll_product

    copy = tmp_path_factory.mktemp("enrolled") / "bundle"
    shutil.copytree(bundle_dir, copy)
    enroll_product(Bundle.open(copy), "weave", weave_parts[:4])
    return copy
