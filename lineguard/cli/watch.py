"""``lineguard watch``: subscribe to a line's verdicts; reports sequence gaps and missed heartbeats."""

from __future__ import annotations

import argparse

from lineguard.cli.common import curve_client


def cmd_watch(args: argparse.Namespace) -> int:
    from lineguard.runtime.clients.watch import VerdictWatcher, format_event

    with VerdictWatcher(args.connect, prefix=args.topic, curve=curve_client(args)) as watcher:
        for event in watcher.events(duration_s=args.duration):
            if event.kind == "heartbeat" and not args.heartbeats:
                continue
            if args.json and event.kind == "verdict" and event.verdict is not None:
                print(event.verdict.model_dump_json(), flush=True)
            else:
                print(format_event(event), flush=True)
    return 0
