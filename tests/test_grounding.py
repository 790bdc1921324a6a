"""Grounding choices without a model: the prompt learner's inputs, the soft/both prompts, and the refusals.

The soft prompt's path through llama.cpp is proven in test_soft_prompt.py; training it against an LLM and
serving it in test_prompt_learner_export.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lineguard.runtime.bundle import Bundle, PromptLearnerSpec
from lineguard.runtime.contract import ImageEvidence, Region, Verdict
from lineguard.runtime.line.config import LineConfig, LineConfigError
from lineguard.runtime.llm.grounding import (
    FEATURE_NAMES,
    MAP_SIZE,
    Grounder,
    GroundingError,
    SoftGrounding,
    learner_inputs,
)
from lineguard.runtime.llm.prompts import JUDGE_QUESTION, explanation_messages, judge_messages
from lineguard.runtime.llm.soft_prompt import SOFT_PROMPT_MARKER


def blob_map(cy: int, cx: int, peak: float = 12.0, size: int = 224) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    return (peak * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 12.0**2)) - 1.0).astype(np.float32)


def test_learner_inputs_see_the_map_and_the_image() -> None:
    image = np.full((224, 224, 3), 120, np.uint8)
    image[20:60, 20:60] = 40  # a dark spot where the map peaks
    amap, feature = learner_inputs(blob_map(40, 40), image)
    assert amap.shape == (1, 1, MAP_SIZE, MAP_SIZE) and amap.dtype == np.float32
    assert feature.shape == (1, len(FEATURE_NAMES)) and feature.dtype == np.float32
    assert amap.min() >= 0.0 and amap.max() <= 1.0
    peak_cell = np.unravel_index(amap[0, 0].argmax(), amap[0, 0].shape)
    assert peak_cell[0] < MAP_SIZE // 3 and peak_cell[1] < MAP_SIZE // 3  # top left, where the blob is
    named = dict(zip(FEATURE_NAMES, feature[0], strict=True))
    assert named["grey_delta"] < -0.5  # darker inside the strongest area
    assert named["peak"] > 0.8
    quiet, quiet_feature = learner_inputs(np.full((224, 224), -1.0, np.float32), image)
    assert quiet.max() == 0.0 and dict(zip(FEATURE_NAMES, quiet_feature[0], strict=True))["peak"] == 0.0
    # NaN or inf in a map never reaches the learner
    broken = blob_map(40, 40)
    broken[0, 0], broken[0, 1] = np.nan, np.inf
    assert np.isfinite(learner_inputs(broken, image)[1]).all()


def test_soft_prompts_hold_the_marker_and_no_findings() -> None:
    verdict = Verdict(product="brick", verdict="NG", p_value=0.001,
                      regions=[Region(grid="top left", bbox=(0, 0, 9, 9), area_fraction=0.1, peak=8.0)])
    soft = explanation_messages(verdict, grounding="soft")
    text = " ".join(m["content"] for m in soft)
    assert text.count(SOFT_PROMPT_MARKER) == 1 and "brick" in text
    assert "Verdict" not in text and "top left of the image" not in text  # the map speaks, not the findings
    both = " ".join(m["content"] for m in explanation_messages(verdict, grounding="both"))
    assert both.count(SOFT_PROMPT_MARKER) == 1 and "Verdict: NG" in both
    plain = " ".join(m["content"] for m in explanation_messages(verdict))
    assert SOFT_PROMPT_MARKER not in plain
    follow = explanation_messages(verdict, "Why?", history=[("What?", "A spot.")], grounding="soft")
    assert sum(m["content"].count(SOFT_PROMPT_MARKER) for m in follow) == 1  # the map once, in the first turn
    judge = judge_messages(None, "brick", grounding="soft")
    assert judge[-1]["content"].endswith(JUDGE_QUESTION) and SOFT_PROMPT_MARKER in judge[-1]["content"]
    with pytest.raises(ValueError):
        judge_messages(None, "brick")  # text grounding needs the evidence
    both_judge = judge_messages(ImageEvidence(candidates=0), "brick", grounding="both")
    assert SOFT_PROMPT_MARKER in both_judge[-1]["content"] and "NG" not in both_judge[-1]["content"]


def test_grounding_is_refused_without_a_matching_learner(bundle_copy: Path) -> None:
    bundle = Bundle.open(bundle_copy)
    assert Grounder.for_bundle(bundle, "text").vectors(np.zeros((4, 4), np.float32), np.zeros((4, 4, 3), np.uint8)) is None
    with pytest.raises(GroundingError, match="export prompt-learner"):
        Grounder.for_bundle(bundle, "soft")
    with pytest.raises(GroundingError):
        Grounder("both")
    # a learner recorded for another GGUF than the bundle's is refused by name
    bundle.manifest = bundle.manifest.model_copy(update={"prompt_learner": PromptLearnerSpec(
        llm_sha256="0" * 64, n_tokens=14, n_embd=64, map_size=MAP_SIZE, feature_names=list(FEATURE_NAMES),
        trained_on=[], samples=0, steps=0, final_loss=0.0, parity_max_abs_diff=0.0, created_at="now")})
    with pytest.raises(GroundingError, match="another LLM|no prompt learner"):
        SoftGrounding(bundle)


def test_line_config_takes_a_grounding() -> None:
    assert LineConfig(line="l1").llm.grounding == "text"
    assert LineConfig(line="l1", llm={"grounding": "both"}).llm.grounding == "both"
    with pytest.raises(LineConfigError, match="grounding"):
        LineConfig(line="l1", llm={"grounding": "pictures"})


def test_groundings_table_shows_each_grounding_beside_vision() -> None:
    from lineguard.evaluation.groundings import VERDICT_CATEGORIES, GroundingReport, GroundingResult, render

    def result(grounding: str, llm: float) -> GroundingResult:
        per = dict.fromkeys(VERDICT_CATEGORIES, 0.0)
        return GroundingResult(grounding=grounding, llm_accuracy=dict.fromkeys(VERDICT_CATEGORIES, llm),
                               vision_accuracy=dict.fromkeys(VERDICT_CATEGORIES, 0.77), llm_false_reject_rate=per,
                               llm_miss_rate=per, llm_fallbacks=dict.fromkeys(VERDICT_CATEGORIES, 0), answers=30,
                               states_true_location=0.5, vision_true_location=0.55, no_contradiction=0.9,
                               ends_sentence=1.0, seconds_per_answer=3.0)

    report = GroundingReport(bundle="bundles/default", learner_trained_on=["a/brick"], learner_steps=40,
                             learner_heldout_accuracy=0.8, per_type=6, created_at="now",
                             results=[result("text", 0.74), result("soft", 0.61), result("both", 0.7)])
    table = render(report)
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| grounding")]
    assert [r.split(" | ")[0] for r in rows] == ["| text", "| soft", "| both"]
    assert "0.61 (0.77)" in rows[1] and "brick" in table and "held-out simulated frames 0.80" in table


def test_a_line_asking_for_soft_grounding_without_a_learner_is_refused_at_start(bundle_copy: Path) -> None:
    from lineguard.runtime.line.assembly import ServerError, line_grounder
    from lineguard.runtime.scoring.inspector import Inspector

    inspector = Inspector(bundle_copy)
    try:
        assert line_grounder(LineConfig(line="l1"), inspector).mode == "text"
        with pytest.raises(ServerError, match="llm.grounding soft.*export prompt-learner"):
            line_grounder(LineConfig(line="l1", llm={"grounding": "soft"}), inspector)
    finally:
        inspector.close()
