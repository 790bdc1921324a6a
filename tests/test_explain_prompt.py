"""The grounded prompt carries the findings; yes/no answers are parsed strictly."""

from __future__ import annotations

import pytest

from lineguard.runtime.contract import Region, Verdict
from lineguard.runtime.llm.prompts import describe, explanation_messages, parse_yes_no


def test_findings_name_product_verdict_and_location() -> None:
    verdict = Verdict(product="weave", verdict="NG", score=56.3, p_value=2.7e-44,
                      regions=[Region(grid="top left", bbox=(1, 2, 30, 30), area_fraction=0.043, peak=56.3)])
    text = describe(verdict)
    assert "weave" in text and "NG" in text and "top left of the image, 4.3% of its area" in text
    assert "very high" in text
    messages = explanation_messages(verdict, "Why?")
    assert [m["role"] for m in messages] == ["system", "user"] and "Question: Why?" in messages[1]["content"]


def test_ok_findings_say_no_regions() -> None:
    text = describe(Verdict(product="weave", verdict="OK", score=4.2, p_value=0.6))
    assert "no anomaly was found" in text and "nowhere" in text


@pytest.mark.parametrize("answer, parsed", [("Yes.", True), ("no", False), ("  NO, it is fine", False),
                                            ("Yes there is", True), ("Maybe", None), ("yesterday", None), ("", None)])
def test_yes_no_parsing(answer: str, parsed: bool | None) -> None:
    assert parse_yes_no(answer) is parsed


def test_findings_cite_the_measured_evidence() -> None:
    from lineguard.runtime.contract import RegionEvidence

    evidence = RegionEvidence(brightness="lower", grey_delta=-41.0, grey_delta_sigma=-8.2, hue_direction="none",
                              colour_shift=1.0, colour_shift_sigma=0.5, texture="higher", contrast_ratio=1.9,
                              contrast_sigma=6.0, edges="higher", edge_ratio=2.1, shape="elongated", shape_from="core",
                              elongation=9.0, solidity=0.6, area_px=300, area_percent=0.6, length_px=90.0,
                              width_px=3.3, length_mm=4.5, width_mm=0.2, peak_vs_normals=3.1, normals_compared=99,
                              likely_kind="scratch or crack", kind_certainty="likely")
    verdict = Verdict(product="weave", verdict="NG", score=9.0, p_value=0.001, regions=[
        Region(grid="top left", bbox=(1, 2, 30, 30), area_fraction=0.043, peak=9.0, evidence=evidence)])
    text = describe(verdict)
    for phrase in ("darker than normal parts by 41 grey levels (8 times the normal variation)",
                   "texture rougher (local contrast 1.9x normal)", "more edges", "thin and elongated (4.5 mm long",
                   "Probable defect class: scratch or crack (likely)",
                   "3.1x the largest seen among 99 normal parts (beyond every normal part: a false alarm is unlikely)"):
        assert phrase in text, phrase
    within = verdict.model_copy(update={"regions": [verdict.regions[0].model_copy(update={
        "evidence": evidence.model_copy(update={"peak_vs_normals": 0.8})})]})
    assert "within the range of normal parts: a false alarm is possible" in describe(within)


@pytest.mark.parametrize("chunks, complete, said", [
    (["The scratch", " is dark.", " It is 3", ".1 mm long", " and"], False, "The scratch is dark."),
    (["The scratch", " is dark.", " It is 3", ".1 mm long."], False, "The scratch is dark. It is 3.1 mm long."),
    (["The scratch", " is dark.", " It ends"], True, "The scratch is dark. It ends"),
    (["Nothing ends", " here"], False, "Nothing ends here..."),
    (["A 3."], False, "A 3..."),
])
def test_answers_cut_by_the_budget_end_at_a_sentence(chunks: list[str], complete: bool, said: str) -> None:
    from lineguard.runtime.llm.worker import SentenceGate

    gate = SentenceGate()
    out = "".join(gate.feed(c) for c in chunks) + gate.finish(complete)
    assert out == said
