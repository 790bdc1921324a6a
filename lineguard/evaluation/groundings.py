"""Text evidence vs AnomalyGPT's soft prompt vs both, side by side on real photos (the README's groundings table).

Usage::

    python -m lineguard.evaluation.groundings bundles/default --update-readme     # `make groundings`
    report = compare_groundings("bundles/default", realdev="../shared/realdev")

The bundle needs an LLM and a prompt learner (``lineguard export prompt-learner``, trained on the
scikit-image texture set's normals by ``make groundings``); the comparison runs on ``../shared/realdev``,
which the learner never saw. For each grounding: ``eval --verdict llm`` (the LLM's yes/no verdict beside the
vision verdict, same frames) on ``VERDICT_CATEGORIES`` and ``eval-explanations`` (faithfulness rules) on
``EXPLAIN_CATEGORIES``. Every figure comes from this one run; the table between the README's
``groundings-table`` markers is rewritten, never edited by hand.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel

from lineguard.evaluation.category import evaluate
from lineguard.evaluation.explanations import evaluate_explanations
from lineguard.evaluation.readme_tables import publish_table, readme_lacks_markers
from lineguard.evaluation.suite import default_realdev
from lineguard.runtime.bundle import Bundle, BundleError
from lineguard.runtime.llm.grounding import GROUNDINGS, Grounding

VERDICT_CATEGORIES = ("road_crack", "pcb")
EXPLAIN_CATEGORIES = ("road_crack", "cookie")
TABLE = "groundings-table"


class GroundingResult(BaseModel):
    grounding: Grounding
    llm_accuracy: dict[str, float]  # category -> accuracy of the LLM verdict
    vision_accuracy: dict[str, float]
    llm_false_reject_rate: dict[str, float]
    llm_miss_rate: dict[str, float]
    llm_fallbacks: dict[str, int]
    answers: int
    states_true_location: float
    vision_true_location: float
    no_contradiction: float
    ends_sentence: float
    seconds_per_answer: float


class GroundingReport(BaseModel):
    bundle: str
    learner_trained_on: list[str]
    learner_steps: int
    learner_heldout_accuracy: float | None
    per_type: int | None
    results: list[GroundingResult]
    created_at: str


def compare_groundings(bundle_dir: str | Path, realdev: str | Path | None = None, per_type: int | None = None,
                       groundings: Sequence[Grounding] = GROUNDINGS) -> GroundingReport:
    bundle = Bundle.open(bundle_dir)
    learner = bundle.manifest.prompt_learner
    if bundle.manifest.llm is None or learner is None:
        raise BundleError(f"{bundle_dir} needs an LLM and a prompt learner (export llm, export prompt-learner)")
    data = Path(realdev) if realdev is not None else default_realdev()
    results = []
    for grounding in groundings:
        verdicts = {c: evaluate(bundle_dir, data, c, 4, verdict_mode="llm", grounding=grounding)
                    for c in VERDICT_CATEGORIES}
        explained = [evaluate_explanations(bundle_dir, data, c, per_type=per_type, grounding=grounding,
                                           on_answer=lambda a, g=grounding: print(f"{g} {a.image} {a.question}: "
                                                                                  f"{a.answer!r}", file=sys.stderr))
                     for c in EXPLAIN_CATEGORIES]
        answers = sum(r.n_answers for r in explained)

        def weighted(field: str, reports=explained) -> float:
            n = sum(r.n_answers for r in reports)
            return sum(getattr(r, field) * r.n_answers for r in reports) / n if n else 0.0

        results.append(GroundingResult(
            grounding=grounding,
            llm_accuracy={c: r.llm_accuracy for c, r in verdicts.items()},
            vision_accuracy={c: r.accuracy for c, r in verdicts.items()},
            llm_false_reject_rate={c: r.llm_false_reject_rate for c, r in verdicts.items()},
            llm_miss_rate={c: r.llm_miss_rate for c, r in verdicts.items()},
            llm_fallbacks={c: r.llm_fallbacks for c, r in verdicts.items()},
            answers=answers, states_true_location=weighted("states_true_location"),
            vision_true_location=weighted("vision_true_location"), no_contradiction=weighted("no_contradiction"),
            ends_sentence=weighted("ends_sentence"), seconds_per_answer=weighted("seconds_per_answer")))
        print(f"{grounding}: {results[-1].model_dump()}", file=sys.stderr)
    return GroundingReport(bundle=str(bundle_dir), learner_trained_on=learner.trained_on, learner_steps=learner.steps,
                           learner_heldout_accuracy=learner.heldout_accuracy, per_type=per_type, results=results,
                           created_at=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))


def render(report: GroundingReport) -> str:
    trained = ", ".join(Path(p).name for p in report.learner_trained_on)
    held = "n/a" if report.learner_heldout_accuracy is None else f"{report.learner_heldout_accuracy:.2f}"
    lines = [f"Bundle `{Path(report.bundle).name}`, prompt learner trained on simulated anomalies over {trained} "
             f"({report.learner_steps} steps; yes/no on its held-out simulated frames {held}); {report.created_at}. "
             "Regenerate with `make groundings`.", "",
             "| grounding | " + " | ".join(f"LLM verdict accuracy, {c} (vision)" for c in VERDICT_CATEGORIES)
             + " | LLM false rejects / misses | states the true location (vision's top region) | no contradiction "
               "| ends a sentence | answers | s per answer |",
             "|---" * (len(VERDICT_CATEGORIES) + 7) + "|"]
    for r in report.results:
        acc = " | ".join(f"{r.llm_accuracy[c]:.2f} ({r.vision_accuracy[c]:.2f}), {r.llm_fallbacks[c]} fallbacks"
                         for c in VERDICT_CATEGORIES)
        errors = ", ".join(f"{c} {r.llm_false_reject_rate[c]:.0%} / {r.llm_miss_rate[c]:.0%}" for c in VERDICT_CATEGORIES)
        lines.append(f"| {r.grounding} | {acc} | {errors} | {r.states_true_location:.0%} ({r.vision_true_location:.0%}) "
                     f"| {r.no_contradiction:.0%} | {r.ends_sentence:.0%} | {r.answers} | {r.seconds_per_answer:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lineguard.evaluation.groundings", description=__doc__.split("\n")[0])
    parser.add_argument("bundle")
    parser.add_argument("--realdev", help="default $LINEGUARD_REALDEV or ../shared/realdev")
    parser.add_argument("--per-type", type=int, default=0, help="defect images explained per type (0: all)")
    parser.add_argument("--json", default="artifacts/eval/groundings.json")
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args(argv)
    if args.update_readme and readme_lacks_markers(TABLE):
        parser.error(f"README.md lacks the {TABLE} markers")
    report = compare_groundings(args.bundle, args.realdev, args.per_type or None)
    publish_table(render(report), report, args.json, TABLE, args.update_readme)
    return 0


if __name__ == "__main__":
    sys.exit(main())
