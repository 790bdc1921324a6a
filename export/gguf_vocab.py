"""Tokenizer -> GGUF vocabulary, following the rules of llama.cpp's ``convert_hf_to_gguf.py``.

Usage::

    if is_sentencepiece(model_dir):
        write_llama_vocab(writer, gguf, model_dir, read_llama_vocab(gguf, model_dir, vocab_size))
    else:
        write_vocab(writer, gguf, model_dir, vocab_size, tokenizer_pre_name(model_dir, "qwen2"))

Byte-level BPE ("gpt2": Qwen2, Llama-3) and SentencePiece BPE ("llama": Llama-1/2, Vicuna) are
converted; see :mod:`lineguard.export.hf_to_gguf` for the weights.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from lineguard.export.llm import LlmExportError

# Pre-tokenizer regexes (from tokenizer.json ``Split`` patterns) -> llama.cpp ``tokenizer.ggml.pre``.
_QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_KNOWN_PRE_REGEX = {_QWEN2_REGEX: "qwen2", _LLAMA3_REGEX: "llama-bpe"}


def tokenizer_pre_name(model_dir: Path, arch: str) -> str:
    """Pick llama.cpp's pre-tokenizer name from the tokenizer.json pre_tokenizer."""
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        raise LlmExportError(f"{model_dir} has no tokenizer.json: only byte-level BPE and SentencePiece "
                             "(tokenizer.model / Llama-style tokenizer.json) tokenizers are converted")
    spec = json.loads(path.read_text(encoding="utf-8"))
    if (spec.get("model") or {}).get("type") != "BPE":
        raise LlmExportError(f"{model_dir}: tokenizer is {(spec.get('model') or {}).get('type')}, "
                             "only byte-level BPE (gpt2-style) and SentencePiece-style tokenizers are converted")
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    for step in steps:
        if step.get("type") == "Split":
            regex = (step.get("pattern") or {}).get("Regex")
            if regex in _KNOWN_PRE_REGEX:
                return _KNOWN_PRE_REGEX[regex]
        if step.get("type") == "ByteLevel" and step.get("use_regex", True) and len(steps) == 1:
            return "gpt-2"  # ByteLevel with its built-in regex is exactly GPT-2's pre-tokenizer
    if not any(step.get("type") == "ByteLevel" for step in steps):
        raise LlmExportError(f"{model_dir}: tokenizer is BPE but not byte-level; only gpt2-style BPE is converted")
    raise LlmExportError(f"{model_dir}: unrecognised BPE pre-tokenizer; pass tokenizer_pre= "
                         f"(a name llama.cpp knows, e.g. 'qwen2', 'llama-bpe', 'gpt-2')")


_SPM_SPACE = "\u2581"
_BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")
_UNIGRAM_MSG = ("SentencePiece Unigram vocabularies are not converted: llama.cpp's 'llama' tokenizer merges "
                "pairs by score (SentencePiece BPE, as Llama-1/2 / Vicuna use) and cannot reproduce Unigram "
                "segmentation")


def _load_tokenizer_json(model_dir: Path) -> dict | None:
    path = model_dir / "tokenizer.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _steps(node: dict | None, key: str) -> list[dict]:
    node = node or {}
    if node.get("type") == "Sequence":
        return list(node.get(key) or [])
    return [node] if node else []


def _sentencepiece_proto():
    """``ModelProto`` class for tokenizer.model, from transformers' bundled schema (no sentencepiece needed)."""
    try:
        from transformers.utils import sentencepiece_model_pb2_new as pb2
    except Exception:  # noqa: BLE001 - old transformers / protobuf mismatch
        try:
            from transformers.utils import sentencepiece_model_pb2 as pb2
        except Exception:  # noqa: BLE001
            return None
    return pb2.ModelProto


def is_sentencepiece(model_dir: Path) -> bool:
    """True for a Llama-1/2 style SentencePiece vocabulary (tokenizer.model, or its HF fast form)."""
    spec = _load_tokenizer_json(model_dir)
    if spec is None:
        return (model_dir / "tokenizer.model").is_file()
    model = spec.get("model") or {}
    pre = _steps(spec.get("pre_tokenizer"), "pretokenizers")
    norm = _steps(spec.get("normalizer"), "normalizers")
    if any(step.get("type") == "ByteLevel" for step in pre):
        return False
    if model.get("type") == "Unigram":
        return True
    metaspace = any(step.get("type") == "Metaspace" for step in pre)
    prepend = any(step.get("type") in ("Prepend", "Replace") and _SPM_SPACE in json.dumps(step, ensure_ascii=False)
                  for step in norm)
    return model.get("type") == "BPE" and (bool(model.get("byte_fallback")) or metaspace or prepend)


def _add_space_prefix_from_json(spec: dict) -> bool:
    for step in _steps(spec.get("normalizer"), "normalizers"):
        if step.get("type") == "Prepend" and step.get("prepend") == _SPM_SPACE:
            return True
    for step in _steps(spec.get("pre_tokenizer"), "pretokenizers"):
        if step.get("type") == "Metaspace":
            scheme = step.get("prepend_scheme")
            if scheme is not None:
                return scheme in ("first", "always")
            return bool(step.get("add_prefix_space", True))
    return False


def _spm_vocab_from_model_file(path: Path, gguf) -> tuple[list[str], list[float], list[int], bool] | None:
    """Pieces / scores / types of tokenizer.model, with the type rules of ``_set_vocab_sentencepiece``."""
    proto_cls = _sentencepiece_proto()
    if proto_cls is None:
        return None
    proto = proto_cls()
    proto.ParseFromString(path.read_bytes())
    if proto.trainer_spec.HasField("model_type") and proto.trainer_spec.model_type == 1:
        raise LlmExportError(_UNIGRAM_MSG)
    kinds = {2: gguf.TokenType.UNKNOWN, 3: gguf.TokenType.CONTROL, 5: gguf.TokenType.UNUSED,
             6: gguf.TokenType.BYTE}  # USER_DEFINED pieces are NORMAL there, as in llama.cpp
    tokens = [p.piece for p in proto.pieces]
    scores = [float(p.score) for p in proto.pieces]
    types = [int(kinds.get(p.type, gguf.TokenType.NORMAL)) for p in proto.pieces]
    add_prefix = bool(proto.normalizer_spec.add_dummy_prefix) if proto.HasField("normalizer_spec") else True
    return tokens, scores, types, add_prefix


def _spm_vocab_from_json(spec: dict, gguf) -> tuple[list[str], list[float], list[int], bool]:
    """Pieces / scores / types rebuilt from a Llama-style tokenizer.json (BPE+byte_fallback or Unigram)."""
    model = spec["model"]
    if model.get("type") == "Unigram":
        raise LlmExportError(_UNIGRAM_MSG)
    if model.get("type") == "BPE":
        by_id = {i: tok for tok, i in model["vocab"].items()}
        if sorted(by_id) != list(range(len(by_id))):
            raise LlmExportError("tokenizer.json BPE vocab ids are not contiguous")
        rank: dict[str, int] = {}
        for r, merge in enumerate(model.get("merges") or []):
            left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
            rank.setdefault(left + right, r)
        n_merges = len(rank)
        pieces = []
        for i in range(len(by_id)):
            tok = by_id[i]
            if tok in rank:
                score = -float(rank[tok])  # SentencePiece BPE: higher score merges first
            elif len(tok) > 1 and not _BYTE_TOKEN.fullmatch(tok):
                score = -float(n_merges + i)  # multi-char piece with no merge: lowest priority
            else:
                score = 0.0  # single characters and byte tokens are never the result of a merge
            pieces.append((tok, score))
        unk = model.get("unk_token")
    else:
        raise LlmExportError(f"tokenizer.json model {model.get('type')!r} is not a SentencePiece-style vocabulary")
    tokens = [tok for tok, _ in pieces]
    scores = [score for _, score in pieces]
    types = [int(gguf.TokenType.BYTE if _BYTE_TOKEN.fullmatch(tok) else
                 gguf.TokenType.UNKNOWN if tok == unk else gguf.TokenType.NORMAL) for tok in tokens]
    return tokens, scores, types, _add_space_prefix_from_json(spec)


def read_llama_vocab(gguf, model_dir: Path, vocab_size: int) -> tuple[list[str], list[float], list[int], bool]:
    """Tokens, scores, types, add_space_prefix as convert_hf_to_gguf's ``_set_vocab_sentencepiece``."""
    spec = _load_tokenizer_json(model_dir)
    result = None
    if (model_dir / "tokenizer.model").is_file():
        result = _spm_vocab_from_model_file(model_dir / "tokenizer.model", gguf)
    if result is None:
        if spec is None:
            raise LlmExportError(f"{model_dir}: tokenizer.model could not be read (needs protobuf and transformers' "
                                 "sentencepiece schema) and there is no tokenizer.json")
        result = _spm_vocab_from_json(spec, gguf)
    tokens, scores, types, add_prefix = result

    # added tokens (tokenizer.json ``added_tokens``, then tokenizer_config ``added_tokens_decoder``)
    added: dict[int, tuple[str, bool]] = {}
    for entry in (spec or {}).get("added_tokens") or []:
        added[int(entry["id"])] = (entry["content"], bool(entry.get("special")))
    config_path = model_dir / "tokenizer_config.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text(encoding="utf-8"))
        for key, entry in (config.get("added_tokens_decoder") or {}).items():
            added[int(key)] = (entry["content"], bool(entry.get("special")))
    added_json = model_dir / "added_tokens.json"
    if added_json.is_file():
        for content, i in json.loads(added_json.read_text(encoding="utf-8")).items():
            added.setdefault(int(i), (content, False))
    n = max([len(tokens) - 1, *added]) + 1
    if n > vocab_size:
        raise LlmExportError(f"tokenizer has token id {n - 1} but the model's vocab_size is {vocab_size}")
    tokens += [f"[PAD{i}]" for i in range(len(tokens), vocab_size)]
    scores += [-1000.0] * (vocab_size - len(scores))
    types += [int(gguf.TokenType.UNUSED)] * (vocab_size - len(types))
    for i, (content, special) in added.items():
        if types[i] in (gguf.TokenType.UNKNOWN, gguf.TokenType.BYTE):
            continue  # <unk> and <0xNN> keep their SentencePiece types even when listed as added tokens
        tokens[i] = content
        types[i] = int(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
    return tokens, scores, types, add_prefix


def write_llama_vocab(writer, gguf, model_dir: Path, vocab: tuple[list[str], list[float], list[int], bool]) -> None:
    """``tokenizer.ggml.model = "llama"`` with scores and types; special ids / chat template via SpecialVocab."""
    tokens, scores, types, add_prefix = vocab
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_add_space_prefix(add_prefix)
    special = gguf.SpecialVocab(model_dir, load_merges=False, n_vocab=len(tokens))
    special.add_to_gguf(writer, quiet=True)


def write_vocab(writer, gguf, model_dir: Path, vocab_size: int, pre: str) -> None:
    """Same token list / types as convert_hf_to_gguf's get_vocab_base + _set_vocab_gpt2."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    vocab = tokenizer.get_vocab()
    if max(vocab.values()) >= vocab_size:
        raise LlmExportError(f"tokenizer has token id {max(vocab.values())} but the model's vocab_size is {vocab_size}")
    reverse = {i: tok for tok, i in vocab.items()}
    added = tokenizer.get_added_vocab()
    decoder = tokenizer.added_tokens_decoder
    tokens: list[str] = []
    types: list[int] = []
    for i in range(vocab_size):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        token = reverse[i]
        if token in added:
            info = decoder.get(i)
            if info is not None and not info.normalized:
                token = tokenizer.decode(tokenizer.encode(token, add_special_tokens=False))
            special = info is not None and info.special
            looks_special = token.startswith(("<|", "<｜")) and token.endswith(("|>", "｜>"))
            types.append(gguf.TokenType.CONTROL if special or looks_special else gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
        tokens.append(token)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=len(tokens))
    if not special.merges:
        raise LlmExportError(f"{model_dir}: tokenizer has no BPE merges")
    special.add_to_gguf(writer, quiet=True)
