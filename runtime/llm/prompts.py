"""The grounded prompt: what the LLM is told about an inspected part, and only that.

Usage::

    messages = explanation_messages(verdict, "Why was this part rejected?")   # findings + measured evidence
    messages = judge_messages(inspection.evidence, product="weave")          # LLM verdict: evidence, no verdict
    parse_yes_no("Yes, there is a scratch.")                                 # True; None when not a clear answer

Explanations get the verdict and, per region, the evidence measured against the enrolled normals
(lineguard.runtime.scoring.region_evidence): brighter/darker, colour, texture, edges, shape and size, the
probable defect class with its certainty, and how the region's score compares with the largest seen
among normal parts (the false-alarm question). The LLM verdict's prompt holds the same measurements of
the frame's strongest deviation but never the vision verdict, its p-value or confidence: the model must
decide from the evidence (DESIGN.md §2.5).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from lineguard.runtime.contract import ImageEvidence, Region, RegionEvidence, Verdict
from lineguard.runtime.llm.grounding import Grounding
from lineguard.runtime.llm.soft_prompt import SOFT_PROMPT_MARKER

SYSTEM = (
    "You are the inspection assistant of an industrial production line. A vision inspector has "
    "already examined the part and measured each anomalous region against normal parts; its findings "
    "are given to you. Answer in at most three short sentences for a technician, using only those "
    "findings, and cite at least one measurement. Begin every answer by saying where the anomaly is (the "
    "image is divided into a 3x3 grid: top left, top, top right, left, center, right, bottom left, bottom, "
    "bottom right). "
    "Asked what kind of defect it is, name the probable defect class from the findings and say how certain "
    "it is. Asked whether it is a false alarm, compare its anomaly score with the largest one seen among "
    "normal parts."
)
JUDGE_SYSTEM = (
    "You check parts on an industrial production line. You are given measurements of one part's strongest "
    "deviation, compared with normal parts of the same product. Decide whether the part has an anomaly: a "
    "deviation clearly beyond what normal parts show."
)
DEFAULT_QUESTION = "What did the inspection find on this part, and where?"
# soft grounding: the model reads the prompt learner's vectors (the anomaly map), not measurements
SOFT_SYSTEM = (
    "You are the inspection assistant of an industrial production line. You are shown the vision "
    "inspector's anomaly map of one part. Say whether the part has an anomaly and where it is on the 3x3 "
    "grid (top left, top, top right, left, center, right, bottom left, bottom, bottom right), in one short "
    "sentence."
)
SOFT_MAP = f"Anomaly map: {SOFT_PROMPT_MARKER}"
JUDGE_QUESTION = "Is there an anomaly in this part? Answer with exactly one word: yes or no."


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


def _times(value: float) -> str:
    return f"{value:.1f}x" if value < 10 else f"{value:.0f}x"


def size_words(e: RegionEvidence) -> str:
    if e.length_mm is not None and e.width_mm is not None:
        return f"{e.length_mm:.1f} mm long, {e.width_mm:.1f} mm wide"
    return f"{e.length_px:.0f} px long, {e.width_px:.0f} px wide"


def shape_words(e: RegionEvidence) -> str:
    if e.shape == "elongated":
        return f"thin and elongated ({size_words(e)}, {e.elongation:.0f} times longer than wide)"
    if e.shape == "compact":
        return f"a compact spot ({size_words(e)})"
    return f"large and diffuse ({e.area_percent:.1f}% of the image)"


def unusual_words(ratio: float | None, normals: int) -> str:
    """The false-alarm comparison: the score against the largest seen among normal parts."""
    if ratio is None or normals == 0:
        return "no normal parts to compare its anomaly score with"
    if ratio > 1.0:
        return (f"its anomaly score is {_times(ratio)} the largest seen among {normals} normal parts "
                "(beyond every normal part: a false alarm is unlikely)")
    return (f"its anomaly score is {ratio:.2f}x the largest seen among {normals} normal parts "
            "(within the range of normal parts: a false alarm is possible)")


def evidence_words(e: RegionEvidence, unusual: bool = True, kind: bool = True) -> str:
    """The measured evidence of one region, one clause per descriptor."""
    clauses, same = [], []
    if e.brightness is not None and e.grey_delta is not None and e.grey_delta_sigma is not None:
        if e.brightness == "unchanged":
            same.append("brightness")
        else:
            word = "darker" if e.brightness == "lower" else "brighter"
            clauses.append(f"{word} than normal parts by {abs(e.grey_delta):.0f} grey levels "
                           f"({abs(e.grey_delta_sigma):.0f} times the normal variation)")
    if e.hue_direction not in (None, "none") and e.colour_shift is not None:
        clauses.append(f"colour shifted {e.hue_direction} ({e.colour_shift:.0f} Lab units)")
    if e.texture is not None and e.contrast_ratio is not None:
        if e.texture == "unchanged":
            same.append("texture")
        else:
            word = "smoother" if e.texture == "lower" else "rougher"
            clauses.append(f"texture {word} (local contrast {e.contrast_ratio:.1f}x normal)")
    if e.edges in ("lower", "higher") and e.edge_ratio is not None:
        clauses.append(f"{'fewer' if e.edges == 'lower' else 'more'} edges ({e.edge_ratio:.1f}x normal)")
    if same:
        clauses.append(f"{' and '.join(same)} like normal parts")
    clauses.append(f"shape {shape_words(e)}")
    text = "; ".join(clauses)
    if kind:
        text += f". Probable defect class: {e.likely_kind} ({e.kind_certainty})"
    if unusual:
        text += f"; {unusual_words(e.peak_vs_normals, e.normals_compared)}"
    return text + "."


def region_words(r: Region, unusual: bool = True, kind: bool = True) -> str:
    where = f"{r.grid} of the image, {r.area_fraction:.1%} of its area"
    return where + (f": {evidence_words(r.evidence, unusual, kind)}" if r.evidence is not None else ".")


def describe(verdict: Verdict) -> str:
    """The findings in plain words: product, verdict, where on the 3x3 grid, the measured evidence, how sure."""
    product = verdict.product or "unknown product"
    lines = [f"Product: {product}."]
    if verdict.verdict == "NG":
        at = f" at the {verdict.regions[0].grid} of the image" if verdict.regions else ""
        lines.append(f"Verdict: NG. The {product} part was rejected because the vision inspector found an anomaly{at}.")
    elif verdict.verdict == "OK":
        lines.append(f"Verdict: OK. The {product} part is normal; no anomaly was found.")
    else:
        lines.append(f"Verdict: {verdict.verdict}. No judgement was made for this part.")
    if verdict.regions:
        count = len(verdict.regions)
        lines.append(f"Anomalous regions: {count}." if count > 1 else "Anomalous regions: one.")
        lines.extend(f"Region {i}: {region_words(r)}" for i, r in enumerate(verdict.regions, 1))
    else:
        lines.append("Where the anomaly is: nowhere.")
    if verdict.verdict in ("OK", "NG"):
        lines.append(f"Confidence of the anomaly finding: {confidence_words(verdict.p_value)}.")
    return "\n".join(lines)


ANSWER_BRIEFLY = ("Answer briefly: start with the product and where the anomaly is, if there is one, then cite a "
                  "measurement.")


def explanation_messages(verdict: Verdict, question: str | None = None,
                         history: Sequence[tuple[str, str]] = (), grounding: Grounding = "text") -> list[dict[str, str]]:
    """The chat for ``question`` about a verdict; ``history``: the conversation's earlier (question, answer)
    turns, the first of which carries the findings. ``grounding`` "soft" gives the product and the soft
    prompt's marker instead of the findings, "both" the findings and the marker."""
    turns = [*history, (question or DEFAULT_QUESTION, "")]
    first, answer = turns[0]
    if grounding == "soft":
        opening = [{"role": "system", "content": SOFT_SYSTEM},
                   {"role": "user", "content": f"Product: {verdict.product or 'unknown product'}.\n{SOFT_MAP}\n"
                                               f"Question: {first}"}]
    else:
        shown = f"{describe(verdict)}\n{SOFT_MAP}" if grounding == "both" else describe(verdict)
        opening = [{"role": "system", "content": SYSTEM},
                   {"role": "user", "content": f"Inspection findings:\n{shown}\nQuestion: {first}\n{ANSWER_BRIEFLY}"}]
    messages = opening
    for asked, answer_then in turns[1:]:
        messages.append({"role": "assistant", "content": answer})
        brief = "" if grounding == "soft" else f"\n{ANSWER_BRIEFLY}"
        messages.append({"role": "user", "content": f"Follow-up question: {asked}{brief}"})
        answer = answer_then
    return messages


def judge_findings(evidence: ImageEvidence, product: str) -> str:
    """The LLM verdict's findings: measurements only, never the vision verdict, p-value or confidence."""
    lines = [f"Product: {product or 'unknown product'}."]
    top = evidence.top
    if top is None or top.evidence is None:
        lines.append("No deviation could be measured.")
        return "\n".join(lines)
    lines.append(f"Areas that stand out: {evidence.candidates}.")
    lines.append(f"Strongest deviation: {region_words(top, unusual=False, kind=False)}")
    if evidence.score_vs_normals is not None and evidence.normals_compared:
        lines.append(f"Its anomaly score is {evidence.score_vs_normals:.2f} times the largest seen among "
                     f"{evidence.normals_compared} normal parts.")
    return "\n".join(lines)


def judge_messages(evidence: ImageEvidence | None, product: str, grounding: Grounding = "text") -> list[dict[str, str]]:
    """AnomalyGPT's yes/no question, asked from the evidence alone (``grounding`` "soft": from the soft
    prompt alone, ``evidence`` unused; "both": the measurements and the soft prompt)."""
    if grounding == "soft":
        return [{"role": "system", "content": SOFT_SYSTEM},
                {"role": "user", "content": f"Product: {product or 'unknown product'}.\n{SOFT_MAP}\n{JUDGE_QUESTION}"}]
    if evidence is None:
        raise ValueError("text grounding needs the frame's evidence")
    shown = judge_findings(evidence, product) + (f"\n{SOFT_MAP}" if grounding == "both" else "")
    return [
        {"role": "system", "content": JUDGE_SYSTEM},
        {"role": "user", "content": f"Measurements:\n{shown}\n{JUDGE_QUESTION}"},
    ]


_YES_NO = re.compile(r"^\W*(yes|no)\b", re.IGNORECASE)


def parse_yes_no(answer: str) -> bool | None:
    """True for yes, False for no; None unless the answer starts with a clear yes or no."""
    match = _YES_NO.match(answer.strip())
    return None if match is None else match.group(1).lower() == "yes"
