"""The grounded prompt carries the findings; yes/no answers are parsed strictly."""

from __future__ import annotations

import pytest

from lineguard.runtime.explain_prompt import describe, explanation_messages, parse_yes_no
from lineguard.runtime.messages import Region, Verdict


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
