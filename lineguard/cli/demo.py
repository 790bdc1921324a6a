"""``lineguard demo``: export, enrol and inspect a generated product end to end (lineguard.demo)."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_demo(args: argparse.Namespace) -> int:
    from lineguard.demo import run_demo

    return run_demo(Path(args.bundle), Path(args.workdir))
