"""AnomalyGPT's prompt learner: the localisation result turned into soft-prompt vectors in the LLM's input space.

Usage::

    learner = PromptLearner(n_embd=llm.config.hidden_size, feature_dim=384, target_rms=embedding_rms(llm))
    prompts = learner(anomaly_map, feature)               # (B, 1, 28, 28), (B, 384) -> (B, M, n_embd)
    diff = export_prompt_learner(learner, bundle / "prompt_learner.onnx")   # ORT vs torch, max abs diff
    losses = train_prompt_learner(learner, llm, examples, steps=200)   # Example(map, feature, before, after, answer)

Inputs: the anomaly map downsampled to ``MAP_SIZE`` x ``MAP_SIZE`` (probabilities 0..1) and one pooled
feature vector of the image (e.g. the encoder's mean patch feature). Output: ``M = n_base + 9 + 1`` vectors
of the LLM's hidden size -- ``n_base`` learned context vectors (AnomalyGPT's base prompts), one vector per
cell of the 3x3 location grid (the same grid the location words use), and one for the global feature.
Each vector is RMS-normalised and scaled by a learned scale initialised to the RMS of the LLM's token
embeddings, so the soft tokens start at the magnitude the LLM expects from real tokens.

The runtime (lineguard.runtime.llm.soft_prompt) runs the ONNX graph with ONNX Runtime and feeds the
vectors to llama.cpp through its batch embedding input. Training here is the AnomalyGPT objective on
supervised pairs: the LLM is frozen, the learner gets the cross-entropy of the answer tokens given
``[prefix tokens, soft prompts, question tokens]``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lineguard.export.onnx_export import export_onnx, onnx_parity

MAP_SIZE = 28
GRID = 3
INPUT_NAMES = ["anomaly_map", "feature"]
OUTPUT_NAMES = ["soft_prompt"]


def embedding_rms(model: nn.Module) -> float:
    """RMS of a Hugging Face causal LM's input token embeddings (the scale its layers expect)."""
    weight = model.get_input_embeddings().weight.detach().float()
    return float(weight.pow(2).mean(dim=-1).sqrt().mean())


class PromptLearner(nn.Module):
    """(anomaly map (B, 1, 28, 28), feature (B, F)) -> soft prompt (B, n_base + 10, n_embd)."""

    def __init__(self, n_embd: int, feature_dim: int, n_base: int = 4, width: int = 32,
                 target_rms: float = 1.0) -> None:
        super().__init__()
        self.n_embd, self.feature_dim, self.n_base = n_embd, feature_dim, n_base
        self.conv = nn.Sequential(  # 28 -> 14 -> 7 -> 3: one cell per location-grid square
            nn.Conv2d(1, width // 2, 3, padding=1), nn.GELU(), nn.MaxPool2d(2),
            nn.Conv2d(width // 2, width, 3, padding=1), nn.GELU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.GELU(),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2), nn.GELU(),
        )
        self.cell = nn.Linear(2 * width, n_embd)
        self.cell_pos = nn.Parameter(0.02 * torch.randn(GRID * GRID, n_embd))
        self.global_ = nn.Sequential(nn.Linear(feature_dim + 2, 4 * width), nn.GELU(), nn.Linear(4 * width, n_embd))
        self.base = nn.Parameter(torch.randn(n_base, n_embd))
        self.log_scale = nn.Parameter(torch.tensor(float(np.log(target_rms))))

    @property
    def n_tokens(self) -> int:
        return self.n_base + GRID * GRID + 1

    def forward(self, anomaly_map: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
        b = anomaly_map.shape[0]
        cells = self.conv(anomaly_map).flatten(2).transpose(1, 2)          # (B, 9, 2w)
        cells = self.cell(cells) + self.cell_pos                            # (B, 9, n_embd)
        stats = torch.stack([anomaly_map.amax(dim=(1, 2, 3)), anomaly_map.mean(dim=(1, 2, 3))], dim=1)
        glob = self.global_(torch.cat([feature, stats], dim=1)).unsqueeze(1)  # (B, 1, n_embd)
        base = self.base.unsqueeze(0).expand(b, -1, -1)
        tokens = torch.cat([base, cells, glob], dim=1)
        rms = tokens.pow(2).mean(dim=-1, keepdim=True).add(1e-6).sqrt()
        return tokens / rms * self.log_scale.exp()


def example_inputs(learner: PromptLearner, batch: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic sample inputs: a blob-shaped anomaly map and a random feature vector."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:MAP_SIZE, 0:MAP_SIZE]
    maps = np.empty((batch, 1, MAP_SIZE, MAP_SIZE), np.float32)
    for i in range(batch):
        cy, cx, r = rng.uniform(4, MAP_SIZE - 4), rng.uniform(4, MAP_SIZE - 4), rng.uniform(2, 6)
        maps[i, 0] = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    return maps, rng.standard_normal((batch, learner.feature_dim)).astype(np.float32)


def export_prompt_learner(learner: PromptLearner, path: Path, check_batch: int = 2) -> float:
    """ONNX export (dynamic batch) and the max abs diff of ONNX Runtime vs PyTorch on sample inputs."""
    learner = learner.eval()
    maps, feats = example_inputs(learner, 1)
    export_onnx(learner, (torch.from_numpy(maps), torch.from_numpy(feats)), Path(path), INPUT_NAMES, OUTPUT_NAMES)
    maps, feats = example_inputs(learner, check_batch, seed=1)
    return onnx_parity(learner, Path(path), dict(zip(INPUT_NAMES, (maps, feats), strict=True)))


def soft_prompt_inputs_embeds(llm: nn.Module, prompts: torch.Tensor, prefix_ids: Sequence[int],
                              question_ids: Sequence[int]) -> torch.Tensor:
    """``[embed(prefix), prompts, embed(question)]`` as ``inputs_embeds`` (B, L, n_embd) for the HF model."""
    embed = llm.get_input_embeddings()
    b = prompts.shape[0]
    parts = []
    if len(prefix_ids):
        parts.append(embed(torch.tensor([list(prefix_ids)])).expand(b, -1, -1))
    parts.append(prompts)
    if len(question_ids):
        parts.append(embed(torch.tensor([list(question_ids)])).expand(b, -1, -1))
    return torch.cat(parts, dim=1)


@dataclass(frozen=True)
class Example:
    """One supervised pair: the learner's inputs, the prompt's token ids around the soft prompt, the answer."""

    anomaly_map: np.ndarray  # (1, MAP_SIZE, MAP_SIZE) float32
    feature: np.ndarray  # (F,) float32
    before: tuple[int, ...]  # ids before the soft prompt (system turn, the user turn's start)
    after: tuple[int, ...]  # ids after it (the question, the assistant turn's header)
    answer: tuple[int, ...]  # the target ids (the answer and the end-of-turn token)


def _prefix_cache(llm: nn.Module, ids: tuple[int, ...], batch: int) -> object | None:
    """The KV cache of the prompt's start, identical for every example of a group: computed once."""
    if not ids:
        return None
    with torch.no_grad():
        return llm.model(input_ids=torch.tensor([list(ids)]).expand(batch, -1), use_cache=True).past_key_values


def train_prompt_learner(learner: PromptLearner, llm: nn.Module, examples: Sequence[Example], steps: int = 200,
                         lr: float = 1e-3, batch: int = 8, seed: int = 0,
                         on_step: Callable[[int, float], None] | None = None) -> list[float]:
    """Fit the learner with the LLM frozen; returns the loss per step (``on_step(step, loss)``: progress).

    Loss: cross-entropy of the answer tokens, teacher-forced after ``[before, soft prompt, after]``: the
    AnomalyGPT objective. Examples that share ``before`` and ``after`` form a group; each step draws
    ``batch`` examples of one group (with replacement), runs the group's common prefix from a cached KV
    state (it does not depend on the learner), and computes logits only at the answer positions (a
    Qwen2 vocabulary is 152k wide).
    """
    for p in llm.parameters():
        p.requires_grad_(False)
    llm.eval()
    learner.train()
    opt = torch.optim.AdamW(learner.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    embed = llm.get_input_embeddings()
    groups: dict[tuple[tuple[int, ...], tuple[int, ...]], list[Example]] = {}
    for ex in examples:
        groups.setdefault((ex.before, ex.after), []).append(ex)
    keys = list(groups)
    caches = {key: _prefix_cache(llm, key[0], batch) for key in keys}
    weights = torch.tensor([len(groups[k]) for k in keys], dtype=torch.float)
    losses = []
    for step in range(steps):
        key = keys[int(torch.multinomial(weights, 1, generator=gen))]
        members = groups[key]
        chosen = [members[i] for i in torch.randint(len(members), (batch,), generator=gen).tolist()]
        maps = torch.from_numpy(np.stack([ex.anomaly_map for ex in chosen]))
        feats = torch.from_numpy(np.stack([ex.feature for ex in chosen]))
        prompts = learner(maps, feats)
        width = max(len(ex.answer) for ex in chosen)
        answers = torch.tensor([list(ex.answer) + [0] * (width - len(ex.answer)) for ex in chosen])
        labels = torch.tensor([list(ex.answer) + [-100] * (width - len(ex.answer)) for ex in chosen])
        parts = [prompts]
        if key[1]:
            parts.append(embed(torch.tensor([list(key[1])])).expand(batch, -1, -1))
        parts.append(embed(answers))
        cache = copy.deepcopy(caches[key])  # the forward appends to it
        hidden = llm.model(inputs_embeds=torch.cat(parts, dim=1), past_key_values=cache, use_cache=cache is not None)
        start = prompts.shape[1] + len(key[1]) - 1  # the row at position t predicts token t + 1
        logits = llm.get_output_embeddings()(hidden.last_hidden_state[:, start:start + width])
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(step, losses[-1])
    learner.eval()
    return losses


def answer_logits(learner: PromptLearner, llm: nn.Module, example: Example) -> torch.Tensor:
    """The LLM's next-token logits after ``[before, soft prompt, after]`` (the answer's first token)."""
    with torch.no_grad():
        prompts = learner(torch.from_numpy(example.anomaly_map)[None], torch.from_numpy(example.feature)[None])
        embeds = soft_prompt_inputs_embeds(llm, prompts, example.before, example.after)
        return llm(inputs_embeds=embeds).logits[0, -1]
