"""What a GGUF file is, read from its header with the ``gguf`` library, before anything loads it.

Usage::

    info = inspect_gguf("bundles/default/llm.gguf")
    info.architecture, info.quantization, info.context_length, bool(info.chat_template)

Refuses a file that is not GGUF (magic), is truncated, or lacks the metadata a chat model needs.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel

GGUF_MAGIC = b"GGUF"


class GgufError(ValueError):
    """Not a usable GGUF chat model; the message says what is wrong."""


class GgufInfo(BaseModel):
    architecture: str
    name: str
    quantization: str
    context_length: int
    chat_template: str
    size: int
    tensors: int


def _field(reader, key: str):
    field = reader.get_field(key)
    return None if field is None else field.contents()


def inspect_gguf(path: str | os.PathLike[str]) -> GgufInfo:
    import gguf  # the [llm] extra; only needed where an LLM is used

    path = Path(path)
    if not path.is_file():
        raise GgufError(f"{path} does not exist")
    with path.open("rb") as fh:
        if fh.read(4) != GGUF_MAGIC:
            raise GgufError(f"{path} is not a GGUF file (bad magic)")
    try:
        reader = gguf.GGUFReader(str(path))
    except (ValueError, IndexError, OSError) as exc:  # truncated or corrupt header/tensor table
        raise GgufError(f"{path} is not a readable GGUF file: {exc}") from exc
    architecture = _field(reader, gguf.Keys.General.ARCHITECTURE)
    if not architecture:
        raise GgufError(f"{path} has no general.architecture")
    context = _field(reader, gguf.Keys.LLM.CONTEXT_LENGTH.format(arch=architecture))
    if not context:
        raise GgufError(f"{path} has no {architecture}.context_length")
    template = _field(reader, gguf.Keys.Tokenizer.CHAT_TEMPLATE) or ""
    file_type = _field(reader, gguf.Keys.General.FILE_TYPE)
    try:
        quantization = gguf.LlamaFileType(int(file_type)).name.removeprefix("MOSTLY_") if file_type is not None else "unknown"
    except ValueError:
        quantization = f"file_type {file_type}"
    # every tensor's data must lie inside the file: catches a partial copy
    end = max((t.data_offset + t.n_bytes for t in reader.tensors), default=0)
    size = path.stat().st_size
    if end > size:
        raise GgufError(f"{path} is truncated: tensor data ends at {end}, file is {size} bytes")
    return GgufInfo(architecture=str(architecture), name=str(_field(reader, gguf.Keys.General.NAME) or path.stem),
                    quantization=quantization, context_length=int(context), chat_template=str(template),
                    size=size, tensors=len(reader.tensors))
