"""``lineguard explain``: ask the line's LLM about an archived frame and stream its answer to stdout."""

from __future__ import annotations

import argparse
import sys

from lineguard.cli.common import CliError, curve_client


def cmd_explain(args: argparse.Namespace) -> int:
    from lineguard.runtime.clients.explain import ask

    try:
        for reply in ask(args.connect, args.frame_id, args.question, idle_timeout_s=args.timeout,
                         curve=curve_client(args), follow_up=args.follow_up):
            if reply.type == "chunk":
                print(reply.text, end="", flush=True)
            elif reply.type == "final":
                print(f"\n[{reply.completion_tokens} tokens, first after {reply.time_to_first_token_ms:.0f} ms, "
                      f"{reply.total_ms:.0f} ms in all, {reply.finish_reason}]", file=sys.stderr)
            else:
                raise CliError(f"{reply.error.code}: {reply.error.message}")
    except TimeoutError as exc:
        raise CliError(str(exc)) from exc
    return 0
