"""``lineguard inspect``: verdicts for image files, one line (or one Verdict JSON) per image.

An image that cannot be inspected (unreadable, missing, too small) gets an ERROR verdict with the wire's
error code (INTERNAL for a NaN score), as a frame would on the line, and the others are still inspected; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lineguard.cli.output import format_verdict


def cmd_inspect(args: argparse.Namespace) -> int:
    from lineguard.runtime.contract import ErrorCode
    from lineguard.runtime.contract.frames import FrameIds, error_verdict
    from lineguard.runtime.image_io import ImageReadError, read_image
    from lineguard.runtime.inference.preprocess import ImageFormatError
    from lineguard.runtime.scoring.inspector import Inspector, NonFiniteScoreError

    inspector = Inspector(args.bundle, false_reject_budget=args.budget)
    failed = 0
    for path in args.images:
        name = Path(path).name
        try:
            verdict = inspector.inspect(read_image(path), args.product).model_copy(update={"frame_id": name})
        except (ImageReadError, ImageFormatError, NonFiniteScoreError) as exc:
            code = (ErrorCode.BAD_SHAPE if isinstance(exc, ImageFormatError) else
                    ErrorCode.INTERNAL if isinstance(exc, NonFiniteScoreError) else ErrorCode.BAD_PAYLOAD)
            verdict = error_verdict(FrameIds(frame_id=name, product=args.product or ""), code, str(exc),
                                    inspector.bundle.manifest.bundle_id)
            failed += 1
        print(verdict.model_dump_json() if args.json else format_verdict(name, verdict), flush=True)
    if failed:
        print(f"lineguard: {failed} of {len(args.images)} images could not be inspected", file=sys.stderr)
    return 1 if failed else 0
