"""``lineguard export prompt-learner``: train AnomalyGPT's prompt learner against the bundle's own LLM.

Usage::

    spec = build_prompt_learner("bundles/default", [Path("normals/brick"), Path("normals/grass")], steps=80)
    spec.heldout_accuracy, spec.parity_max_abs_diff
    # lineguard export prompt-learner bundles/default --normals normals/brick --normals normals/grass

1. Frames: simulated anomalies over each folder's normals, inspected by the runtime
   (lineguard.export.prompt_learner_data), a quarter held out.
2. Prompts: the runtime's soft-grounded messages (lineguard.runtime.llm.prompts: the LLM verdict's yes/no
   question and the default explanation question), tokenized by llama.cpp around the soft prompt exactly as
   the worker feeds them (lineguard.runtime.llm.soft_prompt.chat_segments); truthful answers: "yes"/"no",
   and "Yes, there is an anomaly at the <cell>, probably <kind>." / "No, the part looks normal.", each
   ended by the model's end-of-turn token.
3. The LLM: the bundle's GGUF loaded into PyTorch by transformers (dequantised; needs ``accelerate``),
   frozen; the learner is fitted on the answers' cross-entropy (lineguard.export.prompt_learner).
4. ONNX export with a parity check, and the manifest's ``prompt_learner`` record tying it to the GGUF's sha256.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from lineguard.export.prompt_learner import (
    Example,
    PromptLearner,
    answer_logits,
    embedding_rms,
    export_prompt_learner,
    train_prompt_learner,
)
from lineguard.export.prompt_learner_data import LearnerFrame, simulated_frames
from lineguard.runtime.bundle import Bundle, BundleError, PromptLearnerSpec, utc_now
from lineguard.runtime.contract import Verdict
from lineguard.runtime.llm.grounding import FEATURE_NAMES, MAP_SIZE
from lineguard.runtime.llm.prompts import explanation_messages, judge_messages
from lineguard.runtime.llm.soft_prompt import chat_segments

LEARNER_FILE = "prompt_learner.onnx"
PARITY_TOL = 1e-4


def explanation_answer(frame: LearnerFrame) -> str:
    if not frame.anomalous:
        return "No, the part looks normal."
    return f"Yes, there is an anomaly at the {frame.cell}, probably {frame.kind}."


def _examples(llm: object, frames: Sequence[LearnerFrame], n_tokens: int, n_embd: int) -> list[Example]:
    """Two examples per frame (the yes/no question, the default explanation), tokenized by llama.cpp."""
    placeholder = np.zeros((n_tokens, n_embd), np.float32)
    end = llm.token_eos()  # type: ignore[attr-defined]
    segments: dict[tuple[str, str], tuple[tuple[int, ...], tuple[int, ...]]] = {}

    def around(kind: str, product: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        if (kind, product) not in segments:
            messages = (judge_messages(None, product, grounding="soft") if kind == "judge" else
                        explanation_messages(Verdict(product=product, verdict="NG"), grounding="soft"))
            before, _, after = chat_segments(llm, messages, placeholder)
            segments[(kind, product)] = (tuple(before), tuple(after))  # type: ignore[arg-type]
        return segments[(kind, product)]

    def ids(text: str) -> tuple[int, ...]:
        return (*llm.tokenize(text.encode(), add_bos=False, special=False), end)  # type: ignore[attr-defined]

    out = []
    for f in frames:
        for kind, answer in (("judge", "yes" if f.anomalous else "no"), ("explain", explanation_answer(f))):
            before, after = around(kind, f.product)
            out.append(Example(f.anomaly_map, f.feature, before, after, ids(answer)))
    return out


def yes_no_accuracy(learner: PromptLearner, model: torch.nn.Module, examples: Sequence[Example],
                    yes: int, no: int) -> float | None:
    """Share of yes/no examples whose answer token beats the other one (the judge's first token)."""
    judged = [ex for ex in examples if ex.answer[0] in (yes, no)]
    if not judged:
        return None
    hits = 0
    for ex in judged:
        logits = answer_logits(learner, model, ex)
        hits += int((logits[yes] > logits[no]).item() == (ex.answer[0] == yes))
    return hits / len(judged)


def build_prompt_learner(bundle_dir: str | Path, normals: Sequence[Path], frames_per_product: int = 48,
                         shots: int = 4, steps: int = 80, batch: int = 8, lr: float = 1e-2, seed: int = 0,
                         log: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
                         progress: bool = True) -> PromptLearnerSpec:
    """Train, export and record the bundle's prompt learner; returns the manifest record (``progress``: a
    progress bar with the loss on stderr)."""
    from llama_cpp import Llama
    from transformers import AutoModelForCausalLM

    bundle = Bundle.open(bundle_dir)
    if bundle.manifest.llm is None:
        raise BundleError("the bundle has no LLM: run `lineguard export llm BUNDLE` first")
    gguf = bundle.path(bundle.manifest.llm.file)
    frames: list[LearnerFrame] = []
    with Bundle.scratch_copy(bundle.root, prefix="lineguard-prompt-learner-") as scratch:
        for folder in normals:
            log(f"simulating {frames_per_product} frames over the normals of {folder}")
            frames += simulated_frames(scratch, Path(folder), frames_per_product, shots, seed)
    random.Random(seed).shuffle(frames)
    held = frames[: len(frames) // 4]
    train = frames[len(frames) // 4:]
    log(f"loading {gguf.name} into PyTorch (dequantised)")
    model = AutoModelForCausalLM.from_pretrained(str(bundle.root), gguf_file=gguf.name, dtype=torch.float32)
    torch.manual_seed(seed)
    learner = PromptLearner(n_embd=model.config.hidden_size, feature_dim=len(FEATURE_NAMES),
                            target_rms=embedding_rms(model))
    vocab = Llama(model_path=str(gguf), n_ctx=256, n_threads=1, verbose=False)  # chat_segments needs n_embd
    try:  # llama.cpp tokenizes exactly as the worker will; its model is not needed after that
        train_examples = _examples(vocab, train, learner.n_tokens, learner.n_embd)
        held_examples = _examples(vocab, held, learner.n_tokens, learner.n_embd)
        yes, no = (vocab.tokenize(w.encode(), add_bos=False)[0] for w in ("yes", "no"))
    finally:
        vocab.close()
    log(f"training on {len(train_examples)} examples ({len(train)} frames), {steps} steps of {batch}")
    with tqdm(total=steps, desc="prompt learner", unit="step", disable=not progress) as bar:
        def on_step(i: int, loss: float) -> None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")

        losses = train_prompt_learner(learner, model, train_examples, steps=steps, lr=lr, batch=batch, seed=seed,
                                      on_step=on_step)
    accuracy = yes_no_accuracy(learner, model, held_examples, yes, no)
    log(f"held-out yes/no accuracy {accuracy if accuracy is None else round(accuracy, 3)} on {len(held)} frames")
    path = bundle.path(LEARNER_FILE)
    parity = export_prompt_learner(learner, path)
    if parity > PARITY_TOL:
        path.unlink(missing_ok=True)
        raise BundleError(f"prompt learner ONNX differs from PyTorch by {parity:.2e} (> {PARITY_TOL}): not recorded")
    bundle.register_file(LEARNER_FILE)
    spec = PromptLearnerSpec(file=LEARNER_FILE, llm_sha256=bundle.manifest.files[bundle.manifest.llm.file].sha256,
                             n_tokens=learner.n_tokens, n_embd=learner.n_embd, map_size=MAP_SIZE,
                             feature_names=list(FEATURE_NAMES), trained_on=[str(Path(f)) for f in normals],
                             samples=len(train_examples), steps=steps, final_loss=float(np.mean(losses[-5:])),
                             heldout_accuracy=accuracy, parity_max_abs_diff=parity, created_at=utc_now())
    bundle.manifest = bundle.manifest.model_copy(update={"prompt_learner": spec})
    bundle.write_manifest()
    return spec
