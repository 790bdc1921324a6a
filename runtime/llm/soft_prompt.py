"""Soft-prompt embeddings into llama.cpp: AnomalyGPT's prompt-learner output fed as input vectors (no torch).

Usage::

    llm = Llama(model_path="llm.gguf", n_ctx=512, embedding=False, verbose=False)
    prompts = session.run(None, {"anomaly_map": amap, "feature": feat})[0][0]      # (M, n_embd) float32
    logits = soft_prompt_logits(llm, prompts, llm.tokenize(b" Is there an anomaly?", add_bos=False),
                                prefix_tokens=llm.tokenize(b"### Human: ", add_bos=True))
    logits.argmax()                                                                  # the next token

    # any interleaving of token ids and vectors (AnomalyGPT: header, image/prompt embeddings, question)
    logits, n_past = feed_segments(llm, [header_ids, prompts, question_ids])
    logits, n_past = feed_segments(llm, [[next_id]], n_past=n_past)                  # continue greedily

A segment of vectors goes to ``llama_decode`` as one ``llama_batch`` whose ``embd`` is set (allocated by
``llama_batch_init(n, n_embd, 1)``, so ``token`` is NULL); a segment of ids as an ordinary token batch.
Positions continue across segments in one sequence (id 0) and only the last row of the last segment asks
for logits. llama.cpp takes ``embd`` rows as they are, where the token path looks rows up in
``token_embd``: for Llama / Qwen2 the two are interchangeable, so a vector equal to a token's embedding row
gives exactly that token's result. (Architectures that scale the input embedding, e.g. Gemma's
``sqrt(n_embd)``, apply it inside the graph to both paths; the prompt learner must be trained against the
same convention the runtime feeds.)

The context is cleared first (``n_past=0``), and ``llm.n_tokens`` is set to 0 afterwards: the
``Llama`` wrapper's own token cache no longer describes the KV cache, so its next ``eval`` /
``create_completion`` starts from an empty context instead of reusing a wrong prefix. Segments longer than
``llm.n_batch`` are split; the KV cache holds them between calls (causal attention, same result).
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import Any

import numpy as np


class SoftPromptError(RuntimeError):
    """llama.cpp refused a batch, or the vectors do not fit the model."""


def _cpp() -> Any:
    import llama_cpp  # the edge may run without an LLM: imported only when soft prompts are used

    return llama_cpp


def clear_context(llm: Any) -> None:
    """Empty the KV cache of ``llm`` (a ``llama_cpp.Llama``) and its wrapper's token record."""
    cpp = _cpp()
    mem = cpp.llama_get_memory(llm.ctx)
    if mem is not None:
        cpp.llama_memory_clear(mem, True)
    llm.n_tokens = 0


def _decode(llm: Any, batch: Any, what: str) -> None:
    rc = _cpp().llama_decode(llm.ctx, batch)
    if rc != 0:
        raise SoftPromptError(f"llama_decode of {what} returned {rc} "
                              "(1: no KV slot, context too small; -1: invalid batch; < -1: fatal)")


def _fill_common(batch: Any, n: int, n_past: int, want_last: bool) -> None:
    batch.n_tokens = n
    for i in range(n):
        batch.pos[i] = n_past + i
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = 0
        batch.logits[i] = 1 if (want_last and i == n - 1) else 0


def decode_embeddings(llm: Any, vectors: np.ndarray, n_past: int, want_logits: bool) -> int:
    """Feed ``vectors`` (k, n_embd) at positions ``n_past ..``; returns the new ``n_past``."""
    cpp = _cpp()
    n_embd = cpp.llama_model_n_embd(llm.model)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != n_embd:
        raise SoftPromptError(f"soft prompt shape {vectors.shape}, the model wants (k, {n_embd})")
    if not np.isfinite(vectors).all():
        raise SoftPromptError("soft prompt holds NaN or inf")
    step = int(llm.n_batch)
    for start in range(0, len(vectors), step):
        chunk = vectors[start:start + step]
        n = len(chunk)
        batch = cpp.llama_batch_init(n, n_embd, 1)
        try:
            ctypes.memmove(batch.embd, chunk.ctypes.data, chunk.nbytes)
            _fill_common(batch, n, n_past, want_logits and start + n == len(vectors))
            _decode(llm, batch, f"{n} embeddings at position {n_past}")
        finally:
            cpp.llama_batch_free(batch)
        n_past += n
    return n_past


def decode_tokens(llm: Any, tokens: Sequence[int], n_past: int, want_logits: bool) -> int:
    """Feed token ids at positions ``n_past ..``; returns the new ``n_past``."""
    cpp = _cpp()
    tokens = [int(t) for t in tokens]
    n_vocab = llm.n_vocab()
    if any(not 0 <= t < n_vocab for t in tokens):
        raise SoftPromptError(f"token id outside the vocabulary (0..{n_vocab - 1})")
    step = int(llm.n_batch)
    for start in range(0, len(tokens), step):
        chunk = tokens[start:start + step]
        n = len(chunk)
        batch = cpp.llama_batch_init(n, 0, 1)
        try:
            for i, t in enumerate(chunk):
                batch.token[i] = t
            _fill_common(batch, n, n_past, want_logits and start + n == len(tokens))
            _decode(llm, batch, f"{n} tokens at position {n_past}")
        finally:
            cpp.llama_batch_free(batch)
        n_past += n
    return n_past


def last_logits(llm: Any) -> np.ndarray:
    """The logits of the last row that asked for them, copied: (n_vocab,) float32."""
    cpp = _cpp()
    ptr = cpp.llama_get_logits_ith(llm.ctx, -1)
    if not ptr:
        raise SoftPromptError("llama.cpp returned no logits (no row asked for them)")
    return np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),)).copy()


def feed_segments(llm: Any, segments: Sequence[np.ndarray | Sequence[int]],
                  n_past: int = 0) -> tuple[np.ndarray, int]:
    """Feed token-id and vector segments in order; returns (next-token logits, new ``n_past``).

    ``n_past=0`` clears the context first; a larger ``n_past`` continues the sequence already in the KV
    cache (e.g. one generated token at a time). Empty segments are skipped; at least one must be non-empty.
    A segment is vectors when it is a 2-D float numpy array, token ids otherwise.
    """
    parts = [s for s in segments if len(s) > 0]
    if not parts:
        raise SoftPromptError("nothing to feed")
    if n_past == 0:
        clear_context(llm)
    if n_past + sum(len(s) for s in parts) > llm.n_ctx():
        raise SoftPromptError(f"{n_past + sum(len(s) for s in parts)} positions exceed n_ctx={llm.n_ctx()}")
    for k, seg in enumerate(parts):
        last = k == len(parts) - 1
        if isinstance(seg, np.ndarray) and seg.ndim == 2 and np.issubdtype(seg.dtype, np.floating):
            n_past = decode_embeddings(llm, seg, n_past, last)
        else:
            n_past = decode_tokens(llm, seg, n_past, last)
    llm.n_tokens = 0  # the wrapper's token record no longer matches the KV cache
    return last_logits(llm), n_past


def soft_prompt_logits(llm: Any, embeddings: np.ndarray, question_tokens: Sequence[int],
                       prefix_tokens: Sequence[int] = ()) -> np.ndarray:
    """Next-token logits after ``prefix_tokens``, the M soft-prompt vectors (M, n_embd), then the question.

    The context is cleared first. Returns a (n_vocab,) float32 copy.
    """
    logits, _ = feed_segments(llm, [list(prefix_tokens), np.asarray(embeddings, dtype=np.float32),
                                    list(question_tokens)])
    return logits
