"""``lineguard export prompt-learner`` end to end on a tiny LLM: train against the bundle's own GGUF, record it
in the manifest tied to that GGUF, and serve soft-grounded answers and LLM verdicts from it.

The tiny random Qwen2 of test_hf_to_gguf.py (ChatML template, F32 GGUF) stands in for the packaged model:
transformers loads it back from the GGUF exactly as it loads the packaged Q4_K_M one, so everything but
the model's size is the real path. What the learner learns on the packaged model is measured by
``lineguard eval`` (README), not here.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest

llama_cpp = pytest.importorskip("llama_cpp")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # transformers' GGUF loading needs it
pytest.importorskip("tokenizers")

from image_folders import write_normals  # noqa: E402
from test_hf_to_gguf import tiny_gguf  # noqa: E402

from lineguard.export.llm import export_llm  # noqa: E402
from lineguard.export.prompt_learner_bundle import build_prompt_learner  # noqa: E402
from lineguard.runtime.bundle import Bundle  # noqa: E402
from lineguard.runtime.contract import ImageEvidence, Verdict  # noqa: E402
from lineguard.runtime.llm.grounding import Grounder, GroundingError  # noqa: E402
from lineguard.runtime.llm.judge import LlmJudge  # noqa: E402
from lineguard.runtime.llm.prompts import explanation_messages  # noqa: E402
from lineguard.runtime.llm.worker import LlmSettings, LlmWorker  # noqa: E402


@pytest.fixture(scope="module")
def tiny_ggufs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny-llm")
    return tiny_gguf(root / "qwen2", "qwen2")[2], tiny_gguf(root / "llama", "llama")[2]


@pytest.fixture(scope="module")
def learner_bundle(enrolled_dir: Path, weave_parts: list[np.ndarray], tiny_ggufs, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("learner")
    bundle = root / "bundle"
    shutil.copytree(enrolled_dir, bundle)
    export_llm(bundle, gguf_file=tiny_ggufs[0])
    normals = write_normals(root / "weave", weave_parts[16:28])
    build_prompt_learner(bundle, [normals], frames_per_product=8, shots=4, steps=3, batch=2, log=lambda m: None,
                         progress=False)
    return bundle


def test_the_learner_is_recorded_with_its_llm(learner_bundle: Path) -> None:
    bundle = Bundle.open(learner_bundle)  # verifies every checksum, prompt_learner.onnx included
    spec = bundle.manifest.prompt_learner
    assert spec is not None and spec.file in bundle.manifest.files
    assert spec.llm_sha256 == bundle.manifest.files[bundle.manifest.llm.file].sha256
    assert spec.n_tokens == 14 and spec.n_embd == 64 and spec.steps == 3 and spec.samples == 12
    assert spec.parity_max_abs_diff < 1e-4 and spec.heldout_accuracy is not None
    vectors = Grounder.for_bundle(bundle, "soft").vectors(np.full((224, 224), 5.0, np.float32),
                                                          np.zeros((224, 224, 3), np.uint8))
    assert vectors.shape == (14, 64) and vectors.dtype == np.float32 and np.isfinite(vectors).all()


def test_soft_grounded_answers_and_verdicts_run(learner_bundle: Path) -> None:
    bundle = Bundle.open(learner_bundle)
    settings = LlmSettings(n_ctx=4096, max_tokens=6, nice=0)  # the tiny vocabulary spells prompts out byte by byte
    worker = LlmWorker(bundle.path(bundle.manifest.llm.file), settings).start()
    try:
        for mode in ("soft", "both"):
            grounder = Grounder.for_bundle(bundle, mode)
            amap, image = np.full((224, 224), 5.0, np.float32), np.zeros((224, 224, 3), np.uint8)
            messages = explanation_messages(Verdict(product="weave", verdict="NG"), grounding=mode)
            handle = worker.submit(uuid.uuid4().hex, messages, 6, soft_prompt=grounder.vectors(amap, image))
            result = handle.result(60.0)
            assert result is not None and result.error is None and result.final.completion_tokens > 0
            # the judge: the tiny model gives no clear yes/no, so the vision verdict stands, but it was asked
            judge = LlmJudge(worker, grounder=grounder)
            evidence = None if mode == "soft" else ImageEvidence(candidates=0)  # soft needs no measurements
            assert judge.judge_batch([(evidence, "weave")], timeout_s=60.0, images=[(amap, image)]) == [None]
            assert judge.stats()["asked"] == 1 and judge.stats()["errors"] == 0
            with pytest.raises(ValueError, match="anomaly map"):
                judge.judge_batch([(evidence, "weave")], timeout_s=1.0)
    finally:
        worker.close()


def test_a_new_llm_drops_the_learner(learner_bundle: Path, tiny_ggufs, tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(learner_bundle, copy)
    export_llm(copy, gguf_file=tiny_ggufs[1])
    bundle = Bundle.open(copy)
    assert bundle.manifest.prompt_learner is None and "prompt_learner.onnx" not in bundle.manifest.files
    assert not (copy / "prompt_learner.onnx").exists()
    with pytest.raises(GroundingError):
        Grounder.for_bundle(bundle, "soft")
