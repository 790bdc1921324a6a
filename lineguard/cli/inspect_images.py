"""``lineguard inspect``: verdicts for image files, one line (or one Verdict JSON) per image."""

from __future__ import annotations

import argparse
from pathlib import Path

from lineguard.cli.output import format_verdict


def cmd_inspect(args: argparse.Namespace) -> int:
    from lineguard.runtime.image_io import read_image
    from lineguard.runtime.scoring.inspector import Inspector

    inspector = Inspector(args.bundle, false_reject_budget=args.budget)
    for path in args.images:
        verdict = inspector.inspect(read_image(path), args.product)
        verdict = verdict.model_copy(update={"frame_id": Path(path).name})
        print(verdict.model_dump_json() if args.json else format_verdict(Path(path).name, verdict))
    return 0
