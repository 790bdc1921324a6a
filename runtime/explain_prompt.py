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


def describe(verdict: Verdict) -> str:
    """The findings in plain words: product, verdict, regions on the grid, area, scores."""
    lines = [f"Product: {verdict.product or 'unknown'}."]
    if verdict.verdict == "NG":
        lines.append("Verdict: NG (anomalous, rejected).")
    elif verdict.verdict == "OK":
        lines.append("Verdict: OK (normal, no anomaly found).")
    else:
        lines.append(f"Verdict: {verdict.verdict} (no judgement was made).")
    if verdict.score is not None:
        p = f", p-value {verdict.p_value:.2g}" if verdict.p_value is not None else ""
        lines.append(f"Anomaly score {verdict.score:.1f}{p}.")
    if verdict.regions:
        parts = [f"{r.grid} ({r.area_fraction:.1%} of the image, peak {r.peak:.1f})" for r in verdict.regions]
        lines.append("Anomalous regions: " + "; ".join(parts) + ".")
    else:
        lines.append("Anomalous regions: none.")
    return " ".join(lines)


def explanation_messages(verdict: Verdict, question: str | None = None) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"Inspection findings: {describe(verdict)}\nQuestion: {question or DEFAULT_QUESTION}"},
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
