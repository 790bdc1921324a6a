"""How many normals a line needs: false rejects and misses against the number of calibration normals
(the README's ``normals-table``).

Usage::

    python -m lineguard.evaluation.normals_needed bundles/default --update-readme     # `make eval-normals`
    report = measure("bundles/default", sizes=(20, 50, 120))

The realdev categories hold 16-20 calibration normals, too few for the rank test to resolve the default
1% budget, so the Gumbel tail decides there and most of their misses come from its caution. A line can
collect more good parts than that, and acceptance sets (MVTec-AD: 200-400 train/good images a category)
do. This measures what more normals buy, on the one set where they can be had without bias: the
scikit-image textures (:mod:`.data`), built with K + the largest n train/good and ``TEST_NORMALS`` test/good
crops per category, every crop drawn by one process, so test normals are exchangeable with calibration
normals and 100 of them resolve an observed false-reject rate to about 1%.

For each calibration size n, every category and draw of the K=4 shots is evaluated with ``eval --calib
n`` (the same shots and test images for every n: the comparison is paired). The table gives, per n: what
decided (``tail`` or ``conformal``), the false rejects at the default budget counted over all test
normals, the observed rate at 5% and 10% budgets, the misses and the balanced accuracy.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel

from lineguard.evaluation.readme_tables import publish_table, readme_lacks_markers
from lineguard.evaluation.suite import EvaluateFn, SeedResult, SuiteEntry, SuiteReport, run_suite
from lineguard.runtime.scoring.calibration import DEFAULT_FALSE_REJECT_BUDGET

TABLE = "normals-table"
SHOTS = 4
SEEDS = (0, 1)
SIZES = (20, 50, 120)  # 20: what realdev has; 120: above the 99 the rank test needs for 1%
TEST_NORMALS = 100
TEXTURE_ROOT = Path("artifacts/eval-data/skimage-large")


class SizeResult(BaseModel):
    """Every category and draw evaluated with ``calibration_normals`` calibration images."""

    calibration_normals: int
    suite: SuiteReport

    def runs(self) -> list[SeedResult]:
        return [r for c in self.suite.categories for r in c.runs]

    def decided_by(self) -> str:
        return ", ".join(sorted({str(r.extra.get("calibration_status")) for r in self.runs()}))

    def false_rejects(self) -> tuple[int, int]:
        """(test normals rejected at the budget, test normals), over every category and draw."""
        runs = self.runs()
        normals = [int(r.extra["n_test_normals"]) for r in runs]
        return sum(round(r.false_reject_rate * n) for r, n in zip(runs, normals, strict=True)), sum(normals)

    def observed(self, budget: float) -> float:
        """Mean share of test normals with p <= ``budget`` (one of category.EVAL_BUDGETS)."""
        runs = self.runs()
        return sum(r.extra["observed_false_reject"][f"{budget:g}"] for r in runs) / len(runs)

    def mean(self, field: str) -> float:
        """Mean of a category's ``field`` (each category weighs the same)."""
        return sum(getattr(c, field) for c in self.suite.categories) / len(self.suite.categories)


class NormalsReport(BaseModel):
    created_utc: str
    bundle: str
    texture_root: str
    train_images: int
    test_normals: int
    budget: float
    sizes: list[SizeResult]


def measure(bundle: str | Path, sizes: Sequence[int] = SIZES, seeds: Sequence[int] = SEEDS,
            texture_root: str | Path = TEXTURE_ROOT, evaluate_fn: EvaluateFn | None = None) -> NormalsReport:
    """Evaluate every texture category and draw at each calibration size (``eval --calib n``)."""
    from lineguard.evaluation.data import ensure_texture_set

    train_images = SHOTS + max(sizes)
    categories = ensure_texture_set(texture_root, n_train=train_images, n_test_good=TEST_NORMALS)
    roots: list[SuiteEntry] = [(str(texture_root), c, "texture") for c in categories]
    if evaluate_fn is None:
        from lineguard.evaluation.category import evaluate as evaluate_fn
    results = []
    for n in sizes:
        print(f"--- {n} calibration normals")
        suite = run_suite(bundle, roots, SHOTS, seeds, evaluate_fn=functools.partial(evaluate_fn, calib=n))
        if suite.failures or not suite.categories:
            raise RuntimeError(f"{len(suite.failures)} runs failed at {n} calibration normals: {suite.failures[:1]}")
        results.append(SizeResult(calibration_normals=n, suite=suite))
    return NormalsReport(created_utc=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                         bundle=str(bundle), texture_root=str(texture_root), train_images=train_images,
                         test_normals=TEST_NORMALS, budget=DEFAULT_FALSE_REJECT_BUDGET, sizes=results)


def render(report: NormalsReport) -> str:
    first = report.sizes[0].suite
    categories = [c.category for c in first.categories]
    lines = [
        f"K={SHOTS} shots, {len(first.seeds)} draws of the shots, {len(categories)} scikit-image textures "
        f"({', '.join(categories)}; {report.train_images} train/good and {report.test_normals} test/good crops "
        f"each), budget {report.budget:.0%}; bundle `{Path(report.bundle).name}`; {report.created_utc}. "
        f"Regenerate with `make eval-normals` (`python -m lineguard.evaluation.normals_needed {report.bundle} "
        "--update-readme`).",
        "",
        f"| calibration normals | decided by | false rejects at {report.budget:.0%} | observed at 5% | "
        "observed at 10% | image AUROC | misses | balanced accuracy |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for size in report.sizes:
        rejected, normals = size.false_rejects()
        lines.append(f"| {size.calibration_normals} | {size.decided_by()} | {rejected} of {normals} "
                     f"({rejected / normals:.1%}) | {size.observed(0.05):.2f} | {size.observed(0.10):.2f} | "
                     f"{size.mean('image_auroc'):.2f} | {size.mean('miss_rate'):.2f} | "
                     f"{size.mean('balanced_accuracy'):.2f} |")
    lines += ["", "Misses by category:", "",
              "| calibration normals | " + " | ".join(categories) + " |", "|---|" + "---|" * len(categories)]
    for size in report.sizes:
        misses = {c.category: c.miss_rate for c in size.suite.categories}
        lines.append(f"| {size.calibration_normals} | " + " | ".join(f"{misses[c]:.2f}" for c in categories) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lineguard.evaluation.normals_needed",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("bundle")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="calibration normals to try")
    parser.add_argument("--texture-root", default=str(TEXTURE_ROOT), help="where the larger texture set is built")
    parser.add_argument("--json", default="artifacts/eval/normals-needed.json")
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args(argv)
    if args.update_readme and readme_lacks_markers(TABLE):
        parser.error(f"README.md lacks the {TABLE} markers")
    if not (Path(args.bundle) / "manifest.json").is_file():
        parser.error(f"{args.bundle} holds no bundle (make demo exports bundles/default)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    report = measure(args.bundle, sorted(args.sizes), texture_root=args.texture_root)
    publish_table(render(report), report, args.json, TABLE, args.update_readme)
    return 0


if __name__ == "__main__":
    sys.exit(main())
