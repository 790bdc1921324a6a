"""GGUF files are checked before a bundle trusts them; ``export llm --gguf`` records them in the manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from lineguard.export.llm import LlmExportError, export_llm  # noqa: E402
from lineguard.runtime.bundle import Bundle, BundleIntegrityError  # noqa: E402
from lineguard.runtime.llm.gguf_model import GgufError, inspect_gguf  # noqa: E402

TEMPLATE = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}<|assistant|>"


def write_tiny_gguf(path: Path, chat_template: str | None = TEMPLATE) -> Path:
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny test model")
    writer.add_context_length(256)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    writer.add_tensor("token_embd.weight", np.zeros((16, 8), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_inspect_reads_the_header(tmp_path: Path) -> None:
    info = inspect_gguf(write_tiny_gguf(tmp_path / "m.gguf"))
    assert (info.architecture, info.name, info.context_length, info.tensors) == ("llama", "tiny test model", 256, 1)
    assert info.quantization == "ALL_F32" and info.chat_template == TEMPLATE


def test_bad_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "x.gguf").write_bytes(b"NOPE" + bytes(100))
    with pytest.raises(GgufError, match="bad magic"):
        inspect_gguf(tmp_path / "x.gguf")
    good = write_tiny_gguf(tmp_path / "m.gguf").read_bytes()
    (tmp_path / "cut.gguf").write_bytes(good[: len(good) - 64])
    with pytest.raises(GgufError, match="truncated|readable"):
        inspect_gguf(tmp_path / "cut.gguf")
    with pytest.raises(GgufError, match="does not exist"):
        inspect_gguf(tmp_path / "missing.gguf")


def test_export_llm_records_and_checksums_the_model(bundle_copy: Path, tmp_path: Path) -> None:
    spec = export_llm(bundle_copy, gguf_file=write_tiny_gguf(tmp_path / "m.gguf"))
    bundle = Bundle.open(bundle_copy)
    assert bundle.manifest.llm == spec and spec.architecture == "llama" and spec.context_length == 256
    assert "llm.gguf" in bundle.manifest.files
    with (bundle_copy / "llm.gguf").open("r+b") as fh:
        fh.seek(-4, 2)
        fh.write(b"\xff\xff\xff\xff")
    with pytest.raises(BundleIntegrityError, match="llm.gguf"):
        Bundle.open(bundle_copy)


def test_a_model_without_chat_template_is_refused(bundle_copy: Path, tmp_path: Path) -> None:
    with pytest.raises(LlmExportError, match="chat_template"):
        export_llm(bundle_copy, gguf_file=write_tiny_gguf(tmp_path / "m.gguf", chat_template=None))
    assert Bundle.open(bundle_copy).manifest.llm is None


def test_the_packaged_model_is_pinned_by_sha256(tmp_path: Path) -> None:
    """Parts that add up to the right size but not the pinned bytes are refused, and nothing is left behind."""
    from lineguard.export.llm import DEFAULT_SHA256, assemble

    parts = [tmp_path / "part1", tmp_path / "part2"]
    parts[0].write_bytes(b"GGUF" + b"\0" * 60)
    parts[1].write_bytes(b"\1" * 64)
    dest = tmp_path / "llm.gguf"
    with pytest.raises(LlmExportError, match="sha256 .* expected " + DEFAULT_SHA256):
        assemble(parts, dest, 128, DEFAULT_SHA256)
    assert not dest.exists() and not dest.with_suffix(".partial").exists()
    import hashlib

    good = hashlib.sha256(parts[0].read_bytes() + parts[1].read_bytes()).hexdigest()
    assemble(parts, dest, 128, good)
    assert dest.read_bytes()[:4] == b"GGUF"
    assert len(DEFAULT_SHA256) == 64 and int(DEFAULT_SHA256, 16) > 0
