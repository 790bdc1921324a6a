"""``lineguard panel``: the technicians' touch panel (a web page) for a running line."""

from __future__ import annotations

import argparse
import sys


def cmd_panel(args: argparse.Namespace) -> int:
    import uvicorn

    from lineguard.panel.app import create_app
    from lineguard.panel.settings import PanelSettings

    settings = PanelSettings.for_runtime(args.runtime, args.verdicts_port, args.explanations_port, args.runtime_http_port,
                                         token_file=args.token_file, curve_client_key=args.curve_client_key,
                                         curve_server_key=args.curve_server_key,
                                         runtime_token_file=args.runtime_token_file, host=args.host, port=args.port)
    if settings.curve is not None:  # a bad key file fails here, naming the file, not inside the first page load
        import zmq

        settings.curve.secure(zmq.Context.instance().socket(zmq.DEALER)).close(linger=0)
    where = f"http://{'localhost' if args.host in ('127.0.0.1', '::1') else args.host}:{args.port}"
    print(f"panel for the runtime on {args.runtime} at {where} (\"Why?\" "
          f"{'needs the operator token' if settings.token else 'open: bound to this machine only'})", file=sys.stderr)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="warning")
    return 0
