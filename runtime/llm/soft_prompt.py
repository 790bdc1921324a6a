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

    # a chat: the model's own template, the vectors where the marker is, then greedy generation
    messages = [{"role": "user", "content": f"{SOFT_PROMPT_MARKER} Is there an anomaly?"}]
    gen = generate(llm, chat_segments(llm, messages, prompts), max_tokens=64)
    text = "".join(gen)                                                              # gen.finish_reason: stop / length

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

import codecs
import ctypes
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

SOFT_PROMPT_MARKER = "<soft-prompt>"  # where chat_segments() puts the vectors in a chat message


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


def _feed_chunked(llm: Any, n_rows: int, n_embd: int, n_past: int, want_logits: bool, what: str,
                  fill: Callable[[Any, int, int], None]) -> int:
    """Decode ``n_rows`` rows in ``llm.n_batch`` chunks at positions ``n_past ..``; returns the new ``n_past``.

    ``fill(batch, start, n)`` writes rows ``start .. start + n`` into a batch from ``llama_batch_init(n,
    n_embd, 1)`` (``n_embd`` 0: a token batch); positions, sequence ids and the logits flags are set here,
    only the very last row asking for logits when ``want_logits``.
    """
    cpp = _cpp()
    step = int(llm.n_batch)
    for start in range(0, n_rows, step):
        n = min(step, n_rows - start)
        batch = cpp.llama_batch_init(n, n_embd, 1)
        try:
            fill(batch, start, n)
            _fill_common(batch, n, n_past, want_logits and start + n == n_rows)
            _decode(llm, batch, f"{n} {what} at position {n_past}")
        finally:
            cpp.llama_batch_free(batch)
        n_past += n
    return n_past


def check_vectors(llm: Any, vectors: np.ndarray) -> np.ndarray:
    """``vectors`` as a C-contiguous float32 (k, n_embd) array; SoftPromptError when they do not fit the model."""
    n_embd = _cpp().llama_model_n_embd(llm.model)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != n_embd:
        raise SoftPromptError(f"soft prompt shape {vectors.shape}, the model wants (k, {n_embd})")
    if not np.isfinite(vectors).all():
        raise SoftPromptError("soft prompt holds NaN or inf")
    return vectors


def decode_embeddings(llm: Any, vectors: np.ndarray, n_past: int, want_logits: bool) -> int:
    """Feed ``vectors`` (k, n_embd) at positions ``n_past ..``; returns the new ``n_past``."""
    vectors = check_vectors(llm, vectors)

    def fill(batch: Any, start: int, n: int) -> None:
        chunk = vectors[start:start + n]
        ctypes.memmove(batch.embd, chunk.ctypes.data, chunk.nbytes)

    return _feed_chunked(llm, len(vectors), vectors.shape[1], n_past, want_logits, "embeddings", fill)


def decode_tokens(llm: Any, tokens: Sequence[int], n_past: int, want_logits: bool) -> int:
    """Feed token ids at positions ``n_past ..``; returns the new ``n_past``."""
    ids = [int(t) for t in tokens]
    n_vocab = llm.n_vocab()
    if any(not 0 <= t < n_vocab for t in ids):
        raise SoftPromptError(f"token id outside the vocabulary (0..{n_vocab - 1})")

    def fill(batch: Any, start: int, n: int) -> None:
        for i, t in enumerate(ids[start:start + n]):
            batch.token[i] = t

    return _feed_chunked(llm, len(ids), 0, n_past, want_logits, "tokens", fill)


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


def _token_text(llm: Any, token: int) -> str:
    return "" if token == -1 else _cpp().llama_vocab_get_text(_vocab(llm), token).decode("utf-8")


def _vocab(llm: Any) -> Any:
    return _cpp().llama_model_get_vocab(llm.model)


def chat_segments(llm: Any, messages: Sequence[dict[str, str]], vectors: np.ndarray,
                  template: str | None = None) -> list[np.ndarray | list[int]]:
    """``[ids before, vectors, ids after]``: the chat prompt with the soft prompt where ``SOFT_PROMPT_MARKER`` is.

    ``messages`` ({"role", "content"} dicts) are rendered as ``create_chat_completion`` renders them from the
    GGUF's ``tokenizer.chat_template``: a ``Jinja2ChatFormatter`` with the vocabulary's BOS / EOS texts and
    the generation prompt, tokenized with ``special=True`` and BOS added by the tokenizer only where the
    formatter did not write the special tokens itself (only the first piece can get it). ``template``
    replaces the GGUF's template (a Llama built with another ``chat_format`` / ``chat_handler`` is not
    followed: pass its template here). Exactly one message must hold the marker, once; a GGUF without a
    template is refused (``create_chat_completion`` would fall back to its hard-coded "llama-2" format).
    """
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    vectors = check_vectors(llm, vectors)
    counts = [(m.get("content") or "").count(SOFT_PROMPT_MARKER) for m in messages]
    if sorted(c for c in counts if c) != [1]:
        raise SoftPromptError(f"exactly one message must hold {SOFT_PROMPT_MARKER!r} once ({sum(counts)} found)")
    template = template or (getattr(llm, "metadata", None) or {}).get("tokenizer.chat_template")
    if not template:
        raise SoftPromptError("the GGUF has no tokenizer.chat_template: pass the model's chat template as template=")
    eos_id, bos_id = llm.token_eos(), llm.token_bos()
    formatter = Jinja2ChatFormatter(template=template, eos_token=_token_text(llm, eos_id),
                                    bos_token=_token_text(llm, bos_id), stop_token_ids=[eos_id])
    result = formatter(messages=list(messages))
    pieces = result.prompt.split(SOFT_PROMPT_MARKER)
    if len(pieces) != 2:
        raise SoftPromptError(f"the chat template rendered {SOFT_PROMPT_MARKER!r} {len(pieces) - 1} times, not once")
    before = llm.tokenize(pieces[0].encode("utf-8"), add_bos=not result.added_special, special=True)
    after = llm.tokenize(pieces[1].encode("utf-8"), add_bos=False, special=True) if pieces[1] else []
    return [list(before), vectors, list(after)]


class Generation:
    """Greedy decoding after ``segments``, iterated as text pieces: one per generated token, "" while a
    UTF-8 character is still incomplete (an incomplete one left at the end is dropped). llama.cpp's
    context is cleared first.

    Ends at an end-of-generation token (``finish_reason`` "stop"; the token is neither counted nor shown),
    after ``max_tokens`` tokens (<= 0: no bound) or at ``n_ctx`` ("length"), or when ``should_stop()`` is
    true before a token ("cancelled"). ``finish_reason`` stays None when the consumer stops iterating
    first. The prompt is fed on the first ``next()``; each further token is decoded only when the next
    piece is asked for, so a consumer that stops iterating costs no extra decode.
    """

    def __init__(self, llm: Any, segments: Sequence[np.ndarray | Sequence[int]], max_tokens: int,
                 should_stop: Callable[[], bool] = lambda: False) -> None:
        self.llm = llm
        self.segments = list(segments)
        self.max_tokens = int(max_tokens)
        self.should_stop = should_stop
        self.prompt_tokens = sum(len(s) for s in self.segments)  # positions fed before the first token
        self.tokens: list[int] = []  # generated ids, end-of-generation token excluded
        self.finish_reason: str | None = None
        self._iter = self._run()

    def __iter__(self) -> Iterator[str]:
        return self._iter

    def _run(self) -> Iterator[str]:
        cpp = _cpp()
        vocab = _vocab(self.llm)
        logits, n_past = feed_segments(self.llm, self.segments)
        utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        limit = self.max_tokens if self.max_tokens > 0 else self.llm.n_ctx()
        while True:
            if self.should_stop():
                self.finish_reason = "cancelled"
                break
            token = int(np.argmax(logits))
            if cpp.llama_vocab_is_eog(vocab, token):
                self.finish_reason = "stop"
                break
            self.tokens.append(token)
            yield utf8.decode(self.llm.detokenize([token]))
            if len(self.tokens) >= limit or n_past >= self.llm.n_ctx():
                self.finish_reason = "length"
                break
            logits, n_past = feed_segments(self.llm, [[token]], n_past=n_past)

    @property
    def text(self) -> str:
        """The text of the tokens generated so far."""
        return self.llm.detokenize(self.tokens).decode("utf-8", errors="replace")


def generate(llm: Any, segments: Sequence[np.ndarray | Sequence[int]], max_tokens: int,
             should_stop: Callable[[], bool] = lambda: False) -> Generation:
    """Greedy generation after ``segments`` (see ``Generation``): ``for piece in gen: ...; gen.finish_reason``."""
    return Generation(llm, segments, max_tokens, should_stop)
