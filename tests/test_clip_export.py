"""The ``clip`` encoder family: a Hugging Face CLIP folder -> bundle, proven with a tiny random CLIP.

No weights are needed: a randomly initialised ``CLIPConfig`` model and a word-level tokenizer trained
offline are saved as a local folder, exactly the layout ``--weights DIR`` expects.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lineguard.export.text_prototypes import prompts


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import CLIPConfig, CLIPModel, PreTrainedTokenizerFast

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-clip")
    config = CLIPConfig(
        text_config={"vocab_size": 128, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "max_position_embeddings": 32, "bos_token_id": 0, "eos_token_id": 1},
        vision_config={"image_size": 64, "patch_size": 16, "hidden_size": 32, "intermediate_size": 64,
                       "num_hidden_layers": 4, "num_attention_heads": 2},
        projection_dim=24,
    )
    CLIPModel(config).eval().save_pretrained(folder)
    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    normal, abnormal = prompts()
    tokenizer.train_from_iterator(normal + abnormal, trainers.WordLevelTrainer(special_tokens=["[UNK]", "[PAD]"]))
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(folder)
    return folder


def test_clip_encoder_stages(tiny_clip_dir: Path) -> None:
    from lineguard.export.encoders import ClipVisionEncoder, build_encoder

    encoder = build_encoder("clip", tiny_clip_dir)
    assert isinstance(encoder, ClipVisionEncoder)
    specs = encoder.stage_specs((64, 64))
    assert [(s.channels, s.stride, s.grid) for s in specs] == [(32, 16, (4, 4))] * 4
    assert encoder.layer_ids == (1, 2, 3, 4)


def test_clip_bundle_export_parity_and_inference(tiny_clip_dir: Path, tmp_path: Path, weave_parts) -> None:
    from lineguard.export.vision import export_vision
    from lineguard.runtime.scoring.enroll import enroll_product
    from lineguard.runtime.scoring.inspector import Inspector

    bundle = export_vision(tmp_path / "clip", encoder_family="clip", weights=tiny_clip_dir, steps=5, samples=16)
    m = bundle.manifest
    assert m.encoder.family == "clip" and m.preprocessing.input_size == (64, 64)
    assert m.parity.passed and max(m.parity.max_abs_diff.values()) <= m.parity.tolerance
    assert m.prototypes.text_encoder == "clip text tower"
    normal, abnormal = bundle.prototypes()
    assert normal.shape == (24,) and np.isclose(np.linalg.norm(normal), 1.0, atol=1e-5)
    enroll_product(bundle, "weave", weave_parts[:2])
    verdicts = Inspector(bundle).inspect_batch(weave_parts[4:6], "weave")
    assert all(v.verdict in ("OK", "NG") and v.p_value is not None for v in verdicts)


def test_clip_needs_a_local_folder(tmp_path: Path) -> None:
    from lineguard.export.encoders import EncoderError, build_encoder

    with pytest.raises(EncoderError, match="--weights"):
        build_encoder("clip")
    with pytest.raises(EncoderError, match="config.json"):
        build_encoder("clip", tmp_path)
