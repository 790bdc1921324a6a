"""The grounded prompt: what the LLM is told about an inspected part, and only that.

Usage::

    messages = explanation_messages(verdict, "Why was this part rejected?")
    messages = anomaly_question_messages(verdict)      # AnomalyGPT's yes/no question
    parse_yes_no("Yes, there is a scratch.")            # True; None when not a clear answer
"""

from __future__ import annotations

import re

from lineguard.runtime.messages import Verdict

SYSTEM = (
    "You are the inspection assistant of an industrial production line. A vision inspector has "
    "already examined the part; its findings are given to you. Answer in one to three short "
    "sentences for a technician, using only those findings. Always say where the anomaly is "
    "(the image is divided into a 3x3 grid: top left, top, top right, left, center, right, "
    "bottom left, bottom, bottom right)."
)
DEFAULT_QUESTION = "What did the inspection find on this part, and where?"


def confidence_words(p_value: float | None) -> str:
    """Small models misread raw p-values: say how sure the inspector is in words."""
    if p_value is None:
        return "not calibrated (zero-shot)"
    if p_value < 1e-6:
        return "very high"
    if p_value < 1e-3:
        return "high"
    if p_value < 0.05:
        return "moderate"
    return "low (the part looks like the enrolled normal parts)"


def describe(verdict: Verdict) -> str:
    """The findings in plain words: product, verdict, where on the 3x3 grid, how large, how sure."""
    product = verdict.product or "unknown product"
    lines = [f"Product: {product}."]
    if verdict.verdict == "NG":
        lines.append(f"Verdict: NG. The {product} part was rejected because the vision inspector found an anomaly.")
    elif verdict.verdict == "OK":
        lines.append(f"Verdict: OK. The {product} part is normal; no anomaly was found.")
    else:
        lines.append(f"Verdict: {verdict.verdict}. No judgement was made for this part.")
    if verdict.regions:
        where = "; ".join(f"{r.grid} of the image, {r.area_fraction:.1%} of its area" for r in verdict.regions)
        lines.append(f"Where the anomaly is: {where}.")
    else:
        lines.append("Where the anomaly is: nowhere.")
    if verdict.verdict in ("OK", "NG"):
        lines.append(f"Confidence of the anomaly finding: {confidence_words(verdict.p_value)}.")
    return " ".join(lines)


def explanation_messages(verdict: Verdict, question: str | None = None) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"Inspection findings: {describe(verdict)}\nQuestion: {question or DEFAULT_QUESTION}\n"
                                    "In your answer, name the product and say where the anomaly is, if there is one."},
    ]


def anomaly_question_messages(verdict: Verdict) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"Inspection findings: {describe(verdict)}\n"
                                    "Is there an anomaly in this part? Answer with exactly one word: yes or no."},
    ]


_YES_NO = re.compile(r"^\W*(yes|no)\b", re.IGNORECASE)


def parse_yes_no(answer: str) -> bool | None:
    """True for yes, False for no; None unless the answer starts with a clear yes or no."""
    match = _YES_NO.match(answer.strip())
    return None if match is None else match.group(1).lower() == "yes"
