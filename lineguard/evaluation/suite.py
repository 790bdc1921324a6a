"""The README's accuracy table in one command: ``eval`` over every category, several shot draws, one table.

Usage::

    from lineguard.evaluation.suite import default_roots, main_eval_all, render_markdown, run_suite

    report = main_eval_all("bundles/default", "artifacts/eval", shots=4, seeds=(0, 1), update_readme=True)
    report.kinds[0].kind, report.kinds[0].image_auroc           # e.g. "industrial", mean over its categories

    roots, notes = default_roots()                               # [(data_root, category, kind), ...]
    report = run_suite("bundles/default", roots, shots=4, seeds=(0, 1), notes=notes)
    print(render_markdown(report))
    # or: make eval    (= lineguard eval bundles/default --all --out artifacts/eval --update-readme)
    # or: python -m lineguard.evaluation.suite --bundle bundles/default --update-readme --export-missing

What it runs: :func:`lineguard.evaluation.category.evaluate` (the same code as ``lineguard eval``) for
each (data root, category) and each seed of the shot draw, then averages over seeds per category and
over categories per kind ("industrial" parts, "texture" surfaces). The default set is every category
of ``../shared/realdev`` plus the scikit-image texture set of :mod:`lineguard.evaluation.data`, built once
into ``artifacts/eval-data/``. Any other MVTec-style root can stand in for realdev: every category in it is
evaluated, its kind declared (:func:`realdev_roots`) or "unlisted"; a missing root is a note, never silent.

It writes ``eval.json`` (a :class:`SuiteReport`) and ``eval.md`` (the table) into ``out_dir`` and, with
``update_readme``, replaces the text between ``<!-- eval-table:start -->`` and
``<!-- eval-table:end -->`` in README.md with the same table, so nobody edits numbers by hand.
Balanced accuracy is ((1 - false-reject rate) + (1 - miss rate)) / 2.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from lineguard.evaluation.eval_tables import make_target, readme_table_name
from lineguard.evaluation.readme_tables import (
    README_END,
    README_START,
    README_TABLE,
    REPO_ROOT,
    check_readme,
    write_readme_table,
)

# The kind of every category of the default set; another root declares its own (kinds.json, --kind).
KIND_BY_CATEGORY: dict[str, str] = {
    "pcb": "industrial",
    "cookie": "industrial",
    "road_crack": "texture",
    "brick": "texture",
    "grass": "texture",
    "gravel": "texture",
}
KINDS_ORDER = ("industrial", "texture")
UNLISTED_KIND = "unlisted"  # a category whose kind nobody declared: evaluated, its mean row apart
KINDS_FILE = "kinds.json"   # in a data root: {"category": "kind", ...}
# fields taken from each EvalReport; any others are kept in SeedResult.extra
METRICS = ("image_auroc", "pixel_auroc", "accuracy", "false_reject_rate", "miss_rate", "n_images", "ms_per_image")

SuiteEntry = tuple[str | Path, str, str]          # (data root, category, kind)
EvaluateFn = Callable[..., Any]                   # evaluate(bundle_dir, data_root, category, shots, seed=...)


class SeedResult(BaseModel):
    """One ``evaluate`` run: one category, one draw of the shots."""

    seed: int
    image_auroc: float | None
    pixel_auroc: float | None
    accuracy: float | None
    false_reject_rate: float
    miss_rate: float
    balanced_accuracy: float
    n_images: int
    ms_per_image: float
    miss_rate_by_type: dict[str, float] = {}
    extra: dict[str, Any] = {}


class CategoryResult(BaseModel):
    """Means over the seeds that ran (None where no seed gave the number)."""

    category: str
    kind: str
    data_root: str
    runs: list[SeedResult]
    image_auroc: float | None
    pixel_auroc: float | None
    false_reject_rate: float
    miss_rate: float
    balanced_accuracy: float
    ms_per_image: float
    n_images: int
    miss_rate_by_type: dict[str, float] = {}


class KindResult(BaseModel):
    """Means over the categories of one kind (each category weighs the same)."""

    kind: str
    categories: list[str]
    image_auroc: float | None
    pixel_auroc: float | None
    false_reject_rate: float
    miss_rate: float
    balanced_accuracy: float


class SuiteReport(BaseModel):
    bundle: str
    shots: int
    seeds: list[int]
    created_utc: str
    categories: list[CategoryResult]
    kinds: list[KindResult]
    notes: list[str] = []
    failures: list[str] = []
    flags: list[str] = []  # eval --all options beyond the default table's (--without F, --adapt): in its caption


# ------------------------------------------------------------------------------------------- running

def _mean(values: Sequence[float | None]) -> float | None:
    present = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(present) / len(present) if present else None


def balanced_accuracy(false_reject_rate: float, miss_rate: float) -> float:
    return ((1.0 - false_reject_rate) + (1.0 - miss_rate)) / 2.0


def seed_result(seed: int, report: Any) -> SeedResult:
    """The suite's view of one EvalReport (or any object with its fields); unknown fields go to ``extra``."""
    dumped: dict[str, Any] = report.model_dump() if hasattr(report, "model_dump") else dict(vars(report))
    values = {name: dumped.get(name, getattr(report, name, None)) for name in METRICS}
    by_type = dumped.get("miss_rate_by_type") or {}
    extra = {k: v for k, v in dumped.items()
             if k not in METRICS and k not in ("miss_rate_by_type", "balanced_accuracy")}
    frr, miss = float(values["false_reject_rate"]), float(values["miss_rate"])
    return SeedResult(seed=seed, image_auroc=values["image_auroc"], pixel_auroc=values["pixel_auroc"],
                      accuracy=values["accuracy"], false_reject_rate=frr, miss_rate=miss,
                      balanced_accuracy=balanced_accuracy(frr, miss), n_images=int(values["n_images"] or 0),
                      ms_per_image=float(values["ms_per_image"] or 0.0),
                      miss_rate_by_type={str(k): float(v) for k, v in by_type.items()}, extra=extra)


def category_result(category: str, kind: str, data_root: str, runs: list[SeedResult]) -> CategoryResult:
    types = sorted({t for r in runs for t in r.miss_rate_by_type})
    return CategoryResult(
        category=category, kind=kind, data_root=data_root, runs=runs,
        image_auroc=_mean([r.image_auroc for r in runs]),
        pixel_auroc=_mean([r.pixel_auroc for r in runs]),
        false_reject_rate=_mean([r.false_reject_rate for r in runs]) or 0.0,
        miss_rate=_mean([r.miss_rate for r in runs]) or 0.0,
        balanced_accuracy=_mean([r.balanced_accuracy for r in runs]) or 0.0,
        ms_per_image=_mean([r.ms_per_image for r in runs]) or 0.0,
        n_images=max(r.n_images for r in runs),
        miss_rate_by_type={t: _mean([r.miss_rate_by_type.get(t) for r in runs]) or 0.0 for t in types},
    )


def kind_results(categories: list[CategoryResult]) -> list[KindResult]:
    kinds = [k for k in KINDS_ORDER if any(c.kind == k for c in categories)]
    kinds += sorted({c.kind for c in categories} - set(kinds))
    out = []
    for kind in kinds:
        rows = [c for c in categories if c.kind == kind]
        out.append(KindResult(
            kind=kind, categories=[c.category for c in rows],
            image_auroc=_mean([c.image_auroc for c in rows]),
            pixel_auroc=_mean([c.pixel_auroc for c in rows]),
            false_reject_rate=_mean([c.false_reject_rate for c in rows]) or 0.0,
            miss_rate=_mean([c.miss_rate for c in rows]) or 0.0,
            balanced_accuracy=_mean([c.balanced_accuracy for c in rows]) or 0.0,
        ))
    return out


def run_suite(bundle: str | Path, roots: Sequence[SuiteEntry], shots: int = 4, seeds: Sequence[int] = (0, 1),
              notes: Sequence[str] = (), evaluate_fn: EvaluateFn | None = None,
              log: Callable[[str], None] = print) -> SuiteReport:
    """``evaluate`` every (data root, category) at every seed; a failing run is recorded, not fatal."""
    if evaluate_fn is None:
        from lineguard.evaluation.category import evaluate as evaluate_fn
    results: list[CategoryResult] = []
    failures: list[str] = []
    for data_root, category, kind in roots:
        runs = []
        for seed in seeds:
            log(f"eval {category} ({kind}) shots={shots} seed={seed} ...")
            try:
                report = evaluate_fn(bundle, data_root, category, shots, seed=seed)
            except Exception as exc:  # one broken category must not cost the whole table
                failures.append(f"{category} seed {seed}: {type(exc).__name__}: {exc}")
                log(f"  failed: {failures[-1]}")
                continue
            runs.append(seed_result(seed, report))
            r = runs[-1]
            log(f"  image AUROC {_fmt(r.image_auroc)}  pixel AUROC {_fmt(r.pixel_auroc)}  "
                f"false rejects {r.false_reject_rate:.2f}  misses {r.miss_rate:.2f}")
        if runs:
            results.append(category_result(category, kind, str(data_root), runs))
    return SuiteReport(bundle=str(bundle), shots=shots, seeds=list(seeds),
                       created_utc=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                       categories=results, kinds=kind_results(results), notes=list(notes), failures=failures)


# ----------------------------------------------------------------------------------------- the set

def default_realdev() -> Path:
    """``$LINEGUARD_REALDEV``, else ``../shared/realdev`` beside the repository."""
    env = os.environ.get("LINEGUARD_REALDEV")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "realdev"


def declared_kinds(root: str | Path) -> dict[str, str]:
    """The kinds ``root/kinds.json`` declares (category name -> kind); {} where the root has no such file."""
    path = Path(root) / KINDS_FILE
    if not path.is_file():
        return {}
    try:
        return TypeAdapter(dict[str, str]).validate_json(path.read_bytes())
    except ValidationError as exc:
        raise ValueError(f"{path}: expected a JSON object of category name -> kind, e.g. "
                         f'{{"grid": "industrial"}} ({exc.errors()[0]["msg"]})') from exc


def realdev_roots(realdev: str | Path, kinds: Mapping[str, str] | None = None) -> tuple[list[SuiteEntry], list[str]]:
    """Every category folder of ``realdev`` (one with a ``test/``), each with its kind: ``kinds`` first, then
    the root's kinds.json, then :data:`KIND_BY_CATEGORY`, else :data:`UNLISTED_KIND` with a note."""
    realdev = Path(realdev)
    if not realdev.is_dir():
        return [], [f"{realdev} not found: its real-photo categories are not in this table"]
    declared = {**KIND_BY_CATEGORY, **declared_kinds(realdev), **(kinds or {})}
    names = sorted(p.name for p in realdev.iterdir() if p.is_dir() and (p / "test").is_dir())
    notes = [f"{realdev / name}: no kind declared (--kind {name}=KIND or {realdev / KINDS_FILE}), its mean row "
             f"is '{UNLISTED_KIND}'" for name in names if name not in declared]
    notes += [f"--kind {name}: {realdev} has no such category" for name in sorted(set(kinds or {}) - set(names))]
    notes += [] if names else [f"{realdev} holds no category folder (CATEGORY/test/): none of it is in this table"]
    return [(str(realdev), name, declared.get(name, UNLISTED_KIND)) for name in names], notes


def texture_roots(cache_dir: str | Path, seed: int = 0) -> tuple[list[SuiteEntry], list[str]]:
    """The scikit-image texture set (built into ``cache_dir`` when missing or stale)."""
    try:
        from lineguard.evaluation.data import ensure_texture_set

        categories = ensure_texture_set(cache_dir, seed=seed)
    except ImportError as exc:
        return [], [f"scikit-image texture set skipped ({exc}): pip install scikit-image"]
    return [(str(cache_dir), c, KIND_BY_CATEGORY.get(c, "texture")) for c in categories], []


def default_roots(realdev: str | Path | None = None, texture_cache: str | Path = "artifacts/eval-data/skimage",
                  data_seed: int = 0, kinds: Mapping[str, str] | None = None,
                  texture_set: bool = True) -> tuple[list[SuiteEntry], list[str]]:
    """realdev's categories, then (``texture_set``) the scikit-image textures; with notes on what was
    skipped or left without a kind."""
    real, notes = realdev_roots(default_realdev() if realdev is None else realdev, kinds)
    if not texture_set:
        return real, notes
    textures, more = texture_roots(texture_cache, data_seed)
    return real + textures, notes + more


# ------------------------------------------------------------------------------------------ writing

def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def render_markdown(report: SuiteReport) -> str:
    """The table (and per-defect-type misses where the reports carry them), from the report only."""
    seeds = ", ".join(str(s) for s in report.seeds)
    lines = [
        f"K={report.shots} shots, mean over {len(report.seeds)} draw{'s' if len(report.seeds) != 1 else ''} "
        f"of the shots (seed{'s' if len(report.seeds) != 1 else ''} {seeds}); "
        f"bundle `{Path(report.bundle).name}`; {report.created_utc}. Regenerate with "
        f"{make_target(report.flags, report.bundle)}(`lineguard eval {report.bundle} --all {' '.join([*report.flags, ''])}--update-readme`).",
        "",
        "| category | kind | image AUROC | pixel AUROC | false rejects | misses | balanced accuracy |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in report.categories:
        lines.append(f"| {c.category} | {c.kind} | {_fmt(c.image_auroc)} | {_fmt(c.pixel_auroc)} | "
                     f"{_fmt(c.false_reject_rate)} | {_fmt(c.miss_rate)} | {_fmt(c.balanced_accuracy)} |")
    for k in report.kinds:
        lines.append(f"| **mean, {k.kind}** ({len(k.categories)}) | {k.kind} | {_fmt(k.image_auroc)} | "
                     f"{_fmt(k.pixel_auroc)} | {_fmt(k.false_reject_rate)} | {_fmt(k.miss_rate)} | "
                     f"{_fmt(k.balanced_accuracy)} |")
    typed = [c for c in report.categories if c.miss_rate_by_type]
    if typed:
        lines += ["", "Misses by defect type:", "", "| category | defect type | misses |", "|---|---|---|"]
        for c in typed:
            lines += [f"| {c.category} | {t} | {_fmt(m)} |" for t, m in sorted(c.miss_rate_by_type.items())]
    calibrated = [c for c in report.categories if any("observed_false_reject" in r.extra for r in c.runs)]
    if calibrated:
        budgets = sorted({b for c in calibrated for r in c.runs for b in r.extra.get("observed_false_reject", {})},
                         key=float)
        lines += ["", "Calibration: how many held-out normals calibrated each draw, what decided at the budget, and the "
                  "share of test normals with p <= b for budgets b (the false-reject budget as it held on normals "
                  "no calibration saw):", "",
                  "| category | calibration normals | decided by | " + " | ".join(f"observed at {float(b):.0%}" for b in budgets)
                  + " |", "|---|---|---|" + "---|" * len(budgets)]
        for c in calibrated:
            counts = sorted({r.extra.get("n_calibration") for r in c.runs if r.extra.get("n_calibration") is not None})
            status = ", ".join(sorted({str(r.extra.get("calibration_status")) for r in c.runs}))
            observed = [_fmt(_mean([r.extra.get("observed_false_reject", {}).get(b) for r in c.runs])) for b in budgets]
            lines.append(f"| {c.category} | {', '.join(str(n) for n in counts)} | {status} | " + " | ".join(observed) + " |")
    tiled = [f"{c.category} ({' or '.join(f'{n}x{n}' for n in sorted({r.extra.get('tiles', 1) for r in c.runs}))})"
             for c in report.categories if any(r.extra.get("tiles", 1) > 1 for r in c.runs)]
    if tiled:
        lines += ["", f"Inspected as tiles of the input size (enrolment's `--tiles`): {', '.join(tiled)}."]
    if report.notes or report.failures:
        lines.append("")
        lines += [f"- note: {n}" for n in report.notes]
        lines += [f"- failed: {f}" for f in report.failures]
    return "\n".join(lines) + "\n"


def write_report(report: SuiteReport, out_dir: str | Path) -> tuple[Path, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "eval.json", out / "eval.md"
    json_path.write_text(report.model_dump_json(indent=2))
    md_path.write_text(render_markdown(report))
    return json_path, md_path


def ensure_bundle(bundle: str | Path) -> None:
    """Export the default bundle where none is, as ``lineguard demo`` does (a few minutes on 2 cores)."""
    if (Path(bundle) / "manifest.json").is_file():
        return
    from lineguard.export.vision import export_vision

    print(f"exporting the default bundle to {bundle} (trains the decoder, a few minutes) ...")
    export_vision(bundle)


def main_eval_all(bundle: str | Path, out_dir: str | Path, shots: int = 4, seeds: Sequence[int] = (0, 1),
                  update_readme: bool = False, readme: str | Path = REPO_ROOT / "README.md",
                  realdev: str | Path | None = None, texture_cache: str | Path | None = None,
                  evaluate_fn: EvaluateFn | None = None, table_name: str = README_TABLE,
                  flags: Sequence[str] = (), kinds: Mapping[str, str] | None = None,
                  texture_set: bool = True) -> SuiteReport:
    """Evaluate the default set, write eval.json + eval.md into ``out_dir``, optionally the README's table
    between the ``table_name`` markers.

    The README is only rewritten when every run succeeded (a partial table would look complete).
    """
    if update_readme:
        check_readme(readme, table_name)
    cache = Path(texture_cache) if texture_cache is not None else Path(out_dir).parent / "eval-data" / "skimage"
    roots, notes = default_roots(realdev, cache, kinds=kinds, texture_set=texture_set)
    for note in notes:
        print(f"note: {note}")
    report = run_suite(bundle, roots, shots, seeds, notes=notes, evaluate_fn=evaluate_fn)
    report.flags = list(flags)
    json_path, md_path = write_report(report, out_dir)
    print(f"wrote {json_path} and {md_path}")
    if update_readme:
        if report.failures or not report.categories:
            print(f"README not updated: {len(report.failures)} failed runs (see {md_path})", file=sys.stderr)
        else:
            write_readme_table(readme, render_markdown(report), table_name)
            print(f"updated the accuracy table in {readme}")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lineguard.evaluation.suite",
                                     description="eval over every category and draw; the README's table")
    parser.add_argument("--bundle", default="bundles/default")
    parser.add_argument("--out", default="artifacts/eval", help="folder for eval.json and eval.md")
    parser.add_argument("--shots", type=int, default=4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="draws of the shots")
    parser.add_argument("--realdev", default=None, help="realdev folder (default: ../shared/realdev)")
    parser.add_argument("--texture-cache", default=None,
                        help="where the scikit-image set is built (default: OUT/../eval-data/skimage)")
    parser.add_argument("--update-readme", action="store_true",
                        help=f"replace the table between {README_START} and {README_END} in README.md "
                             "(another bundle: its own eval-table-<folder> table)")
    parser.add_argument("--readme", default=str(REPO_ROOT / "README.md"))
    parser.add_argument("--export-missing", action="store_true",
                        help="export the default bundle first when BUNDLE has none (as `lineguard demo` does)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    table = README_TABLE
    if args.update_readme:
        try:
            table = readme_table_name(args.bundle)
            check_readme(args.readme, table)
        except (OSError, ValueError) as exc:
            print(f"lineguard: error: {args.readme}: {exc}", file=sys.stderr)
            return 2
    if args.export_missing:
        ensure_bundle(args.bundle)
    report = main_eval_all(args.bundle, args.out, args.shots, args.seeds, args.update_readme, args.readme,
                           args.realdev, args.texture_cache, table_name=table)
    return 1 if report.failures or not report.categories else 0


if __name__ == "__main__":
    raise SystemExit(main())
