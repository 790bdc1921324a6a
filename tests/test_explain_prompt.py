"""The grounded prompt carries the findings; yes/no answers are parsed strictly."""

from __future__ import annotations

import pytest

from lineguard.runtime.explain_prompt import describe, explanation_messages, parse_yes_no
from lineguard.runtime.messages import Region, Verdict


def test_findings_name_product_verdict_and_location() -> None:
    verdict = Verdict(product="weave", verdict="NG", score=56.3, p_value=2.7e-44,
                      regions=[Region(grid="top left", bbox=(1, 2, 30, 30), area_fraction=0.043, peak=56.3)])
    text = describe(verdict)
    assert "weave" in text and "NG" in text and "top left (4.3% of the image" in text
    messages = explanation_messages(verdict, "Why?")
    assert [m["role"] for m in messages] == ["system", "user"] and messages[1]["content"].endswith("Question: Why?")


def test_ok_findings_say_no_regions() -> None:
    assert "Anomalous regions: none." in describe(Verdict(product="weave", verdict="OK", score=4.2, p_value=0.6))


@pytest.mark.parametrize("answer, parsed", [("Yes.", True), ("no", False), ("  NO, it is fine", False),
                                            ("Yes there is", True), ("Maybe", None), ("yesterday", None), ("", None)])
def test_yes_no_parsing(answer: str, parsed: bool | None) -> None:
    assert parse_yes_no(answer) is parsed
