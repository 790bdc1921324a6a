"""``lineguard camera``: push frames from an image folder, a video or a device to a line's frames endpoint.

Exit 1 when frames were dropped (the line was unreachable or too slow to take them), 0 when every one was sent."""

from __future__ import annotations

import argparse
import sys

from lineguard.cli.common import curve_client


def cmd_camera(args: argparse.Namespace) -> int:
    from lineguard.runtime.clients.camera import CameraPusher

    with CameraPusher(args.connect, args.camera_id, args.source, product=args.product, fps=args.fps,
                      encoding=args.encoding, count=args.count, loop=args.loop, curve=curve_client(args)) as pusher:
        sent = pusher.run()
        print(f"camera {args.camera_id}: sent {sent} frames, dropped {pusher.dropped}", file=sys.stderr)
    if pusher.dropped:  # frames the line never got: a script driving the camera must see it
        if not sent:
            print(f"lineguard: no frame reached {args.connect}: is `lineguard serve` running there (and, with "
                  "CURVE, is this camera's key allowed)?", file=sys.stderr)
        return 1
    return 0
