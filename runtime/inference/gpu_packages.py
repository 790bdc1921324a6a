"""Which GPU packages belong together: one ONNX Runtime, and the TensorRT its TensorRT EP was built for.

Usage::

    from lineguard.runtime.inference.gpu_packages import GPU_INSTALL_COMMAND, check_gpu_packages, ort_tensorrt_mismatch
    ort_tensorrt_mismatch("1.19.2", "10.3.0")     # None: ORT 1.19 was built with TensorRT 10.2, 10.3 loads it
    ort_tensorrt_mismatch("1.22.0", "10.3.0")     # "onnxruntime 1.22 needs TensorRT >= 10.9 ..."
    python -m lineguard.runtime.inference.gpu_packages      # exit 1 with the reasons (the CUDA images run it at build time)

``onnxruntime`` and ``onnxruntime-gpu`` install into the same ``onnxruntime/`` folder: with both
present, whichever was installed last wins file by file and usually only the CPU provider remains.
pip cannot express "instead of" in an extra, so the GPU build is swapped in by
:data:`GPU_INSTALL_COMMAND` (uninstall both, then install the GPU build alone).

ONNX Runtime's TensorRT EP links one TensorRT major and needs at least the minor it was built with
(table from ONNX Runtime's TensorRT EP requirements). No imports beyond the standard library.
"""

from __future__ import annotations

import sys
from importlib import metadata

# ONNX Runtime (major, minor) -> TensorRT (major, minor) its GPU packages are built with.
ORT_TENSORRT: dict[tuple[int, int], tuple[int, int]] = {
    (1, 17): (8, 6), (1, 18): (10, 0), (1, 19): (10, 2), (1, 20): (10, 4), (1, 21): (10, 8), (1, 22): (10, 9),
}
# The ONNX Runtime GPU build that goes with TensorRT 10.3 (JetPack 6.1, NGC tensorrt:24.08): built
# with TensorRT 10.2 and CUDA 12, cuDNN 9.
ORT_GPU_REQUIREMENT = "onnxruntime-gpu==1.19.*"
GPU_INSTALL_COMMAND = (f"pip install 'lineguard[gpu]' && pip uninstall --yes onnxruntime onnxruntime-gpu "
                       f"&& pip install '{ORT_GPU_REQUIREMENT}'")
ORT_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu")


def _major_minor(version: str) -> tuple[int, int]:
    parts = (version.split("+")[0].split(".") + ["0"])[:2]
    digits = ["".join(c for c in p if c.isdigit()) or "0" for p in parts]
    return int(digits[0]), int(digits[1])


def ort_tensorrt_mismatch(ort_version: str, tensorrt_version: str) -> str | None:
    """Why ONNX Runtime's TensorRT EP cannot use this TensorRT, or None when it can (or the pairing is
    unknown: a newer ONNX Runtime than this table, which is then trusted)."""
    ort = _major_minor(ort_version)
    needed = ORT_TENSORRT.get(ort)
    if needed is None:
        return None
    have = _major_minor(tensorrt_version)
    if have[0] != needed[0] or have < needed:
        return (f"onnxruntime {ort[0]}.{ort[1]} needs TensorRT >= {needed[0]}.{needed[1]} (same major) for its "
                f"TensorRT EP, this machine has TensorRT {tensorrt_version}")
    return None


def installed_onnxruntimes() -> dict[str, str]:
    """Installed ONNX Runtime distributions -> version (more than one is a broken install)."""
    found = {}
    for name in ORT_DISTRIBUTIONS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def installed_tensorrt_version() -> str | None:
    """TensorRT's version from package metadata (pip wheels, JetPack's python3-libnvinfer), without
    importing it; None where no distribution says."""
    for name in ("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt-libs", "tensorrt-cu12-libs"):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def onnxruntime_conflict(installed: dict[str, str] | None = None) -> str | None:
    """Why this install's ONNX Runtime is broken, with the command that fixes it; None when it is not."""
    installed = installed_onnxruntimes() if installed is None else installed
    if len(installed) > 1:
        both = ", ".join(f"{n} {v}" for n, v in installed.items())
        return (f"both {both} are installed; they overwrite each other's files (only the CPU provider may "
                f"remain). Keep one: {GPU_INSTALL_COMMAND}")
    return None


def check_gpu_packages(installed: dict[str, str] | None = None, tensorrt_version: str | None = None) -> list[str]:
    """Every problem of this GPU install (an empty list: one ONNX Runtime, GPU build, matching TensorRT)."""
    installed = installed_onnxruntimes() if installed is None else installed
    problems = [p for p in [onnxruntime_conflict(installed)] if p]
    if "onnxruntime-gpu" not in installed:
        problems.append(f"onnxruntime-gpu is not installed: {GPU_INSTALL_COMMAND}")
    elif tensorrt_version is not None:
        why = ort_tensorrt_mismatch(installed["onnxruntime-gpu"], tensorrt_version)
        if why:
            problems.append(why)
    return problems


def main() -> int:
    try:
        import tensorrt

        trt_version: str | None = str(tensorrt.__version__)
    except ImportError:
        trt_version = None
    problems = check_gpu_packages(tensorrt_version=trt_version)
    for problem in problems:
        print(f"lineguard: gpu packages: {problem}", file=sys.stderr)
    if not problems:
        print(f"lineguard: gpu packages ok: {installed_onnxruntimes()}, TensorRT {trt_version or 'absent'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
