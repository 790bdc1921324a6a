"""Generation after a soft prompt: chat template with a marker, greedy decoding in llama.cpp, the worker's soft path.

A tiny random Qwen2 / Llama (tests/test_hf_to_gguf.py's builder, chat template included) is converted to an
F32 GGUF and run with an F32 KV cache (as in test_soft_prompt.py). Greedy decoding through
lineguard.runtime.llm.soft_prompt (``generate``) must pick the same token ids as a manual argmax loop in
transformers over the same ``inputs_embeds`` (prefix rows, the vectors, question rows); the smallest top-2
logit gap on those paths (``-s`` prints it) was 9e-3, against ~1e-5 logit differences, so a tie cannot
decide the comparison. The worker is run as
a real process on the same GGUF (its own default F16 KV cache: only the events are checked there).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

llama_cpp = pytest.importorskip("llama_cpp")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("gguf")
pytest.importorskip("tokenizers")

from test_hf_to_gguf import f32_llama, tiny_gguf  # noqa: E402

import lineguard.runtime.llm.soft_prompt as sp  # noqa: E402
from lineguard.export.prompt_learner import embedding_rms, soft_prompt_inputs_embeds  # noqa: E402
from lineguard.runtime.llm.events import Chunk, Final  # noqa: E402
from lineguard.runtime.llm.soft_prompt import (  # noqa: E402
    SOFT_PROMPT_MARKER,
    SoftPromptError,
    chat_segments,
    generate,
)
from lineguard.runtime.llm.worker import LlmSettings, LlmWorker  # noqa: E402

N_SOFT = 6
N_GEN = 10  # tokens compared (fewer only when both stop at an end-of-generation token)


@pytest.fixture(scope="module", params=["qwen2", "llama"])
def setup(request, tmp_path_factory):
    folder, model, gguf_path = tiny_gguf(tmp_path_factory.mktemp(f"gen_{request.param}"), request.param)
    tok = transformers.AutoTokenizer.from_pretrained(str(folder))
    llm = f32_llama(gguf_path)
    yield request.param, model, tok, llm, gguf_path
    llm.close()


def soft_vectors(model, seed: int, n: int = N_SOFT) -> np.ndarray:
    """Random vectors at the scale of the model's token embeddings (a prompt learner's output stands in)."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, model.config.hidden_size)) * embedding_rms(model)).astype(np.float32)


def is_eog(llm, token: int) -> bool:
    return bool(llama_cpp.llama_vocab_is_eog(llama_cpp.llama_model_get_vocab(llm.model), token))


def hf_greedy(model, llm, vectors: np.ndarray, prefix: list[int], question: list[int],
              n: int) -> tuple[list[int], bool, float]:
    """Argmax decoding in transformers over ``inputs_embeds`` (recomputed each step).

    Returns (ids, stopped at an end-of-generation token, smallest top-1 / top-2 logit gap seen)."""
    embed = model.get_input_embeddings()
    out: list[int] = []
    gap = float("inf")
    with torch.no_grad():
        embeds = soft_prompt_inputs_embeds(model, torch.from_numpy(vectors)[None], prefix, question)
        for _ in range(n):
            logits = model(inputs_embeds=embeds).logits[0, -1]
            top = logits.topk(2).values
            gap = min(gap, float(top[0] - top[1]))
            token = int(logits.argmax())
            if is_eog(llm, token):
                return out, True, gap
            out.append(token)
            embeds = torch.cat([embeds, embed(torch.tensor([[token]]))], dim=1)
    return out, False, gap


def messages(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "the camera frame"}, {"role": "user", "content": text}]


@pytest.mark.parametrize("seed", [3, 4])
def test_greedy_generation_matches_transformers(setup, seed: int) -> None:
    arch, model, tok, llm, _ = setup
    vectors = soft_vectors(model, seed)
    prefix, question = tok.encode("the camera frame"), tok.encode(" scratch on the bottle cap reject")
    gen = generate(llm, [prefix, vectors, question], max_tokens=N_GEN)
    pieces = list(gen)
    expected, stopped, gap = hf_greedy(model, llm, vectors, prefix, question, N_GEN)
    print(f"{arch} seed {seed}: {len(expected)} tokens {expected} ({'EOG' if stopped else 'length'}), "
          f"smallest top-2 logit gap {gap:.3g}")
    assert gen.tokens == expected
    assert gen.finish_reason == ("stop" if stopped else "length")
    assert gen.prompt_tokens == len(prefix) + N_SOFT + len(question)
    assert len(pieces) == len(gen.tokens)
    assert "".join(pieces) == gen.text == tok.decode(expected, skip_special_tokens=True)


def test_chat_segments_split_the_template_at_the_marker(setup) -> None:
    arch, model, tok, llm, _ = setup
    vectors = soft_vectors(model, 0)
    chat = messages(f"Look: {SOFT_PROMPT_MARKER} is there a crack?")
    before, got, after = chat_segments(llm, chat, vectors)
    assert np.array_equal(got, vectors) and got.dtype == np.float32
    whole = [{**m, "content": m["content"].replace(SOFT_PROMPT_MARKER, "")} for m in chat]
    # the same chat through llama-cpp-python's own formatter and through the HF tokenizer's template
    rendered = llama_cpp.llama_chat_format.Jinja2ChatFormatter(
        template=llm.metadata["tokenizer.chat_template"], eos_token="<|im_end|>", bos_token="<|endoftext|>",
    )(messages=whole).prompt
    assert before + after == llm.tokenize(rendered.encode(), add_bos=False, special=True)
    assert before + after == tok.apply_chat_template(whole, add_generation_prompt=True, tokenize=True,
                                                   return_dict=False)
    assert tok.decode(after).endswith("<|im_end|>\n<|im_start|>assistant\n")  # the generation prompt

    # an explicit template; BOS written by the template is not added a second time
    own = "{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    before, _, after = chat_segments(llm, chat, vectors, template=own)
    assert before[0] == llm.token_bos() and before[1] != llm.token_bos()
    assert tok.decode(before + after) == "<|endoftext|>system: the camera frame\nuser: Look:  is there a crack?\n"


@pytest.mark.parametrize("texts", [["no marker here"], [SOFT_PROMPT_MARKER * 2],
                                   [SOFT_PROMPT_MARKER, SOFT_PROMPT_MARKER]])
def test_chat_segments_want_exactly_one_marker(setup, texts: list[str]) -> None:
    arch, model, tok, llm, _ = setup
    chat = [{"role": "user", "content": t} for t in texts]
    with pytest.raises(SoftPromptError, match="exactly one"):
        chat_segments(llm, chat, soft_vectors(model, 0))


def test_chat_segments_refuse_what_does_not_fit(setup, monkeypatch: pytest.MonkeyPatch) -> None:
    arch, model, tok, llm, _ = setup
    chat = messages(SOFT_PROMPT_MARKER)
    with pytest.raises(SoftPromptError, match="shape"):
        chat_segments(llm, chat, np.zeros((2, model.config.hidden_size + 1), np.float32))
    monkeypatch.setattr(llm, "metadata", {})
    with pytest.raises(SoftPromptError, match="chat_template"):
        chat_segments(llm, chat, soft_vectors(model, 0))


def test_generation_stops_when_asked_and_at_n_ctx(setup) -> None:
    arch, model, tok, llm, _ = setup
    vectors = soft_vectors(model, 3)
    gen = generate(llm, [vectors], max_tokens=50, should_stop=lambda: len(gen.tokens) >= 3)
    assert len(list(gen)) == 3 and gen.finish_reason == "cancelled"
    full = soft_vectors(model, 3, n=llm.n_ctx() - 2)  # room for 2 more positions: 3 tokens, the last not fed
    gen = generate(llm, [full], max_tokens=50)
    list(gen)
    assert (gen.finish_reason, len(gen.tokens)) == ("length", 3)


def test_generation_joins_utf8_split_over_tokens(setup, monkeypatch: pytest.MonkeyPatch) -> None:
    """Byte-level tokens of one character ("é" = C3 A9) give "" then the whole character."""
    arch, model, tok, llm, _ = setup
    if arch != "qwen2":
        pytest.skip("one vocabulary is enough")
    word = tok.encode(" crack")[0]
    script = [tok.convert_tokens_to_ids("Ã"), tok.convert_tokens_to_ids("©"), word, tok.eos_token_id]
    steps: Iterator[int] = iter(script)

    def scripted(llm_, segments, n_past=0):  # the next token of the script as the argmax
        logits = np.zeros(llm.n_vocab(), np.float32)
        logits[next(steps)] = 1.0
        return logits, n_past + sum(len(s) for s in segments)

    monkeypatch.setattr(sp, "feed_segments", scripted)
    gen = generate(llm, [[1, 2]], max_tokens=10)
    assert list(gen) == ["", "é", tok.decode([word])] and gen.finish_reason == "stop"
    assert gen.text == "é" + tok.decode([word]) and len(gen.tokens) == 3


@pytest.fixture(scope="module")
def worker(setup) -> Iterator[LlmWorker]:
    arch, model, tok, llm, gguf_path = setup
    if arch != "qwen2":
        pytest.skip("one model process is enough")
    worker = LlmWorker(gguf_path, LlmSettings(nice=0, n_ctx=256, n_threads=2)).start(timeout_s=60)
    yield worker
    worker.close()


def test_worker_soft_prompt_job(setup, worker: LlmWorker) -> None:
    arch, model, tok, llm, _ = setup
    vectors = soft_vectors(model, 3)
    chat = messages(f"Look: {SOFT_PROMPT_MARKER} is there a crack?")
    handle = worker.submit("soft", chat, max_tokens=4, soft_prompt=vectors)
    result = handle.result(timeout_s=30)
    assert result is not None and result.error is None and isinstance(result.final, Final)
    positions = sum(len(s) for s in chat_segments(llm, chat, vectors))
    stats = result.final
    assert (stats.finish_reason, stats.completion_tokens, stats.prompt_tokens) == ("length", 4, positions)
    assert stats.time_to_first_token_ms is not None and stats.total_ms >= stats.time_to_first_token_ms
    assert result.text  # streamed as chunks

    # whole sentences: the cut answer (no sentence end in a random model's words) comes as one "..." chunk
    events = []
    handle = worker.submit("gated", chat, max_tokens=4, whole_sentences=True, soft_prompt=vectors)
    while not handle.done:
        events += [e for e in [handle.next(5.0)] if e is not None]
    assert [type(e) for e in events] == [Chunk, Final] and events[0].text.endswith("...")

    # max_seconds 0: the first piece, then "time"
    slow = LlmWorker(worker.model_path, LlmSettings(nice=0, n_ctx=256, max_seconds=0.0)).start(timeout_s=60)
    try:
        result = slow.submit("t", chat, max_tokens=8, soft_prompt=vectors).result(timeout_s=30)
        assert result is not None and result.final is not None
        assert (result.final.finish_reason, result.final.completion_tokens) == ("time", 1)
    finally:
        slow.close()


def test_worker_bad_vectors_are_a_job_error(setup, worker: LlmWorker) -> None:
    arch, model, tok, llm, _ = setup
    chat = messages(f"{SOFT_PROMPT_MARKER} is there a crack?")
    bad = worker.submit("bad", chat, soft_prompt=np.zeros((3, model.config.hidden_size + 1), np.float32))
    result = bad.result(timeout_s=30)
    assert result is not None and result.error is not None and "shape" in result.error.message
    assert not result.error.process_died and worker.alive
    after = worker.submit("text", [{"role": "user", "content": "the quick brown fox"}], max_tokens=3)
    result = after.result(timeout_s=30)  # the text path on the same process, after the soft one
    assert result is not None and result.final is not None and result.final.finish_reason in ("stop", "length")
    result = worker.submit("soft-again", chat, max_tokens=2, soft_prompt=soft_vectors(model, 1)).result(timeout_s=30)
    assert result is not None and result.final is not None and result.final.completion_tokens <= 2
