"""``lineguard eval-explanations``: are the LLM's answers faithful to the part and to the measured evidence?

Usage::

    report = evaluate_explanations("bundles/default", "artifacts/eval-data/skimage", "brick", per_type=2)
    report.states_true_location, report.contradicts_evidence, report.kind_agreement
    # lineguard eval-explanations bundles/default --data artifacts/eval-data/skimage --category brick --per-type 2

On an MVTec-AD-style folder with masks (``lineguard.evaluation.data``'s texture set by default) the product is
enrolled into a scratch copy of the bundle exactly as ``lineguard eval`` does; every defect image the
vision verdict calls NG is explained three times, with the panel's questions (the default explanation,
"What kind?", "False alarm?"), through the same prompt and sentence gate as the explanation port. Each
answer is scored by rules, not by another model:

* ``states_true_location``: it names a 3x3 cell the defect's mask lies in (the cell of the mask's centre
  or one holding at least 20% of it); ``vision_true_location`` is the same test of the verdict's top region,
  the ceiling for the LLM;
* ``contradicts_evidence``: it says the opposite of a measured descriptor (darker vs brighter, smoother vs
  rougher, elongated vs compact), names a cell none of the regions is in, names a defect class other than
  the evidence's to "What kind?", or calls a region beyond every normal part a likely false alarm;
* ``cites_evidence``: it uses at least one measured descriptor (not only location and area);
* ``ends_sentence``: it ends at a sentence end;
* ``names_kind`` ("What kind?" answers only): it names the evidence's probable class.

``kind_agreement`` compares the evidence's probable class (rules, no LLM) with the true defect type.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from lineguard.evaluation.mvtec_layout import labelled_test_images, read_mask
from lineguard.runtime.bundle import Bundle, BundleError
from lineguard.runtime.contract import GridCell, RegionEvidence, Verdict
from lineguard.runtime.image_io import image_paths, read_image, read_images, split_normals
from lineguard.runtime.llm.grounding import Grounder, Grounding
from lineguard.runtime.llm.prompts import explanation_messages
from lineguard.runtime.llm.worker import LlmSettings, LlmWorker
from lineguard.runtime.scoring.calibration import DEFAULT_FALSE_REJECT_BUDGET
from lineguard.runtime.scoring.enroll import enroll_product
from lineguard.runtime.scoring.inspector import Inspector
from lineguard.runtime.scoring.location import GRID_WORDS

QUESTIONS: dict[str, str | None] = {
    "explain": None,
    "kind": "What kind of defect could this be?",
    "false_alarm": "Could this be a false alarm?",
}
# words by which an answer names a defect class; the evidence's class is judged by the same words
KIND_WORDS: dict[str, tuple[str, ...]] = {
    "scratch or crack": ("scratch", "crack"),
    "hole, pit or dark spot": ("hole", "pit"),
    "bright spot or inclusion": ("inclusion",),
    "spot or inclusion": ("spot", "inclusion"),
    "stain or discoloration": ("stain", "discolo"),
    "smeared, worn or blurred area": ("smear", "worn", "blur"),
    "rough area, contamination or foreign material": ("rough", "contamina", "foreign"),
    "texture change or foreign material": ("texture change", "foreign"),
}
# which evidence classes fit each true defect type of lineguard.evaluation.data
TRUE_KINDS: dict[str, tuple[str, ...]] = {
    "scratch": ("scratch or crack",),
    "hole": ("hole, pit or dark spot", "spot or inclusion"),
    "stain": ("stain or discoloration",),
    "foreign": ("rough area, contamination or foreign material", "texture change or foreign material"),
    "smear": ("smeared, worn or blurred area",),
    "missing": ("smeared, worn or blurred area", "texture change or foreign material"),
}
EVIDENCE_WORDS = ("darker", "brighter", "grey level", "gray level", "texture", "contrast", "edge", "elongated",
                  "thin", "compact", "diffuse", " mm", " px", "times", "normal variation", "largest", "smoother",
                  "rougher", "colour", "color")


class AnswerScore(BaseModel):
    image: str
    defect_type: str
    question: str
    answer: str
    true_cells: list[GridCell]
    named_cells: list[GridCell]
    states_true_location: bool
    contradicts_evidence: list[str] = Field(description="what the answer contradicts; empty when faithful")
    cites_evidence: bool
    ends_sentence: bool
    names_kind: bool | None = Field(None, description="'What kind?' answers: names the evidence's probable class")
    seconds: float


class ExplanationReport(BaseModel):
    category: str
    shots: int
    model: str
    grounding: Grounding = "text"
    n_defect_images: int
    n_explained: int = Field(description="defect images the vision verdict called NG (only those are explained)")
    n_answers: int
    states_true_location: float
    vision_true_location: float
    no_contradiction: float
    cites_evidence: float
    ends_sentence: float
    names_kind: float = Field(description="share of 'What kind?' answers that name the evidence's probable class")
    by_question: dict[str, dict[str, float]]
    kind_agreement: float = Field(description="share of explained defects whose evidence class fits the true type")
    kinds_by_type: dict[str, dict[str, int]] = Field(description="true type -> evidence class -> count")
    seconds_per_answer: float
    answers: list[AnswerScore]


_TWO = re.compile(r"\b(top|bottom|upper|lower)[\s-]+(left|right)\b")
_ONE = re.compile(r"\b(top|bottom|upper|lower|left|right|center|centre|middle)\b")
_CANON = {"upper": "top", "lower": "bottom", "centre": "center", "middle": "center"}


def named_cells(text: str) -> list[GridCell]:
    """The 3x3 cells an answer names ("upper left" and "centre" too), in order, each once."""
    text = text.lower()
    found: list[tuple[int, str]] = []
    for m in _TWO.finditer(text):
        found.append((m.start(), f"{_CANON.get(m.group(1), m.group(1))} {m.group(2)}"))
    rest = _TWO.sub(lambda m: " " * len(m.group(0)), text)
    for m in _ONE.finditer(rest):
        found.append((m.start(), _CANON.get(m.group(1), m.group(1))))
    cells: list[GridCell] = []
    for _, cell in sorted(found):
        if cell not in cells:
            cells.append(cell)  # type: ignore[arg-type]
    return cells


def true_cells(mask: np.ndarray, share: float = 0.2) -> list[GridCell]:
    """The cell of the mask's centre and every cell holding at least ``share`` of its pixels."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return []
    cells: list[GridCell] = [GRID_WORDS[min(int(3 * ys.mean() / h), 2)][min(int(3 * xs.mean() / w), 2)]]
    counts = Counter(GRID_WORDS[min(int(3 * y / h), 2)][min(int(3 * x / w), 2)] for y, x in zip(ys, xs, strict=True))
    cells += [c for c, n in counts.items() if n >= share * len(ys) and c not in cells]
    return cells


_NEGATED = re.compile(r"\b(?:not|no|rather than|instead of|unlikely to be|ruled out)\s+(?:an?\s+|the\s+)?[a-z-]+")


# descriptors the prompt states (runtime.llm.prompts.evidence_words); an answer restating them names no class
_RESTATED = re.compile(r"compact spot|texture (?:rougher|smoother)|(?:rougher|smoother) texture")


def claimed_text(answer: str, product: str) -> str:
    """The answer, lower case, without what it does not claim: the product's name (a product called
    ``road_crack`` is not a claim of a crack) and negated words ("not a scratch", "rather than a stain")."""
    text = answer.lower()
    for name in {product.lower(), product.lower().replace("_", " "), product.lower().replace("_", "-")}:
        if name:
            text = re.sub(rf"\b{re.escape(name)}\b", " ", text)
    return _NEGATED.sub(" ", text)


def contradictions(answer: str, verdict: Verdict, question: str) -> list[str]:
    """What ``answer`` says against the verdict's measured evidence (empty: faithful)."""
    text = claimed_text(answer, verdict.product)
    found: list[str] = []
    cells = named_cells(text)
    region_cells = {r.grid for r in verdict.regions}
    if cells and region_cells and not region_cells & set(cells):
        found.append(f"location {cells} where the regions are {sorted(region_cells)}")
    evidence: RegionEvidence | None = verdict.regions[0].evidence if verdict.regions else None
    if evidence is None:
        return found
    opposite = {("brightness", "lower"): ("brighter", "lighter"), ("brightness", "higher"): ("darker",),
                ("texture", "lower"): ("rougher",), ("texture", "higher"): ("smoother",),
                ("shape", "elongated"): ("compact", "round"), ("shape", "compact"): ("elongated",)}
    for (field, value), words in opposite.items():
        if getattr(evidence, field) == value:
            found += [f"says '{w}' where {field} is {value}" for w in words if w in text]
    if question == "kind":
        text = _RESTATED.sub(" ", text)  # the prompt's own shape and texture words are no class claim
        ours = KIND_WORDS.get(evidence.likely_kind, ())
        others = {w for kind, words in KIND_WORDS.items() if kind != evidence.likely_kind for w in words} - set(ours)
        named = sorted(w for w in others if w in text)
        if named and not any(w in text for w in ours):
            found.append(f"names {named}, evidence says {evidence.likely_kind}")
    says_false_alarm = any(  # a sentence that asserts a false alarm and does not negate it
        re.search(r"\b(is|likely|probably|could well be) a false alarm", sentence)
        and not re.search(r"\b(not|unlikely|no)\b", sentence)
        for sentence in re.split(r"(?<=[.!?])\s+", text))
    if (evidence.peak_vs_normals or 0.0) > 1.0 and says_false_alarm:
        found.append("calls a region beyond every normal part a likely false alarm")
    return found


def names_kind(answer: str, evidence: RegionEvidence | None, product: str = "") -> bool:
    """Does the answer name the evidence's probable defect class (by its words, not in the product's name
    and not negated)?"""
    words = KIND_WORDS.get(evidence.likely_kind, ()) if evidence is not None else ()
    text = claimed_text(answer, product)
    return any(w in text for w in words)


def _ask(worker: LlmWorker, messages: list[dict[str, str]], max_tokens: int, timeout_s: float,
         soft_prompt: np.ndarray | None = None) -> str:
    handle = worker.submit(uuid.uuid4().hex, messages, max_tokens, whole_sentences=True, soft_prompt=soft_prompt)
    if handle.result(timeout_s) is None:
        handle.cancel()  # what it said until the timeout is scored
    return handle.text


def evaluate_explanations(bundle_dir: str | Path, data_root: str | Path, category: str, shots: int = 4,
                          seed: int = 0, per_type: int | None = 2, max_tokens: int = 96, threads: int = 2,
                          timeout_s: float = 120.0, budget: float = DEFAULT_FALSE_REJECT_BUDGET,
                          on_answer: Callable[[AnswerScore], None] | None = None,
                          grounding: Grounding = "text") -> ExplanationReport:
    """Explain up to ``per_type`` NG defect images of each type (None: all) and score every answer
    (``on_answer`` sees each as it is scored: progress), the LLM grounded by ``grounding``."""
    category_dir = Path(data_root) / category
    chosen, calibration = split_normals(image_paths(category_dir / "train" / "good"), shots, seed, None)
    items: list[tuple[Path, str, Path]] = []
    taken: Counter[str] = Counter()
    for path, defect_type, mask in labelled_test_images(category_dir):
        if defect_type != "good" and mask is not None and (per_type is None or taken[defect_type] < per_type):
            items.append((path, defect_type, mask))
            taken[defect_type] += 1
    with Bundle.scratch_copy(bundle_dir, prefix="lineguard-explain-eval-") as bundle:
        if bundle.manifest.llm is None:
            raise BundleError("eval-explanations needs an LLM in the bundle: run `lineguard export llm BUNDLE` first")
        inspector = Inspector(bundle, false_reject_budget=budget)
        grounder = Grounder.for_bundle(bundle, grounding)
        enroll_product(bundle, category, read_images(chosen), calibration_images=read_images(calibration),
                       seed=seed, chain=inspector.chain)
        # faithfulness, not speed: only the token budget bounds an answer (a busy machine must not cut it)
        settings = LlmSettings(n_threads=threads, nice=0, max_tokens=max_tokens, max_seconds=timeout_s)
        worker = LlmWorker(bundle.path(bundle.manifest.llm.file), settings).start()
        answers: list[AnswerScore] = []
        vision_right: list[bool] = []
        kinds: dict[str, Counter[str]] = {}
        try:
            for path, defect_type, mask_path in items:
                inspection = inspector.analyze([read_image(path)], category)[0]
                verdict = inspection.to_verdict()
                if verdict.verdict != "NG" or not verdict.regions:
                    continue
                vectors = grounder.vectors(inspection.anomaly_map, inspection.model_rgb)  # only frames explained
                truth = true_cells(read_mask(mask_path))
                vision_right.append(verdict.regions[0].grid in truth)
                evidence = verdict.regions[0].evidence
                kinds.setdefault(defect_type, Counter())[evidence.likely_kind if evidence else "none"] += 1
                for name, question in QUESTIONS.items():
                    start = time.perf_counter()
                    answer = _ask(worker, explanation_messages(verdict, question, grounding=grounding), max_tokens,
                                  timeout_s, vectors)
                    named = named_cells(answer)
                    answers.append(score := AnswerScore(
                        image=str(path.relative_to(category_dir)), defect_type=defect_type, question=name,
                        answer=answer, true_cells=truth, named_cells=named,
                        states_true_location=bool(set(named) & set(truth)),
                        contradicts_evidence=contradictions(answer, verdict, name),
                        cites_evidence=any(w in answer.lower() for w in EVIDENCE_WORDS),
                        ends_sentence=answer.rstrip()[-1:] in (".", "!", "?"),
                        names_kind=names_kind(answer, evidence, verdict.product) if name == "kind" else None,
                        seconds=time.perf_counter() - start))
                    if on_answer is not None:
                        on_answer(score)
        finally:
            worker.close()
        model = f"{bundle.manifest.llm.name} {bundle.manifest.llm.quantization}"

    def rate(scores: list[AnswerScore], test: str) -> float:
        if not scores:
            return 0.0
        values = [not s.contradicts_evidence if test == "no_contradiction" else bool(getattr(s, test)) for s in scores]
        return float(np.mean(values))

    tests = ("states_true_location", "no_contradiction", "cites_evidence", "ends_sentence")
    agree = [kind in TRUE_KINDS.get(t, ()) for t, counter in kinds.items() for kind in counter.elements()]
    return ExplanationReport(
        category=category, shots=shots, model=str(model), grounding=grounding, n_defect_images=len(items),
        n_explained=len(vision_right), n_answers=len(answers),
        states_true_location=rate(answers, "states_true_location"),
        vision_true_location=float(np.mean(vision_right)) if vision_right else 0.0,
        no_contradiction=rate(answers, "no_contradiction"), cites_evidence=rate(answers, "cites_evidence"),
        ends_sentence=rate(answers, "ends_sentence"),
        names_kind=rate([a for a in answers if a.question == "kind"], "names_kind"),
        by_question={q: {t: rate([a for a in answers if a.question == q], t) for t in tests} for q in QUESTIONS},
        kind_agreement=float(np.mean(agree)) if agree else 0.0,
        kinds_by_type={t: dict(c) for t, c in kinds.items()},
        seconds_per_answer=float(np.mean([a.seconds for a in answers])) if answers else 0.0,
        answers=answers,
    )


def summary(report: ExplanationReport) -> str:
    """The report's figures in a few lines for the terminal."""
    lines = [f"{report.category}: {report.n_explained} of {report.n_defect_images} defect images NG and explained, "
             f"{report.n_answers} answers ({report.model}, {report.seconds_per_answer:.1f} s each)",
             f"  states the true location {report.states_true_location:.0%} (the vision's top region: "
             f"{report.vision_true_location:.0%}); no contradiction of the evidence {report.no_contradiction:.0%}; "
             f"cites a measurement {report.cites_evidence:.0%}; ends at a sentence end {report.ends_sentence:.0%}; "
             f"'What kind?' names the probable class {report.names_kind:.0%}",
             f"  evidence class fits the true defect type: {report.kind_agreement:.0%}"]
    for q, r in report.by_question.items():
        lines.append(f"  {q:12s} " + ", ".join(f"{k} {v:.0%}" for k, v in r.items()))
    return "\n".join(lines)
