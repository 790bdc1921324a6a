"""The ``lineguard`` command line: one entry for both halves.

Export commands import ``lineguard.export`` (torch) only when they run, so an edge install without
the ``[export]`` extra still has ``enroll``, ``inspect`` and ``eval``.

    lineguard export vision --out bundles/default
    lineguard enroll bundles/default --product tile --normals data/tile/train/good --shots 4
    lineguard inspect bundles/default part.png --product tile
    lineguard eval bundles/default --data data --category tile --shots 4 --json eval.json
    lineguard eval bundles/default --all --out artifacts/eval --update-readme     # the README's accuracy table
    lineguard bench vision --bundle bundles/default --json bench.json
    lineguard serve bundles/default --config line.yaml --max-batch 4     # flags override the file's fields
    lineguard demo

Layout: :mod:`.parser` builds the argparse tree; each command (or family) has its handler module
(:mod:`.export`, :mod:`.enroll`, :mod:`.inspect_images`, :mod:`.eval`, :mod:`.bench`, :mod:`.serve`,
:mod:`.panel`, :mod:`.camera`, :mod:`.watch`, :mod:`.explain`, :mod:`.keys`, :mod:`.demo`); :mod:`.common`
and :mod:`.output` hold what they share. ``python -m lineguard.cli`` runs :func:`main` too.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from lineguard.cli.common import CliError, user_errors
from lineguard.cli.parser import build_parser

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a model hub: lines are air-gapped

__all__ = ["CliError", "build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; 0 on success, 2 on an error the user can fix (one line on stderr), 130 on Ctrl-C."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except user_errors() as exc:
        print(f"lineguard: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
