"""The GPU install and build settings that bite on a first real run, checked without a GPU: one ONNX
Runtime, ONNX Runtime's TensorRT EP only with the TensorRT it was built for, the system's CUDA version
(not cuda-python's bundled runtime), FP32 engines without TF32, INT8 calibration caches tied to their
ONNX graph, the TensorRT EP's engine cache folder created with its parents, pinned images."""

from __future__ import annotations

import ctypes
import types
from pathlib import Path

import pytest

from lineguard.export.tensorrt_engines import CalibrationCache, EngineSpec, configure_precision
from lineguard.runtime.inference.cuda_runtime import system_cudart_version
from lineguard.runtime.inference.gpu_packages import (
    GPU_INSTALL_COMMAND,
    check_gpu_packages,
    onnxruntime_conflict,
    ort_tensorrt_mismatch,
)
from lineguard.runtime.inference.selection import onnxruntime_provider_options, usable_onnxruntime_providers

ROOT = Path(__file__).resolve().parents[1]


def test_both_onnxruntimes_installed_is_reported_with_a_working_fix() -> None:
    problem = onnxruntime_conflict({"onnxruntime": "1.20.1", "onnxruntime-gpu": "1.19.2"})
    assert problem is not None and "onnxruntime 1.20.1, onnxruntime-gpu 1.19.2" in problem
    assert GPU_INSTALL_COMMAND in problem
    # the fix removes both before installing the GPU build alone (uninstalling one of two would
    # delete files the other needs: they share the onnxruntime/ folder)
    assert "pip uninstall --yes onnxruntime onnxruntime-gpu && pip install 'onnxruntime-gpu==" in GPU_INSTALL_COMMAND
    assert onnxruntime_conflict({"onnxruntime-gpu": "1.19.2"}) is None
    assert onnxruntime_conflict({"onnxruntime": "1.20.1"}) is None


def test_gpu_check_wants_the_gpu_build_for_this_tensorrt() -> None:
    assert check_gpu_packages({"onnxruntime-gpu": "1.19.2"}, "10.3.0") == []
    assert any("not installed" in p for p in check_gpu_packages({"onnxruntime": "1.20.1"}, "10.3.0"))
    assert any("TensorRT >= 10.9" in p for p in check_gpu_packages({"onnxruntime-gpu": "1.22.0"}, "10.3.0"))


@pytest.mark.parametrize("ort, trt, ok", [
    ("1.19.2", "10.3.0", True),     # built with 10.2, 10.3 is newer within the major: loads
    ("1.20.1", "10.3.0", False),    # built with 10.4
    ("1.18.0", "8.6.1", False),     # another major
    ("1.17.3", "8.6.1", True),
    ("1.99.0", "10.3.0", True),     # newer than the table: trusted
])
def test_onnxruntime_tensorrt_pairs(ort: str, trt: str, ok: bool) -> None:
    assert (ort_tensorrt_mismatch(ort, trt) is None) is ok


def test_tensorrt_ep_left_out_when_its_tensorrt_does_not_match() -> None:
    gpu = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
    assert usable_onnxruntime_providers(gpu, "1.22.0", "10.3.0") == gpu[1:]
    assert usable_onnxruntime_providers(gpu, "1.19.2", "10.3.0") == gpu
    assert usable_onnxruntime_providers(gpu, "1.22.0", None) == gpu  # libraries may be there without bindings


def test_tensorrt_ep_engine_cache_is_created_with_its_parents(tmp_path: Path) -> None:
    cache = tmp_path / "home" / ".cache" / "lineguard" / "ort-tensorrt" / "bundle-1"
    onnxruntime_provider_options(["TensorrtExecutionProvider", "CPUExecutionProvider"], cache)
    assert cache.is_dir()


def test_system_cuda_version_comes_from_the_system_library() -> None:
    """Not cuda-python's ``cudaRuntimeGetVersion`` (its own static runtime): the system's libcudart."""
    def loader(name: str):
        if name != "libcudart.so.12":
            raise OSError(f"{name}: cannot open shared object file")

        def get_version(ref) -> int:
            ref._obj.value = 12060
            return 0

        return types.SimpleNamespace(cudaRuntimeGetVersion=get_version)

    assert system_cudart_version(loader) == "12.6"
    assert system_cudart_version(lambda name: (_ for _ in ()).throw(OSError(name))) is None
    assert system_cudart_version(ctypes.CDLL, names=("liblineguard-no-such-cudart.so",)) is None


class FakeConfig:
    def __init__(self) -> None:
        self.flags = {"TF32"}  # TensorRT's default
        self.int8_calibrator = None

    def set_memory_pool_limit(self, pool: str, size: int) -> None:
        self.workspace = size

    def set_flag(self, flag: str) -> None:
        self.flags.add(flag)

    def clear_flag(self, flag: str) -> None:
        self.flags.discard(flag)


FAKE_TRT = types.SimpleNamespace(BuilderFlag=types.SimpleNamespace(TF32="TF32", FP16="FP16", INT8="INT8"),
                                 MemoryPoolType=types.SimpleNamespace(WORKSPACE="workspace"), __version__="10.3.0")


def test_fp32_engines_are_built_without_tf32() -> None:
    config = FakeConfig()
    configure_precision(FAKE_TRT, config, EngineSpec("fp32"))
    assert config.flags == set()  # full FP32: TF32 would cost ~1e-2 relative error on Ampere/Orin
    config = FakeConfig()
    configure_precision(FAKE_TRT, config, EngineSpec("fp16"))
    assert config.flags == {"TF32", "FP16"}


def test_int8_calibration_cache_is_reused_only_for_its_graph(tmp_path: Path) -> None:
    path = tmp_path / "encoder.int8.calib"
    CalibrationCache(path, "a" * 64, "10.3.0").write(b"TRT-10300-EntropyCalibration2\nimage: 3c010a14\n")
    assert CalibrationCache(path, "a" * 64, "10.3.0").read() is not None
    assert CalibrationCache(path, "b" * 64, "10.3.0").read() is None   # the ONNX changed: calibrate afresh
    assert CalibrationCache(path, "a" * 64, "10.4.0").read() is None   # another TensorRT
    (tmp_path / "encoder.int8.calib.json").unlink()
    assert CalibrationCache(path, "a" * 64, "10.3.0").read() is None   # an old cache with no record


def test_images_pin_cuda_python_and_keep_one_onnxruntime() -> None:
    cuda = (ROOT / "deploy" / "Dockerfile.cuda").read_text()
    jetson = (ROOT / "deploy" / "Dockerfile.jetson").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert "ARG CUDA_PYTHON_VERSION=12.6.*" in cuda and "ARG CUDA_PYTHON_VERSION=12.6.*" in jetson
    assert '"cuda-python==${CUDA_PYTHON_VERSION}"' in cuda and '"cuda-python==${CUDA_PYTHON_VERSION}"' in jetson
    assert "pip uninstall --yes onnxruntime onnxruntime-gpu" in cuda
    assert "python -m lineguard.runtime.inference.gpu_packages" in cuda  # the build fails on a wrong pairing
    gpu_extra = next(line for line in pyproject.splitlines() if line.startswith("gpu = "))
    assert '"cuda-python==12.6.*"' in gpu_extra and "onnxruntime" not in gpu_extra


def test_tensorrt_version_from_metadata_without_importing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib import metadata

    from lineguard.runtime.inference import gpu_packages

    versions = {"tensorrt-cu12": "10.3.0"}

    def version(name: str) -> str:
        if name not in versions:
            raise metadata.PackageNotFoundError(name)
        return versions[name]

    monkeypatch.setattr(gpu_packages.metadata, "version", version)
    assert gpu_packages.installed_tensorrt_version() == "10.3.0"
    versions.clear()
    assert gpu_packages.installed_tensorrt_version() is None
