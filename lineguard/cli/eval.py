"""``lineguard eval`` (one category, or ``--all``: the README's accuracy table) and ``eval-explanations``.

``eval --all`` runs lineguard.evaluation.suite over the real-photo categories (``--realdev DIR``: any
MVTec-style root, kinds from ``--kind`` or its kinds.json) and the scikit-image textures (unless
``--no-texture-set``), several draws of the shots; the single-category and ``--all`` options refuse each other.
"""

from __future__ import annotations

import argparse
import functools
import shlex
import sys
from pathlib import Path

from lineguard.cli.common import DEFAULT_BUNDLE, CliError, flag, no_bundle
from lineguard.cli.enroll import export_adapt
from lineguard.cli.output import write_json

EVAL_ALL_ONLY = ("out", "seeds", "update_readme", "readme", "realdev", "texture_cache", "kind", "no_texture_set")
EVAL_ONE_ONLY = ("data", "category", "seed", "json")


def cmd_eval(args: argparse.Namespace) -> int:
    adapt = export_adapt("eval --adapt") if args.adapt else None  # first: not a failure recorded per category
    if args.all:
        return _eval_all(args)
    stray = [flag(d) for d in EVAL_ALL_ONLY if getattr(args, d) not in (None, False)]
    if stray:
        raise CliError(f"{', '.join(stray)} only go with eval --all")
    if args.data is None or args.category is None:
        raise CliError("eval needs --data DIR and --category NAME (one category), "
                       "or --all (every category of the README's accuracy table)")
    from lineguard.evaluation.category import evaluate

    adapt_errors = (adapt.AdaptError,) if adapt is not None else ()
    try:
        report = evaluate(args.bundle, args.data, args.category, args.shots,
                          seed=0 if args.seed is None else args.seed, calib=args.calib, budget=args.budget,
                          verdict_mode=args.verdict, without=args.without or (), grounding=args.grounding,
                          adapt=args.adapt, orientation=args.orientation, tiles=args.tiles)
    except adapt_errors as exc:
        raise CliError(str(exc)) from exc
    payload = report.model_dump_json(indent=2)
    print(payload)
    write_json(args.json, payload)
    return 0


def _eval_all(args: argparse.Namespace) -> int:
    """``eval --all``: lineguard.evaluation.suite over realdev + the scikit-image textures, several draws of the shots."""
    from lineguard.evaluation import suite as eval_suite
    from lineguard.evaluation.eval_tables import eval_flags, readme_table_name

    stray = [flag(d) for d in EVAL_ONE_ONLY if getattr(args, d) is not None]
    if stray:
        raise CliError(f"{', '.join(stray)} cannot go with --all (it evaluates every category; "
                       "draws of the shots: --seeds, output folder: --out)")
    readme = Path(args.readme) if args.readme else eval_suite.REPO_ROOT / "README.md"
    without = sorted(set(args.without or ()))
    kinds = dict(args.kind or ())
    data_flags = _data_flags(args.realdev, kinds, args.no_texture_set)
    table = eval_suite.README_TABLE  # written only with --update-readme
    if args.update_readme and data_flags:
        raise CliError(f"--update-readme writes the README's tables of the default data set, not of "
                       f"{' '.join(data_flags)}: its table is OUT/eval.md (--out)")
    if args.update_readme:  # fail now, not after an hour of evaluation
        try:
            table = readme_table_name(args.bundle, without, args.adapt, args.orientation, args.tiles)
        except ValueError as exc:
            raise CliError(str(exc)) from exc
        try:
            eval_suite.check_readme(readme, table)
        except (OSError, ValueError) as exc:
            raise CliError(f"{readme}: {exc}") from exc
    try:  # a malformed kinds.json fails now, not after the bundle's export
        eval_suite.declared_kinds(args.realdev or eval_suite.default_realdev())
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    bundle = Path(args.bundle)
    if not (bundle / "manifest.json").is_file():
        if bundle != DEFAULT_BUNDLE:
            raise no_bundle(bundle)
        try:
            eval_suite.ensure_bundle(bundle)
        except ImportError as exc:
            raise CliError(f"exporting the default bundle needs the workstation extra: "
                           f"pip install 'lineguard[export]' ({exc})") from exc
    from lineguard.evaluation import category as evaluation

    evaluate_fn = functools.partial(evaluation.evaluate, calib=args.calib, budget=args.budget,
                                    verdict_mode=args.verdict, without=without, grounding=args.grounding,
                                    adapt=args.adapt, orientation=args.orientation, tiles=args.tiles)
    report = eval_suite.main_eval_all(bundle, args.out or "artifacts/eval", args.shots, args.seeds or [0, 1],
                                      args.update_readme, readme, args.realdev, args.texture_cache,
                                      evaluate_fn=evaluate_fn, table_name=table,
                                      flags=[*eval_flags(without, args.adapt, args.orientation, args.tiles),
                                             *data_flags],
                                      kinds=kinds, texture_set=not args.no_texture_set)
    if report.failures or not report.categories:
        print(f"lineguard: {len(report.failures)} failed runs, {len(report.categories)} categories evaluated",
              file=sys.stderr)
        return 1
    return 0


def _data_flags(realdev: str | None, kinds: dict[str, str], no_texture_set: bool) -> list[str]:
    """The options that chose another data set than the default one, shell-quoted: the table's caption names
    them, so the command it says regenerates the table does (and no make target claims it)."""
    return ([f"--realdev {shlex.quote(realdev)}"] if realdev else []) \
        + [f"--kind {shlex.quote(f'{c}={k}')}" for c, k in sorted(kinds.items())] \
        + (["--no-texture-set"] if no_texture_set else [])


def cmd_eval_explanations(args: argparse.Namespace) -> int:
    """Faithfulness of the LLM's answers on a labelled set (lineguard.evaluation.explanations)."""
    from lineguard.evaluation import explanations as explanation_eval
    from lineguard.evaluation.data import ensure_texture_set
    from lineguard.runtime.scoring.calibration import DEFAULT_FALSE_REJECT_BUDGET

    data = args.data
    if data is None:  # the scikit-image texture set, built once (masks and defect types known)
        data = "artifacts/eval-data/skimage"
        ensure_texture_set(data)
    report = explanation_eval.evaluate_explanations(args.bundle, data, args.category, args.shots,
                                                    per_type=args.per_type or None, max_tokens=args.max_tokens,
                                                    budget=DEFAULT_FALSE_REJECT_BUDGET, grounding=args.grounding,
                                                    on_answer=lambda a: print(
                                                        f"{a.image} {a.question}: {a.answer!r}", file=sys.stderr))
    print(explanation_eval.summary(report))
    write_json(args.json, report.model_dump_json(indent=2))
    return 0
