"""``lineguard watch``: subscribe to a line's verdicts; reports sequence gaps and missed heartbeats.

With ``--json`` stdout carries only JSON lines (Verdicts, and Heartbeats with ``--heartbeats``); the alarms
(gaps, silence, drift) go to stderr as text."""

from __future__ import annotations

import argparse
import sys

from lineguard.cli.common import curve_client


def cmd_watch(args: argparse.Namespace) -> int:
    from lineguard.runtime.clients.watch import VerdictWatcher, format_event

    with VerdictWatcher(args.connect, prefix=args.topic, curve=curve_client(args)) as watcher:
        for event in watcher.events(duration_s=args.duration):
            if event.kind == "heartbeat" and not args.heartbeats:
                continue
            if not args.json:
                print(format_event(event), flush=True)
            elif event.kind == "verdict" and event.verdict is not None:  # stdout stays JSON lines
                print(event.verdict.model_dump_json(), flush=True)
            elif event.kind == "heartbeat" and event.heartbeat is not None:
                print(event.heartbeat.model_dump_json(), flush=True)
            else:  # gaps, silence, restarts, drift alarms (some carry a heartbeat): for the person watching
                print(format_event(event), file=sys.stderr, flush=True)
    return 0
