"""``lineguard camera``: push frames from an image folder, a video or a device to a line's frames endpoint."""

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
    return 0
