"""Convert a Hugging Face causal-LM folder to GGUF, and quantise GGUF files with llama.cpp.

Usage::

    convert_hf_to_gguf("/models/qwen2.5-0.5b-instruct", "out/model.f16.gguf", outtype="f16")
    quantize("out/model.f16.gguf", "out/model.Q4_K_M.gguf", "Q4_K_M")

Everything GGUF-specific comes from the ``gguf`` library: the writer (``gguf.GGUFWriter``), the
architecture enum and key names, the HF -> GGUF tensor-name map (``gguf.get_tensor_name_map``) and
``gguf.SpecialVocab`` for merges, special-token ids and the chat template. The conversion follows the
facts of llama.cpp's ``convert_hf_to_gguf.py`` for the two supported families:

* ``LlamaForCausalLM`` (arch ``llama``): HF stores q/k projections in the half-split ("NEOX") rotary
  layout; llama.cpp's llama graph uses the interleaved ("NORM") layout, so the rows of ``q_proj`` and
  ``k_proj`` are permuted per head exactly like ``LlamaModel.permute``.
* ``Qwen2ForCausalLM`` (arch ``qwen2``): llama.cpp runs qwen2 with NEOX rope, no permutation; q/k/v
  carry biases.

Two tokenizer families are converted:

* byte-level BPE ("gpt2"-style, Qwen2 / Llama-3): ``tokenizer.ggml.model = "gpt2"`` + merges +
  ``tokenizer.ggml.pre``, as ``_set_vocab_gpt2``;
* SentencePiece (Llama-1/2, Vicuna, Mistral-v0.1 style): ``tokenizer.ggml.model = "llama"`` with
  per-token scores and types, as ``_set_vocab_sentencepiece``. From ``tokenizer.model`` (preferred, as
  llama.cpp does; parsed with the protobuf schema shipped in ``transformers``, no ``sentencepiece``
  package needed) or from the HF fast form ``tokenizer.json`` ("\u2581" pieces, Metaspace/Prepend,
  ``<0xNN>`` byte-fallback tokens, BPE model; Unigram raises ``LlmExportError``). For a BPE ``tokenizer.json`` the scores are
  rebuilt from the merge ranks (score = -rank), which is what a SentencePiece BPE model stores and what
  llama.cpp's SPM tokenizer needs to merge in the same order (``gguf.LlamaHfVocab`` writes -1000 for
  every token, which makes llama.cpp merge in the wrong order, so it is not used).
"""

from __future__ import annotations

import ctypes
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from lineguard.export.gguf_vocab import (
    is_sentencepiece,
    read_llama_vocab,
    tokenizer_pre_name,
    write_llama_vocab,
    write_vocab,
)
from lineguard.export.llm import LlmExportError

SUPPORTED = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}
OUTTYPES = ("f32", "f16")
QUANT_TYPES = ("Q8_0", "Q4_K_M", "Q5_K_M")

def _gguf():
    try:
        import gguf
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise LlmExportError("converting to GGUF needs the 'gguf' package: pip install gguf") from exc
    return gguf


def permute_rope(weights: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """HF half-split rotary rows -> llama.cpp interleaved rows (``LlamaModel.permute``).

    Within each head the HF rows are ``[x0..x(d/2-1), y0..y(d/2-1)]``; llama.cpp wants
    ``[x0, y0, x1, y1, ...]``. For k_proj the head count is the kv head count.
    """
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2)
            .reshape(weights.shape))


def _load_config(model_dir: Path) -> dict:
    path = model_dir / "config.json"
    if not path.is_file():
        raise LlmExportError(f"{model_dir} has no config.json: not a Hugging Face model folder")
    return json.loads(path.read_text(encoding="utf-8"))


def _architecture(config: dict) -> tuple[str, str]:
    archs = config.get("architectures") or []
    for hf_arch in archs:
        if hf_arch in SUPPORTED:
            return hf_arch, SUPPORTED[hf_arch]
    found = ", ".join(archs) or f"model_type={config.get('model_type')!r}"
    raise LlmExportError(
        f"cannot convert {found} to GGUF: supported architectures are {', '.join(SUPPORTED)} "
        f"(GGUF archs {', '.join(SUPPORTED.values())})")


def _iter_tensors(model_dir: Path) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (HF name, float32 array) from safetensors (single or sharded) or pytorch_model*.bin."""
    import torch

    st_files = sorted(model_dir.glob("*.safetensors"))
    if st_files:
        from safetensors import safe_open
        for file in st_files:
            with safe_open(str(file), framework="pt") as f:
                for name in f.keys():  # noqa: SIM118 - safe_open is not a dict
                    yield name, f.get_tensor(name).to(torch.float32).numpy()
        return
    bin_files = sorted(model_dir.glob("pytorch_model*.bin"))
    if not bin_files:
        raise LlmExportError(f"{model_dir} has no *.safetensors or pytorch_model*.bin weights")
    for file in bin_files:
        state = torch.load(str(file), map_location="cpu", weights_only=True)
        for name, tensor in state.items():
            yield name, tensor.to(torch.float32).numpy()


def _rope_theta(config: dict) -> float | None:
    if config.get("rope_theta") is not None:
        return float(config["rope_theta"])
    params = config.get("rope_parameters") or {}
    if isinstance(params, dict) and params.get("rope_theta") is not None:
        return float(params["rope_theta"])
    return None


def _rope_scaling(config: dict, writer, gguf) -> None:
    scaling = config.get("rope_scaling") or config.get("rope_parameters") or {}
    kind = scaling.get("rope_type") or scaling.get("type") or "default"
    if kind == "default":
        return
    if kind == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(scaling["factor"]))
        return
    if kind == "yarn":
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(float(scaling["factor"]))
        writer.add_rope_scaling_orig_ctx_len(int(scaling["original_max_position_embeddings"]))
        return
    raise LlmExportError(f"rope scaling {kind!r} is not supported by this converter (default, linear, yarn)")


def convert_hf_to_gguf(model_dir: str | Path, out_file: str | Path, outtype: str = "f16",
                       tokenizer_pre: str | None = None, name: str | None = None) -> Path:
    """Write ``out_file`` (GGUF, F32 or F16 weights) from a Hugging Face causal-LM folder.

    The tokenizer kind is detected (SentencePiece -> ``"llama"``, byte-level BPE -> ``"gpt2"``);
    passing ``tokenizer_pre`` forces the byte-level BPE path with that pre-tokenizer name.
    """
    gguf = _gguf()
    model_dir, out_file = Path(model_dir), Path(out_file)
    if outtype not in OUTTYPES:
        raise LlmExportError(f"outtype must be one of {', '.join(OUTTYPES)}, not {outtype!r}")
    config = _load_config(model_dir)
    hf_arch, arch_name = _architecture(config)
    model_arch = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch_name)
    spm = tokenizer_pre is None and is_sentencepiece(model_dir)
    pre = None if spm else tokenizer_pre or tokenizer_pre_name(model_dir, arch_name)
    vocab_size = int(config["vocab_size"])
    spm_vocab = read_llama_vocab(gguf, model_dir, vocab_size) if spm else None  # fail before writing

    n_embd = int(config["hidden_size"])
    n_layer = int(config["num_hidden_layers"])
    n_head = int(config["num_attention_heads"])
    n_head_kv = int(config.get("num_key_value_heads") or n_head)
    head_dim = int(config.get("head_dim") or n_embd // n_head)

    writer = gguf.GGUFWriter(str(out_file), arch_name)
    writer.add_name(name or config.get("_name_or_path") or model_dir.name)
    writer.add_context_length(int(config.get("max_position_embeddings") or 2048))
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_rope_dimension_count(head_dim)
    if head_dim != n_embd // n_head:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    theta = _rope_theta(config)
    if theta is not None:
        writer.add_rope_freq_base(theta)
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    writer.add_vocab_size(vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if outtype == "f32" else gguf.LlamaFileType.MOSTLY_F16)
    _rope_scaling(config, writer, gguf)
    if spm:
        write_llama_vocab(writer, gguf, model_dir, spm_vocab)
    else:
        write_vocab(writer, gguf, model_dir, vocab_size, pre)

    name_map = gguf.get_tensor_name_map(model_arch, n_layer)
    written = set()
    for hf_name, data in _iter_tensors(model_dir):
        if hf_name.endswith((".rotary_emb.inv_freq", ".attention.masked_bias", ".attention.bias")):
            continue
        if hf_arch == "LlamaForCausalLM":
            if hf_name.endswith("q_proj.weight"):
                data = permute_rope(data, n_head, n_head)
            elif hf_name.endswith("k_proj.weight"):
                data = permute_rope(data, n_head, n_head_kv)
        new_name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if new_name is None:
            writer.close()
            out_file.unlink(missing_ok=True)
            raise LlmExportError(f"cannot map tensor {hf_name!r} to a GGUF name for arch {arch_name}")
        # llama.cpp keeps 1-D tensors (norms, biases) in F32; matrices follow outtype
        dtype = np.float16 if outtype == "f16" and data.ndim > 1 else np.float32
        data = data.astype(dtype)
        writer.add_tensor(new_name, np.ascontiguousarray(data))
        written.add(new_name)
    if "token_embd.weight" not in written:
        writer.close()
        out_file.unlink(missing_ok=True)
        raise LlmExportError(f"{model_dir}: no token embedding tensor found")
    # tied embeddings: no output.weight, llama.cpp falls back to token_embd

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out_file


def quantize(src: str | Path, dst: str | Path, qtype: str = "Q4_K_M") -> Path:
    """Quantise a GGUF file with llama.cpp's quantizer (via llama-cpp-python)."""
    try:
        import llama_cpp
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise LlmExportError("quantising needs llama-cpp-python: pip install llama-cpp-python") from exc
    if qtype not in QUANT_TYPES:
        raise LlmExportError(f"qtype must be one of {', '.join(QUANT_TYPES)}, not {qtype!r}")
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise LlmExportError(f"{src} does not exist")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{qtype}")
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0 or not dst.is_file():
        dst.unlink(missing_ok=True)
        raise LlmExportError(f"llama.cpp failed to quantise {src} to {qtype} (return code {rc})")
    return dst
