"""The soft-prompt path end to end: prompt-learner ONNX output through llama.cpp == the PyTorch model on the same vectors.

A tiny random Qwen2 / Llama (tests/test_hf_to_gguf.py's builder) is converted to an F32 GGUF with
lineguard.export.hf_to_gguf; a randomly initialised PromptLearner is exported to ONNX and run with ONNX
Runtime; its M vectors, between a few prefix tokens and a few question tokens, go (a) to transformers as
``inputs_embeds`` (prefix/question rows from the model's own embedding table) and (b) to llama.cpp through
lineguard.runtime.llm.soft_prompt (``llama_batch`` with ``embd``).

Tolerance: next-token logits ``max abs diff < 1e-3`` (F32 weights, F32 KV cache -- llama.cpp's default F16
cache alone costs ~1e-2) and the same argmax, as for plain tokens in test_hf_to_gguf.py. Measured
(9 prefix + 14 soft + 23 question positions, ``-s`` prints them): qwen2 5.7e-6, llama 3.1e-6 on logits
of magnitude ~5-6. The ONNX graph matches PyTorch to 1.8e-7 (``ONNX_TOL`` 1e-4). Negative control:
shuffling the soft tokens moves the logits by 1.9-3.0, so the tolerance is tight enough to see them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

llama_cpp = pytest.importorskip("llama_cpp")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("gguf")
pytest.importorskip("tokenizers")

from test_hf_to_gguf import f32_llama, tiny_gguf  # noqa: E402

from lineguard.export.prompt_learner import (  # noqa: E402
    INPUT_NAMES,
    PromptLearner,
    embedding_rms,
    example_inputs,
    export_prompt_learner,
    soft_prompt_inputs_embeds,
)
from lineguard.runtime.llm.soft_prompt import SoftPromptError, feed_segments, soft_prompt_logits  # noqa: E402

LOGIT_TOL = 1e-3
ONNX_TOL = 1e-4
FEATURE_DIM = 16


@pytest.fixture(scope="module", params=["qwen2", "llama"])
def setup(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"soft_{request.param}")
    folder, model, gguf_path = tiny_gguf(root, request.param)
    tok = transformers.AutoTokenizer.from_pretrained(str(folder))
    torch.manual_seed(1)
    learner = PromptLearner(n_embd=model.config.hidden_size, feature_dim=FEATURE_DIM,
                            target_rms=embedding_rms(model)).eval()
    onnx_path = root / "prompt_learner.onnx"
    parity = export_prompt_learner(learner, onnx_path)
    llm = f32_llama(gguf_path, embedding=False)
    yield request.param, model, tok, learner, onnx_path, parity, llm
    llm.close()


def ort_prompts(onnx_path: Path, learner: PromptLearner, seed: int = 3) -> np.ndarray:
    maps, feats = example_inputs(learner, 1, seed=seed)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return session.run(None, dict(zip(INPUT_NAMES, (maps, feats), strict=True)))[0][0]


def hf_next_logits(model, prompts: np.ndarray, prefix: list[int], question: list[int]) -> np.ndarray:
    with torch.no_grad():
        embeds = soft_prompt_inputs_embeds(model, torch.from_numpy(prompts)[None], prefix, question)
        return model(inputs_embeds=embeds).logits[0, -1].float().numpy()


def test_onnx_matches_torch(setup) -> None:
    arch, model, tok, learner, onnx_path, parity, llm = setup
    prompts = ort_prompts(onnx_path, learner)
    assert prompts.shape == (learner.n_tokens, model.config.hidden_size) and prompts.dtype == np.float32
    rms = float(np.sqrt((prompts ** 2).mean(axis=-1)).mean())
    assert rms == pytest.approx(embedding_rms(model), rel=1e-3)  # soft tokens start at the LLM's embedding scale
    print(f"{arch}: prompt learner ONNX vs torch max abs diff {parity:.3g}")
    assert parity < ONNX_TOL


def test_soft_prompt_logits_match_transformers(setup) -> None:
    arch, model, tok, learner, onnx_path, parity, llm = setup
    prompts = ort_prompts(onnx_path, learner)
    prefix = tok.encode("the camera frame")
    question = tok.encode(" scratch on the bottle cap reject")
    expected = hf_next_logits(model, prompts, prefix, question)
    got = soft_prompt_logits(llm, prompts, question, prefix_tokens=prefix)
    diff = float(np.abs(expected - got).max())
    print(f"{arch}: soft prompt ({len(prefix)}+{len(prompts)}+{len(question)} positions) max abs logit diff "
          f"{diff:.3g} (logit scale {np.abs(expected).max():.3g})")
    assert got.shape == expected.shape
    assert diff < LOGIT_TOL, diff
    assert int(got.argmax()) == int(expected.argmax())

    # negative control: the same vectors in another order must visibly change the answer
    shuffled = prompts[np.random.default_rng(0).permutation(len(prompts))]
    moved = float(np.abs(hf_next_logits(model, shuffled, prefix, question) - got).max())
    print(f"{arch}: shuffled soft tokens move the logits by {moved:.3g}")
    assert moved > 100 * LOGIT_TOL


def test_soft_prompt_alone_and_continuation(setup) -> None:
    """No prefix, no question (logits from the last vector); then one more token continuing the KV cache."""
    arch, model, tok, learner, onnx_path, parity, llm = setup
    prompts = ort_prompts(onnx_path, learner, seed=5)
    logits, n_past = feed_segments(llm, [prompts])
    assert n_past == len(prompts)
    assert float(np.abs(hf_next_logits(model, prompts, [], []) - logits).max()) < LOGIT_TOL
    nxt = int(logits.argmax())
    logits2, n_past = feed_segments(llm, [[nxt]], n_past=n_past)
    assert n_past == len(prompts) + 1
    assert float(np.abs(hf_next_logits(model, prompts, [], [nxt]) - logits2).max()) < LOGIT_TOL


def test_embedding_rows_equal_their_tokens(setup) -> None:
    """A vector equal to a token's embedding row acts as that token: the embd input is not rescaled."""
    arch, model, tok, learner, onnx_path, parity, llm = setup
    ids = tok.encode("the quick brown fox")
    rows = model.get_input_embeddings().weight[ids].detach().numpy().astype(np.float32)
    via_tokens, _ = feed_segments(llm, [ids])
    via_vectors, _ = feed_segments(llm, [rows])
    assert float(np.abs(via_tokens - via_vectors).max()) < 1e-4


def test_refuses_bad_vectors(setup) -> None:
    arch, model, tok, learner, onnx_path, parity, llm = setup
    n_embd = model.config.hidden_size
    with pytest.raises(SoftPromptError, match="shape"):
        soft_prompt_logits(llm, np.zeros((3, n_embd + 1), np.float32), [1])
    with pytest.raises(SoftPromptError, match="NaN"):
        soft_prompt_logits(llm, np.full((3, n_embd), np.nan, np.float32), [1])
    with pytest.raises(SoftPromptError, match="n_ctx"):
        soft_prompt_logits(llm, np.zeros((llm.n_ctx(), n_embd), np.float32), [1])
    with pytest.raises(SoftPromptError, match="vocabulary"):
        soft_prompt_logits(llm, np.zeros((2, n_embd), np.float32), [10 ** 6])
    # the context is usable again after a refusal
    assert soft_prompt_logits(llm, np.zeros((2, n_embd), np.float32), [1]).shape == (model.config.vocab_size,)


def test_vectors_split_over_small_batches(setup, tmp_path: Path) -> None:
    """More vectors than ``n_batch``: several decodes through the KV cache, same logits."""
    arch, model, tok, learner, onnx_path, parity, llm = setup
    small = f32_llama(llm.model_path, n_batch=4)
    try:
        prompts = ort_prompts(onnx_path, learner)
        question = tok.encode(" is there a crack")
        assert small.n_batch < len(prompts)
        diff = float(np.abs(soft_prompt_logits(small, prompts, question)
                            - hf_next_logits(model, prompts, [], question)).max())
        assert diff < LOGIT_TOL, diff
    finally:
        small.close()


def test_trained_learner_steers_llama_cpp(setup, tmp_path: Path) -> None:
    """Train on two synthetic cases (blob -> "crack", empty map -> "pass"), export, ask llama.cpp: the map decides."""
    from lineguard.export.prompt_learner import MAP_SIZE, Example, train_prompt_learner

    arch, model, tok, _, _, _, llm = setup
    if arch != "qwen2":
        pytest.skip("one training run is enough")
    torch.manual_seed(2)
    learner = PromptLearner(n_embd=model.config.hidden_size, feature_dim=FEATURE_DIM, target_rms=embedding_rms(model))
    blob, feat = example_inputs(learner, 1, seed=7)
    empty = np.zeros((1, MAP_SIZE, MAP_SIZE), np.float32)
    crack, ok = tok.encode(" crack"), tok.encode(" pass")
    question = tok.encode(" defect")
    samples = [Example(blob[0], feat[0], (), tuple(question), tuple(crack)),
               Example(empty, feat[0], (), tuple(question), tuple(ok))]
    losses = train_prompt_learner(learner, model, samples, steps=60, lr=1e-2, batch=2)
    print(f"{arch}: training loss {losses[0]:.3g} -> {losses[-1]:.3g}")
    assert losses[-1] < 0.2 * losses[0]
    path = tmp_path / "trained.onnx"
    assert export_prompt_learner(learner, path) < ONNX_TOL
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for amap, answer in ((blob, crack), (empty[None], ok)):
        prompts = session.run(None, dict(zip(INPUT_NAMES, (amap, feat), strict=True)))[0][0]
        assert int(soft_prompt_logits(llm, prompts, question).argmax()) == answer[0]
