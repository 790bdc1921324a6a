"""Which README table and which Makefile target belong to an ``eval --all`` run.

Usage::

    readme_table_name("bundles/default")                       # "eval-table": the full chain's table
    readme_table_name("bundles/default", without=["decoder"])  # "eval-table-without-decoder"
    readme_table_name("bundles/input-320")                     # "eval-table-input-320"
    make_target([], "bundles/input-320")                       # "`make eval-resolution` "

Each table is named after what was evaluated, so one run never overwrites another's numbers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from lineguard.evaluation.readme_tables import README_TABLE
from lineguard.runtime.scoring.calibration import FAMILIES

DEFAULT_BUNDLE_NAME = "default"
# bundles the Makefile exports for a README table of their own (folder name -> target)
BUNDLE_TARGETS = {"input-320": "eval-resolution", "encoder-lite2": "eval-encoders",
                  "statistics-s1-s2-s3": "eval-stages", "statistics-s2-s3": "eval-stages"}


def readme_table_name(bundle: str | Path, without: Sequence[str] = (), adapt: bool = False,
                      orientation: str = "any", tiles: int | str = "auto") -> str:
    """The README table that ``eval BUNDLE --all`` with these options writes: ``eval-table`` for the default
    bundle's full chain, ``-<folder>`` for another bundle (``bundles/input-320``: eval-table-input-320), then
    ``-without-F`` per ablated family, ``-adapt``, ``-orientation-fixed`` and ``-tiles-N``. So another
    bundle's numbers never overwrite the default's table."""
    name = Path(bundle).resolve().name  # `eval . --all` from inside bundles/default is the default bundle
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ValueError(f"bundle folder name {name!r} cannot name a README table (letters, digits, '_', '-', '.')")
    return (README_TABLE + ("" if name == DEFAULT_BUNDLE_NAME else f"-{name}")
            + "".join(f"-without-{family}" for family in sorted(set(without))) + ("-adapt" if adapt else "")
            + ("" if orientation == "any" else f"-orientation-{orientation}")
            + ("" if tiles == "auto" else f"-tiles-{tiles}"))


def eval_flags(without: Sequence[str], adapt: bool, orientation: str, tiles: int | str = "auto") -> list[str]:
    """The options of an ``eval --all`` run beyond the default table's, as its caption names them."""
    return ([f"--without {family}" for family in sorted(set(without))] + (["--adapt"] if adapt else [])
            + ([] if orientation == "any" else [f"--orientation {orientation}"])
            + ([] if tiles == "auto" else [f"--tiles {tiles}"]))


def make_target(flags: Sequence[str], bundle: str | Path = DEFAULT_BUNDLE_NAME) -> str:
    """The Makefile target that writes the table of ``eval BUNDLE --all`` with these flags, with a trailing
    space ("" where no target writes it)."""
    name = Path(bundle).resolve().name
    if name != DEFAULT_BUNDLE_NAME:
        return f"`make {BUNDLE_TARGETS[name]}` " if name in BUNDLE_TARGETS and not flags else ""
    if not flags:
        return "`make eval` "
    if flags == ["--adapt"]:
        return "`make eval-adapt` "
    if flags == ["--tiles 2"]:
        return "`make eval-tiles` "
    if len(flags) == 1 and flags[0] in ("--orientation fixed", *(f"--without {f}" for f in FAMILIES)):  # one at a time
        return "`make ablation` "
    return ""
