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
            elif (message := event.verdict or event.heartbeat) is not None:  # stdout stays JSON lines
                print(message.model_dump_json(), flush=True)
            else:  # gaps, silence, drift alarms: for the person watching, not the JSON reader
                print(format_event(event), file=sys.stderr, flush=True)
    return 0
